"""Unit tests of the golden model's buffer requests (R17–R19): the hold, the frames queued behind
it, and every way a hold ends (``docs/architecture.md``, "Buffer requests")."""

import pytest

from tcpdct.params import Params, RX_DESCRIPTOR_DEPTH
from tcpdct.records import (
    NO_CONNECTION, Opcode, CmdStatus, EventType, LegacyReason, DropReason, Command, Event,
)
from tcpdct import regmap
from model import Model, HeldFrame

from unit.test_model import (
    KEY, CONN, RCV_NXT, LEGACY_BASE, LEGACY_SIZE, PARAMS,
    segment, done, delegate, post_buffer, post_legacy, snapshot, delegated_model,
)
from unit.test_model_tx import outgoing


@pytest.fixture
def m():
    return delegated_model()


BEAT = PARAMS.data_bytes


def cmd_done(opcode, index=CONN, status=CmdStatus.OK):
    return Event(EventType.CMD_DONE, index, opcode=opcode, status=status)


def placed(frame_seq, length, flags=0x10):
    return Event(EventType.RX_PLACED, CONN, seq=frame_seq, ack=7, window=4321, flags=flags,
                 length=length)


def beats(frame):
    return -(-len(frame) // BEAT)


def legacy_in(buffer, frame, reason, index=CONN):
    """The LEGACY event of ``frame`` uploaded into legacy buffer ``buffer``."""
    return Event(EventType.LEGACY, index, tag=buffer.tag, frame_len=len(frame), reason=reason)


@pytest.fixture
def held(m):
    """``m`` with a 6-byte buffer posted and a 10-byte in-sequence frame held for 4 more bytes."""
    done(post_buffer(m, 0x10_0000, 6, tag=0xa))
    frame = segment(b"0123456789")
    assert m.rx_frame(frame) == [Event(EventType.BUF_REQ, CONN, bytes=4)]
    assert m.held == HeldFrame(frame, CONN, 4)
    return m, frame


# Opening a request (R17) -------------------------------------------------------------------------

def test_buf_req_holds_the_frame(m):
    before = snapshot(m)
    frame = segment(bytes(10))
    assert m.rx_frame(frame) == [Event(EventType.BUF_REQ, CONN, bytes=10)]
    entry = m.entries[CONN]
    assert entry.buf_req and not entry.sync_req and entry.rcv_nxt == RCV_NXT
    assert m.last_writes == []
    assert m.held == HeldFrame(frame, CONN, 10)
    assert m.queued_frames == [] and m.rx_buffer_beats == beats(frame)
    # The frame is not decided yet: no terminal event, nothing counted but the request.
    entry.buf_req = False
    assert snapshot(m) == before
    assert {name: value for name, value in m.counters.items() if value} == {
        "BUF_REQS": 1, "COMMANDS": 1 + PARAMS.legacy_ring_depth}


@pytest.mark.parametrize("lengths,filled,shortfall", [
    ([6], 0, 4), ([3, 3], 0, 4), ([8], 5, 7), ([4, 5], 0, 1)])
def test_buf_req_shortfall(m, lengths, filled, shortfall):
    for number, length in enumerate(lengths):
        done(post_buffer(m, 0x10_0000 + number * 0x1000, length, tag=number))
    seq = RCV_NXT
    if filled:
        assert m.rx_frame(segment(bytes(filled)))[0].type == EventType.RX_PLACED
        seq += filled
    assert m.rx_frame(segment(bytes(10), seq=seq)) == [
        Event(EventType.BUF_REQ, CONN, bytes=shortfall)]
    assert m.registers["BUF_REQS"] == 1


def test_no_second_buf_req_while_open(held):
    m, frame = held
    assert m.command(Command(Opcode.QUERY, CONN)) == [
        Event(EventType.STATE, CONN, valid=1, buf_req=1, n_buffers=1, rcv_wnd=65535,
              rcv_nxt=RCV_NXT, snd_nxt=5000, last_ack_sent=RCV_NXT),
        cmd_done(Opcode.QUERY)]
    assert m.tx_frame(outgoing(ack=RCV_NXT - 5)) == []
    assert done(m.command(Command(Opcode.QUERY, 0)), CmdStatus.NOT_DELEGATED) == [
        cmd_done(Opcode.QUERY, 0, CmdStatus.NOT_DELEGATED)]
    assert m.held == HeldFrame(frame, CONN, 4)
    assert m.counters["BUF_REQS"] == 1


def test_frames_wait_behind_the_held_one(held):
    m, frame = held
    later = [segment(b"ab", seq=RCV_NXT + 10), segment(b"x", tcp={"sport": 1}),
             segment(b"mac")]
    before = snapshot(m)
    assert m.rx_frame(later[0]) == []
    assert m.rx_frame(later[1]) == []
    assert m.rx_frame(later[2], mac_error=True) == []
    assert m.queued_frames == later
    assert m.rx_buffer_beats == sum(beats(f) for f in [frame] + later)
    assert snapshot(m) == before and m.last_writes == []
    assert m.counters["RX_FRAMES"] == 0


# Release by POST_BUFFER (R18) --------------------------------------------------------------------

def test_post_buffer_releases_held_then_queued(held):
    m, frame = held
    b = segment(b"abcde", seq=RCV_NXT + 10, flags="PA")
    other = segment(b"x", tcp={"sport": 1})
    mac = segment(b"bad")
    m.rx_frame(b)
    m.rx_frame(other)
    m.rx_frame(mac, mac_error=True)
    legacy_head = m.legacy_ring[0]
    events = post_buffer(m, 0x20_0000, 100, tag=0xb)
    assert events == [
        cmd_done(Opcode.POST_BUFFER),
        placed(RCV_NXT, 10),
        Event(EventType.BUF_DONE, CONN, tag=0xa, bytes=6),
        placed(RCV_NXT + 10, 5, flags=0x18),
        Event(EventType.BUF_DONE, CONN, tag=0xb, bytes=9),
        legacy_in(legacy_head, other, LegacyReason.NO_MATCH, NO_CONNECTION),
        Event(EventType.DROP, NO_CONNECTION, reason=DropReason.MAC_ERROR, frame_len=len(mac)),
    ]
    assert m.last_writes == [(0x10_0000, b"012345"), (0x20_0000, b"6789"),
                             (0x20_0004, b"abcde"), (legacy_head.address, other)]
    assert m.memory.read(0x20_0000, 10) == b"6789abcde\0"
    entry = m.entries[CONN]
    assert not entry.buf_req and not entry.sync_req and entry.rcv_nxt == RCV_NXT + 15
    assert m.held is None and m.queued_frames == [] and m.rx_buffer_beats == 0
    assert (m.counters["RX_FRAMES"], m.counters["RX_PLACED"], m.counters["BUF_REQS"]) == (4, 2, 1)


def test_post_buffer_still_too_small(held):
    m, frame = held
    assert post_buffer(m, 0x20_0000, 3, tag=0xb) == [cmd_done(Opcode.POST_BUFFER)]
    assert m.held == HeldFrame(frame, CONN, 1)
    assert m.entries[CONN].buf_req and m.counters["BUF_REQS"] == 1
    events = post_buffer(m, 0x30_0000, 1, tag=0xc)
    assert events == [cmd_done(Opcode.POST_BUFFER), placed(RCV_NXT, 10),
                      Event(EventType.BUF_DONE, CONN, tag=0xa, bytes=6),
                      Event(EventType.BUF_DONE, CONN, tag=0xb, bytes=3),
                      Event(EventType.BUF_DONE, CONN, tag=0xc, bytes=1)]
    assert m.memory.read(0x20_0000, 3) == b"678" and m.memory.read(0x30_0000, 1) == b"9"
    assert m.held is None and not m.entries[CONN].buf_req


def test_failed_post_buffer_keeps_holding(held):
    m, frame = held
    assert post_buffer(m, 0x20_0000, 0, tag=0xb) == [
        cmd_done(Opcode.POST_BUFFER, status=CmdStatus.ZERO_LENGTH)]
    assert m.held == HeldFrame(frame, CONN, 4)


def test_queued_frame_starts_a_new_hold(held):
    m, frame = held
    b = segment(bytes(30), seq=RCV_NXT + 10)
    c = segment(b"c", tcp={"sport": 1})
    m.rx_frame(b)
    m.rx_frame(c)
    # Room for the held frame and 2 bytes more: the held frame is placed, its request is over,
    # and the next frame opens a new one.
    assert post_buffer(m, 0x20_0000, 6, tag=0xb) == [
        cmd_done(Opcode.POST_BUFFER), placed(RCV_NXT, 10),
        Event(EventType.BUF_DONE, CONN, tag=0xa, bytes=6),
        Event(EventType.BUF_REQ, CONN, bytes=28)]
    assert m.held == HeldFrame(b, CONN, 28)
    assert m.queued_frames == [c]
    assert m.rx_buffer_beats == beats(b) + beats(c)
    assert m.entries[CONN].buf_req and m.counters["BUF_REQS"] == 2


def test_other_connection_waits_too(held):
    # The hold is at the head of the one receive engine: a frame of another connection that
    # has room still waits behind it.
    m, frame = held
    other_key = KEY._replace(remote_port=KEY.remote_port + 1)
    done(delegate(m, index=0, key=other_key, rcv_nxt=1))
    done(post_buffer(m, 0x40_0000, 100, tag=0x40, index=0))
    mine = segment(b"other", seq=1, tcp={"sport": other_key.remote_port})
    assert m.rx_frame(mine) == []
    events = m.expire_buffer_request()
    assert [e.type for e in events] == [EventType.LEGACY, EventType.RX_PLACED]
    assert events[1].index == 0 and m.memory.read(0x40_0000, 5) == b"other"


# Commands and transmit updates while holding ------------------------------------------------------

def test_reclaim_while_held(held):
    m, frame = held
    queued = segment(b"more", seq=RCV_NXT + 10)
    m.rx_frame(queued)
    head, second = m.legacy_ring[0], m.legacy_ring[1]
    assert m.command(Command(Opcode.RECLAIM, CONN)) == [
        Event(EventType.STATE, CONN, valid=1, buf_req=1, n_buffers=1, rcv_wnd=65535,
              rcv_nxt=RCV_NXT, snd_nxt=5000, last_ack_sent=RCV_NXT),
        Event(EventType.BUF_DONE, CONN, tag=0xa, bytes=0),
        cmd_done(Opcode.RECLAIM),
        Event(EventType.LEGACY, NO_CONNECTION, tag=head.tag, frame_len=len(frame),
              reason=LegacyReason.NO_MATCH),
        Event(EventType.LEGACY, NO_CONNECTION, tag=second.tag, frame_len=len(queued),
              reason=LegacyReason.NO_MATCH)]
    assert m.last_writes == [(head.address, frame), (second.address, queued)]
    assert m.held is None and not m.entries[CONN].valid


def test_resync_elsewhere_while_held(held):
    m, frame = held
    head = m.legacy_ring[0]
    assert m.command(Command(Opcode.RESYNC, CONN, rcv_nxt=RCV_NXT + 3)) == [
        cmd_done(Opcode.RESYNC),
        legacy_in(head, frame, LegacyReason.OUT_OF_SEQ)]
    entry = m.entries[CONN]
    assert entry.sync_req and not entry.buf_req and entry.rcv_nxt == RCV_NXT + 3
    assert m.held is None


def test_resync_in_place_opens_a_new_request(held):
    m, frame = held
    assert m.command(Command(Opcode.RESYNC, CONN, rcv_nxt=RCV_NXT)) == [
        cmd_done(Opcode.RESYNC), Event(EventType.BUF_REQ, CONN, bytes=4)]
    assert m.held == HeldFrame(frame, CONN, 4)
    assert m.entries[CONN].buf_req and m.counters["BUF_REQS"] == 2


def test_tx_ack_past_held_frame(held):
    # The stack acknowledges the held bytes (it got them some other way): the held frame is
    # now behind rcv_nxt.
    m, frame = held
    m.rx_frame(segment(b"next", seq=RCV_NXT + 10))
    head = m.legacy_ring[0]
    events = m.tx_frame(outgoing(ack=RCV_NXT + 10))
    assert events[0] == legacy_in(head, frame, LegacyReason.OUT_OF_SEQ)
    # The next frame is in sequence again but finds SYNC_REQ set.
    assert [(e.type, e.reason) for e in events[1:]] == [(EventType.LEGACY, LegacyReason.SYNC)]
    entry = m.entries[CONN]
    assert entry.sync_req and not entry.buf_req and entry.rcv_nxt == RCV_NXT + 14
    assert m.counters["TX_MATCHED"] == 1 and m.held is None


def test_tx_ack_not_moving_keeps_holding(held):
    m, frame = held
    assert m.tx_frame(outgoing(ack=RCV_NXT, window=99)) == []
    assert m.held == HeldFrame(frame, CONN, 4) and m.entries[CONN].rcv_wnd == 99


# Expiry (R19) ------------------------------------------------------------------------------------

@pytest.mark.parametrize("reason", [LegacyReason.BUF_TIMEOUT, LegacyReason.HWM])
def test_expire(held, reason):
    m, frame = held
    queued = segment(b"next", seq=RCV_NXT + 10)
    m.rx_frame(queued)
    head, second = m.legacy_ring[0], m.legacy_ring[1]
    assert m.expire_buffer_request(reason) == [
        legacy_in(head, frame, reason),
        Event(EventType.LEGACY, CONN, tag=second.tag, frame_len=len(queued),
              reason=LegacyReason.SYNC)]
    entry = m.entries[CONN]
    assert entry.sync_req and not entry.buf_req and entry.rcv_nxt == RCV_NXT + 14
    assert entry.queue[0].filled == 0
    assert m.memory.read(head.address, len(frame)) == frame
    assert m.last_writes == [(head.address, frame), (second.address, queued)]
    assert m.counters[f"LEGACY_{reason.name}"] == 1
    assert m.held is None
    # The stack owns the stream until it resyncs.
    with pytest.raises(RuntimeError, match="No frame is held"):
        m.expire_buffer_request()


def test_expire_checks_its_arguments(m):
    with pytest.raises(RuntimeError, match="No frame is held"):
        m.expire_buffer_request(LegacyReason.BUF_TIMEOUT)
    m.rx_frame(segment(b"x"))
    with pytest.raises(ValueError, match="OUT_OF_SEQ"):
        m.expire_buffer_request(LegacyReason.OUT_OF_SEQ)
    assert m.held is not None


def test_expire_with_failed_legacy_delivery_ends_the_episode():
    m = Model(PARAMS)
    done(delegate(m))
    frame = segment(bytes(10))
    assert m.rx_frame(frame) == [Event(EventType.BUF_REQ, CONN, bytes=10)]
    assert m.expire_buffer_request() == [
        Event(EventType.DROP, CONN, reason=DropReason.NO_LEGACY_BUFFER, frame_len=len(frame))]
    entry = m.entries[CONN]
    # Dropped as never received: no SYNC_REQ, no advance; but the request is over, so the
    # retransmission opens a new one.
    assert not entry.buf_req and not entry.sync_req and entry.rcv_nxt == RCV_NXT
    assert m.rx_frame(frame) == [Event(EventType.BUF_REQ, CONN, bytes=10)]
    assert m.counters["BUF_REQS"] == 2


def test_failed_legacy_delivery_of_released_frame_clears_buf_req(held):
    m, frame = held
    m.legacy_ring.clear()
    done(post_legacy(m, LEGACY_BASE, len(frame) - 1, tag=9))
    assert m.command(Command(Opcode.RESYNC, CONN, rcv_nxt=RCV_NXT + 1)) == [
        cmd_done(Opcode.RESYNC),
        Event(EventType.DROP, CONN, reason=DropReason.LEGACY_TOO_SMALL, frame_len=len(frame))]
    entry = m.entries[CONN]
    assert not entry.buf_req and not entry.sync_req and entry.rcv_nxt == RCV_NXT + 1


# High-water mark (R19) ---------------------------------------------------------------------------

def test_hwm_reached_by_queued_frames(held):
    m, frame = held
    b = segment(bytes(3), seq=RCV_NXT + 10)
    c = segment(bytes(40), seq=RCV_NXT + 13)
    mark = (beats(frame) + beats(b) + beats(c)) * BEAT
    assert m.write_register("HWM_BYTES", mark) == []
    assert m.rx_frame(b) == []
    assert m.rx_buffer_beats * BEAT == mark - beats(c) * BEAT
    head = m.legacy_ring[0]
    events = m.rx_frame(c)
    assert events[0] == legacy_in(head, frame, LegacyReason.HWM)
    assert [(e.type, e.reason) for e in events[1:]] == [(EventType.LEGACY, LegacyReason.SYNC)] * 2
    entry = m.entries[CONN]
    assert entry.sync_req and not entry.buf_req and entry.rcv_nxt == RCV_NXT + 53
    assert m.held is None and m.counters["LEGACY_HWM"] == 1
    assert [address for address, _ in m.last_writes] == [head.address, LEGACY_BASE + 0x1000,
                                                         LEGACY_BASE + 0x2000]


def test_hwm_one_beat_short_keeps_holding(held):
    m, frame = held
    b = segment(bytes(3), seq=RCV_NXT + 10)
    assert m.write_register("HWM_BYTES", (beats(frame) + beats(b)) * BEAT + 1) == []
    assert m.rx_frame(b) == []
    assert m.held is not None


def test_hwm_reached_by_the_held_frame_alone(m):
    frame = segment(bytes(10))
    m.write_register("HWM_BYTES", beats(frame) * BEAT)
    head = m.legacy_ring[0]
    assert m.rx_frame(frame) == [Event(EventType.BUF_REQ, CONN, bytes=10),
                                 legacy_in(head, frame, LegacyReason.HWM)]
    assert m.held is None and m.entries[CONN].sync_req


def test_lowering_hwm_while_holding(held):
    m, frame = held
    head = m.legacy_ring[0]
    assert m.write_register("HWM_BYTES", 1) == [
        legacy_in(head, frame, LegacyReason.HWM)]
    assert m.last_writes == [(head.address, frame)]
    assert m.registers["HWM_BYTES"] == 1


def test_hwm_counts_stored_beats():
    params = Params(data_width=256, n_entries=4, legacy_ring_depth=4, max_frame_bytes=100)
    m = Model(params)
    done(delegate(m))
    frame = segment(bytes(10))
    m.rx_frame(frame)
    assert m.rx_buffer_beats == 2                   # 64 bytes in 32-byte beats
    m.rx_frame(b"")                                 # takes no beat
    m.rx_frame(bytes(33))
    m.rx_frame(bytes(5000))                         # oversize: only max_frame_bytes are kept
    assert m.rx_buffer_beats == 2 + 0 + 2 + 4
    assert m.held is not None


def test_hwm_after_release_counts_only_frames_behind(held):
    # After a release, the frame that was placed no longer counts towards the mark.
    m, frame = held
    b = segment(bytes(30), seq=RCV_NXT + 10)
    c = segment(b"c", seq=RCV_NXT + 40)
    d = segment(b"d", seq=RCV_NXT + 41)
    assert beats(d) <= beats(frame)
    m.rx_frame(b)
    m.rx_frame(c)
    m.write_register("HWM_BYTES", (beats(frame) + beats(b) + beats(c)) * BEAT + 1)
    assert post_buffer(m, 0x20_0000, 6, tag=0xb)[-1] == Event(EventType.BUF_REQ, CONN, bytes=28)
    assert m.held.frame == b
    assert m.rx_frame(d) == []
    assert m.rx_buffer_beats == beats(b) + beats(c) + beats(d)
    events = m.rx_frame(segment(b"e", seq=RCV_NXT + 42))
    assert [(e.type, e.reason) for e in events] == [
        (EventType.LEGACY, LegacyReason.HWM), (EventType.LEGACY, LegacyReason.SYNC),
        (EventType.LEGACY, LegacyReason.SYNC), (EventType.LEGACY, LegacyReason.SYNC)]


def test_hwm_counts_only_frames_in_the_packet_buffer(held):
    # Past RX_DESCRIPTOR_DEPTH frames behind the held one, the parser stops taking frames: the
    # rest wait at the MAC and take no room.
    m, frame = held
    later = [segment(b"z", seq=RCV_NXT + 10 + n) for n in range(RX_DESCRIPTOR_DEPTH + 3)]
    mark = (beats(frame) + RX_DESCRIPTOR_DEPTH * beats(later[0])) * BEAT + 1
    m.write_register("HWM_BYTES", mark)
    for queued in later:
        assert m.rx_frame(queued) == []
    assert m.rx_buffer_beats == beats(frame) + RX_DESCRIPTOR_DEPTH * beats(later[0])
    assert m.queued_frames == later
    events = post_buffer(m, 0x20_0000, 100, tag=0xb)
    assert [e.type for e in events].count(EventType.RX_PLACED) == 1 + len(later)


# Registers and DMA errors ------------------------------------------------------------------------

def test_read_write_registers():
    m = Model(PARAMS)
    assert m.registers["BUF_REQ_TIMEOUT"] == regmap.BUF_REQ_TIMEOUT_DEFAULT
    assert m.registers["HWM_BYTES"] == PARAMS.rx_buffer_bytes * 3 // 4
    assert "HWM_BYTES" not in m.counters and "BUF_REQS" in m.counters
    assert m.write_register("BUF_REQ_TIMEOUT", 0xffffffff) == []
    assert m.registers["BUF_REQ_TIMEOUT"] == 0xffffffff
    with pytest.raises(KeyError, match="RX_FRAMES"):
        m.write_register("RX_FRAMES", 1)
    with pytest.raises(ValueError, match="32-bit"):
        m.write_register("HWM_BYTES", 1 << 32)
    with pytest.raises(ValueError, match="32-bit"):
        m.write_register("HWM_BYTES", -1)


def test_dma_error_marks_only_its_own_frame():
    m = Model(PARAMS, dma_error=lambda address, data: address == 0x2000)
    done(delegate(m))
    done(post_legacy(m, 0x8000, LEGACY_SIZE, tag=1))
    done(post_buffer(m, 0x1000, 4, tag=1))
    assert m.rx_frame(segment(bytes(6))) == [Event(EventType.BUF_REQ, CONN, bytes=2)]
    m.rx_frame(segment(b"x", tcp={"sport": 1}))
    events = post_buffer(m, 0x2000, 100, tag=2)
    assert [(e.type, e.dma_error) for e in events] == [
        (EventType.CMD_DONE, 0), (EventType.RX_PLACED, 1), (EventType.BUF_DONE, 1),
        (EventType.LEGACY, 0)]
    assert m.counters["DMA_ERRORS"] == 2
