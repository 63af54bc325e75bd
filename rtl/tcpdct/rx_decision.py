"""What happens to one received frame: the rules of SPEC section 3 as combinational logic.

Inputs are the frame's descriptor, the match result and the entry's state and buffer queue as
read from the DCT; outputs are the entry's new contents, the DMA job and the events. The order of
the checks is the table in ``docs/architecture.md`` ("Decisions for a delegated connection").
"""

from amaranth.hdl import Module, Signal, Mux, Cat, Const
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .headers import TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_URG
from .layouts import FrameClass, JobKind, rx_descriptor_layout, dma_job_layout, event_layout
from .dct_layouts import conn_state_layout, buffer_queue_layout, legacy_buffer_layout
from .records import EventType, LegacyReason, DropReason, NO_CONNECTION


__all__ = ["FrameDecision", "event_slots"]


def event_slots(params):
    """Event slots of one operation: the main event, one BUF_DONE per queue slot, and CMD_DONE."""
    return params.buffers_per_conn + 2


class FrameDecision(wiring.Component):
    """Combinational decision for one received frame (R10–R23).

    The ``events`` array holds the main event (RX_PLACED, LEGACY or DROP) in slot 0 and the
    BUF_DONE of queue slot ``i`` in slot ``i + 1``; ``event_valid`` says which are sent.
    """

    def __init__(self, params):
        self._params = params
        slots = event_slots(params)
        super().__init__({
            "desc":         In(rx_descriptor_layout(params)),
            "hit":          In(1),
            "index":        In(16),
            "state":        In(conn_state_layout),
            "queue":        In(buffer_queue_layout(params)),
            "legacy_valid": In(1),
            "legacy_head":  In(legacy_buffer_layout),
            "held":         In(1),  # the frame has been waiting for a user buffer
            "timed_out":    In(1),  # ... for BUF_REQ_TIMEOUT cycles
            "high_water":   In(1),  # the receive packet buffer is at its high-water mark

            "state_write":  Out(1),
            "new_state":    Out(conn_state_layout),
            "queue_write":  Out(1),
            "new_queue":    Out(buffer_queue_layout(params)),
            "legacy_pop":   Out(1),
            "hold":         Out(1),  # keep the frame at the head: it waits for a user buffer
            "job_valid":    Out(1),
            "job":          Out(dma_job_layout(params)),
            "events":       Out(data.ArrayLayout(event_layout, slots)),
            "event_valid":  Out(slots),
        })

    def elaborate(self, platform):
        p = self._params
        m = Module()
        desc, state, queue = self.desc, self.state, self.queue
        depth = p.buffers_per_conn

        # Outcome of the parser's classification and of the rules for delegated frames.
        drop_class = ((desc.cls == FrameClass.MAC_ERROR) | (desc.cls == FrameClass.TRUNCATED) |
                      (desc.cls == FrameClass.OVERSIZE))
        delegated  = (desc.cls == FrameClass.TCP) & self.hit
        special    = desc.special | (desc.flags & (TCP_SYN | TCP_FIN | TCP_RST | TCP_URG)).any()
        in_seq     = desc.seq == state.rcv_nxt
        advance    = desc.payload_len + desc.flags[0] + desc.flags[1]  # FIN and SYN count one

        # Room in the posted buffers, oldest first: each takes what it can of what is left.
        left  = [Signal(17, name=f"left{i}") for i in range(depth + 1)]
        take  = [Signal(17, name=f"take{i}") for i in range(depth)]
        m.d.comb += left[0].eq(desc.payload_len)
        for i in range(depth):
            slot = queue.slots[i]
            room = Mux(i < queue.count, slot.length - slot.filled, 0)
            m.d.comb += [take[i].eq(Mux(room < left[i], room, left[i])),
                         left[i + 1].eq(left[i] - take[i])]
        fits = left[depth] == 0

        place      = Signal()
        legacy     = Signal()
        reason     = Signal(LegacyReason)
        set_sync   = Signal()
        do_advance = Signal()
        with m.If(drop_class):
            pass
        with m.Elif(desc.cls == FrameClass.NOT_TCP):
            m.d.comb += [legacy.eq(1), reason.eq(LegacyReason.NOT_TCP)]
        with m.Elif(desc.cls == FrameClass.CHECKSUM):
            m.d.comb += [legacy.eq(1), reason.eq(LegacyReason.CHECKSUM)]
        with m.Elif(~self.hit):
            m.d.comb += [legacy.eq(1), reason.eq(LegacyReason.NO_MATCH)]
        with m.Elif(special):
            m.d.comb += [legacy.eq(1), reason.eq(LegacyReason.SPECIAL), set_sync.eq(1),
                         do_advance.eq(in_seq)]
        with m.Elif(state.sync_req):
            m.d.comb += [legacy.eq(1), reason.eq(LegacyReason.SYNC), do_advance.eq(in_seq)]
        with m.Elif(desc.payload_len == 0):
            m.d.comb += [legacy.eq(1), reason.eq(LegacyReason.NO_PAYLOAD)]
        with m.Elif(~in_seq):
            m.d.comb += [legacy.eq(1), reason.eq(LegacyReason.OUT_OF_SEQ), set_sync.eq(1)]
        with m.Elif(~fits):
            # R17–R19: wait for a user buffer, until the packet buffer or the timer runs out.
            with m.If(self.held & self.high_water):
                m.d.comb += [legacy.eq(1), reason.eq(LegacyReason.HWM), set_sync.eq(1),
                             do_advance.eq(1)]
            with m.Elif(self.held & self.timed_out):
                m.d.comb += [legacy.eq(1), reason.eq(LegacyReason.BUF_TIMEOUT),
                             set_sync.eq(1), do_advance.eq(1)]
            with m.Else():
                m.d.comb += self.hold.eq(1)
        with m.Else():
            m.d.comb += place.eq(1)
        # The first time a connection waits, the driver is asked for a buffer; a request stays
        # open (BUF_REQ set) until a frame of the connection is finally decided.
        request = self.hold & ~state.buf_req

        # A legacy upload that cannot be delivered is dropped as if never received.
        no_legacy = legacy & ~self.legacy_valid
        too_small = legacy & self.legacy_valid & (self.legacy_head.length < desc.frame_len)
        legacy_ok = legacy & self.legacy_valid & ~too_small
        m.d.comb += self.legacy_pop.eq(legacy_ok)

        # State portion. A legacy upload that cannot be delivered changes nothing but ending the
        # buffer request, as does a frame decided without needing one.
        m.d.comb += [
            self.new_state.eq(state),
            self.new_state.buf_req.eq(self.hold),
            self.state_write.eq(delegated & (~self.hold | request)),
        ]
        with m.If(place):
            m.d.comb += self.new_state.rcv_nxt.eq(state.rcv_nxt + desc.payload_len)
        with m.If(do_advance & legacy_ok):
            m.d.comb += self.new_state.rcv_nxt.eq(state.rcv_nxt + advance)
        with m.If(set_sync & legacy_ok):
            m.d.comb += self.new_state.sync_req.eq(1)

        # Buffer portion: fill in order, complete full buffers and, with PSH, the last one
        # touched; completed buffers are always a prefix of the queue, which is then compacted.
        psh = desc.flags[TCP_PSH.bit_length() - 1]
        filled    = [Signal(32, name=f"filled{i}") for i in range(depth)]
        completed = Signal(depth)
        for i in range(depth):
            slot = queue.slots[i]
            last_touched = (take[i] != 0) & ((take[i + 1] == 0) if i + 1 < depth else 1)
            m.d.comb += [
                filled[i].eq(slot.filled + take[i]),
                completed[i].eq((i < queue.count) &
                                ((filled[i] == slot.length) | (psh & last_touched))),
            ]
        n_completed = Signal(range(depth + 1))
        m.d.comb += n_completed.eq(sum(completed[i] for i in range(depth)))
        m.d.comb += [self.queue_write.eq(place), self.new_queue.count.eq(queue.count - n_completed)]
        for shift in range(depth + 1):
            with m.If(n_completed == shift):
                for i in range(depth - shift):
                    src = queue.slots[i + shift]
                    m.d.comb += [self.new_queue.slots[i].eq(src),
                                 self.new_queue.slots[i].filled.eq(filled[i + shift])]

        # DMA job: placed payload into the segments, a legacy frame whole, or nothing.
        job = self.job
        m.d.comb += [job.buf_start.eq(desc.buf_start), job.frame_beats.eq(desc.stored_beats),
                     self.job_valid.eq(~self.hold | request)]
        with m.If(self.hold):
            m.d.comb += job.kind.eq(JobKind.FENCE)
        with m.Elif(place):
            m.d.comb += [job.kind.eq(JobKind.WRITE), job.src_offset.eq(desc.payload_offset),
                         job.n_segments.eq(sum((take[i] != 0) for i in range(depth)))]
            for i in range(depth):
                slot = queue.slots[i]
                m.d.comb += [job.segments[i].address.eq(slot.address + slot.filled),
                             job.segments[i].length.eq(take[i])]
        with m.Elif(legacy_ok):
            m.d.comb += [job.kind.eq(JobKind.WRITE), job.src_offset.eq(0), job.n_segments.eq(1),
                         job.segments[0].address.eq(self.legacy_head.address),
                         job.segments[0].length.eq(desc.frame_len)]
        with m.Else():
            m.d.comb += job.kind.eq(JobKind.DISCARD)

        # Events.
        main = self.events[0]
        m.d.comb += [main.index.eq(Mux(delegated, self.index, NO_CONNECTION)),
                     self.event_valid[0].eq(~self.hold | request)]
        with m.If(self.hold):
            m.d.comb += [main.code.eq(EventType.BUF_REQ),
                         main.body.buf_req.bytes.eq(left[depth])]  # the shortfall
        with m.Elif(place):
            body = main.body.rx_placed
            m.d.comb += [main.code.eq(EventType.RX_PLACED), body.seq.eq(desc.seq),
                         body.ack.eq(desc.ack), body.window.eq(desc.window),
                         body.flags.eq(desc.flags), body.ts_present.eq(desc.ts_present),
                         body.length.eq(desc.payload_len), body.tsval.eq(desc.tsval),
                         body.tsecr.eq(desc.tsecr)]
        with m.Elif(legacy_ok):
            body = main.body.legacy
            m.d.comb += [main.code.eq(EventType.LEGACY), body.tag.eq(self.legacy_head.tag),
                         body.frame_len.eq(desc.frame_len), body.reason.eq(reason),
                         body.ip_csum_bad.eq(desc.ip_csum_bad),
                         body.tcp_csum_bad.eq(desc.tcp_csum_bad)]
        with m.Else():
            body = main.body.drop
            m.d.comb += [main.code.eq(EventType.DROP), body.frame_len.eq(desc.frame_len)]
            with m.Switch(desc.cls):
                with m.Case(FrameClass.MAC_ERROR):
                    m.d.comb += body.reason.eq(DropReason.MAC_ERROR)
                with m.Case(FrameClass.TRUNCATED):
                    m.d.comb += body.reason.eq(DropReason.TRUNCATED)
                with m.Case(FrameClass.OVERSIZE):
                    m.d.comb += body.reason.eq(DropReason.OVERSIZE)
                with m.Default():
                    m.d.comb += body.reason.eq(Mux(no_legacy, DropReason.NO_LEGACY_BUFFER,
                                                   DropReason.LEGACY_TOO_SMALL))
        for i in range(depth):
            done = self.events[i + 1]
            m.d.comb += [done.code.eq(EventType.BUF_DONE), done.index.eq(self.index),
                         done.body.buf_done.tag.eq(queue.slots[i].tag),
                         done.body.buf_done.bytes.eq(filled[i]),
                         self.event_valid[i + 1].eq(place & completed[i])]
        return m
