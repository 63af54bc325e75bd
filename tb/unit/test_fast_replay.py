"""The fast replay (compiled Verilator harness) and the benchmark built on the same harness.

The harness is built once for the default parameters (about a minute the first time, cached in
``sim/build/fast-<hash>`` after that); every run on it takes well under a second.
"""

import argparse
import asyncio
import copy
import json

import pytest

from tcpdct.params import Params
from tcpdct.records import EventType

from replay import DEFAULT_PCAP, DEFAULT_SENT, run_replay, main as replay_main
from replay_fast import RecordingRunner, PlaybackRunner, PlaybackError, replay_script, run
from fast_harness import HarnessScript, HarnessError, build_harness, run_harness
from bench import run_cell


PARAMS = Params()


@pytest.fixture(scope="module")
def harness():
    return build_harness(PARAMS)


@pytest.fixture(scope="module")
def recorded():
    recorder = RecordingRunner(PARAMS)
    asyncio.run(run_replay(recorder, pcap=DEFAULT_PCAP))
    return recorder.steps


def _options(tmp_path, backend):
    return argparse.Namespace(pcap=DEFAULT_PCAP, local=None, delegate="auto",
                              json=tmp_path / f"{backend}.json", dump=tmp_path / backend,
                              waves=False, backend=backend)


def _playback(recorded, harness_run):
    runner = PlaybackRunner(PARAMS, recorded, harness_run)
    result = asyncio.run(run_replay(runner, pcap=DEFAULT_PCAP))
    return runner, result


def test_fast_backend_agrees_with_model(harness, tmp_path):
    fast = _options(tmp_path, "fast")
    assert run(fast) == 0
    assert replay_main(["--backend", "model", "--json", str(tmp_path / "model.json")]) == 0

    fast_doc = json.loads(fast.json.read_text())
    model_doc = json.loads((tmp_path / "model.json").read_text())
    assert fast_doc["backend"] == "fast"
    assert fast_doc["simulation"]["cycles"] > 10_000
    assert fast_doc["simulation"]["cycles_per_second"] > 0
    timing = {"backend", "simulation"}
    assert {k: v for k, v in fast_doc.items() if k not in timing} == \
           {k: v for k, v in model_doc.items() if k not in timing}
    assert fast_doc["mismatches"] == 0
    sent = DEFAULT_SENT.read_bytes()
    assert fast_doc["bytes_placed"] == len(sent)
    streams = list(fast.dump.iterdir())
    assert len(streams) == 1 and streams[0].read_bytes() == sent


def test_wrong_event_is_a_mismatch(harness, recorded, tmp_path):
    harness_run = run_harness(harness, replay_script(recorded), tmp_path, params=PARAMS)
    runner, result = _playback(recorded, harness_run)
    assert runner.mismatches == 0 and result.summary.ok

    # The model predicts a different length for one placed frame: exactly that step differs,
    # and the summary is built from what the RTL said.
    tampered = copy.deepcopy(recorded)
    number, step = next((n, s) for n, s in enumerate(tampered)
                        if any(e.type is EventType.RX_PLACED for e in s.events))
    placed = next(e for e in step.events if e.type is EventType.RX_PLACED)
    placed.fields["length"] += 1
    runner, result = _playback(tampered, harness_run)
    assert runner.mismatches == 1
    assert runner.log[0].startswith(f"step {number + 1} (rx): events")
    assert not result.summary.ok


def test_leaving_the_schedule_stops_the_replay(harness, recorded, tmp_path):
    harness_run = run_harness(harness, replay_script(recorded), tmp_path, params=PARAMS)
    with pytest.raises(PlaybackError, match="step 1"):
        _playback(recorded[1:], harness_run)


def test_stalls_everywhere_change_timing_not_results(harness, recorded, tmp_path):
    plain = run_harness(harness, replay_script(recorded), tmp_path / "plain", params=PARAMS)
    stalled = run_harness(harness, replay_script(recorded, stall_percent=40, seed=7),
                          tmp_path / "stalled", params=PARAMS)
    assert stalled.counters["cycles"] > plain.counters["cycles"] * 1.2
    runner, result = _playback(recorded, stalled)
    assert runner.mismatches == 0, runner.log
    assert result.summary.ok


def test_unknown_directive_is_refused(harness, tmp_path):
    script = HarnessScript()
    script.lines.append("JUMP 3")
    with pytest.raises(HarnessError, match="unknown directive JUMP"):
        run_harness(harness, script, tmp_path, params=PARAMS)


def test_bench_cells(harness, tmp_path):
    # Full-size frames of one connection at 64 bits: the receive port never stalls (the
    # requirement test_rx_rate checks under cocotb), every frame is placed, and the first write
    # cannot come before the frame's last beat (its checksum decides).
    placed = run_cell(harness, PARAMS, "1518", "placed", count=40, workdir=tmp_path)
    assert placed["ok"] and placed["wrong_events"] == 0
    assert placed["rx_beats_per_cycle"] == 1.0
    assert placed["dma_latency"]["min"] > 0
    assert placed["event_latency"]["min"] > placed["dma_latency"]["max"]

    mixed = run_cell(harness, PARAMS, "imix", "legacy", count=48, workdir=tmp_path)
    assert mixed["ok"], mixed
    assert mixed["frames"] == 48 and mixed["missing_writes"] == 0
    assert 0 < mixed["rx_beats_per_cycle"] <= 1.0
    assert 0 < mixed["tx_beats_per_cycle"] <= 1.0
