"""cocotb tests of the whole core against the golden model.

Every test runs once without stalls and once with random idle cycles on every input and random
back-pressure on every output and AXI channel (R60). Each step is checked by :class:`tb.TB`
(events, host memory, DMA write strobes); the tests also assert the outcome they are about
(reason, tag, bytes), so that a test still means something if the model were wrong in the same
way as the RTL. Registers are compared with the model at the end of every test.
"""

import collections
import itertools

import cocotb

from tcpdct.records import (
    NO_CONNECTION, Command, Opcode, CmdStatus, EventType, LegacyReason, DropReason,
)

from tb import TB, PAUSE_PATTERNS, HOST_MEMORY_BYTES
from frames import (
    Conn, IP_OPTIONS_NOP, arp_frame, ipv6_frame, udp_frame, corrupt_ip_checksum,
    corrupt_tcp_checksum, pad,
)


LEGACY_BYTES = 1536

#: Connections used by the tests, each with its own key (R1).
CONN_A = Conn(remote_port=40001)
CONN_B = Conn(remote_port=40002, remote_ip="10.0.1.8")
CONN_C = Conn(remote_port=40003, local_port=443)
UNKNOWN = Conn(remote_port=1234, remote_ip="192.168.5.5")


async def start(dut, pauses):
    tb = TB(dut)
    tb.set_pauses(pauses)
    await tb.reset()
    return tb


def rcv_nxt(tb, index):
    return tb.model.entries[index].rcv_nxt


def data(tb, length):
    return tb.rng.randbytes(length)


async def fill_legacy_ring(tb, length=LEGACY_BYTES):
    """Post legacy buffers until the ring is full."""
    while len(tb.model.legacy_ring) < tb.params.legacy_ring_depth:
        await tb.post_legacy(length, cross_page=tb.rng.random() < 0.5)


async def resync(tb, index):
    """Explicit resync by the stack at what the model says the stream has reached."""
    await tb.command(Command(Opcode.RESYNC, index, rcv_nxt=rcv_nxt(tb, index)))


def only(events, event_type):
    return [event for event in events if event.type == event_type]


def assert_legacy(events, reason, index):
    assert len(events) == 1 and events[0].type == EventType.LEGACY, events
    assert events[0].reason == reason, f"reason {LegacyReason(events[0].reason).name}"
    assert events[0].index == index, events


def assert_drop(events, reason, index=NO_CONNECTION):
    assert len(events) == 1 and events[0].type == EventType.DROP, events
    assert events[0].reason == reason, f"reason {DropReason(events[0].reason).name}"
    assert events[0].index == index, events


def assert_status(events, status):
    assert events[-1].type == EventType.CMD_DONE and events[-1].status == status, \
        f"expected {status.name}, got {events}"


@cocotb.test()
@cocotb.parametrize(pauses=PAUSE_PATTERNS)
async def test_place_one_buffer(dut, pauses):
    """In-sequence payload lands in one posted buffer; sequence numbers wrap (R3, R20)."""
    tb = await start(dut, pauses)
    await tb.command(CONN_A.delegate(3, rcv_nxt=0xffff_ff80))
    address, tag = await tb.post_buffer(3, 3000, cross_page=True)

    first = data(tb, 100)
    events = await tb.rx([CONN_A.rx(0xffff_ff80, first, ts=(7, 9))])
    assert [event.type for event in events] == [EventType.RX_PLACED]
    assert events[0].length == 100 and events[0].ts_present and events[0].tsval == 7
    assert tb.host_memory.read(address, 100) == first

    # Across the wrap of sequence space, a 1-byte payload padded to 60 bytes (R10), a VLAN
    # tag, and a segment without timestamps.
    frames = [CONN_A.rx(rcv_nxt(tb, 3), data(tb, 300)),
              CONN_A.rx(seq=(0xffff_ff80 + 400) % 2**32, payload=b"\x5a", ts=None),
              CONN_A.rx(seq=(0xffff_ff80 + 401) % 2**32, payload=data(tb, 77), vlan=42),
              CONN_A.rx(seq=(0xffff_ff80 + 478) % 2**32, payload=data(tb, 64), ts=None)]
    assert len(frames[1]) == 60
    events = await tb.rx(frames)
    assert [event.type for event in events] == [EventType.RX_PLACED] * 4
    assert events[1].length == 1 and events[3].ts_present == 0
    assert rcv_nxt(tb, 3) == (0xffff_ff80 + 542) % 2**32

    state = await tb.command(Command(Opcode.QUERY, 3))
    assert state[0].type == EventType.STATE and state[0].rcv_nxt == rcv_nxt(tb, 3)
    assert state[0].n_buffers == 1
    assert tb.model.entries[3].queue[0].tag == tag
    await tb.finish()


@cocotb.test()
@cocotb.parametrize(pauses=PAUSE_PATTERNS)
async def test_span_buffers(dut, pauses):
    """A payload continues into the next posted buffer when one fills (R20, claim 11)."""
    tb = await start(dut, pauses)
    await tb.command(CONN_B.delegate(0, rcv_nxt=5000))
    sizes = (37, 1001, 515, 2000)
    buffers = [await tb.post_buffer(0, size, cross_page=number == 1)
               for number, size in enumerate(sizes)]

    events = await tb.rx([CONN_B.rx(5000, data(tb, 30)),
                          CONN_B.rx(5030, data(tb, 1200)),
                          CONN_B.rx(6230, data(tb, 323))])
    assert [event.type for event in events] == [
        EventType.RX_PLACED,
        EventType.RX_PLACED, EventType.BUF_DONE, EventType.BUF_DONE,
        EventType.RX_PLACED, EventType.BUF_DONE]
    done = only(events, EventType.BUF_DONE)
    assert [(event.tag, event.bytes) for event in done] == [
        (buffers[0][1], 37), (buffers[1][1], 1001), (buffers[2][1], 515)]

    # Refill behind the remaining buffer; the second maximum-size segment spans both.
    buffers.append(await tb.post_buffer(0, 999, cross_page=True))
    events = await tb.rx([CONN_B.rx(6553, data(tb, 1448)), CONN_B.rx(8001, data(tb, 1448))])
    assert [(event.tag, event.bytes) for event in only(events, EventType.BUF_DONE)] == [
        (buffers[3][1], 2000)]
    assert tb.model.entries[0].queue[0].filled == 896
    await tb.finish()


@cocotb.test()
@cocotb.parametrize(pauses=PAUSE_PATTERNS)
async def test_psh_completion(dut, pauses):
    """PSH completes the partly filled buffer its last byte landed in (claim 11)."""
    tb = await start(dut, pauses)
    await tb.command(CONN_C.delegate(5, rcv_nxt=1))
    (_, tag0), (_, tag1), (_, tag2) = [await tb.post_buffer(5, 700) for _ in range(3)]

    events = await tb.rx([CONN_C.rx(1, data(tb, 100), flags="PA")])
    assert [(event.type, event.tag if event.type == EventType.BUF_DONE else None)
            for event in events] == [(EventType.RX_PLACED, None), (EventType.BUF_DONE, tag0)]
    assert events[1].bytes == 100

    # The next segment starts in the next buffer and spills into the third; PSH completes the
    # full one and the partly filled one.
    events = await tb.rx([CONN_C.rx(101, data(tb, 900), flags="PA")])
    assert [(event.tag, event.bytes) for event in only(events, EventType.BUF_DONE)] == [
        (tag1, 700), (tag2, 200)]
    assert not tb.model.entries[5].queue
    await tb.finish()


@cocotb.test()
@cocotb.parametrize(pauses=PAUSE_PATTERNS)
async def test_full_buffer_completion(dut, pauses):
    """A buffer filled to the last byte completes without PSH; then the queue is empty, the next
    segment has no room and asks for a buffer (R17), and the buffer posted for it takes it
    (R18)."""
    tb = await start(dut, pauses)
    await fill_legacy_ring(tb)
    await tb.command(CONN_A.delegate(1, rcv_nxt=0x8000_0000))
    _, tag = await tb.post_buffer(1, 1448 + 333, cross_page=True)
    events = await tb.rx([CONN_A.rx(0x8000_0000, data(tb, 1448)),
                          CONN_A.rx(0x8000_0000 + 1448, data(tb, 333))])
    assert [event.type for event in events] == [EventType.RX_PLACED, EventType.RX_PLACED,
                                                EventType.BUF_DONE]
    assert events[2].tag == tag and events[2].bytes == 1781

    payload = data(tb, 10)
    events = await tb.rx([CONN_A.rx(rcv_nxt(tb, 1), payload, flags="PA")])
    assert [(event.type, event.index, event.bytes) for event in events] == [
        (EventType.BUF_REQ, 1, 10)]
    assert tb.model.entries[1].buf_req and not tb.model.entries[1].sync_req

    address, tag = await tb.post_buffer(1, 10)
    assert tb.model.held is None
    assert tb.host_memory.read(address, 10) == payload
    assert not tb.model.entries[1].buf_req
    await tb.finish()


@cocotb.test()
@cocotb.parametrize(pauses=PAUSE_PATTERNS)
async def test_alignment_sweep(dut, pauses):
    """Payloads and frames that start and end on every byte lane: user and legacy buffers at
    every address offset modulo the data width, payloads of many lengths, headers of 66, 70,
    78 and 82 bytes (timestamps or not, VLAN tag or not), and buffers that end at the top of
    the simulated host memory, so that the upper address bits are set."""
    tb = await start(dut, pauses)
    lanes = tb.params.data_bytes
    index = 0
    seq = 0x7fff_fff0
    await tb.command(CONN_B.delegate(index, rcv_nxt=seq))
    headers = [dict(), dict(ts=None), dict(vlan=5), dict(vlan=5, ts=None)]
    for offset in range(lanes):
        lengths = [1 + (3 * offset + 5 * number) % (2 * lanes + 3) for number in range(5)]
        # Room for every payload, so that PSH (not a full buffer) completes it at any width.
        size = sum(lengths) + 1
        address = (tb.alloc(size + 2 * lanes) & ~(lanes - 1)) + lanes + offset
        _, tag = await tb.post_buffer(index, size, address=address)
        frames = []
        for number, length in enumerate(lengths):
            frames.append(CONN_B.rx(seq, data(tb, length), flags="PA" if number == 4 else "A",
                                    **headers[(offset + number) % 4]))
            seq = (seq + length) % 2**32
        events = await tb.rx(frames)
        assert [(event.tag, event.bytes) for event in only(events, EventType.BUF_DONE)] == \
            [(tag, sum(lengths))]

    # Legacy frames ending on every lane, a ring's worth at a time: at 512 bits there are more
    # lanes than legacy buffers.
    lengths = [60 + 3 * offset for offset in range(lanes)]
    depth = tb.params.legacy_ring_depth
    for first in range(0, lanes, depth):
        chunk = range(first, min(lanes, first + depth))
        for offset in chunk:
            address = (tb.alloc(lengths[offset] + 2 * lanes) & ~(lanes - 1)) + lanes + offset
            await tb.post_legacy(lengths[offset], address=address)
        events = await tb.rx([udp_frame(lengths[offset]) for offset in chunk])
        assert [(event.type, event.frame_len) for event in events] == \
            [(EventType.LEGACY, lengths[offset]) for offset in chunk]

    top = HOST_MEMORY_BYTES
    _, tag = await tb.post_buffer(index, 2 * 1448, address=top - 2 * 1448)
    await tb.post_legacy(tb.params.max_frame_bytes, address=top - tb.params.max_frame_bytes)
    events = await tb.rx([CONN_B.rx(seq, data(tb, 1448)), CONN_B.rx(seq + 1448, data(tb, 1448)),
                          udp_frame(tb.params.max_frame_bytes)])
    assert [event.type for event in events] == [EventType.RX_PLACED, EventType.RX_PLACED,
                                                EventType.BUF_DONE, EventType.LEGACY]
    await tb.finish()


@cocotb.test()
@cocotb.parametrize(pauses=PAUSE_PATTERNS)
async def test_legacy_reasons(dut, pauses):
    """Every legacy reason a decision gives (R11-R16, R21), every kind of special frame (R13),
    and a frame without room asking for a buffer instead (R17, R18). The reasons that end a
    buffer request, BUF_TIMEOUT and HWM, are in ``test_dct_loop``."""
    tb = await start(dut, pauses)
    index = 6
    await tb.command(CONN_A.delegate(index, rcv_nxt=0x1000))
    await tb.post_buffer(index, 1000)

    def seq():
        return rcv_nxt(tb, index)

    async def expect(frame, reason, conn_index=index):
        await fill_legacy_ring(tb)
        events = await tb.rx([frame])
        assert_legacy(events, reason, conn_index)
        assert tb.host_memory.read(
            next(g.address for g in tb.model.granted if g.tag == events[0].tag),
            len(frame)) == bytes(frame)
        return events

    for frame in (udp_frame(200), arp_frame(), ipv6_frame(90),
                  CONN_A.rx(seq(), data(tb, 24), frag=1)):
        await expect(frame, LegacyReason.NOT_TCP, NO_CONNECTION)
    await expect(UNKNOWN.rx(1, data(tb, 50)), LegacyReason.NO_MATCH, NO_CONNECTION)

    events = await expect(corrupt_ip_checksum(CONN_A.rx(seq(), data(tb, 40))),
                          LegacyReason.CHECKSUM, NO_CONNECTION)
    assert events[0].ip_csum_bad == 1 and events[0].tcp_csum_bad == 0
    events = await expect(corrupt_tcp_checksum(CONN_A.rx(seq(), data(tb, 40))),
                          LegacyReason.CHECKSUM, NO_CONNECTION)
    assert events[0].ip_csum_bad == 0 and events[0].tcp_csum_bad == 1

    specials = [
        dict(flags="S"), dict(flags="FA"), dict(flags="R"), dict(flags="UA", urgent=3),
        dict(ip_flags=1),                                       # first fragment (MF)
        dict(ip_options=IP_OPTIONS_NOP),
        dict(options=[("MSS", 1460)]),
        dict(options=[("NOP", None), ("WScale", 7), ("Timestamp", (1, 2))]),
        dict(options=[("SAckOK", b""), ("Timestamp", (1, 2))]),
        dict(options=[("NOP", None), ("NOP", None), ("SAck", (100, 200)),
                      ("Timestamp", (1, 2))]),
    ]
    for kwargs in specials:
        before = seq()
        await expect(CONN_A.rx(before, data(tb, 20), **kwargs), LegacyReason.SPECIAL)
        assert tb.model.entries[index].sync_req
        # rcv_nxt follows bytes that went to legacy in sequence (SPEC §3).
        assert seq() != before
        await resync(tb, index)

    await expect(CONN_A.rx(seq(), data(tb, 20), flags="S"), LegacyReason.SPECIAL)
    await expect(CONN_A.rx(seq(), data(tb, 20)), LegacyReason.SYNC)
    await resync(tb, index)

    await expect(CONN_A.rx(seq(), b""), LegacyReason.NO_PAYLOAD)
    assert not tb.model.entries[index].sync_req
    await expect(CONN_A.rx((seq() + 1000) % 2**32, data(tb, 20)), LegacyReason.OUT_OF_SEQ)
    await resync(tb, index)

    # No room: not legacy but a request for a buffer, and the frame waits for it.
    room = tb.model.entries[index].room
    events = await tb.rx([CONN_A.rx(seq(), data(tb, 1200))])
    assert [(event.type, event.bytes) for event in events] == [(EventType.BUF_REQ, 1200 - room)]
    events = await tb.command(Command(Opcode.POST_BUFFER, index, address=tb.alloc(600),
                                      length=600, tag=tb.next_tag()))
    assert [event.type for event in events] == [EventType.CMD_DONE, EventType.RX_PLACED,
                                                EventType.BUF_DONE]

    events = await tb.rx([CONN_A.rx(seq(), data(tb, 300))])
    assert events[0].type == EventType.RX_PLACED
    await tb.finish()


@cocotb.test()
@cocotb.parametrize(pauses=PAUSE_PATTERNS)
async def test_drop_reasons(dut, pauses):
    """Every drop reason (R11, R22); a delegated frame that is dropped changes nothing."""
    tb = await start(dut, pauses)
    index = 2
    await tb.command(CONN_B.delegate(index, rcv_nxt=777))
    await tb.post_buffer(index, 3000, cross_page=True)

    # No legacy buffer posted: non-delegated and delegated legacy frames are dropped.
    events = await tb.rx([udp_frame(300)])
    assert_drop(events, DropReason.NO_LEGACY_BUFFER)
    events = await tb.rx([CONN_B.rx(777, data(tb, 50), flags="FA")])
    assert_drop(events, DropReason.NO_LEGACY_BUFFER, index)
    assert not tb.model.entries[index].sync_req and rcv_nxt(tb, index) == 777

    # Too small: the buffer stays at the head of the ring for a frame that fits.
    _, small_tag = await tb.post_legacy(64)
    events = await tb.rx([udp_frame(200)])
    assert_drop(events, DropReason.LEGACY_TOO_SMALL)
    events = await tb.rx([arp_frame()])
    assert events[0].type == EventType.LEGACY and events[0].tag == small_tag

    await fill_legacy_ring(tb, 1600)
    good = CONN_B.rx(777, data(tb, 200))
    truncated_ip = CONN_B.rx(777, data(tb, 200))[:-20]
    frames = [
        (good, True),                                   # MAC error flag on the last beat
        bytes(10),                                      # shorter than an Ethernet header
        bytes.fromhex("020000000002020000000001810000"),   # 802.1Q tag cut short
        good[:30],                                      # shorter than an IPv4 header
        truncated_ip,                                   # shorter than the IPv4 total length
        pad(udp_frame(1600), 1600),                     # longer than max_frame_bytes
        udp_frame(tb.params.max_frame_bytes + 1),
    ]
    events = await tb.rx(frames)
    assert [DropReason(event.reason) for event in events] == [
        DropReason.MAC_ERROR, DropReason.TRUNCATED, DropReason.TRUNCATED,
        DropReason.TRUNCATED, DropReason.TRUNCATED, DropReason.OVERSIZE, DropReason.OVERSIZE]
    assert all(event.type == EventType.DROP for event in events)

    # Nothing of the above touched the connection: the good frame still places, and a frame of
    # exactly max_frame_bytes is accepted.
    events = await tb.rx([good, udp_frame(tb.params.max_frame_bytes)])
    assert events[0].type == EventType.RX_PLACED
    assert_legacy(events[1:], LegacyReason.NOT_TCP, NO_CONNECTION)
    await tb.finish()


@cocotb.test()
@cocotb.parametrize(pauses=PAUSE_PATTERNS)
async def test_bad_checksums(dut, pauses):
    """Frames with a bad checksum never reach a user buffer nor change the DCT (R11)."""
    tb = await start(dut, pauses)
    index = 4
    await tb.command(CONN_C.delegate(index, rcv_nxt=42))
    await tb.post_buffer(index, 2000)
    await fill_legacy_ring(tb)

    good = CONN_C.rx(42, data(tb, 333), flags="PA")
    bad = [corrupt_ip_checksum(good), corrupt_tcp_checksum(good),
           corrupt_tcp_checksum(corrupt_ip_checksum(good)),
           corrupt_tcp_checksum(CONN_C.rx(42, data(tb, 20), flags="S")),
           corrupt_tcp_checksum(CONN_C.rx(42, data(tb, 1), vlan=7))]
    events = await tb.rx(bad)
    assert [(event.reason, event.ip_csum_bad, event.tcp_csum_bad) for event in events] == [
        (LegacyReason.CHECKSUM, 1, 0), (LegacyReason.CHECKSUM, 0, 1),
        (LegacyReason.CHECKSUM, 1, 1), (LegacyReason.CHECKSUM, 0, 1),
        (LegacyReason.CHECKSUM, 0, 1)]
    assert all(event.index == NO_CONNECTION for event in events)

    # The checksum of a first fragment is not checked (it covers bytes not in the frame).
    events = await tb.rx([corrupt_tcp_checksum(CONN_C.rx(42, data(tb, 20), ip_flags=1))])
    assert_legacy(events, LegacyReason.SPECIAL, index)
    await resync(tb, index)

    events = await tb.rx([CONN_C.rx(rcv_nxt(tb, index), data(tb, 333), flags="PA")])
    assert events[0].type == EventType.RX_PLACED and events[1].bytes == 333
    await tb.finish()


@cocotb.test()
@cocotb.parametrize(pauses=PAUSE_PATTERNS)
async def test_bad_commands(dut, pauses):
    """Every error status; a bad command changes nothing (R41)."""
    tb = await start(dut, pauses)
    n = tb.params.n_entries
    top = 2**64

    async def expect(cmd, status):
        assert_status(await tb.command(cmd), status)

    for opcode in (0, 7, 0x80, 0xff):
        await expect(opcode | 1 << 16, CmdStatus.BAD_OPCODE)
    await expect(CONN_A.delegate(n, rcv_nxt=1), CmdStatus.BAD_INDEX)
    await expect(Command(Opcode.QUERY, 0xffff), CmdStatus.BAD_INDEX)
    await expect(Command(Opcode.POST_BUFFER, n, address=tb.alloc(10), length=10, tag=1),
                 CmdStatus.BAD_INDEX)

    for opcode in (Opcode.RESYNC, Opcode.RECLAIM, Opcode.QUERY):
        await expect(Command(opcode, 1), CmdStatus.NOT_DELEGATED)
    await expect(Command(Opcode.POST_BUFFER, 1, address=tb.alloc(10), length=10, tag=2),
                 CmdStatus.NOT_DELEGATED)

    await expect(CONN_A.delegate(1, rcv_nxt=100), CmdStatus.OK)
    await expect(CONN_B.delegate(1, rcv_nxt=100), CmdStatus.IN_USE)
    await expect(CONN_A.delegate(n - 1, rcv_nxt=100), CmdStatus.DUPLICATE_KEY)

    for opcode in (Opcode.POST_BUFFER, Opcode.POST_LEGACY):
        await expect(Command(opcode, 1, address=tb.alloc(10), length=0, tag=3),
                     CmdStatus.ZERO_LENGTH)
        await expect(Command(opcode, 1, address=top - 10, length=11, tag=4),
                     CmdStatus.ADDRESS_WRAP)
        await expect(Command(opcode, 1, address=top - 1, length=0xffff_ffff, tag=5),
                     CmdStatus.ADDRESS_WRAP)
    # Ending exactly at the top of the address space is allowed.
    await expect(Command(Opcode.POST_BUFFER, 1, address=top - 16, length=16, tag=6), CmdStatus.OK)

    for _ in range(tb.params.buffers_per_conn - 1):
        await tb.post_buffer(1, 100)
    await expect(Command(Opcode.POST_BUFFER, 1, address=tb.alloc(10), length=10, tag=7),
                 CmdStatus.QUEUE_FULL)
    await fill_legacy_ring(tb)
    await expect(Command(Opcode.POST_LEGACY, address=tb.alloc(10), length=10, tag=8),
                 CmdStatus.QUEUE_FULL)

    # Nothing above changed the entry.
    state = (await tb.command(Command(Opcode.QUERY, 1)))[0]
    assert state.rcv_nxt == 100 and state.n_buffers == tb.params.buffers_per_conn
    assert not state.sync_req and state.valid
    # The buffer at the top of the address space comes back unused.
    events = await tb.command(Command(Opcode.RECLAIM, 1))
    assert [(event.tag, event.bytes) for event in only(events, EventType.BUF_DONE)][0] == (6, 0)
    await tb.finish()


@cocotb.test()
@cocotb.parametrize(pauses=PAUSE_PATTERNS)
async def test_reclaim_query(dut, pauses):
    """QUERY reports the entry; RECLAIM returns its state and every buffer with its filled bytes,
    and the key then takes the non-delegated path."""
    tb = await start(dut, pauses)
    index = 7
    await fill_legacy_ring(tb)
    await tb.command(CONN_A.delegate(index, rcv_nxt=0xfffff000, snd_nxt=0x1234, rcv_wnd=0x4000))
    state = (await tb.command(Command(Opcode.QUERY, index)))[0]
    assert (state.valid, state.rcv_nxt, state.snd_nxt, state.rcv_wnd, state.last_ack_sent) == \
        (1, 0xfffff000, 0x1234, 0x4000, 0xfffff000)

    tags = [(await tb.post_buffer(index, 600, cross_page=True))[1] for _ in range(3)]
    await tb.rx([CONN_A.rx(0xfffff000, data(tb, 900))])
    await tb.rx([CONN_A.rx(0xfffff000 + 5000, data(tb, 10))])     # out of sequence: SYNC_REQ
    state = (await tb.command(Command(Opcode.QUERY, index)))[0]
    assert state.sync_req and state.n_buffers == 2

    events = await tb.command(Command(Opcode.RECLAIM, index))
    assert [event.type for event in events] == [EventType.STATE, EventType.BUF_DONE,
                                                EventType.BUF_DONE, EventType.CMD_DONE]
    assert [(event.tag, event.bytes) for event in events[1:3]] == [(tags[1], 300), (tags[2], 0)]
    assert_status(await tb.command(Command(Opcode.QUERY, index)), CmdStatus.NOT_DELEGATED)

    events = await tb.rx([CONN_A.rx(0xfffff000 + 900, data(tb, 10))])
    assert_legacy(events, LegacyReason.NO_MATCH, NO_CONNECTION)

    # The same key may be delegated again, at another index.
    await tb.command(CONN_A.delegate(0, rcv_nxt=0xfffff000 + 910))
    await tb.post_buffer(0, 100)
    events = await tb.rx([CONN_A.rx(0xfffff000 + 910, data(tb, 100))])
    assert [event.type for event in events] == [EventType.RX_PLACED, EventType.BUF_DONE]
    await tb.finish()


@cocotb.test()
@cocotb.parametrize(pauses=PAUSE_PATTERNS)
async def test_tx_passthrough(dut, pauses):
    """Transmitted frames leave unchanged, byte for byte and in order (R30)."""
    tb = await start(dut, pauses)
    index = 2
    await tb.command(CONN_A.delegate(index, rcv_nxt=3000))
    await tb.post_buffer(index, 1000)
    await fill_legacy_ring(tb)

    await tb.tx(CONN_A.tx(0x1000_0000, data(tb, 100), ack=3000, flags="PA"))
    frames = [bytes([0xa5]), data(tb, 13), data(tb, 63), pad(arp_frame()), udp_frame(1000),
              CONN_A.tx(0x1000_0064, data(tb, 1448), ack=3000),
              CONN_A.tx(0x1000_0064 + 1448, b"", ack=3000),
              CONN_B.tx(5, data(tb, 7), vlan=3),
              data(tb, tb.params.max_frame_bytes), data(tb, 2000)]
    await tb.tx(frames)
    # Receive still works after, and a transmitted frame in between does not disturb it.
    await tb.rx([CONN_A.rx(3000, data(tb, 100))])
    await tb.tx(udp_frame(64))
    await tb.rx([CONN_A.rx(3100, data(tb, 100), flags="PA"), udp_frame(100)])
    # Only the segments of the delegated connection hit the DCT: not the one of CONN_B, nor
    # frames that are not IPv4/TCP.
    assert await tb.read_reg("TX_FRAMES") == 12
    assert await tb.read_reg("TX_MATCHED") == 3
    await tb.finish()


@cocotb.test()
@cocotb.parametrize(pauses=PAUSE_PATTERNS)
async def test_receive_burst(dut, pauses):
    """Twice as many back-to-back frames as the receive packet buffer holds, placed and legacy
    interleaved; with random pauses the DMA data channel and the event stream are also slowed
    down hard, so that the receive stream must be back-pressured without loss (R23, R60)."""
    tb = await start(dut, pauses)
    if pauses == "random":
        tb.host_memory.w_channel.set_pause_generator(itertools.cycle((1, 1, 0)))
        tb.evt_sink.set_pause_generator(itertools.cycle((1, 1, 1, 0)))
    await tb.command(CONN_A.delegate(0, rcv_nxt=0xffff_0000))
    for _ in range(tb.params.buffers_per_conn):
        await tb.post_buffer(0, 9001, cross_page=True)
    await fill_legacy_ring(tb)
    frames = []
    seq = 0xffff_0000
    n_frames = 2 * tb.params.rx_buffer_bytes // 1514 + 2
    for number in range(n_frames):
        if number % 3 == 2:
            frames.append(udp_frame(1514))
        else:
            frames.append(CONN_A.rx(seq, data(tb, 1448)))
            seq += 1448
    events = await tb.rx(frames)
    assert len(only(events, EventType.LEGACY)) == n_frames // 3
    assert len(only(events, EventType.RX_PLACED)) == n_frames - n_frames // 3
    await tb.finish()


async def end_hold(tb, conn, held):
    """End the buffer request of ``held`` (a :class:`model.HeldFrame` of ``conn``) one of the
    ways the core allows, chosen at random: a posted buffer with room (R18), the stack's ACK past
    the frame (R31: it goes to legacy out of sequence), RECLAIM, or the timer (R19)."""
    rng = tb.rng
    entry = tb.model.entries[held.index]
    way = rng.random()
    if len(entry.queue) < tb.params.buffers_per_conn and way < 0.6:
        ended_by = "POST_BUFFER"
        await tb.post_buffer(held.index, held.shortfall + rng.randrange(0, 2000))
    elif way < 0.75:
        ended_by = "ACK"
        await tb.tx(conn.tx(entry.snd_nxt, b"", ack=(entry.rcv_nxt + rng.randrange(1, 5000))))
    elif way < 0.85 or tb.model.queued_frames:
        ended_by = "RECLAIM"
        # The timer only when nothing waits behind: a frame behind could start a new request
        # that the short timeout would end before the model is told.
        await tb.command(Command(Opcode.RECLAIM, held.index))
        await tb.command(conn.delegate(held.index, rcv_nxt=rng.randrange(2**32)))
    else:
        ended_by = "timer"
        default = tb.model.registers["BUF_REQ_TIMEOUT"]
        await tb.expire_buffer_request(timeout_cycles=500)
        await tb.write_reg("BUF_REQ_TIMEOUT", default)
    assert tb.model.held is None or tb.model.held.frame != held.frame
    return ended_by


@cocotb.test()
@cocotb.parametrize(pauses=PAUSE_PATTERNS)
async def test_random_traffic(dut, pauses):
    """A random mix of commands, received and transmitted frames over several connections, in
    bursts that fill the receive packet buffer, with buffer requests held while other frames
    queue behind and ended every way there is; registers are compared with the model after
    every phase."""
    tb = await start(dut, pauses)
    rng = tb.rng
    conns = {1: CONN_A, 3: CONN_B, 4: Conn(remote_port=40004), tb.params.n_entries - 1: CONN_C}
    for index, conn in conns.items():
        await tb.command(conn.delegate(index, rcv_nxt=rng.randrange(2**32)))

    def received(conn, seq):
        """One frame of a burst and the sequence number after it."""
        length = rng.choice((1, 8, 100, 536, 1448, rng.randrange(1, 1449)))
        payload = data(tb, length)
        header = dict(vlan=rng.choice((None, None, None, 9)),
                      ts=rng.choice(((rng.randrange(2**32), rng.randrange(2**32)), None)))
        kind = rng.random()
        if kind < 0.7:
            flags = "PA" if rng.random() < 0.3 else "A"
            return conn.rx(seq, payload, flags=flags, **header), seq + length
        if kind < 0.75:
            return conn.rx(seq, b"", **header), seq
        if kind < 0.8:
            return conn.rx(seq, payload, flags=rng.choice(("FA", "S", "R", "UA")), **header), \
                seq + length
        if kind < 0.85:
            return conn.rx(seq + rng.randrange(1, 100000), payload, **header), seq
        if kind < 0.88:
            return UNKNOWN.rx(seq, payload), seq
        if kind < 0.91:
            return udp_frame(rng.randrange(42, 1500)), seq
        if kind < 0.95:
            return corrupt_tcp_checksum(conn.rx(seq, payload, **header)), seq
        return (conn.rx(seq, payload, **header), True), seq

    # Holds end by a posted buffer, a transmitted ACK, a RECLAIM or the timer, never by the
    # high-water mark: the RTL counts the beats of frames decided just before a new hold, whose
    # DMA is not finished, and the model cannot know them (test_dct_loop tests the mark).
    await tb.write_reg("HWM_BYTES", 0xffff_ffff)
    steps_held = 0
    ended_by = collections.Counter()
    most_queued = 0
    for phase in range(6):
        await fill_legacy_ring(tb, rng.choice((700, LEGACY_BYTES)))
        for _ in range(30):
            held = tb.model.held
            steps_held = steps_held + 1 if held is not None else 0
            most_queued = max(most_queued, len(tb.model.queued_frames))
            if held is not None and (steps_held > 2 or rng.random() < 0.4):
                # End the hold within a few steps, well inside BUF_REQ_TIMEOUT cycles.
                ended_by[await end_hold(tb, conns[held.index], held)] += 1
                continue
            index = rng.choice(list(conns))
            conn = conns[index]
            entry = tb.model.entries[index]
            action = rng.random()
            if entry.sync_req and rng.random() < 0.7:
                await resync(tb, index)
            elif (len(entry.queue) < tb.params.buffers_per_conn
                  and (entry.room < 2000 or action < 0.1)):
                length = rng.randrange(1, 4000)
                # A range can straddle a page only with two bytes or more.
                await tb.post_buffer(index, length, cross_page=length > 1 and rng.random() < 0.3)
            elif action < 0.17 and len(tb.model.legacy_ring) < tb.params.legacy_ring_depth:
                await tb.post_legacy(rng.choice((100, 700, LEGACY_BYTES, LEGACY_BYTES)))
            elif action < 0.25:
                # While a frame is held, one update at a time: the sequencer decides the held
                # frame again between two updates, as the model does.
                count = 1 if held is not None else rng.randrange(1, 4)
                await tb.tx([conn.tx(rng.randrange(2**32), data(tb, rng.randrange(0, 200)),
                                     ack=entry.rcv_nxt, flags="A")
                             for _ in range(count)])
            elif action < 0.27:
                await tb.command(Command(Opcode.QUERY, index))
            elif action < 0.29:
                await tb.command(Command(Opcode.RECLAIM, index))
                await tb.command(conn.delegate(index, rcv_nxt=rng.randrange(2**32)))
            else:
                frames = []
                seq = entry.rcv_nxt
                for _ in range(rng.randrange(1, 7)):
                    frame, seq = received(conn, seq % 2**32)
                    frames.append(frame)
                await tb.rx(frames)
        await tb.check_registers()
    for index in conns:
        await tb.command(Command(Opcode.RECLAIM, index))
    tb.log.info("buffer requests: %d, holds ended by %s, at most %d frames behind a held one",
                tb.model.registers["BUF_REQS"], dict(ended_by), most_queued)
    await tb.finish()
