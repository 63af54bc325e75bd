"""RxEngine (receive engine, command unit, state and buffer RAMs) with the match CAM, against the
golden model.

Every case runs a list of operations (received frames, commands, frames the host stack sends)
through the RTL, records the order in which the engine's sequencer served them, and then applies
them to :class:`model.Model` in that same order. Every DMA job the engine emitted must equal the
model's: its kind, the host writes it describes, the packet-buffer range it frees and its events
(``first`` on exactly the first one). A WRITE job is turned into writes the way the DMA writer
executes it: ``frame[src_offset:]`` poured into ``segments[:n_segments]`` in order; the model's
``last_writes`` are the reference. DCT state is compared through QUERY and RECLAIM events.

The serving order is read from the engine's ports and its ``op_take`` (the cycle it starts an
operation): the cycle a stream's ``ready`` rises is the cycle its operation was taken, and a
cycle of ``op_take`` with every ``ready`` low is a frame held for a user buffer being decided
again. Each served operation is checked against the documented rotation. A transmit update
the engine drops outside the rotation (``tx_skip``: the CAM answered "no match" for it) must be
one the model finds no connection for, and takes no turn; one whose answer is on its way
(``tx_deferred``) does not wait for a turn.

The model is applied in the engine's order, held frames included: a held frame is decided again
where the engine decides it, in the frame's turn of the rotation (:class:`RotationModel`). The
model cannot count cycles, so the harness ends a buffer request on the model where the engine's
inputs say it must end: when the held frame is decided again with ``high_water`` high
(HWM), or at least ``buf_req_timeout`` cycles after the BUF_REQ that opened the request
(BUF_TIMEOUT). Within
:data:`TIMER_SLACK` cycles of the timeout either outcome is accepted, so the exact cycle the
timer counts from is the RTL's own business.

Frames are built with scapy and described by the reference parse (``model.frame.parse``), so the
parser is not under test here; transmit updates come from ``model.frame.parse_tx`` in the same
way. Random stimulus is seeded from ``SEED`` (printed, so a failure replays with ``SEED=<n>``).
"""

import ipaddress
from typing import NamedTuple

import pytest
from amaranth.hdl import Elaboratable, Module, Signal
from scapy.layers.inet import IP, TCP, UDP, IPOption_Router_Alert
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Raw

from model import Model, parse, parse_tx
from tcpdct.layouts import (FrameClass, JobKind, command_layout, rx_descriptor_layout, tx_update_layout,
                            packet_buffer_depth)
from tcpdct.match_cam import MatchCam, write_cycles
from tcpdct.params import Params
from tcpdct.records import (NO_CONNECTION, Command, Event, EventType, Opcode, CmdStatus,
                            LegacyReason, DropReason)
from tcpdct.cmd_unit import CommandDecision
from tcpdct.rx_decision import RoomSums, QueueFill, FrameChecks, FrameDecision
from tcpdct.rx_engine import RxEngine
from unit.simtools import seeded_rng, run_simulation, idle


SMALL = Params(n_entries=4, buffers_per_conn=4, legacy_ring_depth=4)

TOP_OF_MEMORY = 1 << 64

#: A ``buf_req_timeout`` no test reaches.
NEVER = (1 << 32) - 1

#: Cycles either side of the buffer-request timeout in which the timer may or may not have
#: expired.
TIMER_SLACK = 2

#: Cycles without any transfer, decision or pending output after which the engine is idle: a
#: held frame is decided again every five cycles, a few more the first time, when its key's
#: lookup starts again (``rtl/tcpdct/rx_engine.py``).
QUIET_CYCLES = 12


# Harness -----------------------------------------------------------------------------------------

class EngineWithCam(Elaboratable):
    """The receive engine with the match CAM's lookup port 0 and write port, as ``tcpdct.top``
    wires them."""

    def __init__(self, params):
        self.engine = RxEngine(params)
        self.cam = MatchCam(params.n_entries, n_lookup=1)

    def elaborate(self, platform):
        m = Module()
        m.submodules.rx_engine = engine = self.engine
        m.submodules.match_cam = cam = self.cam
        engine.connect_match_cam(m, cam)
        return m


class Rx(NamedTuple):
    """A received frame as an operation; commands are :class:`Command` records or raw ints."""
    frame: bytes
    mac_error: bool = False


class Tx(NamedTuple):
    """A frame the local host stack sends: its transmit update goes to the engine."""
    frame: bytes


class Offer(NamedTuple):
    """In an in-order run, offer ``op`` and go on without waiting for the engine to take it
    (a frame that must wait behind a held one, say)."""
    op: object


class Late(NamedTuple):
    """In a round of :func:`rtl_run`, offer ``op`` a cycle after the round's other operations."""
    op: object


class Drive(NamedTuple):
    """Set the engine's ``high_water`` and ``buf_req_timeout`` inputs; ``None`` keeps one."""
    high_water: int = None
    buf_req_timeout: int = None


class Settle(NamedTuple):
    """Wait until the engine is idle: nothing to emit and no frame held."""


class Wait(NamedTuple):
    cycles: int


CONTROL = (Drive, Settle, Wait)

#: A round of :func:`rtl_run`'s ``"rounds"`` mode that offers nothing for a cycle.
IDLE_ROUND = (None, None, None)

FRAME, CMD, TX, REDECIDE = "frame", "command", "tx", "redecide"

#: The sequencer's rotation (docs/architecture.md, "Transmit engine"): the source after the one
#: served last goes first.
ROTATION = (FRAME, CMD, TX)


def expire_by_high_water():
    """Raise ``high_water`` until the held frame has gone, then lower it."""
    return [Drive(high_water=1), Settle(), Drive(high_water=0)]


def source_of(op):
    if isinstance(op, Rx):
        return FRAME
    if isinstance(op, Tx):
        return TX
    assert isinstance(op, (int, Command)), op
    return CMD


class Job(NamedTuple):
    """One DMA job: ``frees`` is ``(buf_start, frame_beats)`` of a frame's job, ``None`` for a
    FENCE."""
    kind: JobKind
    frees: tuple
    events: list


class Outcome(NamedTuple):
    """What one operation did on the model, as the RTL must have done it too.

    ``jobs`` are the jobs of the operation and of the held frame it let the engine decide (a
    POST_BUFFER that makes room, say); a buffer request that expires is added to the operation
    served before the expiry (in an in-order run, the :class:`Settle` or :class:`Wait` during
    which it expired). ``matched`` is, for a transmit update, whether its key hit
    (``TX_MATCHED``).
    """
    op: object
    jobs: list
    writes: list
    matched: bool = None

    @property
    def events(self):
        return [event for job in self.jobs for event in job.events]

    @property
    def kind(self):
        return self.jobs[0].kind if self.jobs else None


def descriptors(params, frames):
    """The descriptor of each frame, as the parser would hand it over; ``buf_start`` advances
    like the packet buffer's write pointer."""
    depth = packet_buffer_depth(params)
    max_beats = -(-params.max_frame_bytes // params.data_bytes)
    buf_start = 0
    result = []
    for rx in frames:
        p = parse(rx.frame, mac_error=rx.mac_error, max_frame_bytes=params.max_frame_bytes)
        beats = min(max(1, -(-len(rx.frame) // params.data_bytes)), max_beats)
        result.append({
            "cls": p.cls, "frame_len": p.frame_len, "buf_start": buf_start,
            "stored_beats": beats, "ip_csum_bad": p.ip_csum_bad, "tcp_csum_bad": p.tcp_csum_bad,
            "key": {"local_ip": p.local_ip, "remote_ip": p.remote_ip,
                    "local_port": p.local_port, "remote_port": p.remote_port},
            "seq": p.seq, "ack": p.ack, "window": p.window, "flags": p.flags,
            "special": p.special, "payload_offset": p.payload_offset,
            "payload_len": p.payload_len, "ts_present": p.ts_present, "tsval": p.tsval,
            "tsecr": p.tsecr,
        })
        buf_start = (buf_start + beats) % depth
    return result


def tx_update(tx):
    """The transmit update the transmit engine hands over for ``tx``."""
    update = parse_tx(tx.frame)
    assert update is not None, "only frames that give an update reach the receive engine"
    return {"key": {"local_ip": update.local_ip, "remote_ip": update.remote_ip,
                    "local_port": update.local_port, "remote_port": update.remote_port},
            "seq": update.seq, "ack": update.ack, "window": update.window,
            "flags": update.flags, "payload_len": update.payload_len}


def command_word(command):
    return command if isinstance(command, int) else command.pack()


def describe(op):
    if isinstance(op, Rx):
        p = parse(op.frame, mac_error=op.mac_error)
        return (f"frame len={len(op.frame)} cls={p.cls} seq={p.seq:#x} flags={p.flags:#x} "
                f"payload={p.payload_len} port={p.remote_port}")
    if isinstance(op, Tx):
        u = parse_tx(op.frame)
        return (f"tx seq={u.seq:#x} ack={u.ack:#x} flags={u.flags:#x} window={u.window:#x} "
                f"payload={u.payload_len} port={u.remote_port}")
    return repr(op) if not isinstance(op, int) else f"raw command {op:#x}"


class Served(NamedTuple):
    """One operation the sequencer started, at ``cycle``; ``number`` counts per source, and
    ``waiting`` is the set of streams that offered an operation that cycle (a transmit update
    the engine defers, ``tx_deferred``, is not waiting, nor a command in the cycle it reaches
    the stream's head); ``skipped``: a transmit update dropped outside the rotation."""
    source: str
    number: int
    cycle: int
    waiting: frozenset
    skipped: bool = False


class Trace(NamedTuple):
    """What an RTL run did, for :func:`replay`."""
    frames: list            # Rx, in stream order
    commands: list
    txs: list
    controls: list          # in an in-order run, the control operations in order
    served: list            # Served and ("control", number, cycle), in time order
    jobs: list              # (cycle, Job, writes) in emission order
    high_water: list        # the inputs, the tx_matched output and op_load, per cycle
    buf_req_timeout: list
    tx_matched: list
    loads: list
    decided: list           # op_done (an operation's decision made, or none needed), per cycle
    job_offered: list       # job.valid, per cycle

    def load_after(self, cycle):
        """The LOAD of the operation taken at ``cycle``: its entry read, the timer and the
        high-water mark sampled, a transmit update's match reported. Two cycles after the take,
        or three if the CAM's answer for its key was not at hand (``rx_engine.py``)."""
        return self.loads.index(1, cycle + 1)

    def emits_job(self, cycle):
        """Whether the operation taken at ``cycle`` hands out a job: its decision is the first
        after the take (the one in the take's own cycle is the operation before's), and the
        emitter offers the job in the next cycle."""
        decided = self.decided.index(1, cycle + 1)
        return decided + 1 < len(self.job_offered) and bool(self.job_offered[decided + 1])

    @property
    def taken(self):
        """The operations in the order the engine took them (control operations in place)."""
        ops = {FRAME: self.frames, CMD: self.commands, TX: self.txs, "control": self.controls}
        return [ops[entry[0]][entry[1]] for entry in self.served if entry[0] != REDECIDE]


def rtl_run(params, ops, *, mode="in_order", rng=None, idle_prob=0.3, ready_prob=0.5,
            buf_req_timeout=NEVER, max_cycles=None):
    """Run ``ops`` through the engine; the :class:`Trace` of what it did.

    Modes:

    ``"in_order"``
        Each operation is offered once the one before it has been taken (unless wrapped in
        :class:`Offer`), so the engine takes them in list order. Control operations
        (:class:`Drive`, :class:`Settle`, :class:`Wait`) run in between.
    ``"concurrent"``
        Frames, commands and transmit updates are offered on their three streams
        independently; the engine's arbitration decides the order.
    ``"rounds"``
        ``ops`` is a list of rounds, each a tuple of at most one operation per stream, all
        offered in the same cycle once the previous round has been taken. A round of no
        operation (``IDLE_ROUND``) is a cycle in which nothing is offered.

    Without ``rng`` every input is offered back to back and every output always ready. With it,
    inputs pause and outputs are back-pressured at random.
    """
    dut = EngineWithCam(params)
    engine = dut.engine
    flat = [op.op if isinstance(op, Late) else op
            for round_ in ops for op in round_ if op is not None] if mode == "rounds" else \
        [op.op if isinstance(op, Offer) else op for op in ops]
    by_source = {FRAME: [], CMD: [], TX: [], "control": []}
    for op in flat:
        by_source["control" if isinstance(op, CONTROL) else source_of(op)].append(op)
    frame_descriptors = descriptors(params, by_source[FRAME])
    descriptor_layout = rx_descriptor_layout(params)
    streams = {FRAME: engine.descriptor, CMD: engine.command, TX: engine.tx_update}
    payloads = {
        FRAME: [descriptor_layout.const(desc) for desc in frame_descriptors],
        CMD:   [command_layout.from_bits(command_word(c)) for c in by_source[CMD]],
        TX:    [tx_update_layout.const(tx_update(tx)) for tx in by_source[TX]],
    }
    # The number of each operation among those of its source, in list order.
    numbered, counts = [], {FRAME: 0, CMD: 0, TX: 0, "control": 0}
    for op in flat:
        source = "control" if isinstance(op, CONTROL) else source_of(op)
        numbered.append((source, counts[source]))
        counts[source] += 1

    served, job_cycles, job_payloads, event_payloads = [], [], [], []
    logs = {"high_water": [], "buf_req_timeout": [], "tx_matched": [], "loads": [],
            "decided": [], "job_offered": []}
    clock = {"now": 0, "busy": 0}
    command_seen = False   # the command at the stream's head was there, not taken, last cycle
    queues = {source: [] for source in streams}   # operation numbers still to offer
    taken = {source: 0 for source in streams}      # operations the engine has taken

    def quiet():
        return clock["now"] - clock["busy"] >= QUIET_CYCLES

    async def observe(ctx):
        nonlocal command_seen
        sampled = [streams[s].valid for s in ROTATION] + [streams[s].ready for s in ROTATION] + [
            engine.op_take, engine.high_water, engine.buf_req_timeout, engine.tx_matched,
            engine.job.valid, engine.job.ready, engine.event.valid, engine.op_load,
            engine.command.payload.code, engine.cam_write_busy, engine.op_done,
            engine.tx_deferred, engine.tx_skip]
        while True:
            _, _, *values = await ctx.tick().sample(*sampled)
            valid, ready = dict(zip(ROTATION, values[:3])), dict(zip(ROTATION, values[3:6]))
            (op_take, high_water, timeout, matched, job_valid, job_ready, event_valid,
             load, code, cam_busy, done, deferred, skip) = values[6:]
            cycle = clock["now"]
            # A DELEGATE waits while the CAM still stores the key written before.
            delegate_waits = code == Opcode.DELEGATE and cam_busy
            assert not (delegate_waits and ready[CMD]), \
                f"cycle {cycle}: a DELEGATE was taken while the CAM was busy"
            # A command waits from the cycle after it reaches the stream's head.
            command_new = not command_seen
            assert not (command_new and ready[CMD]), \
                f"cycle {cycle}: a command was taken in the cycle it reached the head"
            command_seen = bool(valid[CMD] and not ready[CMD])
            waiting = frozenset(s for s in ROTATION
                                if valid[s] and not (s == CMD and (delegate_waits or command_new))
                                and not (s == TX and deferred))
            assert not (skip and op_take), f"cycle {cycle}: an update skipped in a take"
            for source in ROTATION:
                if valid[source] and ready[source]:
                    served.append(Served(source, taken[source], cycle, waiting,
                                         skipped=source == TX and bool(skip)))
                    taken[source] += 1
            # An operation taken with no stream taken: a held frame decided again.
            redecide = bool(op_take) and not any(ready.values())
            if redecide:
                served.append(Served(REDECIDE, None, cycle, waiting))
            if job_valid and job_ready:
                job_cycles.append(cycle)
            if any(ready.values()) or redecide or job_valid or event_valid:
                clock["busy"] = cycle
            logs["high_water"].append(high_water)
            logs["buf_req_timeout"].append(timeout)
            logs["tx_matched"].append(matched)
            logs["loads"].append(load)
            logs["decided"].append(done)
            logs["job_offered"].append(job_valid)
            clock["now"] = cycle + 1

    async def pause(ctx):
        while rng is not None and rng.random() < idle_prob:
            await idle(ctx, rng.randint(1, 4))

    def show_behind(ctx, source):
        """The key of the descriptor behind the one shown, as the parser's ``key_next``."""
        if source == FRAME:
            behind = queues[FRAME][1] if len(queues[FRAME]) > 1 else None
            ctx.set(engine.frame_key_next_valid, behind is not None)
            if behind is not None:
                ctx.set(engine.frame_key_next, payloads[FRAME][behind].key)

    def offerer(source):
        async def offer(ctx):
            stream = streams[source]
            while True:
                while not queues[source]:
                    await ctx.tick()
                await pause(ctx)
                number = queues[source][0]
                ctx.set(stream.valid, 1)
                ctx.set(stream.payload, payloads[source][number])
                show_behind(ctx, source)
                while not (await ctx.tick().sample(stream.ready))[2]:
                    show_behind(ctx, source)
                ctx.set(stream.valid, 0)
                queues[source].pop(0)
                if source == FRAME:
                    ctx.set(engine.frame_key_next_valid, 0)
        return offer

    async def until_taken(ctx, source, number):
        while taken[source] <= number:
            await ctx.tick()

    async def drive_in_order(ctx):
        for op, (source, number) in zip(ops, numbered):
            if source == "control":
                served.append(("control", number, clock["now"]))
                if isinstance(op, Drive):
                    if op.high_water is not None:
                        ctx.set(engine.high_water, op.high_water)
                    if op.buf_req_timeout is not None:
                        ctx.set(engine.buf_req_timeout, op.buf_req_timeout)
                elif isinstance(op, Wait):
                    await idle(ctx, op.cycles)
                else:
                    await ctx.tick()
                    while not quiet():
                        await ctx.tick()
                continue
            queues[source].append(number)
            if not isinstance(op, Offer) and mode == "in_order":
                await until_taken(ctx, source, number)

    async def drive_rounds(ctx):
        for round_, start in zip(ops, _round_starts(ops, numbered)):
            await pause(ctx)
            pending, late = {}, {}
            for op, (source, number) in zip([op for op in round_ if op is not None],
                                            numbered[start:]):
                stream = streams[source]
                if isinstance(op, Late):
                    late[source] = (stream, payloads[source][number])
                    continue
                ctx.set(stream.valid, 1)
                ctx.set(stream.payload, payloads[source][number])
                pending[source] = stream
            if not pending or late:
                await step(ctx, pending)
            for source, (stream, payload) in late.items():
                ctx.set(stream.valid, 1)
                ctx.set(stream.payload, payload)
                pending[source] = stream
            while pending:
                await step(ctx, pending)

    async def step(ctx, pending):
        """One cycle of the streams ``pending`` offer; those taken in it stop offering."""
        _, _, *readies = await ctx.tick().sample(*(s.ready for s in pending.values()))
        for source, ready in zip(list(pending), readies):
            if ready:
                ctx.set(pending.pop(source).valid, 0)

    def collector(stream, received, what):
        async def monitor(ctx):
            held = None
            while True:
                ready = rng is None or rng.random() < ready_prob
                ctx.set(stream.ready, ready)
                _, _, valid, payload = await ctx.tick().sample(stream.valid, stream.payload)
                if held is not None:
                    # R60: an offered payload stays offered, unchanged, until it is taken.
                    assert valid and payload.as_bits() == held, \
                        f"{what} withdrawn or changed before its transfer"
                held = None
                if valid and ready:
                    received.append(payload)
                elif valid:
                    held = payload.as_bits()
        return monitor

    async def start(ctx):
        ctx.set(engine.buf_req_timeout, buf_req_timeout)
        if mode == "rounds":
            await drive_rounds(ctx)
        else:
            await drive_in_order(ctx)
        for source in streams:
            while taken[source] < counts[source]:
                await ctx.tick()
        # Done once nothing has moved for a while: every output drained and no frame held.
        while not quiet():
            await ctx.tick()
        assert not ctx.get(engine.job.valid) and not ctx.get(engine.event.valid)

    if max_cycles is None:
        waits = sum(op.cycles for op in flat if isinstance(op, Wait))
        timeouts = sum(min(t, 4000) for t in [buf_req_timeout] + [
            op.buf_req_timeout for op in flat if isinstance(op, Drive) and op.buf_req_timeout]
            if t < NEVER) * 4
        max_cycles = 2000 + 60 * len(flat) + waits + timeouts
    monitors = [observe, collector(engine.job, job_payloads, "job"),
                collector(engine.event, event_payloads, "event")]
    if mode != "rounds":
        monitors += [offerer(source) for source in streams]
    run_simulation(dut, start, monitors=monitors, max_cycles=max_cycles)

    groups = []
    for payload in event_payloads:
        if payload.first:
            groups.append([])
        assert groups, "the first event the engine sent is not marked first"
        groups[-1].append(Event.unpack(payload.event.as_bits()))
    assert len(groups) == len(job_payloads), \
        f"{len(job_payloads)} jobs but {len(groups)} event groups"
    jobs, frame_jobs = [], 0
    for cycle, payload, events in zip(job_cycles, job_payloads, groups):
        kind = JobKind(payload.kind)
        if kind == JobKind.FENCE:
            jobs.append((cycle, Job(kind, None, events), []))
            continue
        # Frames are decided in arrival order: the n-th frame job is the n-th frame's.
        assert frame_jobs < len(by_source[FRAME]), "more frame jobs than frames"
        rx = by_source[FRAME][frame_jobs]
        frame_jobs += 1
        writes = []
        if kind == JobKind.WRITE:
            offset = payload.src_offset
            for number in range(payload.n_segments):
                segment_ = payload.segments[number]
                writes.append((segment_.address, rx.frame[offset:offset + segment_.length]))
                offset += segment_.length
        jobs.append((cycle, Job(kind, (payload.buf_start, payload.frame_beats), events), writes))

    served.sort(key=lambda entry: entry[2])
    trace = Trace(by_source[FRAME], by_source[CMD], by_source[TX], by_source["control"], served,
                  jobs, **logs)
    if mode == "in_order":
        engine_ops = [op for op in trace.taken if not isinstance(op, CONTROL)]
        assert engine_ops == [op for op in flat if not isinstance(op, CONTROL)] or any(
            isinstance(op, Offer) for op in ops), "the engine took operations out of order"
    return trace


def _round_starts(rounds, numbered):
    """Index in ``numbered`` of each round's first operation."""
    starts, position = [], 0
    for round_ in rounds:
        starts.append(position)
        position += sum(op is not None for op in round_)
    return starts


def _split_jobs(events):
    """The model's events of one call as the jobs the engine emits them in: a frame's main
    event (and its BUF_DONEs), a BUF_REQ, a RESYNC, or a command's events up to its CMD_DONE
    (docs/architecture.md, "Events and their order")."""
    groups = []
    for event in events:
        command_open = groups and groups[-1][0].type == EventType.STATE and \
            groups[-1][-1].type != EventType.CMD_DONE
        if event.type == EventType.BUF_DONE or (event.type == EventType.CMD_DONE and
                                                command_open):
            groups[-1].append(event)
        else:
            groups.append([event])
    return groups


def _job_kind(events):
    first = events[0].type
    if first in (EventType.RX_PLACED, EventType.LEGACY):
        return JobKind.WRITE
    if first == EventType.DROP:
        return JobKind.DISCARD
    return JobKind.FENCE


class RotationModel(Model):
    """The golden model with a held frame decided again when the engine does so, in the frame's
    turn of the rotation, rather than at the end of every command and transmit update.

    The two agree whenever nothing else is waiting when a command or an update ends; when an
    update is waiting behind a command, the engine applies it before it decides the held frame
    again (``test_held_frame_decided_after_each_command`` covers that case on its own).
    """

    deciding = False

    def _redecide(self):
        return super()._redecide() if self.deciding else []

    def decide_held(self):
        """Decide the held frame again; its events and those of the frames it releases."""
        self.last_writes = []
        self.deciding = True
        try:
            return self._redecide()
        finally:
            self.deciding = False


# The override above hooks the model's own re-decision; fail loudly if the model renames it.
assert callable(getattr(Model, "_redecide", None))


def replay(params, trace):
    """Apply the operations to the model in the order the engine served them; assert that the
    engine's jobs, writes, ``tx_matched`` pulses and serving order are the model's and the
    documented ones. Returns the model's outcomes (one per taken operation) and the model."""
    model = RotationModel(params)
    # The high-water mark is the harness's to drive, through the engine's input.
    model.write_register("HWM_BYTES", (1 << 32) - 1)
    frame_descriptors = descriptors(params, trace.frames)
    ops = {FRAME: trace.frames, CMD: trace.commands, TX: trace.txs, "control": trace.controls}
    engine_jobs = trace.jobs
    outcomes, history = [], []
    next_job, next_frame = 0, 0
    last = TX                     # the sequencer's rotation starts with frames
    last_engine_op = None
    hold_start = None

    def compare(events, writes, what):
        nonlocal next_job, next_frame
        jobs = []
        for group in _split_jobs(events):
            kind = _job_kind(group)
            frees = None
            if kind != JobKind.FENCE:
                desc = frame_descriptors[next_frame]
                frees = (desc["buf_start"], desc["stored_beats"])
                next_frame += 1
            jobs.append(Job(kind, frees, group))
        got = engine_jobs[next_job:next_job + len(jobs)]
        next_job += len(jobs)
        context = "\n  ".join(history[-6:])
        rtl_jobs = [job for _, job, _ in got]
        rtl_writes = [write for _, _, job_writes in got for write in job_writes]
        assert rtl_jobs == jobs and rtl_writes == writes, (
            f"{what}\n  rtl jobs:   {rtl_jobs}\n  model jobs: {jobs}\n"
            f"  rtl writes:   {rtl_writes}\n  model writes: {writes}\n"
            f"after (latest last):\n  {context}")
        return jobs

    for entry in trace.served:
        if entry[0] == "control":
            outcomes.append(Outcome(ops["control"][entry[1]], [], []))
            continue
        source, number, cycle, waiting, skipped = entry
        op = ops[source][number] if source != REDECIDE else None
        if skipped:
            # Dropped outside the rotation: no turn taken, and nothing to change.
            before = model.counters["TX_MATCHED"]
            events = model.tx_frame(op.frame)
            what = f"cycle {cycle}: {source} skipped {describe(op)}"
            assert model.counters["TX_MATCHED"] == before and not events, \
                f"{what}: the model finds its connection"
            history.append(what)
            outcomes.append(Outcome(op, [], [], False))
            continue
        # Rotation: among the streams offering and a held frame, the first after the last; a
        # held frame goes right after every command and update.
        if model.held is not None:
            waiting = waiting | {FRAME}
        assert source != REDECIDE or model.held is not None, (
            f"cycle {cycle}: the engine decided a held frame again, but the model holds none, "
            f"after (latest last):\n  " + "\n  ".join(history[-6:]))
        order = ROTATION[ROTATION.index(last) + 1:] + ROTATION[:ROTATION.index(last) + 1]
        if model.held is not None and last != FRAME:
            order = (FRAME,)
        expected = next(s for s in order if s in waiting)
        chosen = FRAME if source == REDECIDE else source
        assert chosen == expected, (f"cycle {cycle}: served {source} with {sorted(waiting)} "
                                    f"waiting after {last}; the rotation picks {expected}")
        last = chosen
        matched = None
        if source == FRAME:
            assert model.held is None, (f"cycle {cycle}: a frame was taken while another is "
                                        f"held, after (latest last):\n  "
                                        + "\n  ".join(history[-6:]))
            events = model.rx_frame(op.frame, mac_error=op.mac_error)
        elif source == CMD:
            events = model.command(op)
        elif source == TX:
            before = model.counters["TX_MATCHED"]
            events = model.tx_frame(op.frame)
            matched = model.counters["TX_MATCHED"] - before == 1
            if matched:
                loaded = trace.load_after(cycle)
                assert trace.tx_matched[loaded], f"cycle {cycle}: no tx_matched in its LOAD"
        else:
            # Decided again from scratch: placed if there is room now, to legacy if it is out of
            # sequence now; still without room, to legacy if the timer or the high-water mark
            # is due (without asking again, should a RESYNC have ended the request).
            events, reason = model.decide_held(), None
            if model.held is not None:
                reason = _expiry(trace, cycle, hold_start)
                if reason is not None:
                    events = model.expire_buffer_request(reason)
        # The timer runs from the BUF_REQ that opened the current request.
        if model.held is not None and any(e.type == EventType.BUF_REQ for e in events):
            hold_start = trace.load_after(cycle)
        what = f"cycle {cycle}: {source} {describe(op) if op is not None else ''}"
        history.append(what)
        if source == REDECIDE and not events:
            continue
        jobs = compare(events, list(model.last_writes), what)
        if source == REDECIDE:
            # An expiry belongs to whatever was going on (in an in-order run, the control
            # operation that waited for it); any other outcome to the operation that caused it.
            owner = len(outcomes) - 1 if reason is not None else last_engine_op
            previous = outcomes[owner]
            outcomes[owner] = previous._replace(jobs=previous.jobs + jobs,
                                                writes=previous.writes + list(model.last_writes))
        else:
            last_engine_op = len(outcomes)
            outcomes.append(Outcome(op, jobs, list(model.last_writes), matched))

    assert next_job == len(engine_jobs), \
        f"the engine emitted {len(engine_jobs) - next_job} jobs the model did not: " \
        f"{[job for _, job, _ in engine_jobs[next_job:]]}"
    assert next_frame == len(trace.frames), "a frame was never decided"
    assert sum(trace.tx_matched) == model.counters["TX_MATCHED"]
    return outcomes, model


def _expiry(trace, cycle, hold_start):
    """Whether the held frame, decided again at ``cycle``, ends its buffer request (R19), and
    with which reason; ``None`` if it stays held."""
    decide = trace.load_after(cycle)      # the cycle the high-water mark and timer are sampled
    if trace.high_water[decide]:
        return LegacyReason.HWM          # wins over a timeout due together
    held_for = decide - hold_start        # the engine's timer runs from LOAD to LOAD
    timeout = trace.buf_req_timeout[decide]
    if held_for >= timeout + TIMER_SLACK:
        return LegacyReason.BUF_TIMEOUT
    if held_for >= timeout - TIMER_SLACK:
        # Close to the timeout: follow the engine, which decided if its decision has a job.
        if trace.emits_job(cycle):
            return LegacyReason.BUF_TIMEOUT
    return None


def check(params, ops, **kwargs):
    """Run ``ops`` on the RTL and replay them on the model in the engine's order; the model's
    outcomes, one per taken operation, and the model."""
    return replay(params, rtl_run(params, ops, **kwargs))


# Stimulus ----------------------------------------------------------------------------------------

class Conn(NamedTuple):
    """A connection from the local host's point of view."""
    remote_ip: str
    remote_port: int
    local_ip: str = "10.0.0.1"
    local_port: int = 5001


CONNS = [Conn("10.0.0.2", 40000), Conn("10.0.0.3", 40000), Conn("10.0.0.2", 40001),
         Conn("192.168.7.9", 443, "10.0.0.7", 8080), Conn("10.0.0.2", 40000, local_port=5002)]
STRANGER = Conn("172.16.1.1", 1234)

NOP = b"\x01"
MSS = b"\x02\x04\x05\xb4"


def ts_option(tsval, tsecr):
    return b"\x08\x0a" + tsval.to_bytes(4, "big") + tsecr.to_bytes(4, "big")


LINUX_TS = NOP + NOP + ts_option(0x0badcafe, 0x12345678)


def ip_int(address):
    return int(ipaddress.IPv4Address(address))


def segment(conn, seq, payload=b"", *, flags="A", options=LINUX_TS, ack=0x2468ace0,
            window=0x7210, vlan=None, ip=None, tcp=None):
    """Bytes of a TCP segment of ``conn`` as received (remote to local)."""
    packet = Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:02")
    if vlan is not None:
        packet = packet / Dot1Q(vlan=vlan)
    fields = dict(sport=conn.remote_port, dport=conn.local_port, seq=seq, ack=ack, flags=flags,
                  window=window, dataofs=5 + len(options) // 4)
    fields.update(tcp or {})
    packet = (packet / IP(src=conn.remote_ip, dst=conn.local_ip, **(ip or {}))
              / TCP(**fields) / Raw(options + payload))
    return bytes(packet)


def rx(conn, seq, payload=b"", **kwargs):
    return Rx(segment(conn, seq, payload, **kwargs))


def tx(conn, seq, ack, payload=b"", *, flags="A", window=0x4000, vlan=None):
    """A segment the local host stack sends on ``conn`` (local to remote)."""
    packet = Ether(dst="02:00:00:00:00:02", src="02:00:00:00:00:01")
    if vlan is not None:
        packet = packet / Dot1Q(vlan=vlan)
    packet = (packet / IP(src=conn.local_ip, dst=conn.remote_ip)
              / TCP(sport=conn.local_port, dport=conn.remote_port, seq=seq % (1 << 32),
                    ack=ack % (1 << 32),
                    flags=flags, window=window) / Raw(payload))
    return Tx(bytes(packet))


def delegate(index, conn, rcv_nxt, snd_nxt=0x51000000, rcv_wnd=0xfff0):
    return Command(Opcode.DELEGATE, index, local_ip=ip_int(conn.local_ip),
                   remote_ip=ip_int(conn.remote_ip), local_port=conn.local_port,
                   remote_port=conn.remote_port, rcv_nxt=rcv_nxt, snd_nxt=snd_nxt,
                   rcv_wnd=rcv_wnd)


def post(index, address, length, tag):
    return Command(Opcode.POST_BUFFER, index, address=address, length=length, tag=tag)


def post_legacy(address, length, tag, index=NO_CONNECTION):
    return Command(Opcode.POST_LEGACY, index, address=address, length=length, tag=tag)


def legacy_slot(number, length=2048):
    """A legacy buffer well away from the user buffers of the directed tests."""
    return post_legacy(0x7f00_0000_0000 + number * 0x1000, length, 0x1e000 + number)


def resync(index, rcv_nxt):
    return Command(Opcode.RESYNC, index, rcv_nxt=rcv_nxt)


def reclaim(index):
    return Command(Opcode.RECLAIM, index)


def query(index):
    return Command(Opcode.QUERY, index)


def pattern(length, seed=0):
    return bytes((seed + 7 * i) & 0xff for i in range(length))


def types(outcome):
    return [event.type for event in outcome.events]


def state_of(outcome):
    """The STATE event of a QUERY or RECLAIM outcome."""
    assert outcome.events[0].type == EventType.STATE, outcome
    return outcome.events[0]


# Placement ---------------------------------------------------------------------------------------

def test_place_in_one_buffer():
    conn = CONNS[0]
    ops = [delegate(0, conn, 1000), post(0, 0x1_0000_0003, 4096, 0xa0),
           rx(conn, 1000, pattern(100)), query(0),
           rx(conn, 1100, pattern(50, 1), flags="PA"), query(0)]
    ref, _ = check(SMALL, ops)
    assert types(ref[2]) == [EventType.RX_PLACED]
    assert ref[2].writes == [(0x1_0000_0003, pattern(100))]
    assert (state_of(ref[3]).rcv_nxt, state_of(ref[3]).n_buffers) == (1100, 1)
    assert types(ref[4]) == [EventType.RX_PLACED, EventType.BUF_DONE]
    assert (ref[4].events[1].tag, ref[4].events[1].bytes) == (0xa0, 150)
    assert (state_of(ref[5]).rcv_nxt, state_of(ref[5]).n_buffers) == (1150, 0)


@pytest.mark.parametrize("params", [SMALL, Params()], ids=["small", "default"])
@pytest.mark.parametrize("n_buffers", [2, 3, 4])
def test_place_spanning_buffers(params, n_buffers):
    """A frame spread over ``n_buffers`` buffers completes the full ones; the partly filled
    last one stays until a PSH frame lands in it."""
    conn = CONNS[1]
    sizes = [37, 64, 5, 300][:n_buffers]
    addresses = [0x2_0000_0001, 0x2_0000_1ffd, 0xffff_fffe, TOP_OF_MEMORY - 300][:n_buffers]
    payload_len = sum(sizes) - 2
    ops = [delegate(2, conn, 0x10000)]
    ops += [post(2, address, size, 0xb0 + n) for n, (address, size)
            in enumerate(zip(addresses, sizes))]
    ops += [rx(conn, 0x10000, pattern(payload_len)), query(2),
            rx(conn, 0x10000 + payload_len, b"z", flags="PA"), query(2)]
    ref, _ = check(params, ops)
    spanning = ref[1 + n_buffers]
    assert len(spanning.writes) == n_buffers
    assert types(spanning) == [EventType.RX_PLACED] + [EventType.BUF_DONE] * (n_buffers - 1)
    assert state_of(ref[2 + n_buffers]).n_buffers == 1
    assert [(event.tag, event.bytes) for event in ref[3 + n_buffers].events[1:]] == \
        [(0xb0 + n_buffers - 1, sizes[-1] - 1)]
    assert state_of(ref[4 + n_buffers]).n_buffers == 0


def test_complete_and_compact_queue():
    """Completed buffers leave the head of the queue; posts refill it behind the rest."""
    conn = CONNS[2]
    base = 0x3_0000_0000
    ops = [delegate(1, conn, 7)]
    ops += [post(1, base + n * 0x1000, 100 * (n + 1), n + 1) for n in range(4)]
    ops += [post(1, base + 0x8000, 10, 99),                     # QUEUE_FULL
            rx(conn, 7, pattern(300)),                          # fills 1 and 2 exactly
            query(1),
            post(1, base + 0x4000, 500, 5), post(1, base + 0x5000, 600, 6),
            post(1, base + 0x9000, 10, 98),                     # QUEUE_FULL again
            rx(conn, 307, pattern(350, 3)),                     # fills 3, 50 bytes into 4
            rx(conn, 657, pattern(10, 5), flags="PA"),          # completes 4 partly filled
            rx(conn, 667, pattern(800, 9), flags="PA"),         # fills 5, 300 into 6 (PSH)
            query(1),
            post(1, base + 0x6000, 1, 7),
            rx(conn, 1467, b"!"),                               # a 1-byte buffer fills whole
            query(1)]
    ref, _ = check(SMALL, ops)
    statuses = [op.events[-1].status for op in ref if op.kind == JobKind.FENCE
                and op.events[-1].opcode == Opcode.POST_BUFFER]
    assert statuses == [CmdStatus.OK] * 4 + [CmdStatus.QUEUE_FULL] + [CmdStatus.OK] * 2 + \
        [CmdStatus.QUEUE_FULL, CmdStatus.OK]
    done = [(event.tag, event.bytes) for op in ref for event in op.events
            if event.type == EventType.BUF_DONE]
    assert done == [(1, 100), (2, 200), (3, 300), (4, 60), (5, 500), (6, 300), (7, 1)]
    assert state_of(ref[14]).n_buffers == 0
    assert state_of(ref[17]).n_buffers == 0


def test_resync_resumes_placement():
    conn = CONNS[0]
    ops = [delegate(3, conn, 500), post(3, 0x4000_0000, 1000, 1),
           rx(conn, 900, pattern(20)),                 # OUT_OF_SEQ: SYNC_REQ
           rx(conn, 500, pattern(20)),                 # SYNC, in sequence: advances
           query(3), resync(3, 520), query(3),
           rx(conn, 520, pattern(30), flags="PA"), query(3)]
    for number in range(2):
        ops.insert(0, legacy_slot(number))
    ref, _ = check(SMALL, ops)
    assert [e.reason for op in ref for e in op.events if e.type == EventType.LEGACY] == \
        [LegacyReason.OUT_OF_SEQ, LegacyReason.SYNC]
    assert (state_of(ref[6]).sync_req, state_of(ref[6]).rcv_nxt) == (1, 520)
    assert (state_of(ref[8]).sync_req, state_of(ref[8]).rcv_nxt) == (0, 520)
    assert types(ref[9]) == [EventType.RX_PLACED, EventType.BUF_DONE]
    assert state_of(ref[10]).rcv_nxt == 550


# Legacy, drops and rcv_nxt tracking --------------------------------------------------------------

def legacy_reason_ops():
    """Every legacy reason, each frame with a fresh legacy buffer; SPECIAL frames in sequence,
    one after the other, each advancing rcv_nxt. The two frames without room wait for a user
    buffer until the timer (BUF_TIMEOUT) or the high-water mark (HWM) sends them to legacy."""
    conn, tight, bare = CONNS[0], CONNS[3], CONNS[2]
    plain = segment(conn, 5000, b"data")
    frames = [
        Rx(bytes(Ether() / ARP())),                                         # NOT_TCP
        Rx(bytes(Ether() / IP(src=conn.remote_ip, dst=conn.local_ip) / UDP() / Raw(b"u"))),
        Rx(bytes(Ether() / Dot1Q(vlan=1) / Dot1Q(vlan=2) / IP() / TCP())),
        Rx(plain[:14] + bytes([0x65]) + plain[15:]),                         # version 6
        rx(conn, 5000, b"frag", ip={"frag": 100}),                          # later fragment
        rx(STRANGER, 5000, b"nobody"),                                       # NO_MATCH
        rx(conn, 5000, b"bad tcp", tcp={"chksum": 0x1234}),                  # CHECKSUM
        rx(conn, 5000, b"bad ip", ip={"chksum": 0x4321}, vlan=12),
        rx(conn, 5000),                                                      # NO_PAYLOAD
        rx(conn, 6000, b"ahead"),                                            # OUT_OF_SEQ
        rx(conn, 4000, b"behind"),                                           # SYNC, no advance
        rx(conn, 5000, b"0123456789"),                                       # SYNC, +10
        rx(conn, 5010, flags="S"),                                           # SPECIAL +1
        rx(conn, 5011, b"fin", flags="FA"),                                  # +4
        rx(conn, 5015, b"rst", flags="R"),                                   # +3
        rx(conn, 5018, b"urgent", flags="UA", tcp={"urgptr": 2}),            # +6
        rx(conn, 5024, b"first frag", ip={"flags": "MF"}),                   # +10
        rx(conn, 5034, b"opts", ip={"options": [IPOption_Router_Alert()]}),  # +4
        rx(conn, 5038, b"mss", options=MSS),                                 # +3
        rx(conn, 5041, b"both", flags="SF"),                                 # +4 + 2
        rx(conn, 9999, b"out of seq", flags="F"),                            # no advance
        rx(tight, 77, pattern(40)),                                          # BUF_TIMEOUT +40
        rx(tight, 117, pattern(11), vlan=5),                                 # SYNC +11
        rx(bare, 3, pattern(25)),                                            # HWM +25
    ]
    ops = [delegate(1, conn, 5000), post(1, 0x5_0000_0000, 65536, 1),
           delegate(2, tight, 77), post(2, 0x6_0000_0000, 39, 2), delegate(3, bare, 3)]
    for number, frame in enumerate(frames):
        ops += [legacy_slot(number), frame]
        if number in (11, 19, 20):
            ops.append(query(1))
        if number == 21:
            ops += [Drive(buf_req_timeout=60), Settle(), Drive(buf_req_timeout=NEVER)]
        if number == 23:
            ops += expire_by_high_water()
    ops += [query(2), query(1), query(3)]
    return ops


@pytest.mark.parametrize("params", [SMALL, Params()], ids=["small", "default"])
def test_every_legacy_reason(params):
    ref, _ = check(params, legacy_reason_ops())
    reasons = {event.reason for op in ref for event in op.events if event.type == EventType.LEGACY}
    assert reasons == set(LegacyReason)
    legacy = [job for op in ref for job in op.jobs if job.events[0].type == EventType.LEGACY]
    assert all(job.kind == JobKind.WRITE for job in legacy)
    assert all(len(op.writes) == 1 for op in ref if op.events and
               op.events[0].type == EventType.LEGACY)
    requests = [e for op in ref for e in op.events if e.type == EventType.BUF_REQ]
    assert [(e.index, e.bytes) for e in requests] == [(2, 1), (3, 25)]
    # Each expiry ends in the control operation that caused it, not in the frame's own.
    expired = [(type(op.op), e.reason) for op in ref for e in op.events
               if e.type == EventType.LEGACY and e.reason in (LegacyReason.BUF_TIMEOUT,
                                                              LegacyReason.HWM)]
    assert expired == [(Settle, LegacyReason.BUF_TIMEOUT), (Settle, LegacyReason.HWM)]
    states = [state_of(op) for op in ref if op.events and op.events[0].type == EventType.STATE]
    assert [(s.index, s.rcv_nxt, s.sync_req, s.buf_req) for s in states] == [
        (1, 5010, 1, 0), (1, 5047, 1, 0), (1, 5047, 1, 0), (2, 128, 1, 0), (1, 5047, 1, 0),
        (3, 28, 1, 0)]
    checksum = [op.events[0] for op in ref if op.events and op.events[0].type ==
                EventType.LEGACY and op.events[0].reason == LegacyReason.CHECKSUM]
    assert [(e.index, e.ip_csum_bad, e.tcp_csum_bad) for e in checksum] == \
        [(NO_CONNECTION, 0, 1), (NO_CONNECTION, 1, 0)]


def test_drops_and_failed_legacy_delivery():
    """Invalid frames are dropped; a legacy upload with no buffer, or too small a buffer, is a
    DROP that leaves the connection exactly as it was, and the small buffer at the ring's head.
    That holds for a frame whose buffer request expires too, and its BUF_REQ is over."""
    conn = CONNS[0]
    good = segment(conn, 100, pattern(60))
    ops = [delegate(0, conn, 100),
           Rx(good, mac_error=True),                                   # MAC_ERROR
           Rx(good[:-5]),                                              # TRUNCATED (IPv4 length)
           Rx(good[:10]), Rx(b""),                                     # runts
           rx(conn, 100, pattern(1600)),                               # OVERSIZE
           Rx(bytes(Ether() / ARP())),                                 # NO_LEGACY_BUFFER
           rx(conn, 100, b"syn", flags="S"),                           # SPECIAL would advance
           rx(conn, 300, b"x"),                                        # OUT_OF_SEQ would sync
           rx(conn, 100, b"no user buffer"),                           # 9: held
           query(0),
           Drive(buf_req_timeout=40), Settle(),                        # 12: expiry would advance
           query(0),
           post_legacy(0x9000_0000, 60, 0x60),
           rx(conn, 100, b"fin and more than sixty bytes in all", flags="FA"),
           rx(conn, 100, b"z" * 30),                                   # 16: held
           Settle(),                                                   # 17: too small as well
           query(0),
           Rx(bytes(Ether() / ARP())),                                 # 42 bytes: takes it
           Rx(bytes(Ether() / ARP())),
           post_legacy(0x9000_1000, 1518, 0x61),
           rx(conn, 100, b"fin", flags="FA"),
           query(0)]
    # A legacy buffer exactly as long as the frame takes it; one byte shorter does not.
    exact = segment(conn, 104, pattern(77))
    ops += [post_legacy(0x9000_2000, len(exact), 0x62), Rx(exact),
            post_legacy(0x9000_3000, len(exact) - 1, 0x63), Rx(exact)]
    ref, _ = check(SMALL, ops)
    drops = [(e.index, e.reason) for op in ref for e in op.events if e.type == EventType.DROP]
    nc = NO_CONNECTION
    assert drops == [
        (nc, DropReason.MAC_ERROR), (nc, DropReason.TRUNCATED), (nc, DropReason.TRUNCATED),
        (nc, DropReason.TRUNCATED), (nc, DropReason.OVERSIZE), (nc, DropReason.NO_LEGACY_BUFFER),
        (0, DropReason.NO_LEGACY_BUFFER), (0, DropReason.NO_LEGACY_BUFFER),
        (0, DropReason.NO_LEGACY_BUFFER), (0, DropReason.LEGACY_TOO_SMALL),
        (0, DropReason.LEGACY_TOO_SMALL), (nc, DropReason.NO_LEGACY_BUFFER),
        (0, DropReason.LEGACY_TOO_SMALL)]
    assert ref[9].events == [Event(EventType.BUF_REQ, 0, bytes=14)]
    assert ref[16].events == [Event(EventType.BUF_REQ, 0, bytes=30)]
    assert [(e.type, e.reason) for e in ref[12].events + ref[17].events] == [
        (EventType.DROP, DropReason.NO_LEGACY_BUFFER),
        (EventType.DROP, DropReason.LEGACY_TOO_SMALL)]
    assert (state_of(ref[10]).buf_req, state_of(ref[10]).rcv_nxt) == (1, 100)
    for number in (13, 18):
        state = state_of(ref[number])
        assert (state.rcv_nxt, state.sync_req, state.buf_req) == (100, 0, 0)
    assert [(e.type, e.tag) for e in ref[19].events] == [(EventType.LEGACY, 0x60)]
    assert (state_of(ref[23]).rcv_nxt, state_of(ref[23]).sync_req) == (104, 1)
    assert [(e.type, e.tag) for e in ref[25].events] == [(EventType.LEGACY, 0x62)]
    assert [e.type for e in ref[27].events] == [EventType.DROP]


def test_rcv_nxt_serial_wrap():
    """rcv_nxt counts modulo 2**32, on the place path and on every advancing legacy path."""
    conn = CONNS[4]
    start = (1 << 32) - 6
    ops = [delegate(0, conn, start), post(0, 0xa_0000_0000, 4096, 1),
           legacy_slot(0), legacy_slot(1), legacy_slot(2), legacy_slot(3),
           rx(conn, start, pattern(10)), query(0),                          # -> 4
           rx(conn, 4, pattern(3), flags="PA"), query(0),                   # -> 7
           resync(0, (1 << 32) - 1),
           rx(conn, (1 << 32) - 1, flags="FA"), query(0),                   # SPECIAL -> 0
           rx(conn, 0, pattern(5)),                                         # SYNC -> 5
           rx(conn, (1 << 32) - 3, pattern(9)), query(0),                   # SYNC, behind
           resync(0, (1 << 32) - 2),
           post(0, 0xb_0000_0000, 4, 2),
           rx(conn, (1 << 32) - 2, pattern(7)), Settle(), query(0)]         # BUF_TIMEOUT -> 5
    ref, _ = check(SMALL, ops, buf_req_timeout=50)
    assert [state_of(ref[n]).rcv_nxt for n in (7, 9, 12, 15, 20)] == [4, 7, 0, 5, 5]
    assert types(ref[8]) == [EventType.RX_PLACED, EventType.BUF_DONE]
    assert ref[18].events == [Event(EventType.BUF_REQ, 0, bytes=3)]
    assert ref[19].events[0].reason == LegacyReason.BUF_TIMEOUT


def outcome(outcomes, op):
    """The outcome of operation ``op`` (the first, if it occurs more than once)."""
    return next(o for o in outcomes if o.op is op)


def engine_order(outcomes):
    """The operations the engine took, in the order it took them."""
    return [o.op for o in outcomes if not isinstance(o.op, CONTROL)]


def controls_events(outcomes):
    """Events of buffer requests that expired during control operations."""
    return [event for o in outcomes if isinstance(o.op, CONTROL) for event in o.events]


# Buffer requests (R17–R19) -----------------------------------------------------------------------

def test_buffer_request_released_by_post():
    """A frame without room asks once for the shortfall and waits at the head; a post still too
    small keeps it waiting without a second request; the post that makes room places it, and
    the frames that arrived behind it follow, in order (R17, R18)."""
    conn = CONNS[0]
    ops = [legacy_slot(0), delegate(0, conn, 1000), post(0, 0x1_0000_0000, 30, 1),
           rx(conn, 1000, pattern(100)),                                  # 3: held, short 70
           Offer(rx(conn, 1100, pattern(20, 1))),                         # wait behind it
           Offer(rx(conn, 1120, pattern(10, 2), flags="PA")),
           post(0, 0x1_0000_1000, 50, 2),                                 # 80 < 100: still held
           query(0),
           post(0, 0x1_0000_2000, 100, 3),                                # room: placed
           Settle(), query(0)]
    ref, model = check(SMALL, ops, buf_req_timeout=400)
    held, behind = ops[3], [offer.op for offer in ops[4:6]]
    assert engine_order(ref) == [op for op in ops if not isinstance(op, (Offer,) + CONTROL)
                                 ][:7] + behind + [ops[-1]], \
        "the frames behind the held one were taken before it was placed"
    assert outcome(ref, held).events == [Event(EventType.BUF_REQ, 0, bytes=70)]
    assert outcome(ref, held).kind == JobKind.FENCE
    assert outcome(ref, ops[6]).events == [
        Event(EventType.CMD_DONE, 0, opcode=Opcode.POST_BUFFER, status=CmdStatus.OK)]
    state = state_of(outcome(ref, ops[7]))
    assert (state.buf_req, state.rcv_nxt, state.n_buffers) == (1, 1000, 2)
    releasing = outcome(ref, ops[8])
    assert types(releasing) == [EventType.CMD_DONE, EventType.RX_PLACED, EventType.BUF_DONE,
                                EventType.BUF_DONE]
    assert [(e.tag, e.bytes) for e in releasing.events[2:]] == [(1, 30), (2, 50)]
    assert releasing.writes == [(0x1_0000_0000, pattern(100)[:30]),
                                (0x1_0000_1000, pattern(100)[30:80]),
                                (0x1_0000_2000, pattern(100)[80:])]
    assert types(outcome(ref, behind[0])) == [EventType.RX_PLACED]
    assert types(outcome(ref, behind[1])) == [EventType.RX_PLACED, EventType.BUF_DONE]
    state = state_of(ref[-1])
    assert (state.buf_req, state.sync_req, state.rcv_nxt, state.n_buffers) == (0, 0, 1130, 0)
    assert model.counters["BUF_REQS"] == 1


def test_buffer_request_timeout():
    """Held well past BUF_REQ_TIMEOUT, the frame goes to legacy (BUF_TIMEOUT): SYNC_REQ set,
    rcv_nxt past it, BUF_REQ over; the frame behind it then goes to legacy as SYNC (R19)."""
    conn = CONNS[1]
    behind = rx(conn, 5050, pattern(7))
    ops = [legacy_slot(0), legacy_slot(1), delegate(1, conn, 5000), post(1, 0x2_0000_0000, 10, 1),
           rx(conn, 5000, pattern(50)), Offer(behind),
           Wait(250), Settle(), query(1)]
    ref, _ = check(SMALL, ops, buf_req_timeout=100)
    assert ref[4].events == [Event(EventType.BUF_REQ, 1, bytes=40)]
    assert [(e.type, e.index, e.reason) for e in controls_events(ref)] == \
        [(EventType.LEGACY, 1, LegacyReason.BUF_TIMEOUT)]
    assert engine_order(ref)[-2:] == [behind, ops[-1]]
    assert [(e.type, e.reason) for e in outcome(ref, behind).events] == \
        [(EventType.LEGACY, LegacyReason.SYNC)]
    state = state_of(ref[-1])
    assert (state.sync_req, state.buf_req, state.rcv_nxt, state.n_buffers) == (1, 0, 5057, 1)


def test_high_water_ends_a_held_frame_only():
    """With ``high_water`` high, a frame with room is still placed and a frame without room still
    asks for a buffer; once held it goes to legacy (HWM), SYNC_REQ set, rcv_nxt past it."""
    conn = CONNS[2]
    ops = [legacy_slot(0), delegate(3, conn, 0x100), post(3, 0x3_0000_0000, 20, 1),
           Drive(high_water=1),
           rx(conn, 0x100, pattern(20), flags="PA"),                      # 4: placed
           rx(conn, 0x114, pattern(33)),                                  # 5: BUF_REQ
           Settle(), Drive(high_water=0), query(3)]
    ref, _ = check(SMALL, ops)
    assert types(ref[4]) == [EventType.RX_PLACED, EventType.BUF_DONE]
    events = ref[5].events + controls_events(ref)
    assert [(e.type, e.index) for e in events] == [(EventType.BUF_REQ, 3), (EventType.LEGACY, 3)]
    assert (events[0].bytes, events[1].reason) == (33, LegacyReason.HWM)
    state = state_of(ref[8])
    assert (state.sync_req, state.buf_req, state.rcv_nxt) == (1, 0, 0x135)


def test_high_water_and_timeout_due_together():
    """HWM wins when the high-water mark and the timer come due in the same cycle."""
    conn = CONNS[3]
    ops = [legacy_slot(0), delegate(2, conn, 77),
           rx(conn, 77, pattern(40)), Wait(60),
           Drive(high_water=1, buf_req_timeout=10), Settle(),
           Drive(high_water=0, buf_req_timeout=NEVER), query(2)]
    ref, _ = check(SMALL, ops)
    assert ref[2].events == [Event(EventType.BUF_REQ, 2, bytes=40)]
    expired = controls_events(ref)
    assert [(e.type, e.reason) for e in expired] == [(EventType.LEGACY, LegacyReason.HWM)]
    assert (state_of(ref[7]).rcv_nxt, state_of(ref[7]).sync_req) == (117, 1)


def test_resync_while_held():
    """RESYNC ends the request: the held frame, decided again, asks anew if it is still in
    sequence without room, and goes to legacy as out of sequence once rcv_nxt has moved."""
    conn = CONNS[0]
    ops = [legacy_slot(0), delegate(1, conn, 1000), post(1, 0x4_0000_0000, 8, 1),
           rx(conn, 1000, pattern(12)),                                   # 3: BUF_REQ 4
           resync(1, 1000),                                               # 4: BUF_REQ 4 again
           query(1),
           resync(1, 2000),                                               # 6: OUT_OF_SEQ
           query(1)]
    ref, model = check(SMALL, ops)
    assert ref[3].events == [Event(EventType.BUF_REQ, 1, bytes=4)]
    assert types(ref[4]) == [EventType.CMD_DONE, EventType.BUF_REQ]
    assert ref[4].events[1].bytes == 4
    assert (state_of(ref[5]).buf_req, state_of(ref[5]).rcv_nxt) == (1, 1000)
    assert [(e.type, e.reason) for e in ref[6].events[1:]] == \
        [(EventType.LEGACY, LegacyReason.OUT_OF_SEQ)]
    state = state_of(ref[7])
    assert (state.rcv_nxt, state.sync_req, state.buf_req, state.n_buffers) == (2000, 1, 0, 1)
    assert model.counters["BUF_REQS"] == 2


def test_resync_restarts_the_timer():
    """A RESYNC during a hold opens a new request, and BUF_REQ_TIMEOUT counts from its BUF_REQ:
    held longer than the timeout in all, but not since the second request, the frame is still
    placed by a late post."""
    conn = CONNS[3]
    ops = [delegate(2, conn, 400), rx(conn, 400, pattern(30)),          # 1: BUF_REQ
           Wait(70), resync(2, 400),                                     # 3: BUF_REQ again
           Wait(70), post(2, 0x8_0000_0000, 30, 1), query(2)]            # 5: placed
    ref, _ = check(SMALL, ops, buf_req_timeout=100)
    assert ref[1].events == [Event(EventType.BUF_REQ, 2, bytes=30)]
    assert types(ref[3]) == [EventType.CMD_DONE, EventType.BUF_REQ]
    assert types(ref[5]) == [EventType.CMD_DONE, EventType.RX_PLACED, EventType.BUF_DONE]
    assert not controls_events(ref)
    assert (state_of(ref[6]).rcv_nxt, state_of(ref[6]).buf_req) == (430, 0)


def test_transmit_update_while_held():
    """An acknowledgement past the held frame moves rcv_nxt (R31): decided again, the frame is
    out of sequence. The stack's next acknowledgement of rcv_nxt resyncs (R32), and
    placement resumes."""
    conn = CONNS[1]
    ops = [legacy_slot(0), delegate(0, conn, 3000), post(0, 0x5_0000_0000, 16, 1),
           rx(conn, 3000, pattern(40)),                                   # 3: held
           tx(conn, 0x51000000, 3040),                                    # 4: R31, OUT_OF_SEQ
           query(0),
           tx(conn, 0x51000000, 3040, window=0x2222),                     # 6: R32, RESYNC
           query(0),
           rx(conn, 3040, pattern(16, 3)),                                # 8: placed
           query(0)]
    ref, _ = check(SMALL, ops)
    assert ref[3].events == [Event(EventType.BUF_REQ, 0, bytes=24)]
    assert ref[4].matched and [(e.type, e.reason) for e in ref[4].events] == \
        [(EventType.LEGACY, LegacyReason.OUT_OF_SEQ)]
    state = state_of(ref[5])
    assert (state.rcv_nxt, state.sync_req, state.buf_req, state.last_ack_sent) == \
        (3040, 1, 0, 3040)
    assert ref[6].events == [Event(EventType.RESYNC, 0, rcv_nxt=3040)]
    assert ref[6].jobs[0].kind == JobKind.FENCE
    state = state_of(ref[7])
    assert (state.sync_req, state.rcv_wnd) == (0, 0x2222)
    assert types(ref[8]) == [EventType.RX_PLACED, EventType.BUF_DONE]
    assert state_of(ref[9]).rcv_nxt == 3056


def test_reclaim_while_held():
    """RECLAIM of the connection a frame waits on makes it a frame of no connection."""
    conn = CONNS[2]
    ops = [legacy_slot(0), delegate(3, conn, 9), rx(conn, 9, pattern(5)),
           reclaim(3), query(3)]
    ref, _ = check(SMALL, ops)
    assert ref[2].events == [Event(EventType.BUF_REQ, 3, bytes=5)]
    assert types(ref[3]) == [EventType.STATE, EventType.CMD_DONE, EventType.LEGACY]
    assert state_of(ref[3]).buf_req == 1
    assert (ref[3].events[2].index, ref[3].events[2].reason) == \
        (NO_CONNECTION, LegacyReason.NO_MATCH)
    assert ref[4].events[-1].status == CmdStatus.NOT_DELEGATED


# Transmit updates (R31–R33) ----------------------------------------------------------------------

def test_transmit_updates():
    """R31–R33 applied in order: rcv_nxt follows a later ACK (serially), a RESYNC when the stack
    acknowledges rcv_nxt while SYNC_REQ is set, last_ack_sent, rcv_wnd and snd_nxt; updates
    without a hit change nothing."""
    conn, other = CONNS[3], CONNS[0]
    snd = (1 << 32) - 20
    ops = [legacy_slot(0), legacy_slot(1), delegate(2, conn, 5000, snd_nxt=snd, rcv_wnd=0x100),
           tx(conn, snd, 9999, pattern(10), flags="", window=0x1111),   # 3: no ACK
           query(2),
           tx(conn, snd + 10, 4000, window=0x2222),                     # 5: behind: kept
           tx(conn, snd + 10, 5000 + (1 << 31), window=0x3333),         # 6: not after, serially
           query(2),
           tx(conn, snd + 10, 6000, pattern(15), flags="PA"),           # 8: ahead: taken
           tx(conn, snd - 100, 6000, pattern(5), flags="FA"),           # 9: end behind snd_nxt
           tx(conn, snd + 25, 6000, flags="SA", vlan=3),                # 10: end wraps to 6
           query(2),
           tx(STRANGER, 1, 2, b"x"), tx(other, 1, 2),                   # 12, 13: no hit
           rx(conn, 7000, pattern(4)),                                  # 14: OUT_OF_SEQ
           tx(conn, 6, 5999),                                           # 15: behind: no resync
           tx(conn, 6, 6100),                                           # 16: R31 then R32
           query(2),
           post(2, 0x6_0000_0000, 64, 1),
           rx(conn, 6100, pattern(9), flags="PA"),                      # 19: placed again
           query(2)]
    ref, model = check(SMALL, ops)
    fields = ("rcv_nxt", "snd_nxt", "last_ack_sent", "rcv_wnd", "sync_req")

    def state(number):
        event = state_of(ref[number])
        return tuple(getattr(event, name) for name in fields)

    assert state(4) == (5000, (snd + 10) % (1 << 32), 5000, 0x1111, 0)
    assert state(7) == (5000, (snd + 10) % (1 << 32), 5000 + (1 << 31), 0x3333, 0)
    assert state(11) == (6000, 6, 6000, 0x4000, 0)
    assert [ref[n].matched for n in (3, 5, 6, 8, 9, 10, 12, 13, 15, 16)] == [True] * 6 + \
        [False, False, True, True]
    assert [op.events for op in ref if isinstance(op.op, Tx)][:8] == [[]] * 8
    assert ref[14].events[0].reason == LegacyReason.OUT_OF_SEQ
    assert ref[16].events == [Event(EventType.RESYNC, 2, rcv_nxt=6100)]
    assert state(17) == (6100, 6, 6100, 0x4000, 0)
    assert types(ref[19]) == [EventType.RX_PLACED, EventType.BUF_DONE]
    assert state_of(ref[20]).rcv_nxt == 6109
    assert model.counters["TX_MATCHED"] == 8


# Commands ----------------------------------------------------------------------------------------

ODD = Params(data_width=128, n_entries=5, buffers_per_conn=3, legacy_ring_depth=2,
             max_frame_bytes=600, rx_buffer_bytes=2048)


@pytest.mark.parametrize("params", [SMALL, ODD], ids=["small", "odd"])
def test_every_command_status(params):
    """Each status in the order of the checks; a failed command changes nothing (R41)."""
    conn, other = CONNS[0], CONNS[1]
    bad_index = params.n_entries
    top = TOP_OF_MEMORY
    S = CmdStatus
    cases = [
        (0, S.BAD_OPCODE), (7 | 2 << 16, S.BAD_OPCODE), (0xff | 0xffff << 16, S.BAD_OPCODE),
        (delegate(bad_index, conn, 1), S.BAD_INDEX), (delegate(0xffff, conn, 1), S.BAD_INDEX),
        (post(bad_index, 0x1000, 10, 1), S.BAD_INDEX), (resync(0x8000, 1), S.BAD_INDEX),
        (reclaim(bad_index), S.BAD_INDEX), (query((1 << params.index_bits) - 1 | 1 << 12),
                                             S.BAD_INDEX),
        (query(0), S.NOT_DELEGATED), (resync(1, 5), S.NOT_DELEGATED),
        (reclaim(1), S.NOT_DELEGATED), (post(0, 0x1000, 10, 1), S.NOT_DELEGATED),
        (delegate(0, conn, 1000), S.OK), (delegate(0, other, 1), S.IN_USE),
        (delegate(1, conn, 1), S.DUPLICATE_KEY),
        (delegate(1, other, 2000, snd_nxt=0xfedcba98, rcv_wnd=0x1234), S.OK),
        (post(0, 0x1000, 0, 1), S.ZERO_LENGTH), (post_legacy(0x1000, 0, 2), S.ZERO_LENGTH),
        (post(0, top - 100, 101, 1), S.ADDRESS_WRAP), (post_legacy(top - 1, 2, 2), S.ADDRESS_WRAP),
        (post(0, top - 0xffffffff + 1, 0xffffffff, 1), S.ADDRESS_WRAP),
        (post_legacy(top - 1, 0xffffffff, 2), S.ADDRESS_WRAP),
        # A wrapping, empty post to a free entry is NOT_DELEGATED: that check comes first.
        (post(2, top - 1, 0, 1), S.NOT_DELEGATED),
        (post(0, top - 100, 100, 0x100), S.OK),                     # ends exactly at 2**64
        (post(0, 0, 0xffffffff, 0x101), S.OK),
    ]
    cases += [(post(0, 0x20 * n, n, 0x102 + n), S.OK)
              for n in range(1, params.buffers_per_conn - 1)]
    cases += [(post(0, 0x1000, 3, 0x1ff), S.QUEUE_FULL),
              (post_legacy(top - 2048, 2048, 0x200, index=bad_index), S.OK)]  # any index
    cases += [(post_legacy(0x7000 + 0x100 * n, 64, 0x201 + n), S.OK)
              for n in range(params.legacy_ring_depth - 1)]
    cases += [(post_legacy(0xa000, 64, 0x2ff), S.QUEUE_FULL),
              (post(0, top - 10, 0, 1), S.ZERO_LENGTH),                 # ahead of QUEUE_FULL
              (post_legacy(top - 10, 11, 1), S.ADDRESS_WRAP),           # ahead of QUEUE_FULL
              (resync(0, 0xdeadbeef), S.OK),
              (query(0), S.OK), (query(1), S.OK), (query(2), S.NOT_DELEGATED)]
    ref, _ = check(params, [op for op, _ in cases])
    done = [outcome.events[-1] for outcome in ref]
    assert all(event.type == EventType.CMD_DONE for event in done)
    assert [event.status for event in done] == [status for _, status in cases]
    assert {status for _, status in cases} == set(CmdStatus)
    assert [(e.index, e.opcode) for e in done[:3]] == [(0, 0), (2, 7), (0xffff, 0xff)]
    state0, state1 = state_of(ref[-3]), state_of(ref[-2])
    assert (state0.rcv_nxt, state0.n_buffers, state0.last_ack_sent) == \
        (0xdeadbeef, params.buffers_per_conn, 1000)
    assert (state1.rcv_nxt, state1.snd_nxt, state1.rcv_wnd, state1.last_ack_sent) == \
        (2000, 0xfedcba98, 0x1234, 2000)


def test_reclaim_and_reuse():
    """RECLAIM returns the state and every buffer with its filled bytes; the key then misses,
    and DELEGATE reuses the index (with a new key) and the key (at another index)."""
    conn, other = CONNS[0], CONNS[3]
    ops = [legacy_slot(0), legacy_slot(1), legacy_slot(2),
           delegate(2, conn, 40), post(2, 0xc_0000_0000, 16, 1), post(2, 0xc_0000_1000, 16, 2),
           post(2, 0xc_0000_2000, 100, 3), post(2, 0xc_0000_3000, 100, 4),
           rx(conn, 40, pattern(20)),                   # completes 1, 4 bytes into 2
           rx(conn, 60, pattern(5)),                    # 9 bytes into 2
           rx(conn, 999, b"oops"),                      # OUT_OF_SEQ: sync_req in the STATE
           reclaim(2),
           rx(conn, 65, pattern(5)),                    # NO_MATCH now
           query(2), reclaim(2), post(2, 0x1000, 10, 9),
           delegate(2, other, 0x1234), query(2),
           rx(other, 0x1234, pattern(8), flags="PA"),   # no buffer posted after reuse: held
           delegate(0, conn, 65), post(0, 0xd_0000_0000, 64, 5),
           reclaim(2),                                  # the held frame now has no connection
           rx(conn, 65, pattern(5), flags="PA"), reclaim(0)]
    ref, _ = check(SMALL, ops)
    assert types(ref[11]) == [EventType.STATE] + [EventType.BUF_DONE] * 3 + [EventType.CMD_DONE]
    state = state_of(ref[11])
    assert (state.valid, state.sync_req, state.n_buffers, state.rcv_nxt) == (1, 1, 3, 65)
    assert [(e.tag, e.bytes) for e in ref[11].events[1:4]] == [(2, 9), (3, 0), (4, 0)]
    assert ref[12].events[0].reason == LegacyReason.NO_MATCH
    assert [op.events[-1].status for op in ref[13:16]] == [CmdStatus.NOT_DELEGATED] * 3
    assert ref[16].events[-1].status == CmdStatus.OK
    assert (state_of(ref[17]).rcv_nxt, state_of(ref[17]).n_buffers) == (0x1234, 0)
    assert ref[18].events == [Event(EventType.BUF_REQ, 2, bytes=8)]
    assert [op.events[-1].status for op in ref[19:21]] == [CmdStatus.OK] * 2
    assert types(ref[21]) == [EventType.STATE, EventType.CMD_DONE, EventType.LEGACY]
    assert state_of(ref[21]).buf_req == 1
    assert (ref[21].events[2].index, ref[21].events[2].reason) == \
        (NO_CONNECTION, LegacyReason.NO_MATCH)
    assert types(ref[22]) == [EventType.RX_PLACED, EventType.BUF_DONE]
    assert types(ref[23]) == [EventType.STATE, EventType.CMD_DONE]


# Random ------------------------------------------------------------------------------------------

def random_frame(params, rng, conn, seq):
    """A random received frame of ``conn``, mostly a well-formed Linux-style data segment."""
    # Room for payload behind the largest headers drawn below (802.1Q tag, 12 option bytes).
    payload_room = params.max_frame_bytes - 14 - 4 - 20 - 20 - 12
    size = rng.choice([0, rng.randint(1, 64), rng.randint(1, 600), rng.randint(1, payload_room)])
    payload = rng.randbytes(size)
    kwargs = {"flags": rng.choice(["A", "PA", "PA", "A", "A"])}
    roll = rng.random()
    if roll < 0.06:
        kwargs["flags"] = rng.choice(["S", "SA", "FA", "R", "UA", "PFA"])
    elif roll < 0.09:
        kwargs["options"] = rng.choice([b"", MSS, NOP * 4 + ts_option(1, 2) + NOP * 2])
    elif roll < 0.11:
        kwargs["vlan"] = rng.randint(0, 4095)
    elif roll < 0.13:
        kwargs["ip"] = {"flags": "MF"}
    elif roll < 0.15:
        kwargs["tcp"] = {"chksum": rng.randint(0, 0xffff)}
    frame = segment(conn, seq, payload, **kwargs)
    roll = rng.random()
    if roll < 0.02:
        return Rx(frame, mac_error=True)
    if roll < 0.04:
        return Rx(frame[:rng.randint(0, len(frame) - 1)])
    if roll < 0.05:
        # Ethernet padding, which the IPv4 length excludes, or enough of it to be oversize.
        return Rx(frame + rng.randbytes(rng.choice(
            [rng.randint(1, 20),
             max(1, params.max_frame_bytes - len(frame) + rng.randint(1, 40))])))
    if roll < 0.07:
        return Rx(bytes(Ether() / IP(dst=conn.local_ip) / UDP() / Raw(payload[:100])))
    return Rx(frame)


def random_ops(params, rng, count, *, controls=True):
    """Frames, commands and transmitted frames over one more connection than there are entries.
    A planning model picks the targets the host stack would: seq numbers mostly in sequence,
    buffers posted mostly to delegated connections, the legacy ring mostly kept stocked, a
    RESYNC soon after a connection needs one, acknowledgements mostly of what was received.
    Bad commands and bad frames are mixed in. With ``controls``, a held frame is sometimes sent
    to legacy by raising ``high_water``; otherwise holds end by a post or the timer."""
    planner = Model(params)
    planner.write_register("HWM_BYTES", (1 << 32) - 1)
    conns = [Conn(f"10.1.0.{n + 2}", 30000 + n) for n in range(params.n_entries + 1)]
    keys = [(ip_int(c.local_ip), ip_int(c.remote_ip), c.local_port, c.remote_port) for c in conns]
    ops = []

    def emit(op):
        ops.append(op)
        if isinstance(op, Rx):
            # The engine takes no frame while one is held; the planner assumes the timer ends
            # the hold first.
            if planner.held is not None:
                planner.expire_buffer_request(LegacyReason.BUF_TIMEOUT)
            planner.rx_frame(op.frame, mac_error=op.mac_error)
        elif isinstance(op, Tx):
            planner.tx_frame(op.frame)
        else:
            planner.command(op)

    def random_buffer(kind):
        if kind == "legacy":
            length = rng.choice([rng.randint(60, 1600), params.max_frame_bytes])
        else:
            length = rng.choice([rng.randint(1, 64), rng.randint(64, 1500),
                                 rng.randint(1, 1 << 16)])
        roll = rng.random()
        if roll < 0.02:
            length = 0
        if roll < 0.05:
            return min(TOP_OF_MEMORY - 1,
                       TOP_OF_MEMORY - length + rng.choice([0, 0, 1, 1000])), length
        return rng.randrange(TOP_OF_MEMORY - length), length

    def delegated():
        return [index for index, entry in enumerate(planner.entries) if entry.valid]

    def conn_of(valid):
        conn = rng.choice(conns)
        if valid and rng.random() < 0.8:
            conn = conns[keys.index(planner.entries[rng.choice(valid)].key)]
        found = planner.lookup(keys[conns.index(conn)])
        return conn, (planner.entries[found] if found is not None else None)

    for index in range(params.n_entries - 1):
        emit(delegate(index, conns[index], rng.getrandbits(32)))
    # First a hold that the high-water mark ends (with ``controls``), then one that the timer
    # ends (the next frame waits it out), each with a legacy buffer its frame fits, so that
    # every run reaches each way a hold can end whatever its seed: later holds may meet only
    # smaller legacy buffers, and their frames are dropped, with no LEGACY event to show why.
    emit(legacy_slot(0, params.max_frame_bytes))
    emit(legacy_slot(1, params.max_frame_bytes))
    if controls:
        emit(rx(conns[0], planner.entries[0].rcv_nxt, pattern(rng.randint(1, 200))))
        ops.extend(expire_by_high_water())
        planner.expire_buffer_request(LegacyReason.HWM)
    emit(rx(conns[1], planner.entries[1].rcv_nxt, pattern(rng.randint(1, 200))))
    emit(random_frame(params, rng, rng.choice(conns), rng.getrandbits(32)))

    tag = 0
    while len(ops) < count:
        tag += 1
        valid = delegated()
        index = rng.choice(valid) if valid and rng.random() < 0.85 else \
            rng.randrange(params.n_entries)
        roll = rng.random()
        if len(planner.legacy_ring) < 2 and rng.random() < 0.7 or roll < 0.08:
            emit(post_legacy(*random_buffer("legacy"), tag))
        elif roll < 0.52:
            conn, entry = conn_of(valid)
            rcv_nxt = entry.rcv_nxt if entry is not None else rng.getrandbits(32)
            seq = rcv_nxt if rng.random() < 0.85 else \
                (rcv_nxt + rng.randint(-3000, 3000)) % (1 << 32)
            emit(random_frame(params, rng, conn, seq))
        elif roll < 0.64:
            conn, entry = conn_of(valid)
            waiting = [i for i in valid if planner.entries[i].sync_req]
            resyncing = waiting and rng.random() < 0.6
            if resyncing:
                # The stack acknowledging what it has taken: R32 resyncs the connection.
                entry = planner.entries[rng.choice(waiting)]
                conn = conns[keys.index(entry.key)]
            rcv_nxt = entry.rcv_nxt if entry is not None else rng.getrandbits(32)
            snd_nxt = entry.snd_nxt if entry is not None else rng.getrandbits(32)
            ack = (rcv_nxt + rng.choice([0] * (6 if resyncing else 3) + [
                rng.randint(1, 3000), -rng.randint(1, 3000), rng.getrandbits(32)])) % (1 << 32)
            seq = (snd_nxt + rng.choice([0, 0, -rng.randint(1, 2000), rng.randint(1, 2000)])) \
                % (1 << 32)
            emit(tx(conn, seq, ack, rng.randbytes(rng.choice([0, 0, rng.randint(1, 200)])),
                    flags=rng.choice(["A", "A", "A", "PA", "", "S", "SA", "FA", "RA"]),
                    window=rng.getrandbits(16), vlan=rng.choice([None] * 9 + [7])))
        elif roll < 0.80:
            emit(post(index if rng.random() < 0.97 else params.n_entries,
                      *random_buffer("user"), tag))
        elif roll < 0.85:
            rcv_nxt = planner.entries[index].rcv_nxt if rng.random() < 0.8 else \
                rng.getrandbits(32)
            emit(resync(index, rcv_nxt))
        elif roll < 0.90:
            emit(query(index))
        elif roll < 0.93:
            emit(reclaim(index))
        elif roll < 0.98:
            emit(delegate(rng.randrange(params.n_entries), rng.choice(conns), rng.choice(
                [rng.getrandbits(32), (1 << 32) - rng.randint(1, 2000)])))
        else:
            emit(rng.choice([0, 8, 0x7f]) | index << 16)
        if controls and planner.held is not None and not planner.legacy_ring:
            emit(legacy_slot(tag, params.max_frame_bytes))
        if controls and planner.held is not None and rng.random() < 0.3:
            ops.extend(expire_by_high_water())
            planner.expire_buffer_request(LegacyReason.HWM)
        for index in delegated():
            entry = planner.entries[index]
            if entry.sync_req and rng.random() < 0.3:
                # The stack resyncs by command, or by acknowledging rcv_nxt (R32).
                if rng.random() < 0.5:
                    emit(resync(index, entry.rcv_nxt))
                else:
                    emit(tx(conns[keys.index(entry.key)], entry.snd_nxt, entry.rcv_nxt,
                            window=rng.getrandbits(16)))
    return ops


#: Long enough for a few operations to pass while a frame is held, short enough that holds
#: nobody releases cost little.
RANDOM_TIMEOUT = 120


def legacy_reasons(outcomes):
    return {event.reason for op in outcomes for event in op.events
            if event.type == EventType.LEGACY}


@pytest.mark.parametrize("params, count", [(SMALL, 400), (ODD, 200)], ids=["small", "odd"])
def test_random_in_order(params, count):
    rng = seeded_rng(f"rx_engine_in_order_{params.n_entries}")
    ops = random_ops(params, rng, count)
    ref, model = check(params, ops, rng=rng, buf_req_timeout=RANDOM_TIMEOUT)
    kinds = {e.type for op in ref for e in op.events}
    assert {EventType.RX_PLACED, EventType.BUF_DONE, EventType.LEGACY, EventType.DROP,
            EventType.STATE, EventType.BUF_REQ} <= kinds
    assert model.counters["TX_MATCHED"] > 0
    if count >= 400:
        # Long enough a run reaches every way a buffer request ends, and R32.
        assert EventType.RESYNC in kinds
        assert {LegacyReason.BUF_TIMEOUT, LegacyReason.HWM} <= legacy_reasons(ref)


def test_random_concurrent_streams():
    """Frames, commands and transmit updates offered at once: whatever order the engine picks,
    each operation's outcome is the model's for that order, and the order is the rotation."""
    rng = seeded_rng("rx_engine_concurrent")
    ops = random_ops(SMALL, rng, 300, controls=False)
    ref, _ = check(SMALL, ops, rng=rng, mode="concurrent", idle_prob=0.2, ready_prob=0.6,
                   buf_req_timeout=RANDOM_TIMEOUT)
    sources = [source_of(op.op) for op in ref]
    assert {FRAME, CMD, TX} <= set(sources)


def test_frames_and_commands_alternate():
    """With both streams always offering, the engine takes a frame and a command in turn, so a
    flood of frames cannot starve the driver's commands (nor the reverse)."""
    conn = CONNS[0]
    frames = [rx(conn, 100, pattern(10)), rx(conn, 100)] + \
        [rx(conn, seq, pattern(10, seq)) for seq in (100, 110, 999, 120)]
    commands = [delegate(0, conn, 100), post(0, 0xe_0000_0000, 25, 1), post_legacy(0x1000, 100, 2),
                query(0), post(0, 0xe_0000_1000, 100, 3), reclaim(0)]
    ops = [op for pair in zip(frames, commands) for op in pair]
    taken = rtl_run(SMALL, ops, mode="concurrent").taken
    assert [isinstance(op, Rx) for op in taken] == [True, False] * 6
    ref, _ = check(SMALL, ops, mode="concurrent")
    assert [op.events[0].type for op in ref[::2]] == [
        EventType.DROP, EventType.DROP, EventType.RX_PLACED, EventType.RX_PLACED,
        EventType.LEGACY, EventType.DROP]


def test_unmatched_updates_take_no_turn():
    """Transmit updates of no delegated connection, offered beside a delegated connection's
    frames, are dropped outside the rotation (``tx_skip``): none is taken as an operation, and
    the frames follow one another exactly as they do with no update offered, one every three
    cycles (a delegated frame's LOAD, MEASURE and DECIDE, the next taken in the DECIDE with its
    entry read there). Before, each update took a turn and a cycle of the sequencer."""
    conn, index = CONNS[0], 1
    count = 12
    setup = [legacy_slot(0), delegate(index, conn, 100), post(index, 0xe_0000_0000, 4096, 1),
             Settle()]
    frames = [rx(conn, 100 + 10 * n, pattern(10, n)) for n in range(count)]
    # The first frame comes alone: an update reaching an idle engine in the same cycle would
    # not have been looked up yet, and is taken (as in the next test). The rest are offered on
    # both streams at once, back to back.
    alone = setup + frames[:1] + [Offer(frame) for frame in frames[1:]]
    beside = setup + frames[:1] + [Offer(op) for n, frame in enumerate(frames[1:])
                                   for op in (frame, tx(STRANGER, 1 + n, 2))]

    def frame_gaps(ops):
        trace = rtl_run(SMALL, ops)
        takes = [entry.cycle for entry in trace.served if entry[0] == FRAME]
        return trace, [b - a for a, b in zip(takes, takes[1:])]

    _, gaps_alone = frame_gaps(alone)
    trace, gaps_beside = frame_gaps(beside)
    updates = [entry for entry in trace.served if entry[0] == TX]
    assert len(updates) == count - 1 and all(entry.skipped for entry in updates)
    assert gaps_beside == gaps_alone
    # From the second frame on: the first, reaching an idle engine, waited for its answer.
    assert gaps_alone[1:] == [3] * (count - 2)
    ref, model = replay(SMALL, trace)
    assert [types(outcome) for outcome in ref if isinstance(outcome.op, Rx)] == \
        [[EventType.RX_PLACED]] * count
    assert model.counters["TX_MATCHED"] == 0


def test_short_operations_follow_at_their_pace():
    """A delegated connection's frames alternate with frames of no delegated connection,
    offered back to back. Each is taken in the DECIDE of the one before with its entry read
    there, so a delegated frame costs three cycles (LOAD, MEASURE, DECIDE) and the other two
    (LOAD, DECIDE). That needs each frame's answer at hand when the one before is taken:
    the key behind the head of the stream (``frame_key_next``) is looked up while the head's
    operation runs. (No legacy buffer is posted, so the other frames are dropped and pop
    nothing: a frame read in the cycle of a pop reads the ring a cycle later.)"""
    conn, index = CONNS[0], 1
    count = 12
    setup = [delegate(index, conn, 100), post(index, 0xe_0000_0000, 4096, 1), Settle()]
    frames = [rx(conn, 100 + 10 * (n // 2), pattern(10, n)) if n % 2 == 0
              else rx(STRANGER, 7, pattern(10, n)) for n in range(count)]
    trace = rtl_run(SMALL, setup + frames[:1] + [Offer(frame) for frame in frames[1:]])
    takes = [entry.cycle for entry in trace.served if entry[0] == FRAME]
    # From the second frame on: the first, reaching an idle engine, waited for its answer.
    assert [b - a for a, b in zip(takes[1:], takes[2:])] == [2, 3] * ((count - 2) // 2)
    ref, _ = replay(SMALL, trace)
    assert [types(outcome) for outcome in ref if isinstance(outcome.op, Rx)] == \
        [[EventType.RX_PLACED], [EventType.DROP]] * (count // 2)



@pytest.mark.parametrize("spare", [0, 1])
def test_post_legacy_is_followed_at_once(spare):
    """Frames of no delegated connection alternate with the POST_LEGACYs that refill the legacy
    ring, offered back to back, as a driver reposting each legacy buffer does. A POST_LEGACY is
    followed in its DECIDE like any other command (2 cycles). The ring shows its push two
    cycles after that DECIDE: with a spare buffer in the ring the push changes nothing the
    frame after it reads (2 cycles); with the ring empty that frame reads the ring in MEASURE,
    through RING (4 cycles). Every frame goes to legacy, with the buffer posted just before it
    when there is no spare."""
    count = 12
    setup = [legacy_slot(100 + n) for n in range(1 + spare)] + [Settle()]
    ops = [Offer(rx(STRANGER, 7 + n, pattern(10, n))) if n % 2 == 0 else Offer(legacy_slot(n))
           for n in range(2 * count)]
    trace = rtl_run(SMALL, setup + ops)
    served = [entry for entry in trace.served if entry[0] in (FRAME, CMD)][len(setup) - 1:]
    assert [entry[0] for entry in served] == [FRAME, CMD] * count
    takes = [entry[2] for entry in served]
    # From the second operation on: the first, reaching an idle engine, waited for its answer.
    after_post = 2 if spare else 4
    assert [b - a for a, b in zip(takes[1:], takes[2:])] == \
        [2, after_post] * (count - 1), takes
    ref, _ = replay(SMALL, trace)
    frames = [outcome for outcome in ref if isinstance(outcome.op, Rx)]
    assert [types(outcome) for outcome in frames] == [[EventType.LEGACY]] * count
    # Without a spare, each frame after the first takes the buffer posted just before it.
    if not spare:
        tags = [outcome.events[0].tag for outcome in frames[1:]]
        assert tags == [0x1e000 + n for n in range(1, 2 * count - 1, 2)]


def test_post_legacy_right_behind_a_push_into_a_two_deep_ring():
    """Two POST_LEGACYs back to back into an empty ring two deep: the second is decided in the
    cycle after the first one's push, while that buffer moves from the ring's RAM to its output
    register and the ring's ``w_rdy`` says full. Both are accepted (the engine's full flag
    follows the ring's level), and the two frames after them get the two buffers in order."""
    params = Params(data_width=128, n_entries=5, buffers_per_conn=3, legacy_ring_depth=2,
                    rx_buffer_bytes=2048, max_frame_bytes=600)
    ops = [Offer(legacy_slot(0)), Offer(legacy_slot(1)), Settle(),
           rx(STRANGER, 7, pattern(10, 0)), rx(STRANGER, 17, pattern(10, 1))]
    trace = rtl_run(params, ops)
    # The first, reaching an idle engine, runs LOOKUP, LOAD, DECIDE; the second is taken in
    # that DECIDE, and decided two cycles later, the cycle after the first one's push.
    served = [entry for entry in trace.served if entry[0] == CMD]
    assert served[1][2] - served[0][2] == 3, "the second POST_LEGACY was not taken at once"
    ref, _ = replay(params, trace)
    assert [outcome.events[-1].status for outcome in ref
            if isinstance(outcome.op, Command)] == [CmdStatus.OK] * 2
    assert [outcome.events[0].tag for outcome in ref
            if isinstance(outcome.op, Rx)] == [0x1e000, 0x1e001]

# Arbitration: no update may be lost --------------------------------------------------------------

def same_entry_rounds(rng, conn, index, count, rcv, snd):
    """Rounds for one entry, most offering a frame, a command and a transmit update together;
    also the entry's rcv_nxt and snd_nxt once every round has taken effect.

    Frame ``r`` is in sequence once the frames before it are placed. POST_BUFFER ``r`` posts
    exactly its payload, so a frame served before the post of its round waits for it (a buffer
    request) and every buffer is filled whole. Update ``r`` acknowledges the bytes before frame
    ``r - 1`` (never past a frame that may still wait), sends the next segment and a new
    window. Some rounds carry a QUERY, or only some of the streams, so that every source is
    sometimes first in the rotation.
    """
    rounds, acked = [], rcv
    for number in range(count):
        payload = rng.randbytes(rng.randint(1, 300))
        frame = rx(conn, rcv, payload, flags="PA")
        command = post(index, 0x9_0000_0000 + number * 0x1000, len(payload), number + 1)
        data = rng.randbytes(rng.choice([0, rng.randint(1, 100)]))
        update = tx(conn, snd, acked, data, window=rng.getrandbits(16))
        roll = rng.random()
        if roll < 0.15:
            rounds += [(None, query(index), update), (frame, command, None)]
        elif roll < 0.25:
            rounds += [(None, command, None), (frame, None, update)]
        elif roll < 0.32:
            rounds += [(None, None, update), (frame, command, None)]
        else:
            rounds.append((frame, command, update))
        acked = rcv
        rcv = (rcv + len(payload)) % (1 << 32)
        snd = (snd + len(data)) % (1 << 32)
    return rounds, rcv, snd


def rotation_orders(outcomes, rounds):
    """The order the engine served each round that offered all three streams at once."""
    position = {id(o.op): number for number, o in enumerate(outcomes)}
    return [tuple(source_of(op) for op in sorted(round_, key=lambda op: position[id(op)]))
            for round_ in rounds if None not in round_]


def test_no_update_lost_on_one_entry():
    """A received frame, a command and a transmit update of the same entry offered in the same
    cycle, again and again, under random back-pressure: the engine serves them one at a time in
    the documented rotation, and every job, event and the final state are the model's applied in
    that order, and what the updates add up to by hand: nothing is lost."""
    rng = seeded_rng("rx_engine_same_entry")
    conn, index = CONNS[0], 1
    rcv, snd = (1 << 32) - 500, 0xfffff000
    rounds, rcv_end, snd_end = same_entry_rounds(rng, conn, index, 60, rcv, snd)
    # Rounds with only an update (a repeat of the one before, which changes nothing) shift the
    # rotation, so that full rounds after them go in another order whatever the back-pressure.
    shifted = []
    for number, round_ in enumerate(rounds):
        shifted.append(round_)
        if number % 10 == 9:
            shifted.append((None, None, round_[2]))
    rounds = [(None, legacy_slot(0), None),
              (None, delegate(index, conn, rcv, snd_nxt=snd, rcv_wnd=0x1234), None),
              *shifted, (None, query(index), None)]
    ref, model = check(SMALL, rounds, mode="rounds", rng=rng, idle_prob=0.3, ready_prob=0.5)

    ops = [op for round_ in rounds for op in round_ if op is not None]
    updates = [parse_tx(op.frame) for op in ops if isinstance(op, Tx)]
    final = state_of(ref[-1])
    assert (final.rcv_nxt, final.snd_nxt, final.last_ack_sent, final.rcv_wnd) == \
        (rcv_end, snd_end, updates[-1].ack, updates[-1].window)
    assert (final.valid, final.sync_req, final.buf_req, final.n_buffers) == (1, 0, 0, 0)
    frames = [op for op in ops if isinstance(op, Rx)]
    counters = model.counters
    assert (counters["RX_PLACED"], counters["TX_MATCHED"], counters["BUF_DONES"]) == \
        (len(frames), len(updates), len(frames))
    assert counters["COMMANDS"] == len(ops) - len(frames) - len(updates)
    # Every choice was checked against the rotation by the replay; held frames (decided again
    # in the frame's turn) and partial rounds shift it, so the full rounds go in several orders.
    assert len(set(rotation_orders(ref, rounds))) >= 2
    assert counters["BUF_REQS"] > 0


def test_random_rounds_on_few_connections():
    """Rounds of random frames, commands and updates over a few connections, offered together."""
    rng = seeded_rng("rx_engine_random_rounds")
    ops = random_ops(SMALL, rng, 240, controls=False)
    streams = {FRAME: [], CMD: [], TX: []}
    for op in ops:
        streams[source_of(op)].append(op)
    rounds = []
    while any(streams.values()):
        # Every fifth round keeps its transmit update for the next round, so that the round
        # after it starts elsewhere in the rotation: otherwise a seed whose full rounds all
        # follow a round that ended with an update sees them all in one order.
        keep_tx = len(rounds) % 5 == 4
        rounds.append(tuple(streams[s].pop(0) if streams[s] and not (s == TX and keep_tx)
                            and rng.random() < 0.8 else None for s in ROTATION))
    ref, _ = check(SMALL, rounds, mode="rounds", rng=rng, buf_req_timeout=RANDOM_TIMEOUT)
    assert len(set(rotation_orders(ref, rounds))) >= 2


def test_answers_looked_up_before_a_delegate_are_dropped():
    """A frame and a transmit update of a connection wait while the DELEGATE that creates it runs.
    The engine looks their keys up ahead of taking them (``rx_engine.py``, "Keys are looked up
    ahead of the take"), so both are answered "no match" while the command runs; the CAM write
    must drop those answers. The update then matches and the frame, empty, goes to legacy as a
    delegated connection's (NO_PAYLOAD), not as a stranger's (NO_MATCH). The frame goes first:
    an update waits for a turn only once the answer asked again says it hits."""
    conn, index = CONNS[0], 1
    rounds = [(None, legacy_slot(0), None), (None, legacy_slot(1), None),
              # Served alone, a frame leaves the command first in the rotation after it.
              (rx(STRANGER, 7, pattern(10)), None, None),
              (rx(conn, 100), delegate(index, conn, 100, snd_nxt=0x1000), tx(conn, 0x1000, 100))]
    trace = rtl_run(SMALL, rounds, mode="rounds")
    assert [source_of(op) for op in trace.taken[-3:]] == [CMD, FRAME, TX]
    ref, model = replay(SMALL, trace)
    frame, update = ref[-2], ref[-1]
    assert update.matched
    assert [(e.type, e.reason) for e in frame.events] == [(EventType.LEGACY,
                                                           LegacyReason.NO_PAYLOAD)]
    assert model.counters["TX_MATCHED"] == 1


def test_delegate_to_an_idle_engine_waits_for_its_answer():
    """A DELEGATE reaching an idle engine is taken in the cycle it arrives, before the CAM has
    answered for its key; it must wait for the answer to see that the key is in use. Only
    DELEGATE waits: the other commands need no answer and are taken straight to their LOAD."""
    conn, other = CONNS[0], CONNS[1]
    ops = [delegate(0, conn, 1000), Settle(), delegate(1, conn, 1), Settle(),
           delegate(1, other, 5), Settle(), query(0)]
    trace = rtl_run(SMALL, ops)
    ref, _ = check(SMALL, ops)
    assert [outcome.events[-1].status for outcome in ref if outcome.events] == \
        [CmdStatus.OK, CmdStatus.DUPLICATE_KEY, CmdStatus.OK, CmdStatus.OK]
    takes = [entry.cycle for entry in trace.served if entry[0] == CMD]
    assert [trace.load_after(cycle) - cycle for cycle in takes] == [4, 4, 4, 2]


def test_operation_taken_unanswered_waits_for_its_own_key():
    """A DELEGATE reaches an idle engine, and a frame of another connection a cycle later, as
    the DELEGATE starts to wait (a command waits from the cycle after it reaches the stream's
    head), so neither was looked up ahead. The DELEGATE goes first (the rotation after a frame)
    and waits in LOOKUP for the answer to the key asked about in the cycle it was taken, which
    must be its own: asking about the frame first, as a fixed order of lookups once did, gave
    the operation taken the frame's answer (then an update's state was written into connection
    1's; here the DELEGATE would find its key in use). Transmit updates are never taken without
    their answer since the thirteenth session, so a command shows it now."""
    conn, other = CONNS[0], CONNS[1]
    rounds = [(None, legacy_slot(0), None), (None, legacy_slot(1), None),
              (None, delegate(1, conn, 100), None),
              # Served alone, a frame leaves the command first in the rotation after it.
              (rx(STRANGER, 7, pattern(10)), None, None)]
    # Long enough for the CAM to have stored the first key: a DELEGATE waits for that.
    rounds += [IDLE_ROUND] * (write_cycles() + 8)
    rounds += [(Late(rx(conn, 100)), delegate(2, other, 500), None),
               (None, query(1), None), (None, query(2), None)]
    trace = rtl_run(SMALL, rounds, mode="rounds")
    assert [source_of(op) for op in trace.taken[-4:]] == [CMD, FRAME, CMD, CMD]
    delegate_taken = [entry.cycle for entry in trace.served if entry[0] == CMD][-3]
    assert trace.load_after(delegate_taken) - delegate_taken == 4, "looked up ahead after all"
    ref, _ = replay(SMALL, trace)
    assert ref[-4].events[-1].status == CmdStatus.OK
    # The frame's own answer: a delegated connection's empty segment (not a stranger's).
    assert [(e.type, e.reason) for e in ref[-3].events] == [(EventType.LEGACY,
                                                             LegacyReason.NO_PAYLOAD)]
    assert state_of(ref[-1]).rcv_nxt == 500


def test_held_frame_decided_after_each_command():
    """While a frame is held it is decided again after each command (docs/architecture.md,
    "Buffer requests"). A POST_BUFFER that makes room and an update acknowledging the held
    frame's bytes, offered together: the command goes first (the rotation after a frame), and
    the frame is placed before the update is applied."""
    conn = CONNS[2]
    held = rx(conn, 1000, pattern(40), flags="PA")
    rounds = [(None, legacy_slot(0), None), (None, delegate(0, conn, 1000), None),
              (held, None, None),
              (None, post(0, 0xa_0000_0000, 64, 1), tx(conn, 0x51000000, 1040)),
              (None, query(0), None)]
    ref, _ = check(SMALL, rounds, mode="rounds")
    assert outcome(ref, held).events == [Event(EventType.BUF_REQ, 0, bytes=40)]
    assert types(outcome(ref, rounds[3][1])) == [EventType.CMD_DONE, EventType.RX_PLACED,
                                                 EventType.BUF_DONE]
    state = state_of(ref[-1])
    assert (state.rcv_nxt, state.sync_req, state.last_ack_sent) == (1040, 0, 1040)


# The queue fill, on its own ----------------------------------------------------------------------

def _serial_fill(payload_len, rooms, count):
    """The rule as the model states it: each posted buffer, oldest first, takes what it can of
    what is left. Per slot: (touched, full, take); and whether it fits, and the shortfall."""
    left, slots = payload_len, []
    for i, room in enumerate(rooms):
        room = room if i < count else 0
        take = min(room, left)
        left -= take
        slots.append((take != 0, i < count and take == room, take))
    return slots, left == 0, left


class _Fill(Elaboratable):
    """:class:`RoomSums` and :class:`QueueFill` chained, as the engine runs them in two cycles."""

    def __init__(self, params):
        self.sums = RoomSums(params)
        self.fill = QueueFill(params)

    def elaborate(self, platform):
        m = Module()
        m.submodules.sums = self.sums
        m.submodules.fill = self.fill
        m.d.comb += [self.fill.sums.eq(self.sums.sums),
                     self.fill.count.eq(self.sums.queue.count)]
        return m


class _SumsLeft(_Fill):
    """:class:`_Fill` with the frame's decision (:class:`FrameDecision`) and a command's
    (:class:`CommandDecision`) on the same queue, and the rooms of the queue each decision
    leaves added up from scratch (``frame_sums``, ``cmd_sums``), to be compared with the sums
    the decisions give."""

    def __init__(self, params):
        super().__init__(params)
        self.frame = FrameDecision(params)
        self.cmd = CommandDecision(params)
        self.frame_sums = RoomSums(params)
        self.cmd_sums = RoomSums(params)
        self.posted_length = Signal(32)

    def elaborate(self, platform):
        m = super().elaborate(platform)
        m.submodules.frame = frame = self.frame
        m.submodules.cmd = cmd = self.cmd
        m.submodules.frame_sums = self.frame_sums
        m.submodules.cmd_sums = self.cmd_sums
        queue, sums = self.sums.queue, self.sums.sums
        m.d.comb += [
            self.fill.payload_len.eq(frame.desc.payload_len),
            frame.queue.eq(queue), frame.sums.eq(sums), frame.fill.eq(self.fill.fill),
            frame.checks.room_check.eq(1), frame.checks.delegated.eq(1),
            cmd.queue.eq(queue), cmd.sums.eq(sums),
            cmd.command.code.eq(Opcode.POST_BUFFER), cmd.checks.status.eq(CmdStatus.OK),
            cmd.checks.queue_full_check.eq(1),
            cmd.command.body.post_buffer.length.eq(self.posted_length),
            self.frame_sums.queue.eq(frame.new_queue),
            self.cmd_sums.queue.eq(cmd.new_queue),
        ]
        return m


class _ChecksOfAnyClass(Elaboratable):
    """:class:`FrameChecks` whose descriptor's class is any 3-bit value (``cls``), not only a
    :class:`FrameClass` member, as a corrupted descriptor could carry."""

    def __init__(self, params):
        self.checks = FrameChecks(params)
        self.desc = Signal(rx_descriptor_layout(params))
        self.cls = Signal(3)

    def elaborate(self, platform):
        m = Module()
        m.submodules.checks = self.checks
        m.d.comb += [self.checks.desc.eq(self.desc),
                     self.checks.desc.cls.as_value().eq(self.cls)]
        return m


@pytest.mark.parametrize("cls", [FrameClass.TCP.value, 6, 7])
@pytest.mark.parametrize("hit", [0, 1])
def test_frame_checks_room_check_only_when_delegated(cls, hit):
    """An in-sequence data segment reaches the room check only when it is delegated: IPv4/TCP
    (class TCP) and its key hit. A class the parser never produces (6, 7) goes to legacy as a
    frame of no connection, hit or not: the engine takes such a frame without MEASURE, so a
    room check there would read a fill left by an earlier frame."""
    dut = _ChecksOfAnyClass(SMALL)
    got = {}

    async def bench(ctx):
        ctx.set(dut.cls, cls)
        ctx.set(dut.desc.seq, 100)
        ctx.set(dut.desc.payload_len, 60)
        ctx.set(dut.desc.flags, 0x10)  # ACK
        ctx.set(dut.checks.hit, hit)
        ctx.set(dut.checks.state.rcv_nxt, 100)
        await ctx.delay(1e-9)
        got.update({name: ctx.get(getattr(dut.checks.checks, name))
                    for name in ("legacy", "reason", "room_check", "delegated")})

    run_simulation(dut, bench, clock=False)
    delegated = cls == FrameClass.TCP.value and hit == 1
    assert got["delegated"] == delegated
    assert got["room_check"] == delegated
    assert got["legacy"] == (not delegated)
    if not delegated:
        assert got["reason"] == LegacyReason.NO_MATCH


def _posted_sums(sums, count):
    """The room sums of the first ``count`` slots (``room_sums_layout`` as read)."""
    return [(sums.through[i], sums.has_room >> i & 1) for i in range(count)]


@pytest.mark.parametrize("depth", [1, 2, 4, 5])
def test_decisions_leave_the_room_sums_of_their_queue(depth):
    """The room sums a frame's decision and a POST_BUFFER give with their new queue, chosen and
    updated rather than added up again, are those of that queue added up from scratch, for
    every slot it posts: payloads that fill slots exactly, end inside one, are pushed with PSH
    (the last slot touched completed with room left) or do not fit, and buffers posted to
    queues at every fill."""
    params = Params(n_entries=4, buffers_per_conn=depth, legacy_ring_depth=4)
    rng = seeded_rng(f"sums-left-{depth}")
    dut = _SumsLeft(params)
    cases = []
    for _ in range(400):
        count = rng.randrange(depth + 1)
        rooms = [rng.choice([1, 2, 100, 1460, (1 << 16) - 1, 1 << 16, (1 << 32) - 1,
                             rng.randrange(1, 1 << 32), rng.randrange(1, 3000)])
                 for _ in range(depth)]
        through = [sum(rooms[:i + 1]) for i in range(depth)]
        payload_len = rng.choice([rng.randrange(1, 1 << 16), 1,
                                  *(t for t in through[:count] if t < 1 << 16),
                                  *(t + d for t in through[:count] for d in (-1, 1)
                                    if 0 < t + d < 1 << 16)])
        cases.append((count, rooms, payload_len, rng.choice([0x10, 0x18]),
                      rng.randrange(1, 1 << 32)))
    got = []

    async def bench(ctx):
        for count, rooms, payload_len, flags, posted_length in cases:
            ctx.set(dut.sums.queue, {"count": count, "slots": [
                {"address": 0x1000 * i, "length": room + 7, "filled": 7, "room": room, "tag": i}
                for i, room in enumerate(rooms)]})
            ctx.set(dut.frame.desc.payload_len, payload_len)
            ctx.set(dut.frame.desc.flags, flags)
            ctx.set(dut.posted_length, posted_length)
            await ctx.delay(1e-9)
            got.append({
                "placed": ctx.get(dut.frame.queue_write),
                "frame": (ctx.get(dut.frame.new_queue.count), ctx.get(dut.frame.new_sums),
                          ctx.get(dut.frame_sums.sums)),
                "posted": ctx.get(dut.cmd.queue_write),
                "cmd": (ctx.get(dut.cmd.new_queue.count), ctx.get(dut.cmd.new_sums),
                        ctx.get(dut.cmd_sums.sums)),
            })

    run_simulation(dut, bench, clock=False)
    kinds = {"placed": 0, "pushed": 0, "posted": 0}
    for case, result in zip(cases, got):
        count, rooms, payload_len, flags, _ = case
        assert result["placed"] == (count > 0 and payload_len <= sum(rooms[:count])), case
        assert result["posted"] == (count < depth), case
        for outcome, written in (("frame", "placed"), ("cmd", "posted")):
            if result[written]:
                new_count, given, added_up = result[outcome]
                assert _posted_sums(given, new_count) == _posted_sums(added_up, new_count), \
                    (outcome, case)
                kinds[written] += new_count > 0
        ends_inside = payload_len not in (sum(rooms[:i + 1]) for i in range(count))
        kinds["pushed"] += (result["placed"] and flags & 0x08 and ends_inside
                            and result["frame"][0] > 0)
    # Each kind of update was seen leaving slots posted (a PSH that completes a slot with room
    # left leaves none in a queue of one).
    assert all(seen for kind, seen in kinds.items() if depth > 1 or kind != "pushed"), kinds


@pytest.mark.parametrize("depth", [1, 2, 4, 5])
def test_queue_fill_against_serial_rule(depth):
    """The prefix sums and per-slot comparisons decide exactly what the serial rule does: rooms
    around the payload length, rooms of 2**16 and more, slots beyond the count with stale
    rooms, and slots without room."""
    params = Params(n_entries=4, buffers_per_conn=depth, legacy_ring_depth=4)
    rng = seeded_rng(f"fill-{depth}")
    dut = _Fill(params)
    cases = []
    for _ in range(400):
        payload_len = rng.choice([0, 1, 2, 1460, 65535, rng.randrange(1 << 16)])
        rooms = [rng.choice([0, 1, payload_len, max(payload_len - 1, 0), payload_len + 1,
                             (1 << 16) - 1, 1 << 16, (1 << 32) - 1, rng.randrange(1 << 32),
                             rng.randrange(2000)]) for _ in range(depth)]
        cases.append((payload_len, rooms, rng.randrange(depth + 1)))
    got = []

    async def bench(ctx):
        for payload_len, rooms, count in cases:
            ctx.set(dut.fill.payload_len, payload_len)
            ctx.set(dut.sums.queue, {"count": count, "slots": [
                {"address": 0, "length": 0, "filled": 0, "room": room, "tag": 0}
                for room in rooms]})
            await ctx.delay(1e-9)
            fill = ctx.get(dut.fill.fill)
            got.append(fill)

    run_simulation(dut, bench, clock=False)
    for (payload_len, rooms, count), fill in zip(cases, got):
        slots, fits, shortfall = _serial_fill(payload_len, rooms, count)
        case = (payload_len, rooms, count)
        assert fill.fits == fits, case
        if not fits:
            assert fill.shortfall == shortfall, case
        for i, (touched, full, take) in enumerate(slots):
            assert (fill.touched >> i & 1) == touched, (case, i)
            # A slot without room counts as full (it is completed), as in the one-cycle rule.
            assert (fill.full >> i & 1) == (full or (i < count and rooms[i] == 0)), (case, i)
            if touched and not full:
                assert fill.rest[i] == take, (case, i)
