"""``make bench``: line-rate figures of the RTL, measured with the compiled harness.

Every cell streams at least :data:`MIN_FRAMES` frames of one size into ``s_axis_rx`` back to
back, with the same number of frames of the same size into ``s_axis_tx`` at the same time, and
no back-pressure anywhere (event stream, transmit output and AXI4 write slave always ready).
The harness keeps the legacy ring and every delegated connection's buffer queue full by itself
(``AUTO_LEGACY`` / ``AUTO_USER``): each buffer the core completes is posted again at once, on
the command stream, while the frames flow.

The traffic, ``placed``, ``spread`` or ``legacy``, is described in :mod:`traffic`.

Figures per cell: receive beats accepted per cycle (beats / cycles from the first beat offered
to the last one taken), transmit beats per cycle (the same on ``s_axis_tx``), and the latency in
cycles from each frame's last beat to the first DMA write of that frame (its AW or its first W,
whichever comes first) and to its terminal event, min / median / max. Every frame must produce
the terminal event its traffic calls for; a cell where one does not is marked as failed and the
bench exits 1.

Usage::

    python sim/bench.py [--widths 64 512] [--sizes 64 128 256 576 1518 imix]
                        [--traffic placed spread legacy] [--frames 2000] [--json FILE]
"""

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tcpdct.params import Params
from tcpdct.records import Opcode, EventType

from fast_harness import build_harness, run_harness
from traffic import SIZES, TRAFFIC, cell_frames, cell_script


__all__ = ["SIZES", "TRAFFIC", "MIN_FRAMES", "cell_frames", "run_cell", "format_table", "machine", "main"]


MIN_FRAMES = 2000


def _first_write_latencies(run, last_beats, data_bytes):
    """Cycles from each frame's last beat to its first DMA write, in frame order.

    The DMA writes frames in decision order, and each frame's first write starts at the byte
    its data goes to: the legacy buffer its LEGACY event names, or the fill position of its
    connection's buffers when it is placed. The buffers come from the commands the harness
    logged, automatic posts included. That write is the address or the first beat of a burst
    starting there, whichever goes first; or, for a payload placed right after the one before
    inside a host beat, the last beat of that one's last burst, which carries the first bytes
    of both (the DMA writer's joined beat).
    """
    tags = {}
    queues = {}
    for _, command in run.commands:
        if command.opcode is Opcode.POST_LEGACY:
            tags[command.tag] = command.address
        elif command.opcode is Opcode.POST_BUFFER:
            queues.setdefault(command.index, []).append([command.address, command.length, 0])
    terminal = [event for _, step, event in run.events
                if step == 1 and event.type in (EventType.RX_PLACED, EventType.LEGACY,
                                                EventType.DROP)]
    starts = []
    for event in terminal:
        if event.type is EventType.LEGACY:
            starts.append(tags.get(event.tag))
        elif event.type is EventType.RX_PLACED:
            queue = queues.get(event.index, [])
            while queue and queue[0][2] == queue[0][1]:
                queue.pop(0)
            starts.append(queue[0][0] + queue[0][2] if queue else None)
            left = event.length
            for buffer in queue:
                taken = min(left, buffer[1] - buffer[2])
                buffer[2] += taken
                left -= taken
                if not left:
                    break
        else:
            starts.append(None)
    latencies = []
    position = 0
    bursts = [burst for burst in run.bursts if burst[5] == 1]
    for start, last_beat in zip(starts, last_beats):
        if start is None:
            latencies.append(None)
            continue
        ahead = range(position, min(len(bursts), position + _BURSTS_AHEAD))
        found = next((number for number in ahead if bursts[number][3] == start), None)
        if found is not None:
            aw_cycle, w_cycle = bursts[found][:2]
            latencies.append(min(aw_cycle, w_cycle) - last_beat)
            position = found + 1
            continue
        # Joined to the frame before: in the last beat of its last burst.
        joined = None
        for number in range(max(0, position - _BURSTS_BEHIND), ahead.stop):
            address, beats, last_w_cycle = bursts[number][2], bursts[number][4], bursts[number][6]
            last_beat_at = address - address % data_bytes + (beats - 1) * data_bytes
            if last_beat_at <= start < last_beat_at + data_bytes:
                joined = last_w_cycle
                position = max(position, number + 1)
                break
        latencies.append(None if joined is None else joined - last_beat)
    return latencies


#: Where a frame's first write is looked for, from the burst after the one the frame before
#: started with: its own first burst comes after the rest of that frame's (a 1518-byte frame at
#: 64 bits is 12 bursts of 16 beats, one more per 4 KiB crossed) ...
_BURSTS_AHEAD = 64
#: ... and the burst its first bytes joined, that frame's last, after its first.
_BURSTS_BEHIND = 1


def _stats(values):
    values = [value for value in values if value is not None]
    if not values:
        return None
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def run_cell(executable, params, size, traffic, *, count=MIN_FRAMES, workdir=None):
    """Run one cell; a dict of its figures (see this module's docstring).

    Members of the dict: ``data_width``, ``size``, ``traffic``, ``frames``,
    ``rx_beats_per_cycle``, ``tx_beats_per_cycle``, ``dma_latency`` and ``event_latency``
    (``min``/``median``/``max`` cycles), ``wrong_events`` (frames whose terminal event was not
    the expected type, or missing), ``missing_writes`` (frames whose first write was not
    found), ``cmd_errors``, ``timeouts``, ``cycles``, ``harness_seconds`` and ``ok``.
    """
    rx, expected, tx, delegated = cell_frames(params, size, traffic, count)
    script = cell_script(params, rx, tx, delegated)
    with tempfile.TemporaryDirectory(prefix="tcpdct-bench-", dir=workdir) as directory:
        run = run_harness(executable, script, directory, params=params)
    counters = run.counters
    got = [event for _, step, event in run.events
           if step == 1 and event.type in (EventType.RX_PLACED, EventType.LEGACY,
                                           EventType.DROP)]
    wrong = sum(event.type is not kind for event, kind in zip(got, expected))
    wrong += abs(len(got) - len(expected))
    last_beats = [last for _, last in run.rx_frames[-len(rx):]]
    event_cycles = [cycle for cycle, step, event in run.events
                    if step == 1 and event.type in (EventType.RX_PLACED, EventType.LEGACY,
                                                    EventType.DROP)]
    event_latency = [cycle - last for cycle, last in zip(event_cycles, last_beats)]
    dma_latency = _first_write_latencies(run, last_beats, params.data_bytes)

    def rate(beats, first, last):
        return round(beats / (last - first + 1), 4) if first is not None and beats else 0.0

    tx_beats = counters["tx_in_beats"]
    cell = {
        "data_width": params.data_width, "size": size, "traffic": traffic,
        "frames": len(rx),
        "rx_beats_per_cycle": rate(counters["rx_beats"], counters["rx_first_offer"],
                                   counters["rx_last_accept"]),
        "tx_beats_per_cycle": rate(tx_beats, counters["tx_first_offer"],
                                   counters["tx_last_accept"]),
        "dma_latency": _stats(dma_latency),
        "event_latency": _stats(event_latency),
        "wrong_events": wrong,
        "missing_writes": sum(latency is None for latency in dma_latency),
        "cmd_errors": counters["cmd_errors"],
        "timeouts": counters["timeouts"],
        "cycles": counters["cycles"],
        "harness_seconds": counters["wall_seconds"],
    }
    cell["ok"] = not (wrong or cell["missing_writes"] or cell["cmd_errors"] or cell["timeouts"])
    return cell


def machine():
    """What the figures were measured on (they are in cycles; only the run time depends on it)."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": cpu, "python": platform.python_version()}


def format_table(cells):
    def latency(stats):
        if stats is None:
            return "-"
        return f"{stats['min']}/{stats['median']:g}/{stats['max']}"
    lines = [f"{'width':>5} {'size':>5} {'traffic':<7} {'frames':>6} {'rx beats/cyc':>12} "
             f"{'tx beats/cyc':>12} {'to 1st write min/med/max':>24} "
             f"{'to event min/med/max':>21}  ok"]
    for cell in cells:
        lines.append(
            f"{cell['data_width']:>5} {cell['size']:>5} {cell['traffic']:<7} "
            f"{cell['frames']:>6} {cell['rx_beats_per_cycle']:>12.3f} "
            f"{cell['tx_beats_per_cycle']:>12.3f} {latency(cell['dma_latency']):>24} "
            f"{latency(cell['event_latency']):>21}  {'yes' if cell['ok'] else 'NO'}")
    return "\n".join(lines)


def _parse_args(argv):
    parser = argparse.ArgumentParser(prog="bench.py", description="Line-rate benchmark of "
                                     "tcpdct on the RTL (compiled Verilator harness).")
    parser.add_argument("--widths", type=int, nargs="+", default=[64, 512],
                        choices=(64, 128, 256, 512), help="data widths (default: 64 512)")
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=SIZES,
                        help="frame sizes with FCS, or imix (default: all)")
    parser.add_argument("--traffic", nargs="+", default=list(TRAFFIC), choices=TRAFFIC)
    parser.add_argument("--frames", type=int, default=MIN_FRAMES,
                        help=f"frames per cell (default {MIN_FRAMES})")
    parser.add_argument("--json", type=Path, help="write the figures as JSON to this file")
    options = parser.parse_args(argv)
    if options.frames < 1:
        parser.error(f"--frames must be at least 1, not {options.frames!r}")
    return options


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    options = _parse_args(argv)
    started = time.monotonic()
    cells = []
    for width in options.widths:
        params = Params(data_width=width)
        print(f"building the harness for {width}-bit data (cached after the first time)...",
              flush=True)
        executable = build_harness(params)
        for size in options.sizes:
            for traffic in options.traffic:
                cell = run_cell(executable, params, size, traffic, count=options.frames)
                cells.append(cell)
                print(format_table([cell]).splitlines()[1], flush=True)
    print()
    print(format_table(cells))
    document = {"command": "python sim/bench.py " + " ".join(argv), "machine": machine(),
                "params": {str(width): Params(data_width=width).as_dict()
                           for width in options.widths},
                "seconds": round(time.monotonic() - started, 1), "cells": cells}
    if options.json is not None:
        options.json.parent.mkdir(parents=True, exist_ok=True)
        options.json.write_text(json.dumps(document, indent=2) + "\n")
        print(f"wrote {options.json}")
    failed = [cell for cell in cells if not cell["ok"]]
    if failed:
        print(f"error: {len(failed)} cell(s) did not give every frame its expected event, "
              f"or lost a write or a command", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
