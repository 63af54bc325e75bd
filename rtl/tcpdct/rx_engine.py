"""The receive engine: decides each received frame's fate, executes commands and applies the
transmit engine's updates, one at a time.

Frames, commands and transmit updates all read and write the DCT. Rather than arbitrate every
memory port between a receive engine, a command unit and a transmit engine, a single sequencer
takes one operation at a time (a frame descriptor, a command or a transmit update): no update
can be lost, and the order in which they take effect is simply the order in which the sequencer
took them, which the model and the replay can reproduce (``docs/architecture.md``, "Ordering
rule" and "Transmit engine").

An operation is a short pipeline run one stage per cycle, so that no cycle holds more than one
step of it (``docs/performance.md``, "Critical paths"): IDLE (take the input), LOOKUP (the
CAM's answer for its key, looked up ahead and registered, addresses the memories), LOAD
(register what they read: the entry, and the rooms of its posted buffers added up, which are
kept beside them), MEASURE (frames only: how the payload fills the buffers and every check but
the room check, :mod:`.rx_decision`), DECIDE (the decision, registered). The decided operation
then goes to the emitter, which writes the memories, CAM and legacy ring from those registers
in its first cycle and hands out the job and the events, while the sequencer goes on with the next
operation: that one is taken in the DECIDE of the one before (instead of an IDLE cycle of its
own), and usually reads its entry in that DECIDE already, from the choice registered a cycle
before (``peek_*``), going straight to LOAD; otherwise it reads it in its LOOKUP, the emitter's
first cycle, the cycle of the write. Either way what it loads is the entry as written,
forwarded from the outcome registers, which hold it until the next DECIDE (``_forwarded``,
``_as_read``): operations on one entry take effect in order, as if each ran to its end before
the next (the formal proof ``rx_engine_entries`` checks it). A decision waits for the emitter
to finish the operation before, whose registers it would overwrite.

So a frame of a delegated connection costs three cycles, any other frame two (it skips
MEASURE), a command or a matching transmit update two, when each finds its answer at hand a
cycle before it is taken; a 64-byte frame is eight beats at 64 bits. A transmit update of no
connection costs none: once the CAM has answered "no match" for its key it is dropped outside
the rotation, in a cycle that takes no operation, and no update waits for a turn before the
answer kept for its key says it hits (below, "A transmit update of no delegated connection").
Two kinds of operation are not overlapped, and the next one is taken from IDLE once the
emitter has made their writes: one that writes the CAM (DELEGATE, RECLAIM: the answers at hand
predate the write) and a frame that starts or stops waiting for a user buffer (the frame
source's key moves). The legacy ring shows the emitter's push two cycles later and its pop one:
a frame that would read it sooner reads it later (LOAD, RING). An operation whose key's answer
is not yet at hand when it is taken waits for it in LOOKUP, one or two cycles (below, "Keys are
looked up ahead of the take"). The frame's bytes meanwhile wait in the packet buffer and are
moved by the DMA writer.

A frame that waits for a user buffer (R17) stays in the sequencer: while it waits, commands and
transmit updates still run, and between them the frame is decided again, until it is placed or
the timer or the high-water mark sends it to legacy (R18, R19).

The decision logic itself lives in :mod:`.rx_decision` (frames), :mod:`.cmd_unit` (commands)
and :mod:`.tx_engine` (transmit updates); this module holds the storage and the sequencing.
"""

from amaranth.hdl import Module, Signal, Cat, Const, Mux
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .layouts import (ConnKey, JobKind, command_layout, rx_descriptor_layout,
                      dma_job_layout, queued_event_layout, event_layout, tx_update_layout)
from .records import EventType, Opcode
from .dct_layouts import conn_state_layout, buffer_queue_layout, legacy_buffer_layout
from .rx_decision import (QueueFill, FrameChecks, FrameDecision, event_slots,
                          room_sums_layout, queue_fill_layout, frame_checks_layout,
                          room_wait_layout, room_wait)
from .fifo import full_flag
from .cmd_unit import CommandChecks, CommandDecision, command_checks_layout, delegate_key
from .tx_engine import TxDecision, segment_end


__all__ = ["RxEngine"]


class RxEngine(wiring.Component):
    """Receive engine and command unit around the state and buffer portions of the DCT.

    Parameters
    ----------
    params : :class:`tcpdct.params.Params`

    Members
    -------
    descriptor : In(stream of ``rx_descriptor_layout``)
        Parsed frames, in arrival order.
    frame_key_ahead, frame_key_ahead_valid : In(ConnKey), In(1)
        While ``descriptor`` shows none, the key of the next descriptor, if one is on its way
        (:class:`tcpdct.rx_parser.RxParser` ``key_ahead``), looked up ahead. May be held at 0.
    frame_key_next, frame_key_next_valid : In(ConnKey), In(1)
        While ``descriptor`` shows one, the key of the descriptor behind it, if there is one
        (``RxParser.key_next``), looked up ahead too. May be held at 0.
    command : In(stream of ``command_layout``)
        Command records, taken in the cycle after one reaches the stream's head at the
        earliest (its opcode is decoded into registers first). The payload must hold until
        it is taken, as AXI4-Stream requires.
    job : Out(stream of ``dma_job_layout``)
        One DMA job per frame and per command, in decision order.
    event : Out(stream of ``queued_event_layout``)
        The events of each job, its first event marked.
    tx_update : In(stream of ``tx_update_layout``)
        Segments the host stack sent, to apply to their entries (R31–R33).
    tx_key_ahead, tx_key_ahead_valid : In(ConnKey), In(1)
        While ``tx_update`` shows none, the key of the next update, if one is on its way
        (:class:`tcpdct.tx_engine.TxEngine` ``key_ahead``), looked up ahead. May be held at 0.
    tx_matched : Out(1)
        Pulses for each transmit update whose key hit.
    buf_req_timeout : In(32)
        Cycles a frame may wait for a user buffer (register BUF_REQ_TIMEOUT).
    high_water : In(1)
        The receive packet buffer is at its high-water mark (register HWM_BYTES).
    cam_key, cam_hit, cam_index : Out, In, In
        Lookup port of the match CAM; the result answers the key of the previous cycle.
        ``cam_key`` is a register. In a cycle with ``cam_write_en`` it holds the key written.
    cam_valid : In(n_entries)
        Valid bits of the match portion.
    cam_write_en, cam_write_index, cam_write_valid : Out
        Write port of the match CAM, which writes the key on its lookup port
        (:class:`tcpdct.match_cam.MatchCam`).
    cam_write_busy : In(1)
        The CAM is still storing the last key written; a DELEGATE is not taken until it is done.
    """

    def __init__(self, params):
        self._params = params
        super().__init__({
            "descriptor":      In(stream.Signature(rx_descriptor_layout(params))),
            "frame_key_ahead":       In(ConnKey),
            "frame_key_ahead_valid": In(1),
            "frame_key_next":        In(ConnKey),
            "frame_key_next_valid":  In(1),
            "command":         In(stream.Signature(command_layout)),
            "job":             Out(stream.Signature(dma_job_layout(params))),
            "event":           Out(stream.Signature(queued_event_layout)),
            "cam_key":         Out(ConnKey),
            "cam_hit":         In(1),
            "cam_index":       In(params.index_bits),
            "cam_valid":       In(params.n_entries),
            "cam_write_en":    Out(1),
            "cam_write_index": Out(params.index_bits),
            "cam_write_valid": Out(1),
            "cam_write_busy":  In(1),
            "tx_update":       In(stream.Signature(tx_update_layout)),
            "tx_key_ahead":       In(ConnKey),
            "tx_key_ahead_valid": In(1),
            "tx_matched":      Out(1),
            "buf_req_timeout": In(32),
            "high_water":      In(1),
        })
        # The state and buffer portions are separate memories (claim 22) so that either can be
        # sized and placed on its own.
        #
        # No read of these memories (nor of the room sums below) is used if it collides with a
        # write: the emitter writes an entry in its first cycle, and a read of that entry in
        # that cycle is replaced by the entry written (``_as_read``). ``no_rw_check`` tells
        # Yosys so; without it, Yosys emulates read-before-write around each block RAM (the
        # address compared with the write's, the write data kept, a multiplexer after the read
        # data), which sat on the receive engine's critical path from the CAM's answer.
        unchecked = {"no_rw_check": 1}
        self.state_ram  = Memory(shape=conn_state_layout, depth=params.n_entries, init=[],
                                 attrs=unchecked)
        self.buffer_ram = Memory(shape=buffer_queue_layout(params), depth=params.n_entries,
                                 init=[], attrs=unchecked)
        # The prefix sums of each queue's rooms (:class:`.rx_decision.RoomSums`), kept beside
        # the buffer portion and written with it: a frame's decision starts from them, a cycle
        # sooner than if it added the rooms up after reading the queue. Derived data, like
        # ``room``: never a source of truth, exact for the posted slots only, and the initial
        # sums (zeros) are those of the initial queues.
        self.sums_ram   = Memory(shape=room_sums_layout(params), depth=params.n_entries,
                                 init=[], attrs=unchecked)
        # Where operations start and end, for the testbenches (the unit tests and the formal
        # harness observe the sequencer through them); not ports.
        self.op_take = Signal()  # an operation starts: its input taken, its key at the CAM
        self.op_done = Signal()  # the last cycle of the operation in flight
        self.op_load = Signal()  # its LOAD: entry read, timer and high-water mark sampled
        self.op_emit = Signal()  # an operation decided is handing out its writes, job and events
        # A transmit update not waiting for a turn: no CAM answer is kept for its key, or the
        # one kept says it matches no connection ...
        self.tx_deferred = Signal()
        self.tx_skip = Signal()  # ... and is dropped, in a cycle that takes nothing

    def elaborate(self, platform):
        p = self._params
        m = Module()
        m.submodules.state_ram  = self.state_ram
        m.submodules.buffer_ram = self.buffer_ram
        m.submodules.sums_ram   = self.sums_ram
        state_rd  = self.state_ram.read_port()
        state_wr  = self.state_ram.write_port()
        buffer_rd = self.buffer_ram.read_port()
        buffer_wr = self.buffer_ram.write_port()
        sums_rd   = self.sums_ram.read_port()
        sums_wr   = self.sums_ram.write_port()

        def read_entry(address):
            """An entry is read from all three memories at once."""
            return [port.addr.eq(address) for port in (state_rd, buffer_rd, sums_rd)]

        m.submodules.legacy_ring = legacy_ring = SyncFIFOBuffered(
            width=legacy_buffer_layout.size, depth=p.legacy_ring_depth)
        legacy_head = data.View(legacy_buffer_layout, legacy_ring.r_data)
        # Full, from the ring's level, the cycle after each push or pop. Not ``~w_rdy``: with a
        # ring two deep, a buffer pushed into the empty ring fills the RAM behind the output
        # register for the cycle it takes to move there, and ``w_rdy`` says full meanwhile. A
        # POST_LEGACY decided in that cycle (the one after a POST_LEGACY's push) would be
        # refused QUEUE_FULL with a place free.
        legacy_full = full_flag(m, legacy_ring.level, p.legacy_ring_depth,
                                legacy_ring.w_en & legacy_ring.w_rdy,
                                legacy_ring.r_en & legacy_ring.r_rdy, name="legacy_full")

        m.submodules.queue_fill     = queue_fill = QueueFill(p)
        m.submodules.frame_checks   = frame_checks = FrameChecks(p)
        m.submodules.frame_decision = frame = FrameDecision(p)
        m.submodules.cmd_checks     = cmd_checks = CommandChecks(p)
        m.submodules.cmd_decision   = cmd   = CommandDecision(p)
        m.submodules.tx_decision    = tx    = TxDecision(given_end=True)

        op       = Signal(_Op)
        last_op  = Signal(_Op, init=_Op.TX)  # rotation: the source after it goes first
        # A command names its entry; the others are looked up. Decoded as the operation is
        # taken: the entry's address fans out to every memory cell, with no time to spare.
        by_index = Signal()
        desc     = Signal(rx_descriptor_layout(p))
        command  = Signal(command_layout)
        update   = Signal(tx_update_layout)
        hit      = Signal()
        index    = Signal(16)
        holding  = Signal()  # ``desc`` is a frame waiting for a user buffer
        held_for = Signal(32)

        # Each step of an operation works on registers filled by the step before: what the
        # memories read for the entry (its rooms added up among them) and what depends on the
        # input alone (LOAD: also the high-water mark and the timer, sampled once per decision),
        # how the frame's payload fills the rooms and its other checks (MEASURE).
        state      = Signal(conn_state_layout)
        queue      = Signal(buffer_queue_layout(p))
        sums       = Signal(room_sums_layout(p))
        fill       = Signal(queue_fill_layout(p))
        checks     = Signal(frame_checks_layout)
        # Whether the frame waits for a user buffer: worked out in MEASURE, so that in the
        # DECIDE whether the next operation is taken (``frame_key_moves``) starts from a
        # register, not from the room check through the rotation to every input's ``ready``.
        # A frame that skips MEASURE (no delegated connection) has no room check and never
        # waits.
        wait       = Signal(room_wait_layout)
        cmd_check  = Signal(command_checks_layout)
        tx_end     = Signal(32)
        high_water = Signal()
        timed_out  = Signal()

        # The writes of the operation, registered when it is decided and done in the emitter's
        # first cycle: memories, CAM and legacy ring. An operation that writes the CAM is
        # followed by one taken after that cycle (see ``take`` below), so it sees the CAM
        # written.
        #
        # Each kind of operation registers its new entry, job and events in registers of its
        # own (``_Outcome``), loaded in every DECIDE that proceeds whatever the operation, and
        # the emitter selects the operation's: a decision's logic then ends in a register rather
        # than in a multiplexer by operation, and its fan-out in one place.
        state_write  = Signal()
        queue_write  = Signal()
        cam_write    = Signal()
        cam_valid    = Signal()
        legacy_push  = Signal()
        legacy_push_buffer = Signal(legacy_buffer_layout)
        legacy_pop   = Signal()

        # The outcome of the operation, registered when it is decided and drained afterwards.
        n_slots  = event_slots(p)
        job_pending = Signal()
        pending  = Signal(n_slots)
        sent_any = Signal()

        frame_out    = _Outcome(p, "frame")
        cmd_out      = _Outcome(p, "cmd")
        tx_new_state = Signal(conn_state_layout)
        tx_report    = Signal(event_layout)
        fence        = Signal(dma_job_layout(p))
        m.d.comb += fence.kind.eq(JobKind.FENCE)

        # The emitter: the operation decided last, its outcome handed out while the next one
        # is looked up and loaded. ``emit_op`` and ``emit_index`` are its kind and entry;
        # ``emitting`` holds until its job and events have left.
        emitting   = self.op_emit
        emit_op    = Signal(_Op)
        emit_index = Signal.like(index)

        # The emitted operation's outcome. A transmit update writes no buffer queue, and its one
        # event (RESYNC) is in the first slot.
        new_state = Mux(emit_op == _Op.FRAME, frame_out.new_state,
                        Mux(emit_op == _Op.CMD, cmd_out.new_state, tx_new_state))
        new_queue = Mux(emit_op == _Op.CMD, cmd_out.new_queue, frame_out.new_queue)
        job       = Mux(emit_op == _Op.FRAME, frame_out.job,
                        Mux(emit_op == _Op.CMD, cmd_out.job, fence))
        events    = [Mux(emit_op == _Op.CMD, cmd_out.events[slot],
                         Mux((emit_op == _Op.TX) & (slot == 0), tx_report,
                             frame_out.events[slot]))
                     for slot in range(n_slots)]
        # Its queue's room sums, written beside it and forwarded with it: each decision gives
        # them with its queue (``FrameDecision``, ``CommandDecision``), so they leave an outcome
        # register like the rest. Added up from the queue here, after the outcome register, the
        # adders were the 64x64 core's worst path (8.5 ns on 649286b, seed 1). The choice is a
        # statement, not a ``Mux`` of the two views: with the ``Mux``, Yosys 0.70 failed an
        # assertion in ABC9's reintegration on the 64x256 core (``GetSize(conn.first) ==
        # GetSize(conn.second)``, rtlil.cc).
        new_sums = Signal(room_sums_layout(p))
        with m.If(emit_op == _Op.CMD):
            m.d.comb += new_sums.eq(cmd_out.new_sums)
        with m.Else():
            m.d.comb += new_sums.eq(frame_out.new_sums)

        # A command that writes the CAM (the answers at hand would predate the write) is not
        # followed in its DECIDE; told in LOAD, by opcode, so that the DECIDE's take starts from
        # a register.
        serial = Signal()
        writes_key = (op == _Op.CMD) & _writes_cam(command.code)

        # The legacy ring shows a pop a cycle after the emitter's, and a push two: a frame whose
        # LOAD comes in one of those cycles reads the ring again later (LOAD, below). A push
        # changes nothing a frame reads of the ring (its head, whether it has one) unless the
        # ring was empty.
        legacy_pushed = Signal()   # the emitter pushed a legacy buffer in the cycle before
        m.d.sync += legacy_pushed.eq(legacy_push)
        ring_behind = ~legacy_ring.r_rdy

        # An operation taken in the DECIDE of the one before reads its entry in the emitter's
        # first cycle, the cycle of its writes: what it loads is then the entry written, which
        # the outcome registers still hold in its LOAD (the next DECIDE comes later).
        forward_state = Signal()
        forward_queue = Signal()
        # An operation that read its entry in the DECIDE before (``peek`` below) loads it in the
        # emitter's first cycle: forwarded if the decided one writes the same entry then.
        forward_ahead = Signal()

        with m.If(holding & ~held_for.all()):
            m.d.sync += held_for.eq(held_for + 1)
        # Cycles since the operation's LOAD, where the timer is compared: a decision may wait for
        # the emitter, and a request's timer runs from its LOAD all the same.
        since_load = Signal(32)
        with m.If(~since_load.all()):
            m.d.sync += since_load.eq(since_load + 1)

        m.d.comb += [
            queue_fill.payload_len.eq(desc.payload_len),
            queue_fill.count.eq(queue.count),
            queue_fill.sums.eq(sums),
            frame_checks.desc.eq(desc),
            frame_checks.hit.eq(hit),
            frame_checks.state.eq(state),
            frame_checks.legacy_valid.eq(legacy_ring.r_rdy),
            frame_checks.legacy_head.eq(legacy_head),
            frame.desc.eq(desc),
            frame.index.eq(index),
            frame.state.eq(state),
            frame.queue.eq(queue),
            frame.sums.eq(sums),
            frame.fill.eq(fill),
            frame.checks.eq(checks),
            frame.legacy_head.eq(legacy_head),
            frame.wait.eq(wait),
            frame.high_water.eq(high_water),
            cmd_checks.command.eq(command),
            cmd_checks.cam_valid.eq(self.cam_valid),
            cmd_checks.key_present.eq(hit),
            cmd.command.eq(command),
            cmd.checks.eq(cmd_check),
            cmd.state.eq(state),
            cmd.queue.eq(queue),
            cmd.sums.eq(sums),
            cmd.legacy_full.eq(legacy_full),
            tx.update.eq(update),
            tx.end.eq(tx_end),
            tx.state.eq(state),
            state_wr.addr.eq(emit_index),
            state_wr.en.eq(state_write),
            state_wr.data.eq(new_state),
            buffer_wr.addr.eq(emit_index),
            buffer_wr.en.eq(queue_write),
            buffer_wr.data.eq(new_queue),
            sums_wr.addr.eq(emit_index),
            sums_wr.en.eq(queue_write),
            sums_wr.data.eq(new_sums),
            self.cam_write_en.eq(cam_write),
            self.cam_write_index.eq(emit_index),
            self.cam_write_valid.eq(cam_valid),
            legacy_ring.w_en.eq(legacy_push),
            legacy_ring.w_data.eq(legacy_push_buffer),
            legacy_ring.r_en.eq(legacy_pop),
        ]

        # Which source goes next: the first one waiting, in the rotation after the last served.
        # A held frame is always waiting: it is decided again after every other operation. A
        # DELEGATE waits for the CAM to finish storing the key written before (the only other
        # command that writes the CAM, RECLAIM, only clears a valid bit, which the CAM takes in
        # any cycle).
        #
        # The command stream comes straight from the port, and a command waits from the cycle
        # after it reaches the stream's head: its opcode is decoded into registers first
        # (``delegating``, ``head_writes_cam``), which hold for the head as long as it stays
        # (a stream's payload holds until it is taken). Decoded from the port in the cycle of
        # the take, the opcode was two levels of logic at the start of the take's paths into
        # the parser's and the transmit engine's FIFOs (the twenty-second session's measure).
        command_seen = Signal()     # the command at the head was there, not taken, a cycle ago
        delegating = Signal()       # ... and it is a DELEGATE
        head_writes_cam = Signal()  # ... and it may write the CAM
        m.d.sync += [command_seen.eq(self.command.valid & ~self.command.ready),
                     delegating.eq(self.command.payload.code == Opcode.DELEGATE),
                     head_writes_cam.eq(_writes_cam(self.command.payload.code))]
        tx_deferred = self.tx_deferred
        waiting = {_Op.FRAME: holding | self.descriptor.valid,
                   _Op.CMD:   self.command.valid & command_seen
                              & ~(delegating & self.cam_write_busy),
                   _Op.TX:    self.tx_update.valid & ~tx_deferred}
        choice = Signal(_Op)
        any_waiting = Signal()
        m.d.comb += any_waiting.eq(waiting[_Op.FRAME] | waiting[_Op.CMD] | waiting[_Op.TX])
        self._choose(m, choice, last_op, holding, waiting)

        # An operation is taken when the sequencer is idle, or in the last cycle of the one before
        # (its DECIDE), so that consecutive operations leave no idle cycle between them. An
        # operation that writes the CAM is not overlapped: the answers at hand in the cycle of
        # the write predate it (below). The next
        # one reads the memories in the emitter's first cycle at the earliest (forwarded, as
        # above), the legacy ring and the CAM valid bits in its LOAD and later, after the
        # emitter's writes.
        op_take, op_done = self.op_take, self.op_done

        # Keys are looked up ahead of the take. The CAM answers through an OR tree over every
        # entry; addressing the memories with that answer in the cycle it comes was the 64x64
        # core's critical path, and registering it first would cost every operation a cycle.
        # Instead each source keeps the answer for the key at its head (``known``,
        # ``found_hit``, ``found_index``), and the key looked up is that of a source still
        # unanswered: the one that would be taken, if it is, else the next one waiting in the
        # rotation. A lookup is a pipeline of its own, so that neither the choice of the key nor
        # the compares nor the answer share a cycle with anything long: the key is chosen and
        # registered (``lookup_key``, in cycle *c*), the CAM compares it (*c + 1*) and answers
        # (*c + 2*). An operation whose answer is at hand when it is taken (the usual case: a
        # source waits while the operation before runs) addresses the memories in its LOOKUP
        # from a register; one whose key is still on its way spends one or two cycles more in
        # LOOKUP, waiting for the answer.
        #
        # An answer is dropped when its source's head is taken (the next one has another key),
        # when a frame starts or stops being held (the frame's key then moves between the held
        # descriptor and the stream's head) and when the CAM is written, together with a lookup
        # whose compare came before the write.
        sources = list(_Op)
        resolved    = Signal()    # the operation in flight has its CAM answer registered ...
        answer_due  = Signal()    # ... or, if not, gets it this cycle
        ask         = Signal(_Op) # whose key is chosen this cycle
        comparing   = Signal(_Op) # whose key the CAM compares this cycle ...
        comparing_valid = Signal()  # ... and that is still the key at its head
        asked       = Signal(_Op) # whose key the CAM answers this cycle ...
        asked_valid = Signal()    # ... and that is still the key at its head
        known       = Signal(len(sources))
        found_hit   = [Signal(name=f"found_hit_{op.name.lower()}") for op in sources]
        found_index = [Signal(p.index_bits, name=f"found_index_{op.name.lower()}")
                       for op in sources]
        answering = Cat((asked_valid & (asked == op)) for op in sources)
        in_compare = Cat((comparing_valid & (comparing == op)) for op in sources)
        at_hand   = known | answering
        frame_key_moves = Signal()  # a frame's DECIDE that changes ``holding``
        ask_behind = Signal()       # the key asked is the one behind the frame head (below)

        # A frame or a transmit update on its way to an empty stream is asked about already
        # (``RxParser.key_ahead``, ``TxEngine.key_ahead``), so that it finds its answer at hand.
        delegate = self.command.payload.body.delegate
        lookup_key = Signal(ConnKey)
        with m.Switch(ask):
            with m.Case(_Op.FRAME):
                head = Mux(ask_behind, self.frame_key_next,
                           Mux(self.descriptor.valid, self.descriptor.payload.key,
                               self.frame_key_ahead))
                m.d.comb += lookup_key.eq(Mux(holding, desc.key, head))
            with m.Case(_Op.CMD):
                m.d.comb += lookup_key.eq(delegate_key(delegate))
            with m.Case(_Op.TX):
                m.d.comb += lookup_key.eq(Mux(self.tx_update.valid, self.tx_update.payload.key,
                                              self.tx_key_ahead))
        # The CAM writes the key on its lookup port (``MatchCam``), so a command that writes an
        # entry puts its key there for the cycle of the write, the emitter's first. What the
        # CAM compares in that cycle is not an answer for anyone.
        key_to_write = Signal()  # DECIDE of a command that may write the CAM
        with m.If(key_to_write):
            m.d.sync += self.cam_key.eq(cmd.cam_write_key)
        with m.Else():
            m.d.sync += self.cam_key.eq(lookup_key)

        # The source to ask about: the choice if its answer is neither at hand nor on its way,
        # else the first other source without one that is waiting, on its way or (a transmit
        # update, which waits for a turn only once its answer is kept) offered, in the rotation
        # after the choice. With nothing waiting the choice is a frame, which may not even be on
        # its way: then the others are asked about too. The choice comes first because an
        # operation taken without its answer waits for the key asked about in the cycle it is
        # taken (a fixed order, frames first, was tried: an update taken while a frame was asked
        # about then read the frame's answer). Of the commands only a DELEGATE uses the answer
        # (is its key in use?); the others need none, are never asked about and never wait.
        askable = Cat(waiting[_Op.FRAME] | self.frame_key_ahead_valid,
                      waiting[_Op.CMD] & delegating,
                      self.tx_update.valid | self.tx_key_ahead_valid)
        underway = at_hand | in_compare
        m.d.comb += ask.eq(choice)
        with m.Switch(choice):
            for first in sources:
                with m.Case(first):
                    start = sources.index(first)
                    others = sources[start + 1:] + sources[:start]
                    with m.If(underway[first.value] | ~askable[first.value]):
                        for number, other in enumerate(others):
                            with (m.If if number == 0 else m.Elif)(
                                    askable[other.value] & ~underway[other.value]):
                                m.d.comb += ask.eq(other)

        # With no source's key to ask about, the key of the descriptor behind the frame head is
        # (``frame_key_next``): a frame that takes the sequencer two cycles (one of no delegated
        # connection) is followed by one whose key reaches the stream's head as it is taken,
        # too late for a lookup of its own. The answer is kept for the descriptor behind
        # (``known_behind``) and becomes the head's when the head is taken, whether it has
        # come by then or is still on its way. Its own pipeline flags (``compares_behind``,
        # ``answers_behind``) say that the lookup in each stage is of the descriptor behind.
        frame_source = _Op.FRAME.value
        known_behind       = Signal()
        found_behind_hit   = Signal()
        found_behind_index = Signal(p.index_bits)
        compares_behind    = Signal()
        answers_behind     = Signal()
        m.d.comb += ask_behind.eq(self.frame_key_next_valid & self.descriptor.valid & ~holding
                                  & ~(known_behind | compares_behind | answers_behind)
                                  & ~(askable & ~underway).any())
        with m.If(ask_behind):
            m.d.comb += ask.eq(_Op.FRAME)

        taken = Signal(len(sources))  # the head of each source leaves this cycle
        writing_cam = self.cam_write_en
        # A lookup of the key behind the frame head is the head's from the cycle the head is
        # taken.
        taking_frame = taken[frame_source]
        m.d.sync += [
            comparing.eq(ask),
            comparing_valid.eq(Mux(ask_behind, taking_frame, askable.bit_select(ask.as_value(), 1)
                                   & ~taken.bit_select(ask.as_value(), 1))
                               & ~key_to_write & ~(frame_key_moves & (ask == _Op.FRAME))),
            compares_behind.eq(ask_behind & ~taking_frame & ~key_to_write & ~frame_key_moves),
            asked.eq(comparing),
            # The CAM compares before this cycle's write: an answer to a key compared now is
            # out of date.
            asked_valid.eq(Mux(compares_behind, taking_frame, comparing_valid
                               & ~taken.bit_select(comparing.as_value(), 1))
                           & ~writing_cam & ~(frame_key_moves & (comparing == _Op.FRAME))),
            answers_behind.eq(compares_behind & ~taking_frame & ~writing_cam & ~frame_key_moves),
        ]
        for op_ in sources:
            number = op_.value
            with m.If(answering[number] & ~known[number]):
                m.d.sync += [known[number].eq(1), found_hit[number].eq(self.cam_hit),
                             found_index[number].eq(self.cam_index)]
            dropped = taken[number] | writing_cam
            if op_ == _Op.FRAME:
                dropped = dropped | frame_key_moves
            with m.If(dropped):
                m.d.sync += known[number].eq(0)
        with m.If(answers_behind):
            m.d.sync += [known_behind.eq(1), found_behind_hit.eq(self.cam_hit),
                         found_behind_index.eq(self.cam_index)]
        with m.If(taking_frame | writing_cam | frame_key_moves):
            m.d.sync += known_behind.eq(0)
        # The head taken, the answer for the one behind is the new head's.
        with m.If(taking_frame & ~writing_cam & (known_behind | answers_behind)):
            m.d.sync += [known[frame_source].eq(1),
                         found_hit[frame_source].eq(Mux(known_behind, found_behind_hit,
                                                        self.cam_hit)),
                         found_index[frame_source].eq(Mux(known_behind, found_behind_index,
                                                          self.cam_index))]

        # A transmit update of no delegated connection changes nothing (R31–R33 apply to an
        # entry), so it need not cost the sequencer a cycle. An update waits for a turn in the
        # rotation only once the CAM's answer for its key is kept and says it hits; until
        # then it is deferred (taken without its answer, it would wait for it in LOOKUP, and
        # the frame after it too: an update reaches the head of its stream as the one before
        # leaves, before anyone asked about its key). Once the answer says "no match" it is
        # dropped, in the next cycle in which no operation is taken. Both enter the rotation
        # from registers alone (the answer kept). Not dropped while a command that writes the
        # CAM is in the front (a register loaded at the take) or writing: an update that
        # reached the engine after a DELEGATE was taken must see the key delegated, as in the
        # rotation. Such a command is not overlapped, so nothing else is taken meanwhile.
        tx_source = _Op.TX.value
        key_writer = Signal()  # the front holds a command that writes the CAM
        with m.If(op_done):
            m.d.sync += key_writer.eq(0)
        tx_known_miss = known[tx_source] & ~found_hit[tx_source]
        m.d.comb += [
            tx_deferred.eq(self.tx_update.valid & ~(known[tx_source] & found_hit[tx_source])),
            self.tx_skip.eq(self.tx_update.valid & tx_known_miss & ~(cam_write | key_writer)
                            & ~op_take),
        ]

        # The next operation reads its entry in the DECIDE of the one before, when it can. In
        # every cycle the choice and its entry are registered (``peek_*``); a DECIDE that takes
        # the same choice, with its answer at hand a cycle ago already, addresses the memories
        # from that register and goes straight to LOAD, its LOOKUP done. Nothing is taken early:
        # the take is the DECIDE's as before, so the order of operations is the same whether the
        # read is early or not; only a cycle of each overlapped operation is saved. The answer
        # registered cannot go out of date before the DECIDE: the head of a source moves only
        # when it is taken (a transmit update known to miss is never the choice), a frame's key
        # moves only in a DECIDE that changes ``holding`` (no overlap then), and the CAM is not
        # written while an operation is in the front (a command that writes it is not
        # overlapped).
        peek_op    = Signal(_Op)
        peek_known = Signal()
        peek_index = Signal.like(index)

        # Each source's answer, at hand or arriving this cycle (a command other than DELEGATE
        # needs none), and the choice's; or whether it arrives next cycle.
        ready_to_read = Cat(at_hand[op_.value] | (~delegating if op_ == _Op.CMD else 0)
                            for op_ in sources)

        def answer(chosen, name):
            """Whether the answer of source ``chosen`` is at hand, comes next cycle, and it."""
            known_now = Signal(name=f"{name}_known")
            soon      = Signal(name=f"{name}_soon")
            found     = Signal(name=f"{name}_hit")
            where     = Signal(p.index_bits, name=f"{name}_index")
            with m.Switch(chosen):
                for op_ in sources:
                    with m.Case(op_):
                        number = op_.value
                        m.d.comb += [
                            known_now.eq(ready_to_read[number]),
                            soon.eq(in_compare[number]),
                            found.eq(Mux(known[number], found_hit[number], self.cam_hit)),
                            where.eq(Mux(known[number], found_index[number], self.cam_index)),
                        ]
            return known_now, soon, found, where

        choice_known, choice_soon, choice_hit, choice_index = answer(choice, "choice")

        # The choice the DECIDE would make if it waited only for sources with their answers at
        # hand: a source whose key is not yet answered may be waiting in the cycle before the
        # DECIDE and not in it (a transmit update whose key is then being compared is deferred).
        peek_choice = Signal(_Op)
        peek_waiting = {op_: waiting[op_] & ready_to_read[op_.value] for op_ in sources}
        self._choose(m, peek_choice, last_op, holding, peek_waiting)
        _, _, _, peek_choice_index = answer(peek_choice, "peek_choice")
        m.d.sync += [peek_op.eq(peek_choice),
                     peek_known.eq(Cat(peek_waiting.values()).bit_select(
                         peek_choice.as_value(), 1)),
                     peek_index.eq(Mux(peek_choice == _Op.CMD, self.command.payload.index,
                                       peek_choice_index))]

        def take():
            """Start the operation ``choice``, if any source waits (in a cycle that allows it)."""
            m.d.comb += op_take.eq(any_waiting)
            with m.If(any_waiting):
                m.d.sync += [op.eq(choice), last_op.eq(choice), by_index.eq(choice == _Op.CMD),
                             key_writer.eq((choice == _Op.CMD) & head_writes_cam),
                             resolved.eq(choice_known), answer_due.eq(choice_soon),
                             hit.eq(choice_hit),
                             index.eq(Mux(choice == _Op.CMD, self.command.payload.index,
                                          choice_index))]
                m.next = "LOOKUP"
            with m.If(any_waiting & (choice == _Op.FRAME) & ~holding):
                m.d.comb += self.descriptor.ready.eq(1)
            with m.If(any_waiting & (choice == _Op.CMD)):
                m.d.comb += self.command.ready.eq(1)
            with m.If(any_waiting & (choice == _Op.TX)):
                m.d.comb += self.tx_update.ready.eq(1)

        with m.If(self.tx_skip):
            m.d.comb += self.tx_update.ready.eq(1)
        # A held frame decided again stays where it is, and so does its key.
        m.d.comb += taken.eq(Cat(self.descriptor.ready, self.command.ready,
                                 self.tx_update.ready))

        # The input registers load from their stream's head in every cycle in which an operation
        # may be taken and no operation uses them, whether that source is taken or not: their
        # enables then depend on the FSM state alone, rather than on the rotation and the
        # outputs' ready (which decide the take late in the cycle, too late to fan out to every
        # bit of a descriptor). The register of the source actually taken holds its input.
        #
        # In a DECIDE that proceeds the operation's decision is registered, so its inputs are
        # free whether the next operation is taken there or not (if not, IDLE loads them
        # again); only a frame that starts waiting for a user buffer keeps its descriptor. That
        # is told from the registered checks alone (a frame not yet held waits exactly when its
        # room check fails), not from whether the next operation is taken, which is later.
        inputs_free = Signal()  # IDLE, or a DECIDE that proceeds: desc, command, update are free
        starts_wait = Signal()  # DECIDE of a frame that will wait (if it does not already)
        with m.If(inputs_free & ~holding & ~starts_wait):
            m.d.sync += desc.eq(self.descriptor.payload)
        with m.If(inputs_free):
            m.d.sync += [command.eq(self.command.payload), update.eq(self.tx_update.payload)]

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += inputs_free.eq(1)
                # Not in the cycle of a CAM write: the answers at hand predate it.
                with m.If(~cam_write):
                    take()

            with m.State("LOOKUP"):
                # A transmit update is taken only with a kept answer that hits (the deferral
                # above), so every operation here goes on to LOAD.
                with m.If(~resolved):
                    # Taken before the answer for its key came: wait for it.
                    with m.If(answer_due):
                        m.d.sync += [resolved.eq(1), hit.eq(self.cam_hit),
                                     index.eq(Mux(by_index, command.index, self.cam_index))]
                    m.d.sync += answer_due.eq(1)
                with m.Else():
                    # The entry's address, as the memories see it.
                    address = slice(0, len(state_rd.addr))
                    same_entry = emit_index[address] == index[address]
                    m.d.comb += read_entry(index)
                    m.d.sync += [forward_state.eq(state_write & same_entry),
                                 forward_queue.eq(queue_write & same_entry),
                                 forward_ahead.eq(0)]
                    m.next = "LOAD"

            with m.State("LOAD"):
                m.d.comb += self.op_load.eq(1)
                forwarded_state = self._forwarded(forward_state, forward_ahead, state_write)
                forwarded_queue = self._forwarded(forward_queue, forward_ahead, queue_write)
                m.d.sync += [state.eq(self._as_read(forwarded_state, new_state, state_rd.data)),
                             queue.eq(self._as_read(forwarded_queue, new_queue, buffer_rd.data)),
                             sums.eq(self._as_read(forwarded_queue, new_sums, sums_rd.data)),
                             high_water.eq(self.high_water),
                             timed_out.eq(held_for >= self.buf_req_timeout),
                             cmd_check.eq(cmd_checks.checks), tx_end.eq(segment_end(update)),
                             since_load.eq(1), serial.eq(writes_key)]
                m.d.comb += self.tx_matched.eq((op == _Op.TX) & hit)
                # A frame reads the legacy ring in MEASURE, or in LOAD when it has no delegated
                # connection: its checks then need only the descriptor, the CAM's answer and the
                # ring, so it skips MEASURE and the legacy mix fits the line. Its LOAD may come
                # in the emitter's first cycle (the entry read in the DECIDE before) or the one
                # after (read in LOOKUP), before the ring shows the emitter's pop or push
                # (``legacy_pushed``, above): it then reads the ring in MEASURE, through RING
                # if need be, like a delegated frame. Whether it is delegated is the checks'
                # (from the descriptor and the CAM's answer alone, both registered by now), so
                # that the frames that skip MEASURE are exactly those never given a room check.
                delegated = frame_checks.checks.delegated
                with m.If(op == _Op.FRAME):
                    with m.If(legacy_push & ring_behind):
                        m.next = "RING"
                    with m.Elif(delegated | legacy_pop | legacy_pushed & ring_behind):
                        m.next = "MEASURE"
                    with m.Else():
                        m.d.sync += [checks.eq(frame_checks.checks), wait.eq(0)]
                        m.next = "DECIDE"
                with m.Else():
                    m.next = "DECIDE"

            with m.State("RING"):
                # The ring shows a push into it when empty two cycles after the emitter's.
                m.next = "MEASURE"

            with m.State("MEASURE"):
                m.d.sync += [fill.eq(queue_fill.fill), checks.eq(frame_checks.checks),
                             *room_wait(wait, frame_checks.checks, queue_fill.fill.fits,
                                        holding, high_water, timed_out)]
                m.next = "DECIDE"

            with m.State("DECIDE"):
                m.d.comb += [
                    frame_key_moves.eq((op == _Op.FRAME) & (holding != wait.hold)),
                    starts_wait.eq((op == _Op.FRAME) & wait.hold),
                    # By opcode alone, not the checks, and from LOAD's register of it, to keep
                    # both off the key's path.
                    key_to_write.eq(serial),
                ]
                # The decision waits for the emitter to finish the operation before: the
                # outcome registers are its.
                with m.If(~emitting):
                    frame_out.register(m, frame)
                    cmd_out.register(m, cmd)
                    report = Signal(event_layout)
                    m.d.comb += [
                        report.code.eq(EventType.RESYNC),
                        report.index.eq(index),
                        report.body.resync.rcv_nxt.eq(tx.new_state.rcv_nxt),
                    ]
                    m.d.sync += [tx_new_state.eq(tx.new_state), tx_report.eq(report)]
                    with m.Switch(op):
                        with m.Case(_Op.FRAME):
                            m.d.sync += [state_write.eq(frame.state_write),
                                         queue_write.eq(frame.queue_write),
                                         pending.eq(frame.event_valid),
                                         legacy_pop.eq(frame.legacy_pop),
                                         job_pending.eq(frame.job_valid),
                                         holding.eq(wait.hold)]
                            # The timer runs from the BUF_REQ that opened the request, counted
                            # from that operation's LOAD, the cycle in which the timer is
                            # compared.
                            with m.If(wait.hold & frame.job_valid):
                                m.d.sync += held_for.eq(since_load)
                        with m.Case(_Op.CMD):
                            m.d.sync += [
                                state_write.eq(cmd.state_write),
                                queue_write.eq(cmd.queue_write),
                                pending.eq(cmd.event_valid),
                                cam_write.eq(cmd.cam_write),
                                cam_valid.eq(cmd.cam_write_valid),
                                legacy_push.eq(cmd.legacy_push),
                                legacy_push_buffer.eq(cmd.legacy_push_buffer),
                                job_pending.eq(1),
                            ]
                        with m.Case(_Op.TX):
                            m.d.sync += [
                                state_write.eq(1),
                                queue_write.eq(0),
                                job_pending.eq(tx.resync),
                                pending.eq(tx.resync),
                            ]
                    m.d.sync += [sent_any.eq(0), emitting.eq(1), emit_op.eq(op),
                                 emit_index.eq(index)]
                    m.d.comb += op_done.eq(1)
                    m.next = "IDLE"
                    # The next operation is taken now, unless this one writes the CAM (the
                    # answers at hand would predate the write) or holds or releases a frame (the
                    # frame source's key moves).
                    overlap = ~serial & ~frame_key_moves
                    m.d.comb += inputs_free.eq(1)
                    with m.If(overlap):
                        take()
                        # Its entry read now, from the choice registered a cycle ago (above),
                        # when that is the one taken.
                        ahead = peek_known & choice_known & (choice == peek_op)
                        with m.If(any_waiting & ahead):
                            m.next = "LOAD"
                # The address is the choice's whether it is taken or not: LOAD follows only if
                # it is.
                address = slice(0, len(state_rd.addr))
                m.d.comb += read_entry(peek_index)
                m.d.sync += [forward_state.eq(0), forward_queue.eq(0),
                             forward_ahead.eq(peek_index[address] == index[address])]

        # The emitter: writes in its first cycle, then the job and the events.
        with m.If(emitting):
            # Written in the first cycle only.
            m.d.sync += [state_write.eq(0), queue_write.eq(0), cam_write.eq(0),
                         legacy_push.eq(0), legacy_pop.eq(0)]
            m.d.comb += [self.job.valid.eq(job_pending), self.job.payload.eq(job)]
            with m.If(self.job.ready):
                m.d.sync += job_pending.eq(0)

            # The lowest pending slot goes next: slots are in the order the events must
            # leave (docs/architecture.md, "Events and their order").
            for slot in range(n_slots):
                with (m.If if slot == 0 else m.Elif)(pending[slot]):
                    m.d.comb += [self.event.payload.event.eq(events[slot]),
                                 self.event.payload.first.eq(~sent_any)]
                    with m.If(self.event.ready):
                        m.d.sync += pending[slot].eq(0)
            m.d.comb += self.event.valid.eq(pending.any())
            with m.If(self.event.valid & self.event.ready):
                m.d.sync += sent_any.eq(1)

            # At most one event left: pairwise, not ``pending & (pending - 1)``, whose carry
            # chain would sit on the path to the emitter's end.
            last_event = ~Cat(pending[i] & pending[j] for i in range(n_slots)
                              for j in range(i + 1, n_slots)).any()
            job_done = ~job_pending | self.job.ready
            events_done = ~pending.any() | (last_event & self.event.ready)
            with m.If(job_done & events_done):
                m.d.sync += emitting.eq(0)

        return m

    def connect_match_cam(self, m, cam):
        """Wire this engine to lookup port 0 and the write port of ``cam`` (a
        :class:`tcpdct.match_cam.MatchCam`): the engine looks keys up and writes entries."""
        m.d.comb += [
            cam.lookup_key_0.eq(self.cam_key),
            self.cam_hit.eq(cam.lookup_hit_0),
            self.cam_index.eq(cam.lookup_index_0),
            self.cam_valid.eq(cam.valid),
            cam.write_en.eq(self.cam_write_en),
            cam.write_index.eq(self.cam_write_index),
            cam.write_valid.eq(self.cam_write_valid),
            self.cam_write_busy.eq(cam.write_busy),
        ]

    @staticmethod
    def _forwarded(after_write, read_ahead, writing):
        """Whether a LOAD takes the entry the emitter writes rather than the one read: read in
        the emitter's first cycle, the write of that cycle (``after_write``, registered then);
        read in the DECIDE before it (``read_ahead``: the same entry), the write of this
        cycle, the emitter's first (``writing``)."""
        return after_write | read_ahead & writing

    @staticmethod
    def _as_read(forwarded, written, read):
        """The entry a LOAD registers: the one the emitter wrote in the cycle the memory was
        read (``forwarded``), else what the memory read."""
        return Mux(forwarded, written, read)

    @classmethod
    def _choose(cls, m, choice, last_op, holding, waiting):
        """The source to serve next, of those ``waiting``."""
        with m.If(holding & (last_op != _Op.FRAME)):
            # A held frame is decided again right after every command or transmit update, so
            # that each of them is seen on its own (docs/architecture.md, "Buffer requests").
            m.d.comb += choice.eq(_Op.FRAME)
        with m.Else():
            cls._rotate(m, choice, last_op, waiting)

    @staticmethod
    def _rotate(m, choice, last_op, waiting):
        """The first source waiting, in the rotation after the one served last."""
        rotation = [_Op.FRAME, _Op.CMD, _Op.TX]
        with m.Switch(last_op):
            for served in rotation:
                with m.Case(served):
                    start = rotation.index(served) + 1
                    order = rotation[start:] + rotation[:start]
                    for number, source in enumerate(order):
                        with (m.If if number == 0 else m.Elif)(waiting[source]):
                            m.d.comb += choice.eq(source)


def _writes_cam(code):
    """Whether a command of opcode ``code`` may write the CAM: DELEGATE and RECLAIM."""
    return (code == Opcode.DELEGATE) | (code == Opcode.RECLAIM)


class _Outcome:
    """The registered outcome of a frame's or a command's decision: its entry's new state and
    buffer queue with its room sums, its job and its events."""

    def __init__(self, params, name):
        self.new_state = Signal(conn_state_layout, name=f"{name}_new_state")
        self.new_queue = Signal(buffer_queue_layout(params), name=f"{name}_new_queue")
        self.new_sums  = Signal(room_sums_layout(params), name=f"{name}_new_sums")
        self.job       = Signal(dma_job_layout(params), name=f"{name}_job")
        self.events    = Signal(data.ArrayLayout(event_layout, event_slots(params)),
                                name=f"{name}_events")

    def register(self, m, decision):
        """Load the outcome of ``decision`` (a :class:`FrameDecision` or a
        :class:`CommandDecision`)."""
        m.d.sync += [self.new_state.eq(decision.new_state), self.new_queue.eq(decision.new_queue),
                     self.new_sums.eq(decision.new_sums), self.job.eq(decision.job),
                     self.events.eq(decision.events)]


class _Op(enum.Enum, shape=2):
    FRAME = 0
    CMD   = 1
    TX    = 2
