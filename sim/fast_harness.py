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
============================  ===================================================================

Reset (8 cycles) and 8 idle cycles precede the script. The AXI4 write slave is always ready and
answers OKAY unless stalls are set; the write log is the host memory (:meth:`HarnessRun.memory`).

Outputs (little-endian binary, one file each, read back by :func:`run_harness`): events with
their cycle and step, every W beat with its address and strobes, every burst (AW cycle, first W
cycle, address, first strobed byte), the frames out of ``m_axis_tx``, each RX frame's first
offer and last accepted beat, every command with its cycle, and ``counters.json``.
"""

import fcntl
import hashlib
import json
import sys
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tcpdct.params import Params
from tcpdct.records import RECORD_BYTES, Command, Event

from cocotb_build import BUILD_ROOT, generate_verilog
from toolchain import find_verilator, make_overrides, verilator_env


__all__ = ["HARNESS_SOURCE", "HarnessError", "HarnessScript", "HarnessRun", "build_harness",
           "run_harness"]


HARNESS_SOURCE = Path(__file__).resolve().parent / "harness" / "harness.cpp"

#: C++ optimisation of the model: verilated.mk's default, -Os, runs the core markedly slower.
_MAKE_OPTIMISATION = ["OPT_FAST=-O3", "OPT_GLOBAL=-O2"]


class HarnessError(RuntimeError):
    """The harness could not be built, or ended abnormally."""


def _verilator_command(verilog, directory, data_bytes, jobs):
    makeflags = [*make_overrides(), *_MAKE_OPTIMISATION]
    return ["verilator", "--cc", "--exe", "--build", "-O3", "--x-assign", "fast",
            "--x-initial", "fast", "-j", str(jobs), "-Wno-fatal", "-Wno-lint", "-Wno-style",
            "--top-module", "tcpdct", "--prefix", "Vtcpdct", "-Mdir", str(directory / "obj"),
            "-o", "harness", "-CFLAGS", f"-std=c++17 -DDATA_BYTES={data_bytes}",
            *(part for flag in makeflags for part in ("--MAKEFLAGS", flag)),
            str(verilog), str(HARNESS_SOURCE)]


def build_harness(params=None, *, jobs=2, quiet=True):
    """The harness executable for ``params``, built unless an identical build exists.

    Builds are cached in ``sim/build/fast-<hash>``, the hash covering the generated Verilog, the
    harness source, the Verilator version and the build command, so that any change rebuilds.
    Safe to call from several processes at once.

    Parameters
    ----------
    params : Params, optional
        Build parameters of the core; ``Params()`` when omitted.
    jobs : int
        Parallel jobs of Verilator and of the C++ compiler.
    quiet : bool
        Keep the compiler's output out of the terminal (it is in ``build.log``).

    Returns
    -------
    Path

    Raises
    ------
    HarnessError
        If Verilator or the compiler failed; the message names the log.
    """
    params = Params() if params is None else params
    if not isinstance(params, Params):
        raise TypeError(f"Parameters must be a Params, not {params!r}")
    verilog = generate_verilog(params)
    digest = hashlib.sha256()
    digest.update(Path(verilog).read_bytes())
    digest.update(HARNESS_SOURCE.read_bytes())
    digest.update(find_verilator().version_string.encode())
    digest.update(" ".join(_verilator_command("", Path(), params.data_bytes, 0)).encode())
    directory = BUILD_ROOT / f"fast-{digest.hexdigest()[:16]}"
    directory.mkdir(parents=True, exist_ok=True)
    executable = directory / "obj" / "harness"
    with open(directory / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if executable.exists():
            return executable
        command = _verilator_command(verilog, directory, params.data_bytes, jobs)
        log = directory / "build.log"
        with open(log, "w") as output:
            result = subprocess.run(command, env=verilator_env(), cwd=directory,
                                    stdout=output if quiet else None,
                                    stderr=subprocess.STDOUT if quiet else None)
        if result.returncode != 0 or not executable.exists():
            raise HarnessError(f"building the harness failed (exit {result.returncode}); "
                               f"see {log}")
    return executable


class HarnessScript:
    """A harness script being written; see this module's docstring for the directives.

    Members
    -------
    lines : list of str
    """

    def __init__(self):
        self.lines = []

    def rx(self, frame, mac_error=False):
        self.lines.append(f"RX {int(bool(mac_error))} {bytes(frame).hex()}")

    def tx(self, frame):
        self.lines.append(f"TX {bytes(frame).hex()}")

    def command(self, command):
        record = command.to_bytes() if isinstance(command, Command) else bytes(command)
        if len(record) != RECORD_BYTES:
            raise ValueError(f"A command record is {RECORD_BYTES} bytes, not {len(record)!r}")
        self.lines.append(f"CMD {record.hex()}")

    def step(self, number):
        self.lines.append(f"STEP {int(number)}")

    def wait_terminal(self, count):
        self.lines.append(f"WAIT_TERMINAL {int(count)}")

    def wait_events(self, count):
        self.lines.append(f"WAIT_EVENTS {int(count)}")

    def wait_cmd_done(self, count):
        self.lines.append(f"WAIT_CMD_DONE {int(count)}")

    def wait_cmd_idle(self):
        self.lines.append("WAIT_CMD_IDLE")

    def wait_tx_out(self, count):
        self.lines.append(f"WAIT_TX_OUT {int(count)}")

    def wait_rx_idle(self):
        self.lines.append("WAIT_RX_IDLE")

    def idle(self, cycles):
        self.lines.append(f"IDLE {int(cycles)}")

    def auto_legacy(self, base, length, count):
        self.lines.append(f"AUTO_LEGACY {base:x} {int(length)} {int(count)}")

    def auto_user(self, index, base, length, count):
        self.lines.append(f"AUTO_USER {int(index)} {base:x} {int(length)} {int(count)}")

    def stall(self, channel, percent, seed=1):
        self.lines.append(f"STALL {channel} {int(percent)} {int(seed)}")

    def timeout(self, cycles):
        self.lines.append(f"TIMEOUT {int(cycles)}")

    def log_writes(self, enabled):
        self.lines.append(f"LOG_WRITES {int(bool(enabled))}")

    def write(self, path):
        Path(path).write_text("\n".join(self.lines) + "\n")


@dataclass
class HarnessRun:
    """What one harness run logged.

    Members
    -------
    counters : dict
        ``counters.json``: ``cycles``, ``wall_seconds`` (the simulation loop alone),
        ``rx_beats``, ``rx_first_offer``, ``rx_last_accept``, the same for ``tx_in``,
        ``tx_out_frames``, ``commands``, ``cmd_done``, ``cmd_errors`` (CMD_DONE with a status
        other than OK), ``events``, ``terminal_events``, ``aw``, ``w``, ``b``,
        ``wlast_errors``, ``unmatched_beats``, ``open_bursts``, ``timeouts``.
    events : list of (int, int, Event)
        ``(cycle, step, event)``.
    writes : list of (int, int, int, int, bytes)
        ``(cycle, step, beat address, strobes, data)`` of every W beat (``LOG_WRITES 1``).
    bursts : list of (int, int, int, int, int, int)
        ``(AW cycle, first W cycle, awaddr, first strobed byte, beats, step)``.
    tx_frames : list of (int, int, bytes)
        ``(cycle of the last beat, step, frame)`` for each frame out of ``m_axis_tx``.
    rx_frames : list of (int, int)
        ``(cycle first offered, cycle its last beat was taken)`` for each RX frame.
    commands : list of (int, Command)
        Every command taken, with its cycle, the automatic posts included.
    """
    counters:  dict
    events:    list
    writes:    list
    bursts:    list
    tx_frames: list
    rx_frames: list
    commands:  list

    def writes_by_step(self):
        """``{step: [(address, bytes), ...]}``: the strobed bytes of each W beat, in order."""
        by_step = {}
        for _, step, address, strobe, data in self.writes:
            by_step.setdefault(step, []).extend(_strobed_runs(address, strobe, data))
        return by_step


def _strobed_runs(address, strobe, data):
    """The strobed bytes of one beat as ``(address, bytes)`` runs of consecutive lanes."""
    runs = []
    lane, lanes = 0, len(data)
    while lane < lanes:
        if not strobe >> lane & 1:
            lane += 1
            continue
        start = lane
        while lane < lanes and strobe >> lane & 1:
            lane += 1
        runs.append((address + start, data[start:lane]))
    return runs


def _records(path, header, size_of=None):
    data = Path(path).read_bytes()
    offset, records = 0, []
    header_size = struct.calcsize(header)
    while offset < len(data):
        fields = struct.unpack_from(header, data, offset)
        offset += header_size
        size = size_of(fields) if size_of else 0
        records.append((*fields, data[offset:offset + size]) if size_of else fields)
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
    if result.returncode != 0:
        raise HarnessError(f"the harness exited with {result.returncode}: "
                           f"{result.stderr.strip()}")
    if result.stderr:
        print(result.stderr.strip(), file=sys.stderr)
    counters = json.loads((directory / "counters.json").read_text())
    width = params.data_bytes
    events = [(cycle, step, Event.unpack(record)) for cycle, step, _, record in
              _records(directory / "events.bin", "<QII", lambda _: RECORD_BYTES)]
    writes = [(cycle, step, address, strobe, data) for cycle, step, _, address, strobe, data in
              _records(directory / "writes.bin", "<QIIQQ", lambda _: width)]
    bursts = _records(directory / "bursts.bin", "<QQQQII")
    tx_frames = [(cycle, step, data) for cycle, step, _, data in
                 _records(directory / "tx.bin", "<QII", lambda fields: fields[2])]
    rx_frames = _records(directory / "rx.bin", "<QQ")
    commands = [(cycle, Command.unpack(record)) for cycle, record in
                _records(directory / "commands.bin", "<Q", lambda _: RECORD_BYTES)]
    return HarnessRun(counters, events, writes, bursts, tx_frames, rx_frames, commands)
