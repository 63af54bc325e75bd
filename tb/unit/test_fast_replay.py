"""The fast replay (compiled Verilator harness) and the benchmark built on the same harness.

The harness is built once for the default parameters (a minute or two the first time, cached in
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
from replay_fast import (RecordingRunner, PlaybackRunner, PlaybackError, replay_script,
                         checked_result, stored_bytes, run)
from fast_harness import (HarnessScript, HarnessError, HarnessProcess, build_harness,
                          run_harness, both_edges, outputs_following_inputs, _may_write)
from bench import run_cell
from toolchain import compiler_is_gcc
import replay_bench


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


def _recording():
    recorder = RecordingRunner(PARAMS)
    return asyncio.run(run_replay(recorder, pcap=DEFAULT_PCAP)), recorder.steps


def test_fast_backend_agrees_with_model(harness, tmp_path):
    fast = _options(tmp_path, "fast")
    assert run(fast) == 0
    assert replay_main(["--backend", "model", "--json", str(tmp_path / "model.json")]) == 0

    fast_doc = json.loads(fast.json.read_text())
    model_doc = json.loads((tmp_path / "model.json").read_text())
    assert fast_doc["backend"] == "fast"
    assert fast_doc["simulation"]["cycles"] > 10_000
    assert fast_doc["simulation"]["cycles_per_second"] > 0
    assert fast_doc["simulation"]["end_to_end_cycles_per_second"] > 0
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


def test_agreement_takes_the_recording_and_loses_nothing(harness, recorded, tmp_path):
    # When every step agrees, the recording's result stands for the playback: the same summary
    # as a playback of the RTL's run, with the RTL's frames out and no mismatch.
    harness_run = run_harness(harness, replay_script(recorded), tmp_path, params=PARAMS)
    runner, played = _playback(recorded, harness_run)
    recording, steps = _recording()
    checked = checked_result(_options(tmp_path, "fast"), PARAMS, recording, steps, harness_run)
    assert checked.runner.mismatches == 0 and checked.summary.ok
    assert checked.summary.as_dict() == played.summary.as_dict()
    assert checked.summary.tx_frames_out == runner.tx_frames_out > 0


def test_disagreement_takes_the_playback(harness, recorded, tmp_path):
    # A step that differs sends the replay through the playback, whose summary is the RTL's.
    harness_run = run_harness(harness, replay_script(recorded), tmp_path, params=PARAMS)
    recording, steps = _recording()
    placed = next(e for s in steps for e in s.events if e.type is EventType.RX_PLACED)
    placed.fields["length"] += 1
    checked = checked_result(_options(tmp_path, "fast"), PARAMS, recording, steps, harness_run)
    assert checked.runner is not recording.runner
    assert checked.runner.mismatches == 1 and not checked.summary.ok
    assert checked.summary.bytes_placed == len(DEFAULT_SENT.read_bytes())


def test_stored_bytes_are_canonical():
    # However the bytes were split and ordered, the same bytes at the same addresses compare
    # equal; the last of overlapping writes wins; one byte more or different is seen.
    whole = [(0x1000, bytes(range(40)))]
    beats = [(0x1000 + i, bytes(range(i, min(i + 8, 40)))) for i in range(0, 40, 8)]
    assert stored_bytes(whole) == stored_bytes(beats[::-1]) == [(0x1000, bytes(range(40)))]
    assert stored_bytes([(0x1000, b"ab"), (0x1004, b"")]) == [(0x1000, b"ab")]
    assert stored_bytes([(0x10, b"abcd"), (0x12, b"XY"), (0x20, b"z")]) == \
           [(0x10, b"abXY"), (0x20, b"z")]
    assert stored_bytes([(0x12, b"XY"), (0x10, b"abcd")]) == [(0x10, b"abcd")]
    assert stored_bytes(whole) != stored_bytes(beats[:-1])
    assert stored_bytes(whole) != stored_bytes([(0x1000, bytes(range(39)) + b"\xff")])


def test_script_streamed_while_the_harness_runs(harness, recorded, tmp_path):
    # The harness reading its script from a pipe, a step at a time, does what it does with the
    # whole script in a file.
    from_file = run_harness(harness, replay_script(recorded), tmp_path / "file", params=PARAMS)
    script = replay_script(recorded)
    lines = list(script.lines)
    script.lines.clear()
    with HarnessProcess(harness, tmp_path / "pipe", params=PARAMS) as process:
        for start in range(0, len(lines), 50):
            script.lines.extend(lines[start:start + 50])
            process.send(script)
            assert not script.lines
        streamed = process.finish()
    assert streamed.counters["cycles"] == from_file.counters["cycles"]
    assert streamed.events == from_file.events
    assert streamed.stored == from_file.stored and streamed.stored
    assert streamed.tx_frames == from_file.tx_frames


def test_streamed_script_with_an_error_is_refused(harness, tmp_path):
    script = HarnessScript()
    script.idle(4)
    script.lines.append("JUMP 3")
    with HarnessProcess(harness, tmp_path, params=PARAMS) as process:
        process.send(script)
        with pytest.raises(HarnessError, match="unknown directive JUMP"):
            process.finish()


def test_replay_bench_compares_like_for_like(harness, monkeypatch):
    # Without the minute of cocotb: a cocotb report that is a fast one at a known speed, then
    # one whose results differ.
    cocotb_rate = 1000

    def cocotb_like(pcap, directory):
        document = replay_bench._fast_replay(pcap, directory, "as-cocotb")
        document["backend"] = "cocotb"
        document["simulation"] = {"cycles": 70_000, "wall_seconds": 70.0,
                                  "cycles_per_second": cocotb_rate, "cpu_seconds": 35.0,
                                  "cycles_per_cpu_second": 2 * cocotb_rate}
        return document, 75.0

    monkeypatch.setattr(replay_bench, "_cocotb_replay", cocotb_like)
    comparison = replay_bench.compare_backends(DEFAULT_PCAP, repeat=3)
    fast = comparison["fast"]
    assert comparison["reports_agree"]
    assert len(fast["end_to_end_seconds_of_runs"]) == 3
    assert fast["warm_up_end_to_end_seconds"] > 0 and fast["build_seconds"] >= 0
    assert fast["end_to_end_seconds"] == sorted(fast["end_to_end_seconds_of_runs"])[1]
    assert comparison["ratio"] == round(fast["end_to_end_cycles_per_second"] / cocotb_rate, 1)
    assert fast["end_to_end_seconds"] >= fast["wall_seconds"] > 0
    assert comparison["meets_target"] == (comparison["ratio"] >= replay_bench.TARGET_RATIO)
    assert len(fast["cpu_seconds_of_runs"]) == 3 and min(fast["cpu_seconds_of_runs"]) > 0
    assert comparison["fast_cycles_per_cpu_second"] > 0
    assert comparison["cpu_ratio"] == round(comparison["fast_cycles_per_cpu_second"]
                                            / (2 * cocotb_rate), 1)

    def cocotb_differs(pcap, directory):
        document, seconds = cocotb_like(pcap, directory)
        document["placed"] -= 1
        return document, seconds

    monkeypatch.setattr(replay_bench, "_cocotb_replay", cocotb_differs)
    assert not replay_bench.compare_backends(DEFAULT_PCAP, repeat=1)["reports_agree"]


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


@pytest.mark.parametrize("stall_percent", [0, 40])
def test_one_eval_per_cycle_logs_what_two_do(harness, recorded, tmp_path, stall_percent):
    # The core evaluated before every sample, as it must be when the inputs may move any output,
    # logs exactly what the harness logs evaluating it once a cycle.
    once = replay_script(recorded, stall_percent=stall_percent)
    always = HarnessScript()
    always.settle(True)
    always.lines += once.lines
    run_harness(harness, once, tmp_path / "once", params=PARAMS)
    run_harness(harness, always, tmp_path / "always", params=PARAMS)
    for log in ("events.bin", "stored.bin", "bursts.bin", "tx.bin", "rx.bin", "commands.bin"):
        assert (tmp_path / "once" / log).read_bytes() == (tmp_path / "always" / log).read_bytes()
    counters = [json.loads((tmp_path / run / "counters.json").read_text())
                for run in ("once", "always")]
    for document in counters:
        del document["wall_seconds"], document["script_seconds"]
    assert counters[0] == counters[1] and counters[0]["timeouts"] == 0


def test_both_edges_clocks_every_register_on_both_edges():
    verilog = ("always @(posedge clk)\n  a <= b;\nalways @*\n  c = d;\n"
               "always @(posedge clk) e <= f;\n")
    assert both_edges(verilog) == verilog.replace("posedge clk", "edge clk")
    with pytest.raises(HarnessError, match="negedge clk"):
        both_edges(verilog + "always @(negedge clk) g <= h;\n")
    with pytest.raises(HarnessError, match="posedge rst"):
        both_edges("always @(posedge clk, posedge rst) a <= 0;\n")


@pytest.mark.parametrize("code, writes", [
    ("x = vlSelfRef.o;", False),
    ("a = (b & (IData)(vlSelfRef.o));", False),
    ("x = ((~ (IData)(vlSelfRef.o)) | y);", False),
    ("if (((0U != (0x000000ffU & (vlSelfRef.o[1U] \n  >> 8))))) {", False),
    ("x = vlSelfRef.o == 2;", False),
    ("x = g((IData)(vlSelfRef.o));", False),
    ("x = vlSelfRef.other;", False),
    ("vlSelfRef.o = 1U;", True),
    ("vlSelfRef.o[3U] = a;", True),
    ("vlSelfRef.o |= 1;", True),
    ("vlSelfRef.o <<= 2;", True),
    ("vlSelfRef.o++;", True),
    ("vlSelf->o = 1;", True),
    ("VL_ASSIGN_W(8, vlSelfRef.o, a);", True),
    ("f(vlSelfRef.o);", True),
    ("f((vlSelfRef.o));", True),
    ("auto& r = vlSelfRef.o;", True),
    ("p = &vlSelfRef.o;", True),
    ("vlSelfRef.o.data();", True),
    ("x = (a ? vlSelfRef.o : b);", True),
    ("if (vlSelfRef.o) {", True),
])
def test_what_may_write_an_output(code, writes):
    # Only a plain read is not a write; anything unclear counts as one, which costs time only.
    assert _may_write(code, "o") == writes


def test_outputs_following_inputs_of_the_core(harness):
    inputs, following = outputs_following_inputs(harness.parent)
    header = (harness.parent / "Vtcpdct.h").read_text()
    assert "clk" not in inputs and {"rst", "s_axis_rx_tdata", "m_axi_bvalid"} <= set(inputs)
    assert all(f"&{name}," in header for name in following)
    # The analysis recognised the model (it did not fall back to "every output").
    assert following and "m_axi_wdata" not in following


def test_events_compared_as_records_then_decoded(harness, recorded, tmp_path):
    harness_run = run_harness(harness, replay_script(recorded), tmp_path, params=PARAMS)
    index = next(i for i, (_, _, record) in enumerate(harness_run.event_records)
                 if record[0] == EventType.RX_PLACED)
    cycle, step, record = harness_run.event_records[index]

    def with_record(changed):
        records = list(harness_run.event_records)
        records[index] = (cycle, step, bytes(changed))
        harness_run.event_records = records
        runner = PlaybackRunner(PARAMS, recorded, harness_run)
        runner.check_recorded()
        return runner.mismatches

    # A bit outside every field (the header's reserved bits) is not part of the event.
    assert with_record(record[:1] + bytes([record[1] | 0x02]) + record[2:]) == 0
    # The low bit of the sequence number is.
    assert with_record(record[:4] + bytes([record[4] ^ 0x01]) + record[5:]) == 1
    # A model event no record decodes to (an index too wide) differs from the RTL's.
    with_record(record)
    tampered = copy.deepcopy(recorded)
    tampered[step - 1].events[0].index = 1 << 16
    runner = PlaybackRunner(PARAMS, tampered, harness_run)
    runner.check_recorded()
    assert runner.mismatches == 1 and runner.log[0].startswith(f"step {step} ")


def test_harness_build_is_profile_guided_with_gcc(harness):
    # With GCC the harness is compiled twice: instrumented, then from the counts its run on the
    # bench's traffic left (one .gcda per object file). A finished build is marked as such, so
    # an instrumented harness left by a build that stopped halfway is never taken for it.
    obj = harness.parent
    assert (obj.parent / "built").exists()
    log = (obj.parent / "build.log").read_text()
    if not compiler_is_gcc():
        assert "-fprofile" not in log
        return
    assert log.index("-fprofile-generate") < log.index("-fprofile-use")
    counted = {path.stem for path in obj.glob("*.gcda")}
    model = {path.stem for path in obj.glob("Vtcpdct___024root__[0-9].cpp")}
    assert model and model <= counted


def test_prune_builds_keeps_recent_and_locked(tmp_path):
    """Builds beyond the most recently used few are removed, but not one used within the hour,
    one whose lock is held, the one just made, or anything that is not a harness build."""
    import fcntl
    import os
    from fast_harness import prune_builds

    now = 1_000_000.0
    ages = {"fast-a": 10, "fast-b": 7200, "fast-c": 9000, "fast-d": 8000, "fast-e": 600,
            "fast-locked": 20000, "fast-nostamp": 30000, "fast-spare": 40000}
    for name, age in ages.items():
        folder = tmp_path / name
        folder.mkdir()
        (folder / ".lock").touch()
        if name != "fast-nostamp":
            (folder / "built").touch()
            os.utime(folder / "built", (now - age, now - age))
        os.utime(folder, (now - age, now - age))
    (tmp_path / "0123456789abcdef").mkdir()     # a cocotb build: never touched
    os.utime(tmp_path / "0123456789abcdef", (now - 50000, now - 50000))

    with open(tmp_path / "fast-locked" / ".lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_SH)
        removed = prune_builds(keep=1, spare=tmp_path / "fast-spare", root=tmp_path, now=now)

    # By last use: a (10 s), e (600 s), b, d, c, locked, nostamp. The most recent stays; of the
    # rest, those used more than an hour ago go unless locked.
    assert sorted(folder.name for folder in removed) == ["fast-b", "fast-c", "fast-d",
                                                         "fast-nostamp"]
    left = sorted(folder.name for folder in tmp_path.iterdir())
    assert left == ["0123456789abcdef", "fast-a", "fast-e", "fast-locked", "fast-spare"]
