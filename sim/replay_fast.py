"""The fast backend of the replay: the schedule recorded on the golden model, replayed on the RTL
by the compiled harness (:mod:`fast_harness`), and the two compared step by step.

The host driver decides its commands only from events, and the RTL must emit the model's events,
so the whole step sequence — every RX batch, TX frame and command, and where each one waits —
is known once the schedule has run on the model. :func:`run`:

1. runs the schedule on the model with a :class:`RecordingRunner`, which keeps every step with
   the model's events and DMA writes;
2. writes that step list as a harness script: each step queues its frames or command and waits
   until the RTL has given as many terminal events, CMD_DONEs and events in all as the model
   did (a TX frame also until it has left; the expiry of a buffer request just waits, as the
   RTL's timer runs by itself), then 16 more cycles, 32 after a TX frame, for strays;
3. runs the harness once, and compares every recorded step with what the RTL did in it
   (:meth:`PlaybackRunner.check_recorded`): its events, the bytes it stored in host memory, the
   frames it transmitted; any difference, and any fault of the harness (a wait that timed out,
   a burst left unanswered, a misplaced ``wlast``, anything after the last step), is a
   mismatch.

When every step agrees, the RTL has handed the driver exactly what the model did, so the
recording's summary is the RTL's (:func:`checked_result`). Otherwise the schedule runs a second
time on a :class:`PlaybackRunner`, which hands the driver the RTL's events and memory step by
step, and the summary is built from the RTL's events exactly as on the other backends. Should
the driver then ask for a step other than the recorded one (possible only after a mismatch), the
replay stops there with one mismatch, as the cocotb backend stops at its first disagreement.
"""

import asyncio
import json
import os
import resource
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from tcpdct.params import Params

from tcpdct.records import EVENT_FIELDS, HEADER_FIELDS, Event, EventType
from tcpdct.regmap import BUF_REQ_TIMEOUT_DEFAULT

from model.hostmem import HostMemory
from schedule import ModelRunner, TERMINAL_EVENTS
from fast_harness import HarnessScript, HarnessProcess, build_harness, HarnessError


__all__ = ["REPLAY_PARAMS", "CLOCK_NS", "STRAY_EVENT_CYCLES", "TX_SETTLE_CYCLES",
           "SEND_CHARACTERS", "RecordedStep", "RecordingRunner", "PlaybackRunner", "PlaybackError",
           "ReplayScript", "replay_script", "stored_bytes", "checked_result", "fast_replay", "run"]


#: Build parameters of the replay: the defaults, as for the cocotb backend.
REPLAY_PARAMS = Params()

#: The clock period the cocotb testbench uses, so that the printed figures read alike.
CLOCK_NS = 4

#: Cycles after a step's last expected event in which a stray event is still its own.
STRAY_EVENT_CYCLES = 16

#: Cycles given to a transmitted frame's DCT update after the frame has left (R31-R33).
TX_SETTLE_CYCLES = 32

#: Cycles a wait may last before the harness gives up on it (a mismatch): well past the
#: buffer-request timer, which an ``expire`` step waits for.
WAIT_TIMEOUT_CYCLES = 4 * BUF_REQ_TIMEOUT_DEFAULT

#: The most script a replay keeps before sending it to the harness, in characters.
SEND_CHARACTERS = 64 * 1024

#: What a recorded step did: the runner method it stands for.
KINDS = ("rx", "tx", "command", "expire")


class PlaybackError(RuntimeError):
    """The DUT made the host driver leave the recorded schedule."""


@dataclass
class RecordedStep:
    """One step as the model executed it.

    Members
    -------
    kind : str
        One of :data:`KINDS`: an RX batch, a TX frame, a command, or the expiry of a buffer
        request's timer (the step that waits for it).
    frames : list of bytes
        The RX batch, or the one TX frame; empty for a command.
    command : tcpdct.records.Command or None
    events : list of tcpdct.records.Event
        The model's events.
    writes : list of (int, bytes)
        The model's DMA writes, ``(address, data)``.
    """
    kind:    str
    frames:  list
    command: object = None
    events:  list = field(default_factory=list)
    writes:  list = field(default_factory=list)


class RecordingRunner(ModelRunner):
    """The golden model as a runner that records every step (:attr:`steps`).

    Parameters
    ----------
    params : Params, optional
    on_step : callable, optional
        ``on_step(step)`` is called with each :class:`RecordedStep` as soon as it is recorded.
    """

    def __init__(self, params=None, *, on_step=None):
        super().__init__(params)
        self.steps = []
        self._on_step = on_step

    def _record(self, step):
        self.steps.append(step)
        if self._on_step is not None:
            self._on_step(step)

    async def command(self, command):
        events = self.model.command(command)
        self._record(RecordedStep("command", [], command, events, list(self.model.last_writes)))
        return events

    async def rx(self, frames):
        events, writes = [], []
        for frame in frames:
            events += self.model.rx_frame(frame)
            writes += self.model.last_writes
        self._record(RecordedStep("rx", [bytes(frame) for frame in frames], None, events,
                                  writes))
        return events

    async def tx(self, frame):
        events = await super().tx(frame)
        self._record(RecordedStep("tx", [bytes(frame)], None, events,
                                  list(self.model.last_writes)))
        return events

    async def expire_buffer_request(self, reason):
        events = await super().expire_buffer_request(reason)
        self._record(RecordedStep("expire", [], reason, events, list(self.model.last_writes)))
        return events


class ReplayScript:
    """The harness script of recorded steps, written a step at a time; step ``n`` (from 1) is
    the ``n``-th step added.

    Parameters
    ----------
    stall_percent : int
        Idle cycles on every input and back-pressure on every output, in percent (R60); 0 for
        none, which makes the cycle count the core's own.
    seed : int
        Seed of the stalls.

    Members
    -------
    script : fast_harness.HarnessScript
        The directives written so far (those a :class:`fast_harness.HarnessProcess` has not
        taken yet, when one takes them).
    """

    def __init__(self, *, stall_percent=0, seed=1):
        self.script = HarnessScript()
        self.script.timeout(WAIT_TIMEOUT_CYCLES)
        # The comparison takes the stored bytes (stored.bin); a log of every beat as well
        # would only cost time.
        self.script.log_writes(False)
        if stall_percent:
            for number, channel in enumerate(("rx", "tx", "cmd", "evt", "tx_out", "aw", "w",
                                              "b")):
                self.script.stall(channel, stall_percent, seed * 16 + number)
        self._steps = self._events = self._terminal = self._commands = self._tx_out = 0

    def add(self, step):
        """Queue ``step``'s input, then wait for what the model says it causes."""
        # A held frame's batch ends with its BUF_REQ, and the frames it releases end the
        # command, TX frame or timer expiry that released them.
        script = self.script
        self._steps += 1
        script.step(self._steps)
        if step.kind == "rx":
            for frame in step.frames:
                script.rx(frame)
        elif step.kind == "command":
            script.command(step.command)
        elif step.kind == "tx":
            script.tx(step.frames[0])
            self._tx_out += 1
            script.wait_tx_out(self._tx_out)
        self._terminal += sum(event.type in TERMINAL_EVENTS for event in step.events)
        self._commands += sum(event.type is EventType.CMD_DONE for event in step.events)
        self._events += len(step.events)
        script.wait_terminal(self._terminal)
        script.wait_cmd_done(self._commands)
        script.wait_events(self._events)
        script.idle(TX_SETTLE_CYCLES if step.kind == "tx" else STRAY_EVENT_CYCLES)

    def end(self):
        """The last step, which collects whatever arrives after the recorded ones."""
        self.script.step(self._steps + 1)
        self.script.idle(4 * STRAY_EVENT_CYCLES)


def replay_script(steps, *, stall_percent=0, seed=1):
    """The harness script of recorded ``steps``; step ``n`` (from 1) is ``steps[n - 1]``.

    Step ``len(steps) + 1`` collects whatever arrives after the last step. Parameters as for
    :class:`ReplayScript`.

    Returns
    -------
    fast_harness.HarnessScript
    """
    replay = ReplayScript(stall_percent=stall_percent, seed=seed)
    for step in steps:
        replay.add(step)
    replay.end()
    return replay.script


def stored_bytes(writes):
    """What ``writes`` (``(address, data)``, in order) leave in memory, as ascending runs of
    consecutive addresses, each ``(address, bytes)`` and as long as it can be.

    Two lists of writes store the same bytes at the same addresses exactly when their stored
    bytes are equal, whatever the writes' order and sizes: the model writes a frame's payload
    in one piece where the RTL writes beats.
    """
    runs, end = [], None
    for address, data in sorted(writes, key=lambda write: write[0]):
        if not data:
            continue
        if end is not None and address < end:
            # Writes that overlap: the last one wins, which the byte map below decides.
            return _runs_of_byte_map(writes)
        if address == end:
            runs[-1][1].extend(data)
        else:
            runs.append((address, bytearray(data)))
        end = address + len(data)
    return [(address, bytes(data)) for address, data in runs]


def _runs_of_byte_map(writes):
    written = {}
    for address, data in writes:
        for offset, value in enumerate(data):
            written[address + offset] = value
    runs, end = [], None
    for address in sorted(written):
        if address != end:
            runs.append((address, bytearray()))
        runs[-1][1].append(written[address])
        end = address + 1
    return [(address, bytes(data)) for address, data in runs]


#: Bounds of the header's fields and of each event's fields: a value decoded from a record is
#: below them.
_HEADER_LIMITS = {name: 1 << width for name, width in HEADER_FIELDS if name not in (None, "code")}
_FIELD_LIMITS = {code: {name: 1 << width for name, width in fields if name is not None}
                 for code, fields in EVENT_FIELDS.items()}


def _record(event):
    """The record that decodes to ``event``, or None if there is none (a value too wide for its
    field, which a decoded event cannot have)."""
    limits = _FIELD_LIMITS.get(event.code)
    fields = event.fields
    if (limits is None or fields.keys() != limits.keys()
            or not 0 <= event.index < _HEADER_LIMITS["index"]
            or not 0 <= event.dma_error < _HEADER_LIMITS["dma_error"]):
        return None
    for name, limit in limits.items():
        if not 0 <= fields[name] < limit:
            return None
    return event.to_bytes()


class PlaybackRunner:
    """The RTL's logged behaviour as a :class:`schedule.Runner`, checked against the model.

    Parameters
    ----------
    params : Params
    recorded : list of RecordedStep
        What the model did, step by step.
    harness_run : fast_harness.HarnessRun
        What the RTL did on :func:`replay_script` of ``recorded``.
    max_logged : int
        How many mismatches to keep in :attr:`log`.

    Members
    -------
    memory : model.hostmem.HostMemory
        Host memory as the RTL wrote it, up to the current step.
    mismatches : int
        Steps where the RTL differed from the model, plus harness faults (timeouts, bursts
        left unanswered, wrong ``wlast``).
    log : list of str
    tx_frames_out : int
    """

    name = "fast"

    def __init__(self, params, recorded, harness_run, *, max_logged=20):
        self.params = params
        self.recorded = recorded
        self.memory = HostMemory()
        self.tx_frames_out = 0
        self.mismatches = 0
        self.max_logged = max_logged
        self.log = []
        self._event_records = {}
        for _, step, record in harness_run.event_records:
            self._event_records.setdefault(step, []).append(record)
        self._writes = harness_run.stored_by_step()
        self._tx = {}
        for _, step, frame in harness_run.tx_frames:
            self._tx.setdefault(step, []).append(frame)
        self._position = 0
        trailing = len(recorded) + 1
        counters = harness_run.counters
        faults = {
            "events after the last step": self._events(trailing) or None,
            "writes after the last step": self._writes.get(trailing),
            "frames out after the last step": self._tx.get(trailing),
            "waits that timed out": counters["timeouts"],
            "bursts with a misplaced wlast": counters["wlast_errors"],
            "bursts or beats left unanswered": (counters["open_bursts"]
                                                + counters["unmatched_beats"]),
        }
        for what, value in faults.items():
            if value:
                self._mismatch(f"{what}: {value!r}"[:400])

    def _mismatch(self, text):
        self.mismatches += 1
        if len(self.log) < self.max_logged:
            self.log.append(text)

    def _events(self, number):
        """The RTL's events in step ``number``, decoded."""
        return [Event.unpack(record) for record in self._event_records.get(number, [])]

    def _next(self, kind, frames=(), command=None):
        """Check the RTL's step against the next recorded one, which must be this one; its
        number."""
        if self._position >= len(self.recorded):
            raise PlaybackError(f"the driver asked for a {kind} step after the "
                                f"{len(self.recorded)} recorded ones")
        step = self.recorded[self._position]
        self._position += 1
        number = self._position
        if (step.kind, step.frames, step.command) != (kind, [bytes(f) for f in frames], command):
            raise PlaybackError(f"step {number}: the driver asked for a {kind} step "
                                f"{command!r} where the model's schedule had a "
                                f"{step.kind} step {step.command!r}")
        writes = self._writes.get(number, [])
        for address, data in writes:
            self.memory.write(address, data)
        problems = []
        # The RTL's records equal to those of the model's events decode to the model's events;
        # records that differ may still decode to them (bits outside every field), which the
        # decoded comparison decides.
        if self._event_records.get(number, []) != [_record(event) for event in step.events]:
            events = self._events(number)
            if events != step.events:
                problems.append(f"events: model {step.events!r}, DUT {events!r}")
        if stored_bytes(writes) != stored_bytes(step.writes):
            problems.append(f"DMA wrote {sum(len(d) for _, d in writes)} byte(s), the model "
                            f"{sum(len(d) for _, d in step.writes)}, not the same")
        if kind == "tx":
            sent = self._tx.get(number, [])
            self.tx_frames_out += len(sent)
            if sent != list(frames):
                problems.append(f"m_axis_tx sent {len(sent)} frame(s) of "
                                f"{[len(frame) for frame in sent]} bytes, not the frame in")
        elif self._tx.get(number):
            problems.append(f"m_axis_tx sent {len(self._tx[number])} frame(s) with no TX step")
        if problems:
            self._mismatch(f"step {number} ({kind}): " + "; ".join(problems))
        return number

    def check_recorded(self):
        """Compare every recorded step with what the RTL did, in the recorded order: what a
        replay on this runner checks when the driver asks for exactly the recorded steps."""
        for step in self.recorded:
            self._next(step.kind, step.frames, step.command)

    async def command(self, command):
        return self._events(self._next("command", command=command))

    async def rx(self, frames):
        return self._events(self._next("rx", frames))

    async def tx(self, frame):
        return self._events(self._next("tx", [frame]))

    async def expire_buffer_request(self, reason):
        return self._events(self._next("expire", command=reason))


def _replay(runner, options):
    from replay import run_replay
    return asyncio.run(run_replay(runner, pcap=options.pcap, local=options.local,
                                  delegate=options.delegate == "auto"))


def checked_result(options, params, recording, steps, harness_run):
    """The replay's result once the RTL's run is known: ``recording`` (the result of the
    schedule on the :class:`RecordingRunner` that recorded ``steps``) when the RTL did every
    step as the model did, otherwise a playback of the RTL's behaviour.

    The host driver decides only from the events and the host memory it is handed. When every
    step's events, stored bytes and transmitted frames are the model's (and the harness saw no
    fault), a playback would hand the driver, step by step, exactly what the recording did, and
    reach the same summary; so the comparison of every step is the whole check, and the
    playback is run only when a step differs, to build the summary from what the RTL said.

    Raises
    ------
    PlaybackError
        If the DUT's events made the driver leave the recorded schedule.
    """
    checked = PlaybackRunner(params, steps, harness_run)
    checked.check_recorded()
    if checked.mismatches:
        return _replay(PlaybackRunner(params, steps, harness_run), options)
    recording.summary.finish(recording.driver, checked)
    return replace(recording, runner=checked)


#: A folder in memory (tmpfs) for the harness's logs, where the system has one.
MEMORY_FOLDER = Path("/dev/shm")


def _memory_folder():
    """:data:`MEMORY_FOLDER` when it is a folder this process can write in, else None (the
    system's temporary folder). Removing the logs from a disk's file system takes milliseconds
    of each replay, from memory a tenth of one."""
    if MEMORY_FOLDER.is_dir() and os.access(MEMORY_FOLDER, os.W_OK | os.X_OK):
        return MEMORY_FOLDER
    return None


def fast_replay(options, params=REPLAY_PARAMS, *, stall_percent=0, workdir=None):
    """Replay as the parsed ``replay.py`` options say, on the RTL through the harness.

    Parameters
    ----------
    options : argparse.Namespace
    params : Params
    stall_percent : int
        As for :class:`ReplayScript`.
    workdir : path, optional
        Where the temporary folder of the harness's logs goes: by default
        :data:`MEMORY_FOLDER` when there is one, else the system's temporary folder.

    Returns
    -------
    (replay.ReplayResult, fast_harness.HarnessRun, dict)
        The result, what the harness logged, and timings: ``harness_seconds`` (the simulation
        loop), ``total_seconds`` (model, script, harness and comparison, end to end: what the
        replay costs once the harness is built), ``cpu_seconds`` (the processor time of the
        same, this process's and the harness's) and ``build_seconds`` (building the harness,
        or finding it built).

    Raises
    ------
    PlaybackError
        If the DUT's events made the driver leave the recorded schedule.
    """
    started = time.monotonic()
    executable = build_harness(params)
    built = time.monotonic()
    cpu = cpu_seconds()
    replay = ReplayScript(stall_percent=stall_percent)
    workdir = _memory_folder() if workdir is None else workdir
    with tempfile.TemporaryDirectory(prefix="tcpdct-fast-", dir=workdir) as directory, \
            HarnessProcess(executable, directory, params=params) as harness:
        # The harness runs each step soon after the model has recorded it, so the model's run
        # costs (almost) no time beside the simulation's. The script goes in pieces that double
        # up to SEND_CHARACTERS: the first step at once, then as few writes (each of which may
        # wake the harness) as keep it fed, the model being faster than the simulation.
        piece = 1

        def stream(step):
            nonlocal piece
            replay.add(step)
            if replay.script.characters >= piece:
                harness.send(replay.script)
                piece = min(2 * max(piece, 1024), SEND_CHARACTERS)

        recorder = RecordingRunner(params, on_step=stream)
        recording = _replay(recorder, options)
        replay.end()
        harness.send(replay.script)
        harness_run = harness.finish()
    result = checked_result(options, params, recording, recorder.steps, harness_run)
    timings = {"harness_seconds": harness_run.counters["wall_seconds"],
               "total_seconds": time.monotonic() - built, "build_seconds": built - started,
               "cpu_seconds": cpu_seconds() - cpu}
    return result, harness_run, timings


def run(options, params=REPLAY_PARAMS):
    """``replay.py --backend fast``: replay, print and write the report; the exit code."""
    from replay import report, write_json

    try:
        result, harness_run, timings = fast_replay(options, params)
    except PlaybackError as error:
        print(f"error: {error}", file=sys.stderr)
        if options.json:
            write_json(options.json, options, "fast", params, mismatches=1, error=str(error))
        return 1
    except HarnessError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for line in result.runner.log:
        print(f"mismatch: {line}", file=sys.stderr)
    exit_code = report(result, options, "fast")
    simulation = simulation_figures(harness_run, timings)
    print(f"simulated {simulation['cycles']} cycles of {CLOCK_NS} ns in "
          f"{simulation['wall_seconds']:.3f} s: {simulation['cycles_per_second']:,} cycles/s "
          f"(end to end, model and comparison included: "
          f"{simulation['end_to_end_seconds']:.3f} s, "
          f"{simulation['end_to_end_cycles_per_second']:,} cycles/s; harness build "
          f"{simulation['build_seconds']:.1f} s)")
    if options.json:
        path = Path(options.json)
        document = json.loads(path.read_text())
        document["simulation"] = simulation
        path.write_text(json.dumps(document, indent=2) + "\n")
    return exit_code


def cpu_seconds():
    """Processor seconds used so far by this process and by its children that have ended.

    On a machine shared with other work, a replay's wall time depends on what else runs; its
    processor time much less, which makes it the steadier figure to compare two ways of
    simulating by.
    """
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def simulation_figures(harness_run, timings):
    """The ``simulation`` section of the JSON report: simulated cycles, and the cycles per
    second of the harness alone and end to end (the build not included), and per processor
    second end to end."""
    cycles = harness_run.counters["cycles"]
    wall = timings["harness_seconds"]
    total = timings["total_seconds"]
    return {"cycles": cycles, "wall_seconds": round(wall, 4),
            "cycles_per_second": round(cycles / wall) if wall else 0,
            "end_to_end_seconds": round(total, 4),
            "end_to_end_cycles_per_second": round(cycles / total) if total else 0,
            "cpu_seconds": round(timings["cpu_seconds"], 4),
            "cycles_per_cpu_second": (round(cycles / timings["cpu_seconds"])
                                      if timings["cpu_seconds"] else 0),
            "build_seconds": round(timings["build_seconds"], 2)}
