"""Receive engine sequencer: one operation at a time, none lost, none doubled (no lost update).

Frames, commands and transmit updates all read-modify-write the state portion; the sequencer
keeps them apart by running one operation to its end before the next one reads anything. The
next operation may be *taken* in the last cycle of the one before (its key goes to the CAM
while the last one hands out its job), so an operation is delimited by the engine's own
``op_take`` (the operation starts: its input is taken) and ``op_done`` (the last cycle of the
operation in flight), read by name like the FSM state; the harness ties them to the FSM: the
sequencer is in ``IDLE`` exactly when no operation is in flight. The other signals are ports,
or the write ports of the engine's memories. Properties:

1. Inputs are taken only as an operation starts: any transfer on an input stream happens in an
   ``op_take`` cycle, at most one input stream transfers in any cycle, and an operation is taken
   only when none is in flight or the one in flight ends in that cycle; the cycle after it is
   not ``IDLE``.
2. Nothing leaves, and nothing is written, between operations: job and event transfers and
   writes to the state and buffer memories and to the CAM happen only while an operation is in
   flight (the one taken in the same cycle cannot have reached its outputs: what leaves in a
   take cycle belongs to the operation that ends there).
3. Per operation: at most one job, at most one write to the state memory, one to the buffer
   memory and one to the CAM; ``first`` is set on exactly the first event.
4. An operation that took a command ends with exactly one job and at least one event
   (a command always answers, R40). A frame may be held for a user buffer and decided again
   later without a job, and a transmit update answers only with RESYNC, so for those only the
   "at most one" of 3 applies.
5. No key is written to the CAM while it is still storing the one before (``cam_write_busy``;
   the CAM would ignore it). The environment's CAM raises ``cam_write_busy`` only in the cycle
   after a key write, as :class:`tcpdct.match_cam.MatchCam` does, and drops it at will.

Every input stream the engine has is an operation source; a new one is checked by 1–3 without
a change here. The environment obeys the stream rules on the inputs; every other input is free,
including the CAM's answers (the sequencing must not depend on them). Bounded: an operation can
wait for ``ready`` for ever, so the harness counters are not inductive.
"""

from amaranth.hdl import Assert, Assume, Cover, Elaboratable, Signal
from amaranth.lib import wiring

from tcpdct.params import Params
from tcpdct.records import Opcode
from tcpdct.rx_engine import RxEngine

from .common import (drive_inputs, elaborate, harness_module, past, signals_named,
                     stream_members, stream_rules)
from .runner import Proof


__all__ = ["RxEngineHarness", "proofs"]


# Small tables, so that the memories and the legacy ring are small; nothing in the sequencing
# depends on their size.
PARAMS = Params(n_entries=4, buffers_per_conn=2, legacy_ring_depth=4)

#: Operation sources that must each end with exactly one job and at least one event.
ANSWERED_SOURCES = ("command",)


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
    """

    def __init__(self, engine_class=RxEngine, params=PARAMS):
        self.engine_class = engine_class
        self.params = params

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
        m.d.comb += idle.eq(fsm_state == _state_value(fsm_state, "IDLE"))
        delimiters = signals_named(fragment, r"op_(take|done)")
        if sorted(delimiters) != ["op_done", "op_take"]:
            raise RuntimeError(f"Expected the sequencer's op_take and op_done, found "
                               f"{sorted(delimiters)!r}")
        op_take, op_done = delimiters["op_take"], delimiters["op_done"]
        # An operation is in flight from the cycle after it is taken to its last cycle.
        in_flight = Signal()
        m.d.sync += in_flight.eq(op_take | in_flight & ~op_done)

        sources = []
        for name, flow in stream_members(engine):
            port = getattr(engine, name)
            if flow == wiring.In:
                stream_rules(m, started, port, name, environment=True)
                sources.append((name, port.valid & port.ready))
        taken = Signal(len(sources))
        for bit, (name, transfer) in enumerate(sources):
            m.d.comb += taken[bit].eq(transfer)

        job_out = engine.job.valid & engine.job.ready
        event_out = engine.event.valid & engine.event.ready
        writes = {
            "state memory":  engine.state_ram.write_ports[0].en.any(),
            "buffer memory": engine.buffer_ram.write_ports[0].en.any(),
            "CAM":           engine.cam_write_en,
        }

        # The delimiters agree with the FSM.
        m.d.comb += [
            Assert(idle == ~in_flight, "IDLE while an operation is in flight, or the reverse"),
            Assert(~op_done | in_flight, "an operation ended that was never taken"),
        ]
        # 1. Inputs only as an operation starts, one at a time.
        m.d.comb += [
            Assert((taken & (taken - 1)) == 0, "two inputs taken in one cycle"),
            Assert(~taken.any() | op_take, "input taken during an operation"),
            Assert(~op_take | ~in_flight | op_done,
                   "operation taken while another is in flight"),
            Assert(~started | ~past(m, op_take, "op_take") | ~idle,
                   "input taken but no operation started"),
        ]
        # 2. Nothing between operations.
        m.d.comb += Assert(~(job_out | event_out) | in_flight, "output between operations")
        for what, write in writes.items():
            m.d.comb += Assert(~write | in_flight, f"{what} written between operations")

        # 3. At most once per operation; counters restart as each operation is taken (what
        # leaves in that cycle is the last one's, counted in ``now``). Two bits each,
        # saturating, so "twice" is seen however long the operation is.
        def count(name, event):
            counter = Signal(2, name=f"{name}_this_op")
            now = Signal(2, name=f"{name}_so_far")
            m.d.comb += now.eq(counter + (event & (counter != 3)))
            m.d.sync += counter.eq(now)
            with m.If(op_take | ~in_flight):
                m.d.sync += counter.eq(0)
            return counter, now

        jobs, jobs_now = count("jobs", job_out)
        events, events_now = count("events", event_out)
        m.d.comb += Assert(jobs_now <= 1, "two jobs in one operation")
        for what, write in writes.items():
            _, writes_now = count(what.replace(" ", "_") + "_writes", write)
            m.d.comb += Assert(writes_now <= 1, f"{what} written twice in one operation")
        m.d.comb += Assert(~event_out | (engine.event.payload.first == (events == 0)),
                           "first not set on exactly the first event of an operation")

        # 4. A command is answered: when its operation ends, it had one job and at least one event
        # (counting what leaves in its last cycle).
        source_names = [name for name, _ in sources]
        answered = Signal()
        answered_taken = [taken[source_names.index(name)] for name in ANSWERED_SOURCES
                          if name in source_names]
        with m.If(op_take):
            m.d.sync += answered.eq(0)
            for transfer in answered_taken:
                with m.If(transfer):
                    m.d.sync += answered.eq(1)
        ended = Signal()
        m.d.comb += ended.eq(started & op_done)
        m.d.comb += Assert(~(ended & answered) | ((jobs_now == 1) & (events_now != 0)),
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

        m.d.comb += [
            Cover(ended & answered),
            # A DELEGATE that waited for the CAM is taken once it is free.
            Cover(delegate_offered & engine.command.ready
                  & past(m, delegate_offered & busy, "delegate_waited")),
            Cover(ended & (events_now == 0)),
            Cover(ended & op_take),
        ]
        for name, transfer in sources:
            m.d.comb += Cover(transfer)
        return m


def proofs():
    return [
        Proof("rx_engine_sequencing", RxEngineHarness, "bmc", 32,
              description="one operation at a time; per operation <=1 job and <=1 write each; "
                          "a command gets one job and >=1 event"),
        Proof("rx_engine_cover", RxEngineHarness, "cover", 16,
              description="every source is taken and a command operation completes"),
    ]
