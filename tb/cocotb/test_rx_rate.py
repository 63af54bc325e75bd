"""cocotb test: the receive port takes one beat per cycle on back-to-back frames.

A MAC cannot be paused for long, so the core must keep ``s_axis_rx_tready`` high while frames
arrive back to back, as long as the DMA writer keeps up on average. This counts, over the
whole burst, the cycles in which a beat was offered and not taken.
"""

import cocotb
from cocotb.triggers import RisingEdge

from tcpdct.records import EventType

from tb import TB
from frames import Conn


CONN = Conn(remote_port=40100)
#: Header bytes of the test frames: Ethernet, IPv4, TCP with Linux's NOP, NOP, Timestamps.
HEADER_BYTES = 14 + 20 + 32


def frame_count(tb, payload_len):
    """Enough frames to fill the receive packet buffer three times over: a burst the buffer
    could simply absorb would prove nothing about the rate behind it."""
    beats = -(-max(60, HEADER_BYTES + payload_len) // tb.params.data_bytes)
    return max(40, -(-3 * tb.params.rx_buffer_bytes // tb.params.data_bytes // beats))


async def _count_stalls(dut, counts):
    cycle = 0
    while True:
        await RisingEdge(dut.clk)
        cycle += 1
        if int(dut.s_axis_rx_tvalid.value):
            if int(dut.s_axis_rx_tready.value):
                counts["accepted"] += 1
                counts.setdefault("first", cycle)
                counts["last"] = cycle
            else:
                counts["stalled"] += 1


async def _burst(tb, payload_len, *, delegated):
    """Send back-to-back segments; returns their events and the port's beat counts."""
    index = 0
    seq = 0x1234_0000
    count = frame_count(tb, payload_len)
    if delegated:
        await tb.command(CONN.delegate(index, rcv_nxt=seq))
        for _ in range(tb.params.buffers_per_conn):
            await tb.post_buffer(index, count * payload_len // 2)
    frames = [CONN.rx(seq + n * payload_len, tb.rng.randbytes(payload_len))
              for n in range(count)]
    counts = {"accepted": 0, "stalled": 0}
    monitor = cocotb.start_soon(_count_stalls(tb.dut, counts))
    events = await tb.rx(frames)
    monitor.cancel()
    return events, counts


@cocotb.test()
@cocotb.parametrize(payload_len=[1448, 512, 64, 6])
async def test_back_to_back_placed(dut, payload_len):
    """Full-size and mid-size segments of a delegated connection, all placed."""
    tb = TB(dut)
    tb.set_pauses("none")
    await tb.reset()
    events, counts = await _burst(tb, payload_len, delegated=True)
    placed = [event for event in events if event.type == EventType.RX_PLACED]
    assert len(placed) == frame_count(tb, payload_len)
    tb.log.info("placed %d-byte segments: %d beats accepted, %d stalled cycles",
                payload_len, counts["accepted"], counts["stalled"])
    # The source offered a beat on every cycle of the burst, and every one was taken.
    assert counts["last"] - counts["first"] + 1 == counts["accepted"], counts
    assert counts["stalled"] == 0, counts
    await tb.finish()
