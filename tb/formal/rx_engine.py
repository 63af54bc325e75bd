"""Receive engine sequencer: operations in order, none lost, none doubled (no lost update).

Frames, commands and transmit updates all read-modify-write the state portion. The sequencer
takes one operation at a time into its front (LOOKUP, LOAD, ..., DECIDE) and hands each decided
one to its emitter, which writes the entry and hands out the job and events while the next
operation is looked up and loaded; that one may be taken in the DECIDE of the one before, and
then reads its entry in the cycle the emitter writes it (``rtl/tcpdct/rx_engine.py``). The
harness reads, by name like the FSM state, ``op_take`` (an operation starts: its input is
taken), ``op_done`` (the front's last cycle of it, where it is decided), ``op_emit`` (the emitter holds a decided operation),
``op_load`` (the LOAD, where the entry is read), ``tx_skip`` (a transmit update the CAM
answered "no match" for is dropped without an operation) and the registers ``state``,
``queue`` and ``index`` (the entry as loaded, and which). The other signals are ports, or the
write ports of the engine's memories. Properties:

1. Inputs are taken only as an operation starts: any transfer on an input stream happens in an
   ``op_take`` cycle, at most one input stream transfers in any cycle, and an operation is taken
   only when the front holds none or the one it holds leaves it in that cycle; the cycle after
   it is not ``IDLE``, and the front is in ``IDLE`` exactly when it holds no operation. The one
   exception is a transmit update dropped (``tx_skip``): its transfer is the only one in its
   cycle, which takes no operation, and it is never dropped while a command that writes the CAM
   (DELEGATE, RECLAIM) is in the front, nor in the cycle of a CAM write (its answer would
   predate the write).
2. Nothing leaves, and nothing is written, outside an emission: job and event transfers and
   writes to the state and buffer memories and to the CAM happen only while ``op_emit``. An
   emission starts exactly in the cycle after a decision (``op_done`` in DECIDE), so each one
   belongs to one operation, in the order they were taken.
3. Per emission: at most one job, at most one write to the state memory, one to the buffer
   memory and one to the CAM; ``first`` is set on exactly the first event.
4. The emission of a command ends with exactly one job and at least one event (a command always
   answers, R40). A frame may be held for a user buffer and decided again later without a job,
   and a transmit update answers only with RESYNC, so for those only the "at most one" of 3
   applies.
5. No key is written to the CAM while it is still storing the one before (``cam_write_busy``;
   the CAM would ignore it). The environment's CAM raises ``cam_write_busy`` only in the cycle
   after a key write, as :class:`tcpdct.match_cam.MatchCam` does, and drops it at will.
6. Operations on one entry take effect in order: what an operation loads (``state``,
   ``queue``, ``sums``) is what the state, buffer and room sums memories' write ports last
   wrote to its entry (or the memories' initial contents), whether the write was cycles before
   or in the cycle the entry was read. The harness keeps its own copy of every entry from the
   write ports.
7. The room sums loaded are those of the queue loaded, for every slot it posts
   (:class:`tcpdct.rx_decision.RoomSums`, here a unit of the harness's own, adds them up from
   scratch; the decisions only update them): a frame decides from the rooms of its own buffers.
   The sums of the slots not posted are not kept exact, and nothing reads them.

Every input stream the engine has is an operation source; a new one is checked by 1–3 without
a change here. The environment obeys the stream rules on the inputs; every other input is free,
including the CAM's answers (the sequencing must not depend on them). Bounded: an operation can
wait for ``ready`` for ever, so the harness counters are not inductive.
"""

from amaranth.asserts import AnyConst
from amaranth.hdl import Assert, Assume, Cover, Elaboratable, Mux, Signal, Value
from amaranth.lib import wiring

from tcpdct.dct_layouts import buffer_queue_layout
from tcpdct.params import Params
from tcpdct.records import Opcode
from tcpdct.rx_decision import RoomSums, room_sums_layout
from tcpdct.rx_engine import RxEngine

from .common import (drive_inputs, elaborate, harness_module, past, signals_named,
                     stream_members, stream_rules)
from .runner import Proof
from .rx_decision import posted_sums_match


__all__ = ["RxEngineHarness", "proofs"]


# Small tables, so that the memories and the legacy ring are small; nothing in the sequencing
# depends on their size.
PARAMS = Params(n_entries=4, buffers_per_conn=2, legacy_ring_depth=4)

#: Operation sources that must each end with exactly one job and at least one event.
ANSWERED_SOURCES = ("command",)

#: The engine's internal signals the harness reads: flags, and registers (found among the
#: signals assigned in ``sync``: units inside the engine have ports of the same names).
INTERNALS = ("op_take", "op_done", "op_emit", "op_load", "tx_skip")
REGISTERS = ("state", "queue", "sums", "index")

#: The source whose operations of no connection are dropped outside the front (``tx_skip``).
SKIPPED_SOURCE = "tx_update"


def _state_value(fsm_state, name):
    """The encoding of FSM state ``name``, from the state signal's decoder."""
    for value in range(1 << len(fsm_state)):
        if fsm_state.decoder(value).split("/")[0] == name:
            return value
    raise RuntimeError(f"The sequencer has no state named {name!r}")


class RxEngineHarness(Elaboratable):
    """Sequencing properties of :class:`RxEngine` (or of a variant with the same ports).

    Parameters
    ----------
    engine_class : type
        The engine to check; a test passes a deliberately broken subclass.
    params : Params
    entries : bool
        Check property 6 (the entry loaded). It follows the entry's whole contents through the
        memories and the forwarding, which costs the solver more per cycle than the rest
        together, so ``make formal`` checks it in a proof of its own, less deep.
    sums : bool
        Check property 7 (the room sums loaded). The decisions' adders and subtractors are then
        in its loop, which costs the solver more again: ``make formal`` checks it in a proof of
        its own, less deep still, and ``rx_decision_sums`` checks the decisions' part of it
        alone, for any queue.
    """

    def __init__(self, engine_class=RxEngine, params=PARAMS, *, entries=True, sums=False):
        self.engine_class = engine_class
        self.params = params
        self.entries = entries
        self.sums = sums

    def elaborate(self, platform):
        m, started = harness_module()
        engine = self.engine_class(self.params)
        fragment = elaborate(engine)
        m.submodules.engine = fragment
        drive_inputs(m, engine)

        fsm_states = signals_named(fragment, r"fsm_state")
        if len(fsm_states) != 1:
            raise RuntimeError(f"Expected one sequencer FSM, found {sorted(fsm_states)!r}")
        fsm_state = fsm_states["fsm_state"]
        idle = Signal()
        deciding = Signal()
        m.d.comb += [idle.eq(fsm_state == _state_value(fsm_state, "IDLE")),
                     deciding.eq(fsm_state == _state_value(fsm_state, "DECIDE"))]
        internal = signals_named(fragment, "|".join(INTERNALS))
        internal.update(signals_named(fragment, "|".join(REGISTERS), domain="sync"))
        if sorted(internal) != sorted(INTERNALS + REGISTERS):
            raise RuntimeError(f"Expected the engine's {sorted(INTERNALS + REGISTERS)!r}, "
                               f"found {sorted(internal)!r}")
        op_take, op_done, op_emit = internal["op_take"], internal["op_done"], internal["op_emit"]
        # The front holds an operation from the cycle after it is taken to its op_done.
        in_front = Signal()
        m.d.sync += in_front.eq(op_take | in_front & ~op_done)
        decided = Signal()
        m.d.comb += decided.eq(op_done & deciding)
        emit_starts = Signal()
        m.d.comb += emit_starts.eq(op_emit & ~past(m, op_emit, "op_emit"))

        sources = []
        for name, flow in stream_members(engine):
            port = getattr(engine, name)
            if flow == wiring.In:
                stream_rules(m, started, port, name, environment=True)
                sources.append((name, port.valid & port.ready))
        taken = Signal(len(sources))
        for bit, (name, transfer) in enumerate(sources):
            m.d.comb += taken[bit].eq(transfer)
        source_names = [name for name, _ in sources]
        tx_skip = internal["tx_skip"]
        skipped = Signal(len(sources))
        m.d.comb += skipped.eq(Mux(tx_skip, 1 << source_names.index(SKIPPED_SOURCE), 0))

        job_out = engine.job.valid & engine.job.ready
        event_out = engine.event.valid & engine.event.ready
        state_wr = engine.state_ram.write_ports[0]
        buffer_wr = engine.buffer_ram.write_ports[0]
        sums_wr = engine.sums_ram.write_ports[0]
        writes = {
            "state memory":  state_wr.en.any(),
            "buffer memory": buffer_wr.en.any(),
            "room sums memory": sums_wr.en.any(),
            "CAM":           engine.cam_write_en,
        }

        # The delimiters agree with the FSM.
        m.d.comb += [
            Assert(idle == ~in_front, "IDLE while an operation is in the front, or the reverse"),
            Assert(~op_done | in_front, "an operation ended that was never taken"),
        ]
        # 1. Inputs only as an operation starts, one at a time.
        m.d.comb += [
            Assert((taken & (taken - 1)) == 0, "two inputs taken in one cycle"),
            Assert(~taken.any() | op_take | tx_skip, "input taken during an operation"),
            Assert(~tx_skip | ~op_take & (taken == skipped),
                   "update dropped in a take, or without its transfer"),
            Assert(~op_take | ~in_front | op_done,
                   "operation taken while another is in the front"),
            Assert(~started | ~past(m, op_take, "op_take") | ~idle,
                   "input taken but no operation started"),
        ]
        # 2. Nothing outside an emission; an emission for each decision, right after it.
        m.d.comb += Assert(~(job_out | event_out) | op_emit, "output outside an emission")
        for what, write in writes.items():
            m.d.comb += Assert(~write | op_emit, f"{what} written outside an emission")
        m.d.comb += Assert(~started | (emit_starts == past(m, decided, "decided")),
                           "an emission that does not follow a decision, or the reverse")

        # 3. At most once per emission. Two bits each, saturating, so "twice" is seen however
        # long the emission is; a count restarts with each emission and holds after it.
        def count(name, event):
            counter = Signal(2, name=f"{name}_this_emission")
            now = Signal(2, name=f"{name}_so_far")
            base = Mux(emit_starts, 0, counter)
            m.d.comb += now.eq(base + (event & (base != 3)))
            m.d.sync += counter.eq(now)
            return counter, now

        jobs, jobs_now = count("jobs", job_out)
        events, events_now = count("events", event_out)
        m.d.comb += Assert(jobs_now <= 1, "two jobs in one emission")
        for what, write in writes.items():
            _, writes_now = count(what.replace(" ", "_") + "_writes", write)
            m.d.comb += Assert(writes_now <= 1, f"{what} written twice in one emission")
        m.d.comb += Assert(~event_out | (engine.event.payload.first ==
                                         (Mux(emit_starts, 0, events) == 0)),
                           "first not set on exactly the first event of an emission")

        # 1, the exception: no update dropped while a command that writes the CAM is in the
        # front or writing.
        key_writer = Signal()
        command_code = engine.command.payload.code
        with m.If(op_take):
            m.d.sync += key_writer.eq(taken[source_names.index("command")]
                                      & ((command_code == Opcode.DELEGATE)
                                         | (command_code == Opcode.RECLAIM)))
        m.d.comb += Assert(~tx_skip | ~(in_front & key_writer) & ~engine.cam_write_en,
                           "update dropped while the CAM is being written")

        # 4. A command is answered: when its emission ends, it had one job and at least one
        # event. Whether the operation is a command travels with it from take to emission.
        answered_taken = [taken[source_names.index(name)] for name in ANSWERED_SOURCES
                          if name in source_names]
        answered_front = Signal()
        answered_emit = Signal()
        with m.If(op_take):
            m.d.sync += answered_front.eq(0)
            for transfer in answered_taken:
                with m.If(transfer):
                    m.d.sync += answered_front.eq(1)
        with m.If(decided):
            m.d.sync += answered_emit.eq(answered_front)
        emit_ended = Signal()
        m.d.comb += emit_ended.eq(started & past(m, op_emit, "op_emit_before") & ~op_emit)
        m.d.comb += Assert(~(emit_ended & answered_emit) | ((jobs == 1) & (events != 0)),
                           "a command ended without its job and event")

        # 5. One key write at a time.
        busy = engine.cam_write_busy
        delegate_offered = engine.command.valid & (engine.command.payload.code == Opcode.DELEGATE)
        key_write = engine.cam_write_en & engine.cam_write_valid
        m.d.comb += [
            Assume(~busy | started & (past(m, busy, "cam_was_busy")
                                      | past(m, key_write, "cam_key_written"))),
            Assert(~(key_write & busy), "key written to the CAM while it is busy"),
        ]

        # 6. Each operation loads its entry as last written. One entry, any of them (a free
        # constant), is followed: its copies start as the memories do (``init=[]``: zeros).
        watched = Signal(range(self.params.n_entries))
        m.d.comb += watched.eq(AnyConst(len(watched)))
        index = internal["index"]
        was_load = past(m, internal["op_load"], "op_load")
        followed = (("state", state_wr, internal["state"]),
                    ("buffer queue", buffer_wr, internal["queue"]),
                    ("room sums", sums_wr, internal["sums"])) if self.entries else ()
        for what, memory_wr, loaded in followed:
            copy = Signal(len(Value.cast(memory_wr.data)), name=f"{what.replace(' ', '_')}_copy")
            with m.If(memory_wr.en.any() & (memory_wr.addr == watched)):
                m.d.sync += copy.eq(memory_wr.data)
            m.d.comb += Assert(~(started & was_load & (index == watched))
                               | (Value.cast(loaded) == copy),
                               f"{what} loaded is not the entry as last written")
        if self.sums:
            # 7. The sums loaded are the queue's, for the slots it posts.
            m.submodules.room_sums = room_sums = RoomSums(self.params)
            queue = buffer_queue_layout(self.params)(internal["queue"])
            sums = room_sums_layout(self.params)(internal["sums"])
            reference = room_sums.sums
            m.d.comb += [
                room_sums.queue.eq(queue),
                Assert(~(started & was_load)
                       | posted_sums_match(sums, reference, queue.count,
                                           self.params.buffers_per_conn),
                       "room sums loaded are not those of the queue loaded"),
            ]

        m.d.comb += [
            Cover(emit_ended & answered_emit),
            # A DELEGATE that waited for the CAM is taken once it is free.
            Cover(delegate_offered & engine.command.ready
                  & past(m, delegate_offered & busy, "delegate_waited")),
            Cover(emit_ended & (events == 0)),
            Cover(decided & op_take),
            # An operation taken in a DECIDE with its entry read there: LOAD follows at once.
            Cover(started & internal["op_load"] & past(m, decided & op_take, "took_deciding")),
            # A transmit update dropped while a frame is in the front.
            Cover(tx_skip & in_front),
        ]
        for name, transfer in sources:
            m.d.comb += Cover(transfer)
        return m


def proofs():
    return [
        Proof("rx_engine_sequencing", lambda: RxEngineHarness(entries=False), "bmc", 32,
              description="inputs only as an operation starts, one emission per decision; per "
                          "emission <=1 job and <=1 write each; a command gets one job and "
                          ">=1 event"),
        # Property 6 follows an entry's whole contents: 16 cycles (an operation loading the
        # entry the one before it writes, after two operations on it) took 13 minutes beside
        # the test suite.
        Proof("rx_engine_entries", RxEngineHarness, "bmc", 16, timeout=1800,
              description="the same, and every operation loads its entry as last written"),
        Proof("rx_engine_sums", lambda: RxEngineHarness(entries=False, sums=True), "bmc", 12,
              timeout=1800,
              description="the same, and the room sums loaded are the queue's"),
        Proof("rx_engine_cover", lambda: RxEngineHarness(entries=False), "cover", 16,
              description="every source is taken and a command operation completes"),
    ]
