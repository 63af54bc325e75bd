"""Constrained-random regression (``test_regress``): a short fixed-seed slice under pytest, and
the long run of ``make regress``; and tests that the memory-safety monitor of ``tb.py`` reports
each rule it checks.

``make regress SEED=… COUNT=… [REGRESS_CONFIGS="system system512 jumbo"]`` runs this file as a
script: ``COUNT`` random actions on each configuration with ``SEED``, then prints the coverage of
every bin summed over the configurations, writes it as JSON, and exits 1 if a run failed or a bin
was never hit. A failing run prints ``TCPDCT_SEED``, which replays it::

    TCPDCT_SEED=0x1234 TCPDCT_REGRESS_COUNT=2000 make regress   # or SEED=0x1234 COUNT=2000
"""

import argparse
import json
import sys
import time
from pathlib import Path

from tcpdct.params import Params

from cocotb_build import REPO_ROOT, CocotbFailure, run_cocotb
from test_system_runner import SYSTEM_PARAMS


#: The configurations of the regression: the build of the system tests at 64 and at 512 bits,
#: and a jumbo-frame build with a receive packet buffer that holds two frames of 9018 bytes.
REGRESS_CONFIGS = {
    "system":    Params(data_width=64, **SYSTEM_PARAMS),
    "system512": Params(data_width=512, **SYSTEM_PARAMS),
    "jumbo":     Params(data_width=64, **dict(SYSTEM_PARAMS, max_frame_bytes=9018,
                                              rx_buffer_bytes=32768)),
}

#: The slice ``make test`` runs: fixed, so that it is the same run every time.
SLICE_SEED = 0x5eed_0001
SLICE_COUNT = 150


def run_regress(config, seed, count, coverage_json):
    """Run ``test_regress`` with ``count`` actions on configuration ``config``; the coverage is
    written to ``coverage_json``. Raises :class:`cocotb_build.CocotbFailure` if it fails."""
    params = REGRESS_CONFIGS[config]
    env = {"TCPDCT_PARAMS": json.dumps(params.as_dict()), "TCPDCT_SEED": hex(seed),
           "TCPDCT_REGRESS_COUNT": str(count), "TCPDCT_COVERAGE_JSON": str(coverage_json)}
    run_cocotb("test_regress", params, extra_env=env)


def merge(paths):
    """``(counts, rules, runs)`` summed over coverage JSON files."""
    counts, rules, runs = {}, {}, []
    for path in paths:
        data = json.loads(Path(path).read_text())
        runs.append(data.get("run", {}))
        for name, entry in data["bins"].items():
            counts[name] = counts.get(name, 0) + entry["count"]
            rules[name] = entry["rule"]
    return counts, rules, runs


def report(counts, rules):
    width = max(map(len, counts))
    hit = sum(1 for count in counts.values() if count)
    lines = [f"functional coverage: {hit} of {len(counts)} bins hit"]
    for name, count in counts.items():
        lines.append(f"  {'  ' if count else '!!'} {name:<{width}}  {rules[name]:<9} {count}")
    return "\n".join(lines)


def test_regress_slice(tmp_path):
    """A fixed-seed slice of the regression on the system build: the scoreboard, the memory
    safety monitor and a reset in the middle of a frame, with coverage recorded."""
    path = tmp_path / "coverage.json"
    run_regress("system", SLICE_SEED, SLICE_COUNT, path)
    counts, _, runs = merge([path])
    assert runs[0]["passed"] and runs[0]["resets"] >= 1, runs
    # The slice reaches the main paths; the rarer bins are for the long run (make regress).
    for name in ("R20 placed into 1 buffer(s)", "R17 BUF_REQ", "LEGACY NO_MATCH",
                 "R40 POST_BUFFER OK", "reset in the middle of a received frame",
                 "R50 data events checked against outstanding writes"):
        assert counts[name], f"the slice no longer reaches {name!r}"


# The memory-safety monitor can fail -------------------------------------------------------------
# Its handshakes given by hand, without a simulator: a core that behaves, then each way of
# misbehaving once, which must be reported under its rule.

def _monitor():
    from tb import DmaWriteMonitor
    return DmaWriteMonitor(None, Params(data_width=64), watch=False)


def _post(monitor, opcode, address, length, tag, index=1, status=None):
    """A POST_BUFFER or POST_LEGACY taken, and its CMD_DONE with ``status`` if given."""
    from tcpdct.records import Command, Event, EventType
    monitor.take_command(Command(opcode, index, address=address, length=length, tag=tag).pack())
    if status is not None:
        monitor.take_event(Event(EventType.CMD_DONE, index, opcode=opcode, status=status))


def _write(monitor, address, data, *, respond=True):
    """One INCR burst writing ``data`` at ``address`` (64-bit beats)."""
    start = address - address % 8
    beats = -(-(address + len(data) - start) // 8)
    monitor.take_address(address, beats, 3)
    for number in range(beats):
        word, strobe = 0, 0
        for lane in range(8):
            offset = start + 8 * number + lane - address
            if 0 <= offset < len(data):
                word |= data[offset] << 8 * lane
                strobe |= 1 << lane
        monitor.take_beat(word, strobe, number == beats - 1)
    if respond:
        monitor.take_response(0)


def _rules(monitor):
    return [text.split("rule ")[1].split(":")[0] for text in monitor.violations]


def test_monitor_passes_a_correct_core():
    from tcpdct.records import Event, EventType, Opcode, CmdStatus
    monitor = _monitor()
    _post(monitor, Opcode.POST_BUFFER, 0x1003, 100, 7, status=CmdStatus.OK)
    _post(monitor, Opcode.POST_LEGACY, 0x3001, 80, 8, index=0xffff, status=CmdStatus.OK)
    _write(monitor, 0x1003, bytes(60))
    monitor.take_event(Event(EventType.RX_PLACED, 1, length=60))
    _write(monitor, 0x1003 + 60, bytes(40))
    monitor.take_event(Event(EventType.RX_PLACED, 1, length=40))
    monitor.take_event(Event(EventType.BUF_DONE, 1, tag=7, bytes=100))
    _write(monitor, 0x3001, bytes(70))
    monitor.take_event(Event(EventType.LEGACY, tag=8, frame_len=70))
    assert monitor.violations == []


def test_monitor_takes_beats_sent_before_their_address():
    """AXI lets a master send W beats before their AW: the bytes count as written as soon as
    the address arrives, not only when a later beat does."""
    from tcpdct.records import Event, EventType, Opcode, CmdStatus
    monitor = _monitor()
    _post(monitor, Opcode.POST_BUFFER, 0x1003, 100, 7, status=CmdStatus.OK)
    monitor.take_beat(0x77 << 8 * 3, 1 << 3, True)
    monitor.take_address(0x1000, 1, 3)
    monitor.take_response(0)
    monitor.take_event(Event(EventType.RX_PLACED, 1, length=1))
    assert monitor.violations == []
    assert monitor.written == {0x1003: 0x77}


def test_monitor_reports_each_rule():
    from tcpdct.records import Event, EventType, Opcode, CmdStatus
    monitor = _monitor()
    _post(monitor, Opcode.POST_BUFFER, 0x1000, 100, 7, status=CmdStatus.OK)
    _write(monitor, 0x5000, b"x")                                   # in no buffer
    assert _rules(monitor) == ["R52a"]
    _write(monitor, 0x1000, bytes(10), respond=False)
    monitor.take_event(Event(EventType.RX_PLACED, 1, length=10))    # before the response
    assert _rules(monitor)[1:] == ["R50"]
    monitor.take_response(0)
    _write(monitor, 0x1000 + 5, b"y")                               # the same byte again
    assert _rules(monitor)[2:] == ["R52a"]
    monitor.take_event(Event(EventType.BUF_DONE, 1, tag=7, bytes=12))   # 10 written
    assert _rules(monitor)[3:] == ["R52-announce", "R52-announce"]
    _write(monitor, 0x1000 + 20, b"z")                              # after its BUF_DONE
    assert _rules(monitor)[5:] == ["R52b"]

    monitor = _monitor()
    _post(monitor, Opcode.POST_BUFFER, 0x3000, 100, 11, status=CmdStatus.OK)
    _write(monitor, 0x3000, bytes(11))                              # one byte too many
    monitor.take_event(Event(EventType.RX_PLACED, 1, length=10))
    assert _rules(monitor) == []                                    # a later frame's, maybe
    monitor.check_quiet()                                           # ... but none is coming
    assert _rules(monitor) == ["R52-announce"]

    monitor = _monitor()
    _post(monitor, Opcode.POST_BUFFER, 0x2000, 100, 9)
    _write(monitor, 0x2000, b"w")                                   # before a refusal
    monitor.take_event(Event(EventType.CMD_DONE, 1, opcode=Opcode.POST_BUFFER,
                             status=CmdStatus.QUEUE_FULL))
    assert _rules(monitor) == ["R52a"]
    _post(monitor, Opcode.POST_LEGACY, 0x4000, 100, 10, status=CmdStatus.OK)
    monitor.reset()
    _write(monitor, 0x4000, b"r")                                   # after a reset
    assert _rules(monitor)[1:] == ["R52b"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=lambda text: int(text, 0), default=1)
    parser.add_argument("--count", type=int, default=2000,
                        help="random actions per configuration")
    parser.add_argument("--configs", nargs="+", default=list(REGRESS_CONFIGS),
                        choices=list(REGRESS_CONFIGS))
    parser.add_argument("--json", type=Path, default=REPO_ROOT / "build" / "regress-coverage.json",
                        help="where to write the coverage summed over the configurations")
    args = parser.parse_args(argv)
    # The simulation runs in a directory of its own: it must be given where to write.
    args.json = args.json.resolve()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    paths, failed = [], []
    for config in args.configs:
        path = args.json.with_name(f"{args.json.stem}-{config}.json")
        path.unlink(missing_ok=True)
        started = time.monotonic()
        try:
            run_regress(config, args.seed, args.count, path)
        except CocotbFailure as failure:
            failed.append(f"{config}: {failure} (replay: TCPDCT_SEED={args.seed:#x}, "
                          f"COUNT={args.count})")
        print(f"regress {config}: seed {args.seed:#x}, {args.count} actions, "
              f"{time.monotonic() - started:.0f} s")
        if path.exists():
            paths.append(path)
    if not paths:
        print("no coverage written", file=sys.stderr)
        return 1
    counts, rules, runs = merge(paths)
    print(report(counts, rules))
    for run in runs:
        print("run:", json.dumps({key: value for key, value in run.items() if key != "params"}))
    missing = [name for name, count in counts.items() if not count]
    args.json.write_text(json.dumps({"seed": args.seed, "count": args.count,
                                     "configs": args.configs, "runs": runs,
                                     "bins": {name: {"rule": rules[name], "count": count}
                                              for name, count in counts.items()},
                                     "missing": missing}, indent=1))
    print(f"coverage written to {args.json}")
    for line in failed:
        print("FAILED", line, file=sys.stderr)
    if missing:
        print(f"{len(missing)} bin(s) never hit: {missing}", file=sys.stderr)
    return 1 if failed or missing else 0


if __name__ == "__main__":
    sys.exit(main())
