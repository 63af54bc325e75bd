"""The replay front end on the golden model: the bundled capture, and captures edited from it.

The bundled capture is a real Linux TCP connection (``sim/capture/make_capture.sh``) whose sender
wrote ``sim/captures/tcp_stream.sent.bin``; whatever path each byte takes through the core, the
host must rebuild exactly that stream.
"""

import asyncio
import json
import struct

import pytest

from tcpdct.params import Params
from tcpdct.records import Event, EventType
from model.frame import Cls, parse

from schedule import (
    CaptureError, StepKind, ModelRunner, LockstepRunner, read_pcap, write_pcap,
    choose_local_ip, capture_steps,
)
from replay import DEFAULT_PCAP, DEFAULT_SENT, replay, run_replay, main
from summary import OTHER


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
    # Every data segment arrives in order after the handshake: all of it is placed.
    assert summary["bytes_placed"] == len(sent)
    connection = summary["connections"]["10.203.0.2:5001-10.203.0.1:32788"]
    assert connection["delegated"] and connection["bytes_placed"] == len(sent)
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
    # One user buffer cannot take a whole frame once it is partly full: frames then go through
    # NO_BUFFER and SYNC, and the stream must come out whole all the same.
    result = replay(params=params)
    result.summary.check()
    assert result.summary.dropped == {}
    assert result.summary.bytes_placed > 0
    assert _only_connection(result).stream.data == sent
    if params.buffers_per_conn == 1:
        assert result.summary.legacy["NO_BUFFER"] >= 1


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
