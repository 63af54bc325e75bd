"""``make sim``'s replay through the RTL: the bundled real capture is placed whole, with no
model mismatch, and the application stream read back equals what the sender wrote; a reordered
capture goes out of sequence, resyncs on the stack's ACKs and is placed again, with the same
stream. Both run at 64 and at 512 bits, on the system tests' builds."""

import argparse
import json

import pytest

from tcpdct.params import Params

import replay_cocotb
from replay import CAPTURES, DEFAULT_PCAP, DEFAULT_SENT
from test_system_runner import SYSTEM_PARAMS


#: The system tests' widths and configuration, so that the replay shares their Verilator builds.
REPLAY_WIDTHS = (64, 512)


@pytest.mark.parametrize("data_width", REPLAY_WIDTHS)
def test_replay_bundled_capture(tmp_path, data_width):
    options = argparse.Namespace(pcap=DEFAULT_PCAP, local=None, delegate="auto",
                                 json=tmp_path / "summary.json", dump=tmp_path / "dump",
                                 waves=False)
    assert replay_cocotb.run(options, params=Params(data_width=data_width, **SYSTEM_PARAMS)) == 0

    summary = json.loads(options.json.read_text())
    assert summary["backend"] == "cocotb"
    assert summary["mismatches"] == 0
    sent = DEFAULT_SENT.read_bytes()
    assert summary["bytes_placed"] == len(sent)
    assert summary["rx_frames"] == (summary["placed"] + sum(summary["legacy"].values())
                                    + sum(summary["dropped"].values()))
    assert summary["simulation"]["cycles"] > 0
    streams = list(options.dump.iterdir())
    assert len(streams) == 1 and streams[0].read_bytes() == sent


@pytest.mark.parametrize("data_width", REPLAY_WIDTHS)
def test_replay_reordered_capture(tmp_path, data_width):
    options = argparse.Namespace(pcap=CAPTURES / "tcp_stream_reordered.pcap", local=None,
                                 delegate="auto", json=tmp_path / "summary.json",
                                 dump=tmp_path / "dump", waves=False)
    assert replay_cocotb.run(options, params=Params(data_width=data_width, **SYSTEM_PARAMS)) == 0

    summary = json.loads(options.json.read_text())
    assert summary["mismatches"] == 0
    assert summary["legacy"]["OUT_OF_SEQ"] >= 3 and summary["buf_reqs"] > 0
    [connection] = [row for name, row in summary["connections"].items() if name != "other"]
    assert connection["resyncs"] >= 3 and connection["placed_after_resync"] > 0
    assert 0 < connection["placed_fraction"] < 1
    streams = list(options.dump.iterdir())
    assert len(streams) == 1 and streams[0].read_bytes() == DEFAULT_SENT.read_bytes()
