"""The receive engine: decides each received frame's fate and executes commands, one at a time.

Frames and commands both read and write the three DCT portions. Rather than arbitrate every
memory port between a receive engine and a command unit, a single sequencer takes one operation
at a time (a frame descriptor or a command), runs it to completion and only then takes the next:
there is no read-modify-write hazard to forward around, and the order in which frames and
commands take effect is simply the order in which the sequencer took them, which the model and
the replay can reproduce (``docs/architecture.md``, "Ordering rule"). An operation costs
four cycles plus one per extra event, well inside the eight beats of the shortest frame at 64
bits; the frame's bytes meanwhile wait in the packet buffer and are moved by the DMA writer.

The decision logic itself lives in :mod:`.rx_decision` (frames) and :mod:`.cmd_unit`
(commands); this module holds the storage and the sequencing.
"""

from amaranth.hdl import Module, Signal, Const, Mux
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .layouts import (ConnKey, command_layout, rx_descriptor_layout, dma_job_layout,
                      queued_event_layout, event_layout)
from .dct_layouts import conn_state_layout, buffer_queue_layout, legacy_buffer_layout
from .rx_decision import FrameDecision
from .cmd_unit import CommandDecision


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
    command : In(stream of ``command_layout``)
        Command records.
    job : Out(stream of ``dma_job_layout``)
        One DMA job per frame and per command, in decision order.
    event : Out(stream of ``queued_event_layout``)
        The events of each job, its first event marked.
    cam_key, cam_hit, cam_index : Out, In, In
        Lookup port of the match CAM; the result answers the key of the previous cycle.
    cam_valid : In(n_entries)
        Valid bits of the match portion.
    cam_write_en, cam_write_index, cam_write_key, cam_write_valid : Out
        Write port of the match CAM.
    """

    def __init__(self, params):
        self._params = params
        super().__init__({
            "descriptor":      In(stream.Signature(rx_descriptor_layout(params))),
            "command":         In(stream.Signature(command_layout)),
            "job":             Out(stream.Signature(dma_job_layout(params))),
            "event":           Out(stream.Signature(queued_event_layout)),
            "cam_key":         Out(ConnKey),
            "cam_hit":         In(1),
            "cam_index":       In(params.index_bits),
            "cam_valid":       In(params.n_entries),
            "cam_write_en":    Out(1),
            "cam_write_index": Out(params.index_bits),
            "cam_write_key":   Out(ConnKey),
            "cam_write_valid": Out(1),
        })
        # The state and buffer portions are separate memories (claim 22) so that either can be
        # sized and placed on its own.
        self.state_ram  = Memory(shape=conn_state_layout, depth=params.n_entries, init=[])
        self.buffer_ram = Memory(shape=buffer_queue_layout(params), depth=params.n_entries, init=[])

    def elaborate(self, platform):
        p = self._params
        m = Module()
        m.submodules.state_ram  = self.state_ram
        m.submodules.buffer_ram = self.buffer_ram
        state_rd  = self.state_ram.read_port()
        state_wr  = self.state_ram.write_port()
        buffer_rd = self.buffer_ram.read_port()
        buffer_wr = self.buffer_ram.write_port()

        m.submodules.legacy_ring = legacy_ring = SyncFIFOBuffered(
            width=legacy_buffer_layout.size, depth=p.legacy_ring_depth)
        legacy_head = data.View(legacy_buffer_layout, legacy_ring.r_data)

        m.submodules.frame_decision = frame = FrameDecision(p)
        m.submodules.cmd_decision   = cmd   = CommandDecision(p)

        is_cmd   = Signal()
        desc     = Signal(rx_descriptor_layout(p))
        command  = Signal(command_layout)
        hit      = Signal()
        index    = Signal(16)
        prefer_cmd = Signal()  # round robin between frames and commands when both wait

        # The outcome of the operation, registered when it is decided and drained afterwards.
        n_slots  = p.buffers_per_conn + 2
        job      = Signal(dma_job_layout(p))
        job_pending = Signal()
        events   = Signal(data.ArrayLayout(event_layout, n_slots))
        pending  = Signal(n_slots)
        sent_any = Signal()

        m.d.comb += [
            frame.desc.eq(desc),
            frame.hit.eq(hit),
            frame.index.eq(index),
            frame.state.eq(state_rd.data),
            frame.queue.eq(buffer_rd.data),
            frame.legacy_valid.eq(legacy_ring.r_rdy),
            frame.legacy_head.eq(legacy_head),
            cmd.command.eq(command),
            cmd.key_present.eq(hit),
            cmd.cam_valid.eq(self.cam_valid),
            cmd.state.eq(state_rd.data),
            cmd.queue.eq(buffer_rd.data),
            cmd.legacy_full.eq(~legacy_ring.w_rdy),
        ]

        take_desc = self.descriptor.valid & ~(self.command.valid & prefer_cmd)

        with m.FSM():
            with m.State("IDLE"):
                # The CAM answers next cycle for the key presented now: the candidate's key.
                with m.If(take_desc):
                    m.d.comb += [self.cam_key.eq(self.descriptor.payload.key),
                                 self.descriptor.ready.eq(1)]
                    m.d.sync += [desc.eq(self.descriptor.payload), is_cmd.eq(0),
                                 prefer_cmd.eq(1)]
                    m.next = "LOOKUP"
                with m.Elif(self.command.valid):
                    delegate = self.command.payload.body.delegate
                    m.d.comb += [self.cam_key.local_ip.eq(delegate.local_ip),
                                 self.cam_key.remote_ip.eq(delegate.remote_ip),
                                 self.cam_key.local_port.eq(delegate.local_port),
                                 self.cam_key.remote_port.eq(delegate.remote_port),
                                 self.command.ready.eq(1)]
                    m.d.sync += [command.eq(self.command.payload), is_cmd.eq(1),
                                 prefer_cmd.eq(0)]
                    m.next = "LOOKUP"

            with m.State("LOOKUP"):
                entry = Mux(is_cmd, command.index, self.cam_index)
                m.d.sync += [hit.eq(self.cam_hit), index.eq(entry)]
                m.d.comb += [state_rd.addr.eq(entry), buffer_rd.addr.eq(entry)]
                m.next = "DECIDE"

            with m.State("DECIDE"):
                with m.If(is_cmd):
                    self._register_outcome(m, cmd, state_wr, buffer_wr, job, events, pending)
                    m.d.comb += [
                        self.cam_write_en.eq(cmd.cam_write),
                        self.cam_write_index.eq(index),
                        self.cam_write_key.eq(cmd.cam_write_key),
                        self.cam_write_valid.eq(cmd.cam_write_valid),
                        legacy_ring.w_en.eq(cmd.legacy_push),
                        legacy_ring.w_data.eq(cmd.legacy_push_buffer),
                    ]
                with m.Else():
                    self._register_outcome(m, frame, state_wr, buffer_wr, job, events, pending)
                    m.d.comb += legacy_ring.r_en.eq(frame.legacy_pop)
                m.d.comb += [state_wr.addr.eq(index), buffer_wr.addr.eq(index)]
                m.d.sync += [job_pending.eq(1), sent_any.eq(0)]
                m.next = "EMIT"

            with m.State("EMIT"):
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

                last_event = (pending & (pending - 1)) == 0
                job_done = ~job_pending | self.job.ready
                events_done = ~pending.any() | (last_event & self.event.ready)
                with m.If(job_done & events_done):
                    m.next = "IDLE"

        return m

    @staticmethod
    def _register_outcome(m, decision, state_wr, buffer_wr, job, events, pending):
        m.d.comb += [
            state_wr.en.eq(decision.state_write),
            state_wr.data.eq(decision.new_state),
            buffer_wr.en.eq(decision.queue_write),
            buffer_wr.data.eq(decision.new_queue),
        ]
        m.d.sync += [job.eq(decision.job), events.eq(decision.events),
                     pending.eq(decision.event_valid)]
