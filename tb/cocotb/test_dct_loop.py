"""cocotb tests of the whole DCT loop against the golden model: the transmit engine (R30–R33),
resynchronisation by the stack's ACK numbers (R32), and buffer requests with their timer and
high-water mark (R17–R19).

Like ``test_system``, every test runs without stalls and with random pauses on every channel
(R60), each step is checked by :class:`tb.TB`, and the tests also assert the outcome they are
about, so that they would still catch a model that is wrong in the same way as the RTL.
"""

import cocotb
from cocotb.triggers import RisingEdge

from tcpdct.records import (
    NO_CONNECTION, Command, Opcode, EventType, LegacyReason,
)
from tcpdct import regmap

from tb import PAUSE_PATTERNS
from frames import udp_frame
from test_system import (
    CONN_A, CONN_B, CONN_C, start, data, rcv_nxt, fill_legacy_ring, only, assert_legacy,
)


def beats(tb, frame):
    """Beats a frame takes in the receive packet buffer."""
    return -(-len(frame) // tb.params.data_bytes)


async def query(tb, index):
    """The STATE event of a QUERY of ``index``."""
    events = await tb.command(Command(Opcode.QUERY, index))
    assert [event.type for event in events][:2] == [EventType.STATE, EventType.CMD_DONE], events
    return events[0]


def types(events):
    return [event.type for event in events]


@cocotb.test()
@cocotb.parametrize(pauses=PAUSE_PATTERNS)
async def test_tx_updates_entry(dut, pauses):
    """A transmitted segment updates its entry (R33): last_ack_sent, rcv_wnd, snd_nxt when more
    advanced (serially, across the wrap); an ACK ahead of rcv_nxt moves it (R31), past data the
    hardware never saw, and placement continues from there. Frames that give no update, or
    whose key is not delegated, change nothing and are not counted in TX_MATCHED."""
    tb = await start(dut, pauses)
    index = 2
    await fill_legacy_ring(tb)
    await tb.command(CONN_A.delegate(index, rcv_nxt=0xffff_fff0, snd_nxt=0xffff_ff00,
                                     rcv_wnd=0x100))
    await tb.post_buffer(index, 4000)
    await tb.rx([CONN_A.rx(0xffff_fff0, data(tb, 100))])
    received = (0xffff_fff0 + 100) % 2**32

    # The stack ACKs what it got and sends 0x200 bytes: snd_nxt wraps.
    events = await tb.tx(CONN_A.tx(0xffff_ff00, data(tb, 0x200), ack=received, window=0x2345,
                                   flags="PA"))
    assert events == []
    state = await query(tb, index)
    assert (state.rcv_nxt, state.last_ack_sent, state.rcv_wnd, state.snd_nxt) == \
        (received, received, 0x2345, 0x100)

    # A retransmission does not move snd_nxt back; an older ACK does not move rcv_nxt back, but
    # is what was last sent.
    await tb.tx(CONN_A.tx(0xffff_ff80, data(tb, 0x40), ack=received - 30, window=0x1111))
    state = await query(tb, index)
    assert (state.rcv_nxt, state.last_ack_sent, state.rcv_wnd, state.snd_nxt) == \
        (received, received - 30, 0x1111, 0x100)

    # Without the ACK flag the ack field means nothing; SYN and FIN count one each in snd_nxt.
    await tb.tx(CONN_A.tx(0x100, b"", ack=received + 5000, flags="S", window=0x2222))
    await tb.tx(CONN_A.tx(0x101, data(tb, 9), ack=received, flags="FA", window=0x3333))
    state = await query(tb, index)
    assert (state.rcv_nxt, state.last_ack_sent, state.rcv_wnd, state.snd_nxt) == \
        (received, received, 0x3333, 0x101 + 9 + 1)

    # The stack got 700 bytes by another path (they never reached the core): its ACK says so.
    ahead = received + 700
    events = await tb.tx(CONN_A.tx(0x10b, b"", ack=ahead, window=0x4000, vlan=12))
    assert events == []
    state = await query(tb, index)
    assert (state.rcv_nxt, state.last_ack_sent, state.sync_req) == (ahead, ahead, 0)
    events = await tb.rx([CONN_A.rx(ahead, data(tb, 200), flags="PA")])
    assert types(events) == [EventType.RX_PLACED, EventType.BUF_DONE]
    # The bytes the core never saw, if they come late, are out of sequence.
    assert_legacy(await tb.rx([CONN_A.rx(received, data(tb, 700))]), LegacyReason.OUT_OF_SEQ,
                  index)

    # None of these hits the entry: the received direction's key, another connection, a
    # fragment, a frame shorter than its IPv4 total length, a frame that is not TCP.
    matched = await tb.read_reg("TX_MATCHED")
    assert matched == 5
    before = await query(tb, index)
    await tb.tx([CONN_A.rx(0x10b, b"", ack=ahead + 9999, window=7),
                 CONN_B.tx(0x10b, b"", ack=ahead + 9999, window=7),
                 CONN_A.tx(0x10b, data(tb, 40), ack=ahead + 9999, window=7, ip_flags=1),
                 CONN_A.tx(0x10b, data(tb, 40), ack=ahead + 9999, window=7)[:-41],
                 udp_frame(90)])
    assert await query(tb, index) == before
    assert await tb.read_reg("TX_MATCHED") == matched
    await tb.finish()


@cocotb.test()
@cocotb.parametrize(pauses=PAUSE_PATTERNS)
async def test_resync_by_ack(dut, pauses):
    """After an out-of-sequence frame, frames go to legacy (SYNC) until the stack's ACK reaches
    rcv_nxt; then a RESYNC event and placement again (R14, R32). An ACK ahead of rcv_nxt
    resynchronises too (R31 first)."""
    tb = await start(dut, pauses)
    index = 5
    await fill_legacy_ring(tb)
    await tb.command(CONN_B.delegate(index, rcv_nxt=1000))
    await tb.post_buffer(index, 6000)

    assert_legacy(await tb.rx([CONN_B.rx(1500, data(tb, 100))]), LegacyReason.OUT_OF_SEQ, index)
    assert_legacy(await tb.rx([CONN_B.rx(1000, data(tb, 200))]), LegacyReason.SYNC, index)
    assert rcv_nxt(tb, index) == 1200

    # An ACK behind rcv_nxt, and an ack field without the ACK flag, do not resynchronise.
    assert await tb.tx([CONN_B.tx(1, b"", ack=1100),
                        CONN_B.tx(1, b"", ack=1200, flags="P")]) == []
    assert_legacy(await tb.rx([CONN_B.rx(1200, data(tb, 50))]), LegacyReason.SYNC, index)

    events = await tb.tx(CONN_B.tx(1, b"", ack=1250))
    assert [(event.type, event.index, event.rcv_nxt) for event in events] == [
        (EventType.RESYNC, index, 1250)]
    assert not (await query(tb, index)).sync_req
    events = await tb.rx([CONN_B.rx(1250, data(tb, 300))])
    assert types(events) == [EventType.RX_PLACED]

    # Out of sequence again; this time the stack's ACK is ahead of everything the core saw.
    assert_legacy(await tb.rx([CONN_B.rx(9000, data(tb, 10))]), LegacyReason.OUT_OF_SEQ, index)
    events = await tb.tx([CONN_B.tx(1, b"", ack=2000), CONN_B.tx(1, b"", ack=2000)])
    assert [(event.type, event.rcv_nxt) for event in events] == [(EventType.RESYNC, 2000)]
    events = await tb.rx([CONN_B.rx(2000, data(tb, 300), flags="PA")])
    assert types(events) == [EventType.RX_PLACED, EventType.BUF_DONE]
    assert await tb.read_reg("RESYNCS") == 2
    await tb.finish()


@cocotb.test()
@cocotb.parametrize(pauses=PAUSE_PATTERNS)
async def test_buffer_request_post(dut, pauses):
    """A frame without room asks for a buffer once and is held (R17); frames of another
    connection, more than the receive engine has descriptors for, wait behind it and none is
    lost; a POST_BUFFER without enough room keeps it held without a second request; one with
    room releases it to the place path (R18)."""
    tb = await start(dut, pauses)
    a, b = 1, 4
    await fill_legacy_ring(tb)
    await tb.command(CONN_A.delegate(a, rcv_nxt=0x100))
    await tb.command(CONN_C.delegate(b, rcv_nxt=0x9000))
    _, tag0 = await tb.post_buffer(a, 500)
    await tb.post_buffer(b, 8000)

    held = data(tb, 1000)
    behind = [CONN_C.rx(0x9000 + 120 * number, data(tb, 120)) for number in range(10)]
    last = data(tb, 50)
    events = await tb.rx([CONN_A.rx(0x100, held)] + behind
                         + [CONN_A.rx(0x100 + 1000, last, flags="PA")])
    assert [(event.type, event.index, event.bytes) for event in events] == [
        (EventType.BUF_REQ, a, 500)]
    assert len(tb.model.queued_frames) == 11

    state = await query(tb, a)
    assert (state.buf_req, state.sync_req, state.rcv_nxt) == (1, 0, 0x100)
    _, tag1 = await tb.post_buffer(a, 300)
    assert tb.model.held is not None and tb.model.held.shortfall == 200

    address, tag2 = await tb.post_buffer(a, 2000)
    assert tb.model.held is None
    assert tb.host_memory.read(address, 200 + 50) == held[800:] + last
    assert await tb.read_reg("BUF_REQS") == 1
    state = await query(tb, a)
    assert (state.buf_req, state.sync_req, state.rcv_nxt) == (0, 0, 0x100 + 1050)
    assert rcv_nxt(tb, b) == 0x9000 + 1200
    assert not tb.model.entries[a].queue
    await tb.finish()


@cocotb.test()
@cocotb.parametrize(pauses=PAUSE_PATTERNS)
async def test_buffer_request_timeout(dut, pauses):
    """No buffer posted in time: once BUF_REQ_TIMEOUT cycles have passed the held frame goes to
    legacy (BUF_TIMEOUT), rcv_nxt advances past it and SYNC_REQ is set (R19); the frame behind
    it follows; then legacy SYNC until the stack's ACK resynchronises, and placement again."""
    tb = await start(dut, pauses)
    a, b = 0, 3
    timeout = 4000
    await tb.write_reg("BUF_REQ_TIMEOUT", timeout)
    assert await tb.read_reg("BUF_REQ_TIMEOUT") == timeout
    await fill_legacy_ring(tb)
    await tb.command(CONN_A.delegate(a, rcv_nxt=5000))
    await tb.command(CONN_B.delegate(b, rcv_nxt=77))
    await tb.post_buffer(a, 100)
    await tb.post_buffer(b, 100)

    frame = CONN_A.rx(5000, data(tb, 400))
    events = await tb.rx([frame])
    assert [(event.type, event.bytes) for event in events] == [(EventType.BUF_REQ, 300)]
    # Not before its time: a quarter of the timeout later, still held (no event).
    await tb.cycles(timeout // 4)
    assert await tb.rx([CONN_B.rx(77, data(tb, 60))]) == []

    events = await tb.expire_buffer_request()
    assert types(events) == [EventType.LEGACY, EventType.RX_PLACED]
    assert_legacy(events[:1], LegacyReason.BUF_TIMEOUT, a)
    assert tb.host_memory.read(
        next(g.address for g in tb.model.granted if g.tag == events[0].tag), len(frame)) == frame
    state = await query(tb, a)
    assert (state.sync_req, state.buf_req, state.rcv_nxt, state.n_buffers) == (1, 0, 5400, 1)

    assert_legacy(await tb.rx([CONN_A.rx(5400, data(tb, 50))]), LegacyReason.SYNC, a)
    events = await tb.tx(CONN_A.tx(1, b"", ack=5450))
    assert [(event.type, event.rcv_nxt) for event in events] == [(EventType.RESYNC, 5450)]
    events = await tb.rx([CONN_A.rx(5450, data(tb, 100))])
    assert types(events) == [EventType.RX_PLACED, EventType.BUF_DONE]
    await tb.finish()


@cocotb.test()
@cocotb.parametrize(pauses=PAUSE_PATTERNS)
async def test_high_water_mark(dut, pauses):
    """While a frame is held, frames of another connection fill the receive packet buffer; when
    it holds HWM_BYTES the held frame goes to legacy (HWM), SYNC_REQ is set, and the frames
    behind are placed (R19). Lowering HWM_BYTES below what is held ends a request at once."""
    tb = await start(dut, pauses)
    a, b = 3, 6
    await fill_legacy_ring(tb)
    await tb.command(CONN_A.delegate(a, rcv_nxt=0x7fff_fff0))
    await tb.command(CONN_B.delegate(b, rcv_nxt=0x10))
    await tb.post_buffer(b, 4 * 1448)

    held = CONN_A.rx(0x7fff_fff0, data(tb, 1448))
    behind = [CONN_B.rx(0x10 + 1448 * number, data(tb, 1448)) for number in range(3)]
    # The mark half a frame past the held frame and one behind it: clearly above those two,
    # clearly below three.
    below = (beats(tb, held) + beats(tb, behind[0])) * tb.params.data_bytes
    mark = below + beats(tb, behind[1]) * tb.params.data_bytes // 2
    await tb.write_reg("HWM_BYTES", mark)

    events = await tb.rx([held, behind[0]])
    assert [(event.type, event.index, event.bytes) for event in events] == [
        (EventType.BUF_REQ, a, 1448)]
    events = await tb.rx(behind[1:])
    assert types(events) == [EventType.LEGACY] + [EventType.RX_PLACED] * 3
    assert_legacy(events[:1], LegacyReason.HWM, a)
    assert [event.index for event in events[1:]] == [b] * 3
    state = await query(tb, a)
    assert (state.sync_req, state.buf_req, state.rcv_nxt) == (1, 0, (0x7fff_fff0 + 1448) % 2**32)

    # Resynchronised by the stack, the next frame asks again; the driver lowers the mark below
    # the one frame held, which ends the request at once.
    await tb.tx(CONN_A.tx(1, b"", ack=state.rcv_nxt))
    events = await tb.rx([CONN_A.rx(state.rcv_nxt, data(tb, 1000))])
    assert types(events) == [EventType.BUF_REQ]
    events = await tb.write_reg("HWM_BYTES", 1000)
    assert_legacy(events, LegacyReason.HWM, a)
    await tb.write_reg("HWM_BYTES", regmap.reset_value(regmap.by_name("HWM_BYTES"), tb.params))
    assert await tb.read_reg("LEGACY_HWM") == 2
    await tb.finish()


@cocotb.test()
@cocotb.parametrize(pauses=PAUSE_PATTERNS)
async def test_hold_ended_by_stack(dut, pauses):
    """A held frame is decided again after every command and transmitted frame: a RESYNC to the
    same rcv_nxt asks again, one elsewhere sends it to legacy out of sequence; so does an ACK
    ahead of it (R31); a RECLAIM makes it, and the frames of the connection behind it, frames of
    no connection, while frames of another connection behind it are placed."""
    tb = await start(dut, pauses)
    a, b = 2, 7
    await fill_legacy_ring(tb)
    await tb.command(CONN_A.delegate(a, rcv_nxt=100))
    await tb.command(CONN_B.delegate(b, rcv_nxt=200))
    _, tag = await tb.post_buffer(a, 100)
    await tb.post_buffer(b, 4000)

    # RESYNC to where the frame is: the request episode starts over.
    assert types(await tb.rx([CONN_A.rx(100, data(tb, 300))])) == [EventType.BUF_REQ]
    events = await tb.command(Command(Opcode.RESYNC, a, rcv_nxt=100))
    assert [(event.type, event.bytes if event.type == EventType.BUF_REQ else None)
            for event in events] == [(EventType.CMD_DONE, None), (EventType.BUF_REQ, 200)]
    # RESYNC elsewhere: the held frame is out of sequence now.
    events = await tb.command(Command(Opcode.RESYNC, a, rcv_nxt=400))
    assert types(events) == [EventType.CMD_DONE, EventType.LEGACY]
    assert_legacy(events[1:], LegacyReason.OUT_OF_SEQ, a)
    await tb.tx(CONN_A.tx(1, b"", ack=400))

    # An ACK past the held frame.
    assert types(await tb.rx([CONN_A.rx(400, data(tb, 300))])) == [EventType.BUF_REQ]
    events = await tb.tx(CONN_A.tx(1, b"", ack=450))
    assert types(events) == [EventType.LEGACY]
    assert_legacy(events, LegacyReason.OUT_OF_SEQ, a)
    await tb.tx(CONN_A.tx(1, b"", ack=450))

    # RECLAIM while held, with frames of both connections behind.
    frames = [CONN_A.rx(450, data(tb, 300)), CONN_B.rx(200, data(tb, 100)),
              CONN_A.rx(750, data(tb, 10)), CONN_B.rx(300, data(tb, 100))]
    assert types(await tb.rx(frames)) == [EventType.BUF_REQ]
    events = await tb.command(Command(Opcode.RECLAIM, a))
    assert types(events) == [EventType.STATE, EventType.BUF_DONE, EventType.CMD_DONE,
                             EventType.LEGACY, EventType.RX_PLACED, EventType.LEGACY,
                             EventType.RX_PLACED]
    assert (events[0].buf_req, events[0].rcv_nxt) == (1, 450)
    assert (events[1].tag, events[1].bytes) == (tag, 0)
    for event in only(events, EventType.LEGACY):
        assert (event.reason, event.index) == (LegacyReason.NO_MATCH, NO_CONNECTION)
    assert await tb.read_reg("BUF_REQS") == 4
    await tb.finish()


@cocotb.test()
@cocotb.parametrize(pauses=PAUSE_PATTERNS)
async def test_rx_and_tx_same_entry(dut, pauses):
    """A received frame and a transmitted segment of the same connection at the same time, at
    many relative delays, so that both reach the sequencer in the same cycle: neither update of
    the entry is lost (RX: rcv_nxt; TX: last_ack_sent, rcv_wnd, snd_nxt)."""
    tb = await start(dut, pauses)
    together = [0]
    cocotb.start_soon(count_together(dut, together))
    index = 1
    await tb.command(CONN_C.delegate(index, rcv_nxt=0x4000_0000, snd_nxt=0x10))
    await tb.post_buffer(index, 20000)
    rng = tb.rng
    snd_nxt = 0x10
    for number in range(16):
        before = rcv_nxt(tb, index)
        length = rng.randrange(1, 1449)
        sent = rng.randrange(0, 200)
        # An ACK that is not ahead of rcv_nxt, so that the two updates commute.
        ack = (before - rng.randrange(0, 50)) % 2**32
        window = rng.randrange(1, 0x10000)
        received = CONN_C.rx(before, data(tb, length))
        transmitted = CONN_C.tx(snd_nxt, data(tb, sent), ack=ack, window=window)
        # After its last beat a received frame takes a few cycles more than a transmitted one
        # to reach the sequencer (the parser has more stages than the transmit engine): a sweep
        # of delays from a little before its last beat to several cycles after lines them up.
        delay = beats(tb, received) - beats(tb, transmitted) + number % 8 - 2
        events = await tb.rx_and_tx([received], [transmitted], tx_delay=delay)
        assert types(events) == [EventType.RX_PLACED]
        snd_nxt += sent
        state = await query(tb, index)
        assert (state.rcv_nxt, state.last_ack_sent, state.rcv_wnd, state.snd_nxt) == \
            ((before + length) % 2**32, ack, window, snd_nxt)
    tb.log.info("a received frame and a transmit update waited together for the sequencer "
                "in %d cycles", together[0])
    if pauses == "none":
        assert together[0], "the sweep of delays no longer makes a received frame and a " \
            "transmit update wait for the sequencer together: recentre it"
    await tb.finish()


async def count_together(dut, counter):
    """Count the cycles in which a received frame's descriptor and a transmit update both wait
    for the receive engine's sequencer (internal signals of the top level: evidence that the
    test reaches the arbitration, not a check)."""
    clock_edge = RisingEdge(dut.clk)
    while True:
        await clock_edge
        if int(dut.descriptor__valid.value) and int(dut.tx_update__valid.value):
            counter[0] += 1
