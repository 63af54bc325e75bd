"""cocotb test behind ``make sim``: replay a capture through the RTL (see :mod:`replay_cocotb`);
run as a program, the speed of the fast replay against this one.

The testbench checks every step against the golden model and stops at the first disagreement;
the summary then records one mismatch and the test fails.

As a program::

    python sim/replay_bench.py [--pcap FILE] [--repeat N] [--json FILE]

replays the capture on both RTL backends — ``cocotb`` once, ``fast`` ``N`` times, half before
the cocotb run and half after, so that both see the machine's load alike, after one fast replay
that builds the harness and warms the caches (reported, not counted) — and prints and writes,
for each, the simulated cycles, the wall seconds and the cycles per second of the replay (model
and comparison included, the builds not: they are reported apart), and the ratio of the fast
replay's cycles per second (the median run's) to cocotb's; and the same ratio in cycles per
processor second (``cpu_ratio``), which the other work on a shared machine moves much less. It
exits 1 unless every replay passes and their JSON reports agree in everything but timing.
"""

import argparse
import contextlib
import io
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import cocotb
from cocotb.triggers import RisingEdge

from replay import run_replay, report, write_json


class DutRunner:
    """The testbench as a :class:`schedule.Runner`."""

    name = "cocotb"

    def __init__(self, tb):
        self.tb = tb
        self.params = tb.params
        self.memory = tb.host_memory
        self.mismatches = 0
        self.tx_frames_out = 0

    async def command(self, cmd):
        return await self.tb.command(cmd)

    async def rx(self, frames):
        return await self.tb.rx(frames)

    async def tx(self, frame):
        events = await self.tb.tx(frame)
        self.tx_frames_out += 1
        return events

    async def expire_buffer_request(self, reason):
        # Waits out the default BUF_REQ_TIMEOUT in simulated cycles: slow, but the driver asks
        # for it only when a connection's buffer queue has no free slot (buffers_per_conn 1).
        return await self.tb.expire_buffer_request(reason)


async def _count_cycles(dut, counter):
    while True:
        await RisingEdge(dut.clk)
        counter[0] += 1


@cocotb.test()
async def replay(dut):
    # The testbench is on the path only in the simulator's process (cocotb_build puts tb/cocotb
    # there); the bench's command line below imports this module without it.
    from tb import TB, ScoreboardError, CLOCK_NS

    request = json.loads(os.environ["TCPDCT_REPLAY"])
    options = argparse.Namespace(**request)
    tb = TB(dut)
    tb.set_pauses("none")
    await tb.reset()
    cycles = [0]
    cocotb.start_soon(_count_cycles(dut, cycles))
    runner = DutRunner(tb)

    started = time.monotonic()
    cpu_started = time.process_time()
    try:
        result = await run_replay(runner, pcap=options.pcap, local=options.local,
                                  delegate=options.delegate == "auto")
    except ScoreboardError as error:
        if options.json:
            write_json(options.json, options, "cocotb", tb.params, mismatches=1,
                       error=str(error))
        raise
    wall = time.monotonic() - started
    cpu = time.process_time() - cpu_started

    exit_code = report(result, options, "cocotb")
    rate = cycles[0] / wall if wall else 0.0
    print(f"simulated {cycles[0]} cycles of {CLOCK_NS} ns in {wall:.1f} s: "
          f"{rate:,.0f} cycles/s")
    if options.json:
        path = Path(options.json)
        document = json.loads(path.read_text())
        document["simulation"] = {"cycles": cycles[0], "wall_seconds": round(wall, 3),
                                  "cycles_per_second": round(rate),
                                  "cpu_seconds": round(cpu, 3),
                                  "cycles_per_cpu_second": round(cycles[0] / cpu) if cpu else 0}
        path.write_text(json.dumps(document, indent=2) + "\n")
    assert exit_code == 0, "the replay's summary does not check out (see above)"


#: The speed-up the fast replay must reach over cocotb, end to end (issue #5).
TARGET_RATIO = 50

#: What differs between two backends' reports of the same replay, whatever the RTL did.
TIMING_FIELDS = {"backend", "simulation"}


class BenchError(RuntimeError):
    """A replay of the comparison failed, so there is nothing to compare."""


def _options(pcap, backend, json_path):
    return argparse.Namespace(pcap=Path(pcap), local=None, delegate="auto", json=json_path,
                              dump=None, waves=False, backend=backend)


def _report(backend, exit_code, path):
    document = json.loads(path.read_text()) if path.exists() else {}
    if exit_code != 0 or "simulation" not in document:
        raise BenchError(f"the {backend} replay failed (exit code {exit_code}, "
                         f"{document.get('error', 'see its output')})")
    return document


def _fast_replay(pcap, directory, number):
    """One fast replay through ``replay.py``'s own entry point (``make sim FAST=1``); its JSON
    report."""
    import replay_fast
    path = Path(directory) / f"fast-{number}.json"
    with contextlib.redirect_stdout(io.StringIO()):
        exit_code = replay_fast.run(_options(pcap, "fast", path))
    return _report("fast", exit_code, path)


def _cocotb_replay(pcap, directory):
    """The cocotb replay (``make sim``); its JSON report, and the process's wall seconds, build
    and simulator start included."""
    import replay_cocotb
    path = Path(directory) / "cocotb.json"
    started = time.monotonic()
    exit_code = replay_cocotb.run(_options(pcap, "cocotb", path))
    return _report("cocotb", exit_code, path), time.monotonic() - started


def _results(document):
    return {key: value for key, value in document.items() if key not in TIMING_FIELDS}


def compare_backends(pcap, repeat=5):
    """Replay ``pcap`` on both RTL backends; the comparison as a JSON-ready dict.

    Raises
    ------
    BenchError
        If a replay failed.
    """
    with tempfile.TemporaryDirectory(prefix="tcpdct-replay-bench-") as directory:
        # The first run after a build reads the new executable from disk; cocotb's figure does
        # not include its simulator's start either.
        warm_up = _fast_replay(pcap, directory, "warm-up")
        load_before = os.getloadavg()
        fast = [_fast_replay(pcap, directory, number) for number in range(repeat // 2)]
        cocotb, cocotb_process = _cocotb_replay(pcap, directory)
        fast += [_fast_replay(pcap, directory, number)
                 for number in range(repeat // 2, repeat)]
        load_after = os.getloadavg()
    fast_runs = [document["simulation"] for document in fast]
    median = sorted(fast_runs, key=lambda run: run["end_to_end_seconds"])[len(fast_runs) // 2]
    cocotb_rate = cocotb["simulation"]["cycles_per_second"]
    ratio = median["end_to_end_cycles_per_second"] / cocotb_rate
    # Processor time: the simulator's whole process for cocotb, the replay's and the harness's
    # for the fast backend (the median of its runs).
    cocotb_cpu_rate = cocotb["simulation"].get("cycles_per_cpu_second")
    fast_cpu_rate = sorted(run["cycles_per_cpu_second"] for run in fast_runs)[len(fast_runs) // 2]
    agree = all(_results(document) == _results(cocotb) for document in [warm_up, *fast])
    return {
        "pcap": str(pcap),
        "machine": {"nproc": os.cpu_count(), "processor": platform.processor(),
                    "load_average_before": [round(load, 2) for load in load_before],
                    "load_average_after": [round(load, 2) for load in load_after]},
        "cocotb": {**cocotb["simulation"], "process_seconds": round(cocotb_process, 2)},
        "fast_cycles_per_cpu_second": fast_cpu_rate,
        "fast": {**median,
                 "end_to_end_seconds_of_runs": [run["end_to_end_seconds"] for run in fast_runs],
                 "cpu_seconds_of_runs": [run["cpu_seconds"] for run in fast_runs],
                 "warm_up_end_to_end_seconds": warm_up["simulation"]["end_to_end_seconds"],
                 "build_seconds": warm_up["simulation"]["build_seconds"]},
        "ratio": round(ratio, 1),
        "harness_ratio": round(median["cycles_per_second"] / cocotb_rate, 1),
        "cpu_ratio": round(fast_cpu_rate / cocotb_cpu_rate, 1) if cocotb_cpu_rate else None,
        "target_ratio": TARGET_RATIO,
        "meets_target": ratio >= TARGET_RATIO,
        "reports_agree": agree,
    }


def _format(comparison):
    cocotb, fast = comparison["cocotb"], comparison["fast"]
    runs = ", ".join(f"{seconds:.3f}" for seconds in fast["end_to_end_seconds_of_runs"])
    return "\n".join([
        f"replay of {comparison['pcap']}",
        f"{'backend':<26} {'cycles':>8} {'wall s':>8} {'cycles/s':>10}",
        f"{'cocotb':<26} {cocotb['cycles']:>8} {cocotb['wall_seconds']:>8.3f} "
        f"{cocotb['cycles_per_second']:>10,}",
        f"{'fast, end to end (median)':<26} {fast['cycles']:>8} "
        f"{fast['end_to_end_seconds']:>8.3f} {fast['end_to_end_cycles_per_second']:>10,}",
        f"{'fast, harness alone':<26} {fast['cycles']:>8} {fast['wall_seconds']:>8.3f} "
        f"{fast['cycles_per_second']:>10,}",
        f"fast end to end of each run (s): {runs}; warm-up run "
        f"{fast['warm_up_end_to_end_seconds']:.3f} s, harness build {fast['build_seconds']:.1f} s",
        f"ratio end to end {comparison['ratio']}x (target {comparison['target_ratio']}x: "
        f"{'met' if comparison['meets_target'] else 'NOT met'}), harness alone "
        f"{comparison['harness_ratio']}x",
        f"ratio of cycles per processor second {comparison['cpu_ratio']}x (cocotb "
        f"{cocotb.get('cycles_per_cpu_second')}, fast, median of the runs "
        f"{comparison['fast_cycles_per_cpu_second']})",
        "the reports of both backends agree in everything but timing"
        if comparison["reports_agree"] else "the reports of the two backends DIFFER",
    ])


def main(argv=None):
    from replay import DEFAULT_PCAP
    parser = argparse.ArgumentParser(
        prog="replay_bench.py",
        description="Speed of the fast replay against the cocotb replay, on one capture.")
    parser.add_argument("--pcap", type=Path, default=DEFAULT_PCAP,
                        help="classic pcap, Ethernet link type (default: the bundled capture)")
    parser.add_argument("--repeat", type=int, default=10,
                        help="fast replays, half before the cocotb one and half after")
    parser.add_argument("--json", type=Path, help="write the comparison as JSON to this file")
    options = parser.parse_args(argv)
    if options.repeat < 1:
        parser.error(f"--repeat must be at least 1, not {options.repeat!r}")
    try:
        comparison = compare_backends(options.pcap, options.repeat)
    except BenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(_format(comparison))
    if options.json is not None:
        options.json.parent.mkdir(parents=True, exist_ok=True)
        options.json.write_text(json.dumps(comparison, indent=2) + "\n")
    return 0 if comparison["reports_agree"] else 1


if __name__ == "__main__":
    sys.exit(main())
