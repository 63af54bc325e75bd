"""The compiled harness: the core under Verilator driven by C++, without a Python testbench.

cocotb spends most of a simulation in Python, at about ten thousand cycles a second; the
harness (``sim/harness/harness.cpp``) runs a *script* of steps prepared in advance and logs
what the core did, at hundreds of times that rate. It serves the fast replay
(:mod:`replay_fast`) and the benchmarks (:mod:`bench`).

Script
------
Text, one directive a line (:class:`HarnessScript` writes it). ``RX``, ``TX`` and ``CMD`` queue
an item on their input stream and return at once, so the three streams run concurrently; a
``WAIT_*`` blocks the script until the core has done something; events and DMA writes are
labelled with the ``STEP`` in force when they happen. Counts are cumulative from the start.
The harness reads the script as it runs it: from a file (:func:`run_harness`), or from its
standard input while the script is still being written (:class:`HarnessProcess`).

============================  ===================================================================
``RX tuser HEX``              a frame for ``s_axis_rx`` (``tuser`` 1: MAC error on its last beat)
``TX HEX``                    a frame for ``s_axis_tx``
``CMD HEX``                   a 32-byte command record for ``s_axis_cmd``
``STEP n``                    label what happens from now on with step ``n``
``WAIT_TERMINAL n``           until ``n`` RX_PLACED/LEGACY/DROP events have arrived
``WAIT_EVENTS n``             until ``n`` events of any type have arrived
``WAIT_CMD_DONE n``           until ``n`` CMD_DONE events have arrived
``WAIT_CMD_IDLE``             until every queued command has been sent and answered
``WAIT_TX_OUT n``             until ``n`` frames have left ``m_axis_tx``
``WAIT_RX_IDLE``              until every queued RX frame has been taken
``IDLE k``                    ``k`` cycles
``AUTO_LEGACY base len n``    post ``n`` legacy buffers of ``len`` bytes from ``base`` (hex) and
                              post each again as soon as its LEGACY event arrives
``AUTO_USER i base len n``    the same for the user buffers of entry ``i``, re-posted on BUF_DONE
``STALL channel pct seed``    pauses on ``rx``, ``tx``, ``cmd`` (idle cycles) or ``evt``,
                              ``tx_out``, ``aw``, ``w``, ``b`` (back-pressure), ``pct`` percent
``TIMEOUT k``                 a WAIT gives up after ``k`` cycles (counted in ``timeouts``)
``LOG_WRITES 0|1``            whether every W beat goes to ``writes.bin`` (default 1)
``SETTLE 0|1``                1: evaluate the core before sampling its outputs in every cycle, not
                              only when an output that follows the inputs may have moved (below);
                              the same logs, more slowly: a check of the harness (default 0)
============================  ===================================================================

Reset (8 cycles) and 8 idle cycles precede the script. The harness evaluates the Verilated core
once per cycle (:func:`both_edges`), and a second time before sampling the outputs only when the
inputs have changed and an output it reads may follow them (:func:`outputs_following_inputs`).
The AXI4 write slave is always ready and answers OKAY unless stalls are set; the write log is the
host memory (:attr:`HarnessRun.stored`).

Outputs (little-endian binary, one file each, read back by :func:`run_harness`): events with
their cycle and step, every W beat with its address and strobes (``LOG_WRITES 1``), the bytes
the beats stored merged into runs of consecutive addresses within a step, every burst (AW cycle,
first W cycle, address, first strobed byte), the frames out of ``m_axis_tx``, each RX frame's
first offer and last accepted beat, every command with its cycle, and ``counters.json``.
"""

import fcntl
import functools
import hashlib
import json
import platform
import re
import shutil
import sys
import struct
import subprocess
import tempfile
import time
from pathlib import Path

from tcpdct.params import Params
from tcpdct.records import RECORD_BYTES, Command, Event

from cocotb_build import BUILD_ROOT, generate_verilog
from harness_script import HarnessScript
from traffic import cell_frames, cell_script
from toolchain import compiler_is_gcc, find_verilator, make_overrides, verilator_env


__all__ = ["HARNESS_SOURCE", "HarnessError", "HarnessScript", "HarnessRun", "HarnessProcess",
           "build_harness", "prune_builds", "run_harness", "KEEP_BUILDS"]


_SIM = Path(__file__).resolve().parent
HARNESS_SOURCE = _SIM / "harness" / "harness.cpp"

#: What builds the harness: this module (the Verilog it rewrites, the header it writes), the
#: harness itself, and the traffic its compiler's profile is trained on.
_BUILD_SOURCES = (Path(__file__).resolve(), HARNESS_SOURCE, _SIM / "harness_script.py",
                  _SIM / "traffic.py")

#: How much script :class:`HarnessProcess` asks its pipe to hold: Linux's default maximum
#: (``/proc/sys/fs/pipe-max-size``), more than a bundled capture's script (about 600 KB).
_PIPE_BYTES = 1 << 20

#: C++ optimisation of the model: verilated.mk's default, -Os, runs the core markedly slower.
_MAKE_OPTIMISATION = ["OPT_FAST=-O3", "OPT_GLOBAL=-O2"]

#: Code for the processor that builds it: about a tenth faster than for any x86-64. The build's
#: hash covers the processor (:func:`_processor`), so a build folder shared with another kind of
#: machine is not run there.
_TARGET_PROCESSOR = "-march=native"

#: The lines of ``/proc/cpuinfo`` that say what ``-march=native`` compiles for (x86, Arm).
_PROCESSOR_FIELDS = ("model name", "flags", "Features", "CPU implementer", "CPU part")

#: Verilator's optimisations beyond ``-O3``, each about 3-5 % faster on the replay here:
#: ``-fno-table`` keeps case statements as code instead of lookup tables in memory, ``-fno-gate``
#: keeps intermediate signals instead of substituting their logic into every reader.
_VERILATOR_OPTIMISATION = ["-O3", "-fno-table", "-fno-gate", "--x-assign", "fast",
                           "--x-initial", "fast"]

#: The generated header that tells the harness the core's inputs and which outputs follow them.
PORTS_HEADER = "harness_ports.h"

#: The readies of the core's input streams: the harness reads each only while it offers a beat
#: on that stream; any other output that follows the inputs is read in every cycle.
_INPUT_READIES = ("s_axis_rx_tready", "s_axis_tx_tready", "s_axis_cmd_tready")

#: The edge the core's registers are clocked on, as Amaranth's Verilog writes it.
_CLOCK_EDGE = "posedge clk"

#: Harness builds kept besides the one just made: the most recently used. Each is about 150 MB
#: and every change to the RTL makes a new one, so that without a limit a day of work on the RTL
#: filled ``sim/build`` with gigabytes.
KEEP_BUILDS = 4

#: A build used less than this many seconds ago is never removed, whatever the count: another
#: process may be about to start it (:func:`build_harness` returns the path, then the caller
#: runs it, for as long as a ``make bench``).
_IN_USE_SECONDS = 3600


class HarnessError(RuntimeError):
    """The harness could not be built, or ended abnormally."""


def _verilator_command(verilog, directory, data_bytes):
    """Verilate ``verilog`` and the harness into ``directory/obj``; :func:`_make_command`
    compiles them."""
    return ["verilator", "--cc", "--exe", *_VERILATOR_OPTIMISATION, "-Wno-fatal", "-Wno-lint",
            "-Wno-style", "--top-module", "tcpdct", "--prefix", "Vtcpdct",
            "-Mdir", str(directory / "obj"), "-o", "harness", "-CFLAGS",
            f"-std=c++17 -DDATA_BYTES={data_bytes} {_TARGET_PROCESSOR}",
            str(verilog), str(HARNESS_SOURCE)]


#: The bench's cells (:mod:`traffic`) the compiler's profile is trained on, ``(size,
#: traffic)``, and the frames of each: together about 45,000 cycles at 64 bits, every frame's
#: path through the core (placed, legacy, transmitted; back to back, spread over the table) at a
#: few hundred frames, in a second or two of an instrumented harness.
PROFILE_TRAINING = (("imix", "legacy"), ("576", "spread"), ("128", "placed"))
PROFILE_TRAINING_FRAMES = 300

#: The compiler's options of the two builds of a profile-guided build: ``generate`` counts where
#: the code goes (``.gcda`` beside each object), ``use`` compiles again with those counts.
#: Branches the training never took are left as they would be without a profile
#: (``-Wno-missing-profile`` only silences files it never entered).
_PROFILE_FLAGS = {
    "generate": ["USER_CPPFLAGS=-fprofile-generate -fprofile-update=single",
                 "USER_LDFLAGS=-fprofile-generate"],
    "use":      ["USER_CPPFLAGS=-fprofile-use -Wno-missing-profile"],
    None:       [],
}


def _make_command(directory, jobs, profile=None):
    """Compile the Verilated model and the harness in ``directory/obj``; ``profile`` is a key of
    :data:`_PROFILE_FLAGS`."""
    return ["make", "-j", str(jobs), "-C", str(directory / "obj"), "-f", "Vtcpdct.mk",
            *make_overrides(), *_MAKE_OPTIMISATION, *_PROFILE_FLAGS[profile]]


def _clean_objects(obj):
    """Remove what ``make`` compiled in ``obj`` (not the profile), so that it compiles again."""
    for pattern in ("*.o", "*.a", "*.gch", "harness"):
        for path in obj.glob(pattern):
            path.unlink()


def _train(executable, directory, params):
    """Run the instrumented harness ``executable`` on :data:`PROFILE_TRAINING`.

    Raises
    ------
    HarnessError
        If a training run failed or timed out: the core did not handle the bench's traffic.
    """
    for stale in executable.parent.glob("*.gcda"):
        stale.unlink()      # counts of an earlier build that did not finish
    for size, traffic in PROFILE_TRAINING:
        rx, _, tx, delegated = cell_frames(params, size, traffic, PROFILE_TRAINING_FRAMES)
        with tempfile.TemporaryDirectory(prefix="training-", dir=directory) as logs:
            run = run_harness(executable, cell_script(params, rx, tx, delegated), logs,
                              params=params)
        if run.counters["timeouts"] or run.counters["cmd_errors"]:
            raise HarnessError(f"the profile's training on {size}-byte {traffic} traffic did "
                               f"not complete: {run.counters}")


def both_edges(verilog):
    """The core's Verilog ``verilog`` (text) with every register clocked on both edges of clk.

    The harness then advances the core by a cycle with each toggle of clk, one ``eval()`` of
    the Verilated model where a rising edge alone takes two (the falling edge's ``eval()``
    would only settle the inputs again). The core has one clock, with synchronous reset, and no
    other event controls; the same registers updated on the same values, cycle by cycle, make
    the same core.

    Raises
    ------
    HarnessError
        If the Verilog has an event control other than ``posedge clk`` and ``@*``: a design the
        harness cannot clock this way.
    """
    controls = set(re.findall(r"@\s*\(([^)]*)\)", verilog)) - {"*"}
    if controls != {_CLOCK_EDGE}:
        raise HarnessError(f"the harness clocks a core whose registers are all on "
                           f"{_CLOCK_EDGE!r}, not one with the event controls "
                           f"{sorted(controls)!r}")
    return re.sub(r"@\s*\(posedge clk\)", "@(edge clk)", verilog)


def _functions(obj):
    """``{name: body}`` of the functions of the Verilated model's root in ``obj``."""
    functions = {}
    definition = re.compile(r"^\S[^\n;]*?\b(Vtcpdct___024root___\w+)\([^;{]*\)\s*\{\n(.*?)^\}",
                            re.MULTILINE | re.DOTALL)
    for path in sorted(obj.glob("Vtcpdct___024root*.cpp")):
        for match in definition.finditer(path.read_text()):
            functions[match.group(1)] = match.group(2)
    return functions


def outputs_following_inputs(obj):
    """The core's inputs, and the outputs that an ``eval()`` with new inputs and no clock
    edge may change, from the Verilated model in ``obj``.

    Such an ``eval()`` runs Verilator's input-combinational region alone (its other regions are
    triggered by edges of clk): an output that no code reachable from that region names cannot
    follow the inputs within a cycle. When the model's code does not have that shape (another
    Verilator), every output is taken to follow the inputs, which only costs time.

    Returns
    -------
    (list of str, set of str)
        The inputs but ``clk``, in declaration order, and the outputs that follow them.
    """
    ports = re.findall(r"\bVL_(IN|OUT)(?:8|16|64|W)?\(&(\w+)", (obj / "Vtcpdct.h").read_text())
    inputs = [name for kind, name in ports if kind == "IN" and name != "clk"]
    outputs = {name for kind, name in ports if kind == "OUT"}
    functions = _functions(obj)
    triggers = functions.get("Vtcpdct___024root___eval_triggers_vec__act", "")
    trigger_signals = set(re.findall(r"vlSelfRef\.(\w+)", triggers))
    if not trigger_signals or trigger_signals - {"clk", "__VactTriggered",
                                                 "__Vtrigprevexpr___TOP__clk__0"}:
        return inputs, outputs
    reached, pending = set(), ["Vtcpdct___024root___eval_ico"]
    while pending:
        name = pending.pop()
        if name in reached:
            continue
        if name not in functions:
            return inputs, outputs
        reached.add(name)
        pending += re.findall(r"\b(Vtcpdct___024root___\w+)\(", functions[name])
        if re.search(r"\b(?!Vtcpdct___024root___)\w+\(vlSelf\b", functions[name]):
            return inputs, outputs     # a callee outside the root
    code = "\n".join(functions[name] for name in reached)
    return inputs, {name for name in outputs if _may_write(code, name)}


#: After a mention of a variable: an assignment to it, an increment, a member access.
_ASSIGNMENT_AFTER = re.compile(r"(?:\[\w+\])*\s*(?:(?:[-+*/%&|^]|<<|>>)?=(?!=)|\+\+|--|\.|->)")
#: After a mention of a variable: a binary operator that reads it as an operand.
_OPERATOR_AFTER = re.compile(r"(?:\[\w+\])*\s*(?:==|!=|<=|>=|&&|\|\||<<(?!=)|>>(?!=)"
                             r"|[-+*/%&|^<>](?![-+=>&|<]))")
#: After a mention of a variable: the end of an operand (``)``) or of the statement.
_END_AFTER = re.compile(r"(?:\[\w+\])*\s*[);]")
#: Before a mention of a variable: an operator it is an operand of (``&`` apart, which takes
#: an address when it is written against the variable).
_OPERATOR_BEFORE = re.compile(r"(?:==|!=|<=|>=|&&|\|\||<<|>>|[-+*/%|^~!<>]|&\s|[^=!<>&|]=)\s*$")
_CAST_BEFORE = re.compile(r"\(\s*[A-Z]Data\s*\)\s*\(\s*$")
_REFERENCE_BEFORE = re.compile(r"&\s*\w+\s*=\s*$")


def _may_write(code, name):
    """Whether Verilator's C++ ``code`` may write the model's member ``name``.

    Only a mention that is plainly a read is not a write: an operand of a binary operator, or an
    operand (after an operator, a cast or an assignment to something that is not a reference),
    possibly in parentheses, that ends there. Anything else — an assignment, an argument of a
    call (which may write through a reference), its address, a member call, a conditional
    expression — may write it.
    """
    for match in re.finditer(rf"(?:\bvlSelfRef\.|\bvlSelf->){name}\b", code):
        after = code[match.end():match.end() + 200]
        before = code[max(0, match.start() - 200):match.start()]
        if _ASSIGNMENT_AFTER.match(after) or before.endswith("&"):
            return True
        if _OPERATOR_AFTER.match(after):
            continue
        if not _END_AFTER.match(after):
            return True
        while True:
            if _CAST_BEFORE.search(before) or (_OPERATOR_BEFORE.search(before)
                                              and not _REFERENCE_BEFORE.search(before)):
                break
            stem = before.rstrip()
            if not stem.endswith("("):
                return True
            before = stem[:-1]
            if not before.rstrip().endswith(("(", *"-+*/%&|^~!<>=")):
                return True     # a call (or if, while, switch)
    return False


def _ports_header(obj):
    """The text of :data:`PORTS_HEADER` for the Verilated model in ``obj``."""
    inputs, following = outputs_following_inputs(obj)
    outputs = re.findall(r"\bVL_OUT(?:8|16|64|W)?\(&(\w+)", (obj / "Vtcpdct.h").read_text())
    lines = ["// Written by sim/fast_harness.py from the Verilated model: the core's inputs, and",
             "// which of its outputs follow them within a cycle.",
             "#pragma once",
             "#define HARNESS_INPUTS(X) " + " ".join(f"X({name})" for name in inputs),
             "namespace follows_inputs {"]
    lines += [f"constexpr bool {name} = {'true' if name in following else 'false'};"
              for name in outputs if name in _INPUT_READIES]
    others = bool(following - set(_INPUT_READIES))
    lines += ["// Whether any other output follows them.",
              f"constexpr bool other_outputs = {'true' if others else 'false'};", "}", ""]
    return "\n".join(lines)


def _processor():
    """The processor's name and features, as far as the system says."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return f"{platform.machine()} {platform.processor()}"
    return "\n".join(sorted({line for line in lines
                              if line.split(":")[0].strip() in _PROCESSOR_FIELDS}))


def build_harness(params=None, *, jobs=2, quiet=True):
    """The harness executable for ``params``, built unless an identical build exists.

    The build Verilates a copy of the core's Verilog with its registers clocked on both edges
    (:func:`both_edges`), writes :data:`PORTS_HEADER` from the Verilated model
    (:func:`outputs_following_inputs`) and compiles the model and the harness. With GCC the
    compilation is profile-guided: an instrumented harness runs a little of the bench's traffic
    (:data:`PROFILE_TRAINING`), and the compiler lays out the model's code by what it counted
    there; the harness then runs the core about a quarter faster. Another compiler compiles it
    once, without a profile. Builds are cached
    in ``sim/build/fast-<hash>``, the hash covering the generated Verilog, the harness source and
    this module, the Verilator version, the build commands and the processor (the code is
    compiled for it), so that any change rebuilds; ``built`` marks a finished one.
    Safe to call from several processes at once. A new build removes older ones
    (:func:`prune_builds`).

    Parameters
    ----------
    params : Params, optional
        Build parameters of the core; ``Params()`` when omitted.
    jobs : int
        Parallel jobs of the C++ compiler.
    quiet : bool
        Keep the compiler's output out of the terminal (it is in ``build.log``).

    Returns
    -------
    Path

    Raises
    ------
    HarnessError
        If Verilator or the compiler failed (the message names the log), or if the core has
        registers on another event than ``posedge clk``.
    """
    params = Params() if params is None else params
    if not isinstance(params, Params):
        raise TypeError(f"Parameters must be a Params, not {params!r}")
    verilog = Path(generate_verilog(params))
    digest = hashlib.sha256()
    digest.update(verilog.read_bytes())
    for source in _BUILD_SOURCES:
        digest.update(source.read_bytes())
    digest.update(find_verilator().version_string.encode())
    profiles = ("generate", "use") if compiler_is_gcc() else (None,)
    digest.update(" ".join([*_verilator_command("", Path(), params.data_bytes),
                            *(word for profile in profiles
                              for word in _make_command(Path(), 0, profile))]).encode())
    digest.update(_processor().encode())
    directory = BUILD_ROOT / f"fast-{digest.hexdigest()[:16]}"
    directory.mkdir(parents=True, exist_ok=True)
    obj = directory / "obj"
    executable = obj / "harness"
    built = directory / "built"
    with open(directory / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if built.exists() and executable.exists():
            built.touch()   # its time of last use, for prune_builds
            return executable
        source = directory / "tcpdct.v"
        source.write_text(both_edges(verilog.read_text()))
        log = directory / "build.log"
        with open(log, "w") as output:
            def step(command):
                return subprocess.run(command, env=verilator_env(), cwd=directory,
                                      stdout=output if quiet else None,
                                      stderr=subprocess.STDOUT if quiet else None).returncode
            returncode = step(_verilator_command(source, directory, params.data_bytes))
            if returncode == 0:
                (obj / PORTS_HEADER).write_text(_ports_header(obj))
                for profile in profiles:
                    if profile == "use":
                        _train(executable, directory, params)
                        _clean_objects(obj)
                    returncode = step(_make_command(directory, jobs, profile))
                    if returncode != 0:
                        break
        if returncode != 0 or not executable.exists():
            raise HarnessError(f"building the harness failed (exit {returncode}); see {log}")
        built.touch()
    prune_builds(keep=KEEP_BUILDS, spare=directory)
    return executable


def prune_builds(*, keep=KEEP_BUILDS, spare=None, root=None, now=None):
    """Remove the harness builds (``fast-*`` in ``root``, ``sim/build`` by default) beyond the
    ``keep`` most recently used, other than ``spare``.

    A build's last use is the time its ``built`` stamp was touched (each :func:`build_harness`
    that returns it); one without the stamp (a build that failed, or is under way) counts as used
    when its folder was last changed. A build used within the last hour stays, and so does one
    whose lock another process holds (a build under way).

    Returns
    -------
    list of Path
        The folders removed.
    """
    root = BUILD_ROOT if root is None else Path(root)
    now = time.time() if now is None else now

    def last_use(folder):
        stamp = folder / "built"
        return (stamp if stamp.exists() else folder).stat().st_mtime

    builds = []
    for folder in root.glob("fast-*"):
        if folder.is_dir() and folder != spare:
            try:
                builds.append((last_use(folder), folder))
            except FileNotFoundError:
                pass        # removed meanwhile by another process
    builds.sort(reverse=True)
    removed = []
    for used, folder in builds[keep:]:
        if now - used < _IN_USE_SECONDS:
            continue
        with open(folder / ".lock", "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


class HarnessRun:
    """What one harness run logged.

    Members
    -------
    counters : dict
        ``counters.json``: ``cycles``, ``wall_seconds`` (the simulation loop alone),
        ``script_seconds`` (reading the script, and waiting for it while it is written),
        ``rx_beats``, ``rx_first_offer``, ``rx_last_accept``, the same for ``tx_in``,
        ``tx_out_frames``, ``commands``, ``cmd_done``, ``cmd_errors`` (CMD_DONE with a status
        other than OK), ``events``, ``terminal_events``, ``aw``, ``w``, ``b``,
        ``wlast_errors``, ``unmatched_beats``, ``open_bursts``, ``timeouts``.
    event_records : list of (int, int, bytes)
        ``(cycle, step, record)``: each event as the core sent it.
    events : list of (int, int, Event)
        ``(cycle, step, event)``: the same, decoded (when first asked for).
    writes : list of (int, int, int, int, bytes)
        ``(cycle, step, beat address, strobes, data)`` of every W beat (``LOG_WRITES 1``).
    stored : list of (int, int, bytes)
        ``(step, address, data)``: the strobed bytes of the W beats, in order, each run of them
        at consecutive addresses in one step merged into one record; logged whatever
        ``LOG_WRITES`` says.
    bursts : list of (int, int, int, int, int, int, int)
        ``(AW cycle, first W cycle, awaddr, first strobed byte, beats, step, last W cycle)``,
        in the order the bursts' last beats went (their AW order), the step that of the last.
    tx_frames : list of (int, int, bytes)
        ``(cycle of the last beat, step, frame)`` for each frame out of ``m_axis_tx``.
    rx_frames : list of (int, int)
        ``(cycle first offered, cycle its last beat was taken)`` for each RX frame.
    commands : list of (int, Command)
        Every command taken, with its cycle, the automatic posts included (decoded when first
        asked for).
    """

    def __init__(self, counters, event_records, writes, bursts, tx_frames, rx_frames,
                 command_records, stored):
        self.counters = counters
        self.event_records = event_records
        self.writes = writes
        self.bursts = bursts
        self.tx_frames = tx_frames
        self.rx_frames = rx_frames
        self._command_records = command_records
        self.stored = stored

    @functools.cached_property
    def events(self):
        return [(cycle, step, Event.unpack(record)) for cycle, step, record in self.event_records]

    @functools.cached_property
    def commands(self):
        return [(cycle, Command.unpack(record)) for cycle, record in self._command_records]

    def stored_by_step(self):
        """``{step: [(address, bytes), ...]}``: what each step stored, in order."""
        by_step = {}
        for step, address, data in self.stored:
            by_step.setdefault(step, []).append((address, data))
        return by_step


def _records(path, layout):
    """The records of a log whose records are all ``layout`` (a :mod:`struct` format)."""
    return list(struct.iter_unpack(layout, Path(path).read_bytes()))


def _sized_records(path, header, size_field):
    """The records of a log whose records are ``header`` and then as many bytes as its field
    number ``size_field`` says, each as the header's fields and the bytes."""
    data = Path(path).read_bytes()
    offset, records = 0, []
    header_size = struct.calcsize(header)
    while offset < len(data):
        fields = struct.unpack_from(header, data, offset)
        offset += header_size
        size = fields[size_field]
        records.append((*fields, data[offset:offset + size]))
        offset += size
    return records


def run_harness(executable, script, directory, *, params=None, timeout=None):
    """Run the harness on ``script`` in ``directory`` and read back what it logged.

    Parameters
    ----------
    executable : path
        From :func:`build_harness`.
    script : HarnessScript or path
    directory : path
        Where the script (when given as an object) and the outputs go.
    params : Params, optional
        The core's parameters, for the width of the write log; ``Params()`` when omitted.
    timeout : float, optional
        Seconds before the process is killed.

    Returns
    -------
    HarnessRun

    Raises
    ------
    HarnessError
        If the harness exited with an error.
    """
    params = Params() if params is None else params
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if isinstance(script, HarnessScript):
        path = directory / "script.txt"
        script.write(path)
    else:
        path = Path(script)
    result = subprocess.run([str(executable), str(path), str(directory)], capture_output=True,
                            text=True, timeout=timeout)
    return _read_run(directory, params, result.returncode, result.stderr)


class HarnessProcess:
    """The harness running a script that is still being written (``SCRIPT`` ``-``).

    The harness takes each directive as soon as it arrives on its standard input, so the author
    of the script (a replay's run on the model) and the simulation work at the same time, on
    two cores where there are two. Use it as a context manager: leaving the ``with`` block
    before :meth:`finish` kills the harness.

    Parameters
    ----------
    executable : path
        From :func:`build_harness`.
    directory : path
        Where the outputs go.
    params : Params, optional
        As for :func:`run_harness`.
    """

    def __init__(self, executable, directory, *, params=None):
        self.params = Params() if params is None else params
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        # Into a file, not a pipe: a harness reporting many timed-out waits must not block on a
        # full pipe while this process blocks writing the script to it.
        self._stderr = open(self.directory / "stderr.txt", "w+")
        self._process = subprocess.Popen([str(executable), "-", str(self.directory)],
                                         stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                         stderr=self._stderr, text=True)
        _widen_pipe(self._process.stdin)

    def send(self, script):
        """Send the directives ``script`` (a :class:`HarnessScript`) holds, and empty it."""
        if not script.lines:
            return
        try:
            self._process.stdin.write("\n".join(script.lines) + "\n")
            self._process.stdin.flush()
        except BrokenPipeError:
            pass    # the harness has ended: finish() says why
        script.lines.clear()

    def finish(self, timeout=None):
        """End the script, wait for the harness and read back what it logged.

        Returns
        -------
        HarnessRun

        Raises
        ------
        HarnessError
            If the harness exited with an error.
        """
        try:
            self._process.stdin.close()
        except BrokenPipeError:
            pass
        returncode = self._process.wait(timeout)
        self._stderr.seek(0)
        return _read_run(self.directory, self.params, returncode, self._stderr.read())

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._stderr.close()


def _widen_pipe(pipe):
    """Let ``pipe`` hold as much as the system allows (a whole replay's script, typically).

    With the default 64 KiB, the writer of a script blocks as soon as it is that far ahead of
    the harness, and the two then take turns, each waking the other, instead of working side by
    side; on a loaded machine every such wake-up waits for a free core.
    """
    try:
        limit = int(Path("/proc/sys/fs/pipe-max-size").read_text())
        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, min(limit, _PIPE_BYTES))
    except (OSError, ValueError, AttributeError):
        pass    # not Linux, or not allowed: the default size works, more slowly


def _read_run(directory, params, returncode, stderr):
    """What a harness run that ended with ``returncode`` and ``stderr`` logged in
    ``directory``."""
    if returncode != 0:
        raise HarnessError(f"the harness exited with {returncode}: {stderr.strip()}")
    if stderr:
        print(stderr.strip(), file=sys.stderr)
    counters = json.loads((directory / "counters.json").read_text())
    width = params.data_bytes
    events = [(cycle, step, record) for cycle, step, _, record in
              _records(directory / "events.bin", f"<QII{RECORD_BYTES}s")]
    writes = [(cycle, step, address, strobe, data) for cycle, step, _, address, strobe, data in
              _records(directory / "writes.bin", f"<QIIQQ{width}s")]
    bursts = _records(directory / "bursts.bin", "<QQQQIIQ")
    tx_frames = [(cycle, step, data) for cycle, step, _, data in
                 _sized_records(directory / "tx.bin", "<QII", 2)]
    rx_frames = _records(directory / "rx.bin", "<QQ")
    commands = _records(directory / "commands.bin", f"<Q{RECORD_BYTES}s")
    stored = [(step, address, data) for step, _, address, data in
              _sized_records(directory / "stored.bin", "<IIQ", 1)]
    return HarnessRun(counters, events, writes, bursts, tx_frames, rx_frames, commands, stored)
