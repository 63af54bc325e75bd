"""The replay front end on the golden model: the bundled capture, captures edited from it, and a
real lossy one.

The bundled capture is a real Linux TCP connection (``sim/capture/make_capture.sh``) whose sender
wrote ``sim/captures/tcp_stream.sent.bin``; whatever path each byte takes through the core, the
host must rebuild exactly that stream. ``tcp_stream_reordered.pcap`` and
``tcp_stream_retransmitted.pcap`` are edited from it (``sim/capture/edit_capture.py``);
``tcp_lossy.pcap`` is a real connection through a lossy bottleneck (``LOSSY=1
make_capture.sh``) whose sender wrote ``tcp_lossy.sent.bin``.
"""

import asyncio
import json
import struct

import pytest

from tcpdct.params import Params
from tcpdct.records import Event, EventType, Opcode
from tcpdct.headers import TCP_ACK
from model.frame import Cls, parse

from schedule import (
    CaptureError, StepKind, ModelRunner, LockstepRunner, read_pcap, write_pcap,
    choose_local_ip, capture_steps,
)
from schedule import TERMINAL_EVENTS
from replay import DEFAULT_PCAP, DEFAULT_SENT, CAPTURES, replay, run_replay, main
from summary import OTHER
from capture.edit_capture import RECIPES, edit, data_segments


LOCAL_IP = 0x0acb0002   # 10.203.0.2, the receiver of the bundled capture


@pytest.fixture(scope="module")
def sent():
    return DEFAULT_SENT.read_bytes()


@pytest.fixture(scope="module")
def frames():
    return read_pcap(DEFAULT_PCAP)


def _data_frame_positions(frames):
    """Positions of the frames that carry TCP payload to the local host."""
    positions = []
    for position, frame in enumerate(frames):
        p = parse(frame.data)
        if p.cls == Cls.TCP and p.local_ip == LOCAL_IP and p.payload_len:
            positions.append(position)
    return positions


def _only_connection(result):
    delegated = [conn for conn in result.driver.connections if conn.stream is not None]
    assert len(delegated) == 1
    return delegated[0]


def test_bundled_capture_is_real_tcp(frames, sent):
    # Guards the committed capture: real checksums, Timestamps on the data, MTU-sized frames,
    # and the whole stream on the wire.
    assert len(DEFAULT_PCAP.read_bytes()) < 600 * 1024
    assert choose_local_ip(frames) == LOCAL_IP
    payload = 0
    for frame in frames:
        assert frame.wire_len == len(frame.data)
        assert len(frame.data) <= 1514
        p = parse(frame.data)
        assert p.cls in (Cls.TCP, Cls.NOT_TCP)
        if p.cls == Cls.TCP and p.local_ip == LOCAL_IP and p.payload_len:
            assert p.ts_present and not p.special
            payload += p.payload_len
    assert payload == len(sent)


def test_directions(frames):
    steps = capture_steps(frames, LOCAL_IP)
    for step in steps:
        p = parse(step.frame.data)
        if p.cls == Cls.TCP:
            assert (step.kind is StepKind.RX) == (p.local_ip == LOCAL_IP)
    # The ARP request is broadcast by the peer, the reply comes from the local host.
    arp = [step.kind for step in steps if step.frame.data[12:14] == b"\x08\x06"]
    assert arp == [StepKind.RX, StepKind.TX]


def test_bundled_capture_is_placed(tmp_path, sent):
    report, dump = tmp_path / "summary.json", tmp_path / "streams"
    assert main(["--backend", "model", "--json", str(report), "--dump", str(dump)]) == 0
    summary = json.loads(report.read_text())
    n_frames = len(read_pcap(DEFAULT_PCAP))
    assert summary["rx_frames"] + summary["tx_frames_in"] == n_frames
    assert summary["rx_frames"] == (summary["placed"] + sum(summary["legacy"].values())
                                    + sum(summary["dropped"].values()))
    assert summary["tx_frames_in"] == summary["tx_frames_out"]
    assert summary["dropped"] == {}
    assert summary["mismatches"] == 0 and summary["legacy_content_errors"] == 0
    # Every data segment arrives in order after the handshake: all of it is placed, each time
    # the posted buffers run out after a BUF_REQ that the driver answers (R17, R18).
    assert summary["bytes_placed"] == len(sent) and summary["placed_fraction"] == 1.0
    assert summary["buf_reqs"] >= len(sent) // 8192 - Params().buffers_per_conn
    assert summary["commands"]["POST_BUFFER"] == Params().buffers_per_conn + summary["buf_reqs"]
    assert "BUF_TIMEOUT" not in summary["legacy"] and "HWM" not in summary["legacy"]
    connection = summary["connections"]["10.203.0.2:5001-10.203.0.1:32788"]
    assert connection["delegated"] and connection["bytes_placed"] == len(sent)
    assert connection["buf_reqs"] == summary["buf_reqs"]
    assert summary["connections"][OTHER]["legacy"] == {"NOT_TCP": 1}
    assert summary["commands"]["DELEGATE"] == 1 and summary["commands"]["RECLAIM"] == 1
    [stream] = dump.iterdir()
    assert stream.name == "10.203.0.2_5001-10.203.0.1_32788.bin"
    assert stream.read_bytes() == sent


def test_not_delegated_goes_through_legacy(sent):
    result = replay(delegate=False)
    result.summary.check()
    assert result.summary.placed == 0
    assert set(result.summary.legacy) == {"NOT_TCP", "NO_MATCH"}
    assert _only_connection(result).stream.data == sent


@pytest.mark.parametrize("params", [
    Params(buffers_per_conn=1, legacy_ring_depth=4),
    Params(buffers_per_conn=2, legacy_ring_depth=2, n_entries=1),
], ids=["one-buffer", "two-legacy"])
def test_small_queues(params, sent):
    # One user buffer cannot take a whole frame once it is partly full, and its queue has no
    # slot for another: the request times out (BUF_TIMEOUT), frames go through SYNC until the
    # stack's ACK resyncs the entry, and the stream must come out whole all the same.
    result = replay(params=params)
    summary = result.summary
    summary.check()
    assert summary.dropped == {}
    assert summary.bytes_placed > 0 and summary.buf_reqs >= 1
    assert _only_connection(result).stream.data == sent
    if params.buffers_per_conn == 1:
        assert summary.legacy["BUF_TIMEOUT"] >= 1 and summary.legacy["SYNC"] >= 1
        assert summary.resyncs >= summary.legacy["BUF_TIMEOUT"]
    else:
        assert summary.bytes_placed == len(sent)
        assert "BUF_TIMEOUT" not in summary.legacy


def test_events_are_attributed_to_their_steps():
    # A released frame's events arrive with the POST_BUFFER that released it; the observer must
    # see them with the frame: one terminal event per frame, its BUF_REQ before it, and a
    # command's own events ending with its CMD_DONE.
    seen = []
    params = Params(buffers_per_conn=1, legacy_ring_depth=4)
    runner = ModelRunner(params)
    result = asyncio.run(run_replay(runner, pcap=CAPTURES / "tcp_stream_reordered.pcap",
                                    observer=lambda step, events: seen.append((step, events))))
    assert len(seen) == result.summary.rx_frames + result.summary.tx_frames_in + sum(
        result.summary.commands.values())
    kinds = set()
    for step, events in seen:
        types = [event.type for event in events]
        if step.kind is StepKind.RX:
            terminals = [n for n, kind in enumerate(types) if kind in TERMINAL_EVENTS]
            assert len(terminals) == 1
            assert all(kind is EventType.BUF_REQ for kind in types[:terminals[0]])
            assert all(kind is EventType.BUF_DONE for kind in types[terminals[0] + 1:])
            kinds.add((types[0], types[terminals[0]]))
        elif step.kind is StepKind.COMMAND:
            assert types[-1] is EventType.CMD_DONE and types.count(EventType.CMD_DONE) == 1
        else:
            assert set(types) <= {EventType.RESYNC}
    # Both ends of a request are exercised: placed after a post, and legacy on the timeout.
    assert (EventType.BUF_REQ, EventType.LEGACY) in kinds
    assert sum(events[0].type is EventType.RESYNC for step, events in seen
               if step.kind is StepKind.TX and events) == result.summary.resyncs > 0


def test_lockstep_expires_buffer_requests(sent):
    runner = LockstepRunner(ModelRunner(Params(buffers_per_conn=1)))
    result = asyncio.run(run_replay(runner))
    assert runner.mismatches == 0 and result.summary.ok
    assert result.summary.legacy["BUF_TIMEOUT"] >= 1
    assert _only_connection(result).stream.data == sent


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_edited_captures_are_reproducible(name, frames):
    # The committed edited captures are exactly what their recipe makes of the bundled one.
    recipe = RECIPES[name]
    edited, _ = edit(frames, LOCAL_IP, swaps=recipe["swap"], late=recipe["retransmit_late"])
    path = CAPTURES / f"{name}.pcap"
    committed = read_pcap(path)
    assert [frame.data for frame in committed] == [frame.data for frame in edited]
    assert len(path.read_bytes()) < 600 * 1024


def test_retransmitted_capture_has_duplicate_acks(frames):
    # Where a segment is missing, the local host's ACKs stop at the hole (duplicate ACKs)
    # instead of acknowledging data it has not received.
    edited = read_pcap(CAPTURES / "tcp_stream_retransmitted.pcap")
    acks = [parse(frame.data).ack for frame in edited
            if parse(frame.data).remote_ip == LOCAL_IP and parse(frame.data).flags & TCP_ACK]
    duplicates = sum(a == b for a, b in zip(acks, acks[1:]))
    original = [parse(frame.data).ack for frame in frames
                if parse(frame.data).remote_ip == LOCAL_IP and parse(frame.data).flags & TCP_ACK]
    # Of the three ACKs before each retransmission, the first may be the hole's own ACK.
    assert duplicates >= 2 * len(RECIPES["tcp_stream_retransmitted"]["retransmit_late"])
    assert duplicates > sum(a == b for a, b in zip(original, original[1:]))


def test_lossy_capture_is_real_loss():
    # A real connection through a bottleneck that dropped frames: the receiver sees holes in
    # the sequence space that a later frame fills (retransmissions), with real checksums.
    lossy = read_pcap(CAPTURES / "tcp_lossy.pcap")
    assert len((CAPTURES / "tcp_lossy.pcap").read_bytes()) < 600 * 1024
    local_ip = choose_local_ip(lossy)
    assert local_ip == LOCAL_IP
    highest, filled_holes = None, 0
    payload = 0
    for frame in lossy:
        p = parse(frame.data)
        assert p.cls in (Cls.TCP, Cls.NOT_TCP)
        if p.cls == Cls.TCP and p.local_ip == LOCAL_IP and p.payload_len:
            payload += p.payload_len
            if highest is not None and (p.seq - highest) % (1 << 32) >= 1 << 31:
                filled_holes += 1
            end = (p.seq + p.payload_len) % (1 << 32)
            if highest is None or 0 < (end - highest) % (1 << 32) < 1 << 31:
                highest = end
    assert filled_holes >= 3
    assert payload >= len((CAPTURES / "tcp_lossy.sent.bin").read_bytes())


@pytest.mark.parametrize("name,sent_name", [
    ("tcp_stream_reordered", "tcp_stream"),
    ("tcp_stream_retransmitted", "tcp_stream"),
    ("tcp_lossy", "tcp_lossy"),
])
def test_reordered_and_lossy_captures(name, sent_name, tmp_path):
    # make sim PCAP=<capture>: the stream the sender wrote comes out whole, out-of-sequence
    # frames set SYNC_REQ, the stack's ACKs resync the entry and placement resumes after it.
    report, dump = tmp_path / "summary.json", tmp_path / "streams"
    assert main(["--backend", "model", "--pcap", str(CAPTURES / f"{name}.pcap"),
                 "--json", str(report), "--dump", str(dump)]) == 0
    summary = json.loads(report.read_text())
    assert summary["mismatches"] == 0 and summary["legacy_content_errors"] == 0
    assert summary["dropped"] == {}
    assert summary["rx_frames"] == (summary["placed"] + sum(summary["legacy"].values())
                                    + sum(summary["dropped"].values()))
    assert summary["legacy"]["OUT_OF_SEQ"] >= 3
    [stream] = dump.iterdir()
    assert stream.read_bytes() == (CAPTURES / f"{sent_name}.sent.bin").read_bytes()
    [connection] = [row for key, row in summary["connections"].items() if key != OTHER]
    assert connection["resyncs"] >= 3
    assert connection["placed_after_resync"] > 0
    assert 0.5 < connection["placed_fraction"] < 1.0
    assert connection["stream_bytes_via_placement"] + connection["stream_bytes_via_legacy"] \
        == connection["stream_bytes"] == len(stream.read_bytes())
    assert connection["stream_bytes_via_placement"] <= connection["bytes_placed"]


def test_reordered_and_retransmitted(tmp_path, frames, sent):
    # Swap two data segments and send a third twice: OUT_OF_SEQ, then the stack rebuilds the
    # stream from placed and legacy bytes with the retransmission counted once.
    data = _data_frame_positions(frames)
    edited = list(frames)
    a, b = data[40], data[41]
    edited[a], edited[b] = edited[b], edited[a]
    retransmitted = data[60]
    edited.insert(retransmitted + 1, frames[retransmitted])
    path = tmp_path / "edited.pcap"
    write_pcap(path, edited)

    result = replay(path)
    result.summary.check()
    assert result.summary.rx_frames + result.summary.tx_frames_in == len(edited)
    assert result.summary.legacy["OUT_OF_SEQ"] >= 1
    conn = _only_connection(result)
    assert conn.stream.data == sent
    assert conn.stream.duplicate_bytes > 0
    assert conn.bytes_placed + conn.bytes_legacy == len(sent)


def test_lockstep_counts_mismatches(sent):
    class TimestampCorrupting(ModelRunner):
        """A "DUT" that gets the Timestamps value of every placed frame wrong."""
        async def rx(self, frames):
            events = await super().rx(frames)
            return [Event(EventType.RX_PLACED, event.index,
                          **{**event.fields, "tsval": event.tsval ^ 1})
                    if event.type is EventType.RX_PLACED else event for event in events]

    runner = LockstepRunner(TimestampCorrupting(Params()))
    result = asyncio.run(run_replay(runner))
    assert runner.mismatches > 0 and result.summary.mismatches == runner.mismatches
    assert not result.summary.ok
    assert "tsval" in runner.log[0]
    assert _only_connection(result).stream.data == sent

    clean = LockstepRunner(ModelRunner(Params()))
    assert asyncio.run(run_replay(clean)).summary.ok and clean.mismatches == 0


def test_refuses_other_link_types(tmp_path):
    cooked = tmp_path / "cooked.pcap"
    cooked.write_bytes(struct.pack("<IHHiIII", 0xa1b2c3d4, 2, 4, 0, 0, 0xffff, 113))
    with pytest.raises(CaptureError, match="Linux cooked capture"):
        read_pcap(cooked)
    pcapng = tmp_path / "capture.pcapng"
    pcapng.write_bytes(b"\x0a\x0d\x0d\x0a" + bytes(28))
    with pytest.raises(CaptureError, match="pcapng"):
        read_pcap(pcapng)
    assert main(["--backend", "model", "--pcap", str(cooked)]) == 2
