"""What happens to one received frame: the rules of SPEC section 3 as combinational logic.

Inputs are the frame's descriptor, the match result and the entry's state and buffer queue as
read from the DCT; outputs are the entry's new contents, the DMA job and the events. The order of
the checks is the table in ``docs/architecture.md`` ("Decisions for a delegated connection").

The decision is split into steps, each on the registered results of the one before. The
receive engine keeps the prefix sums of each queue's rooms beside it (``room_sums_layout``), so
a frame starts from them: :class:`QueueFill` works out how the payload would fill the posted
buffers while :class:`FrameChecks` runs every check but the room check, in one cycle; and
:class:`FrameDecision` decides, in the next, and gives the sums of the queue it leaves, chosen
from differences :class:`QueueFill` worked out rather than added up again (:class:`RoomSums`
adds them up from scratch, the reference the tests and proofs hold the kept sums to). Done in
one cycle, with the buffers filled one after the other, the decision was the core's critical
path (``docs/performance.md``, "Critical paths").
"""

from amaranth.hdl import Module, Signal, Mux, Cat, Const
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .logic import any_of, tree_sum
from .headers import TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_URG
from .layouts import FrameClass, JobKind, rx_descriptor_layout, dma_job_layout, event_layout
from .dct_layouts import (conn_state_layout, buffer_queue_layout, legacy_buffer_layout,
                          user_buffer_layout)
from .records import EventType, LegacyReason, DropReason, NO_CONNECTION


__all__ = ["RoomSums", "QueueFill", "FrameChecks", "FrameDecision", "event_slots",
           "room_sums_layout", "queue_fill_layout", "frame_checks_layout", "room_wait_layout",
           "room_wait"]


def event_slots(params):
    """Event slots of one operation: the main event, one BUF_DONE per queue slot, and CMD_DONE."""
    return params.buffers_per_conn + 2


#: What reaches one buffer, or what a payload lacks: less than ``2**16`` (``payload_len`` is
#: 16 bits), plus a bit so that a difference of two such values needs no care.
_TAKE_BITS = 17


def _sum_bits(params):
    """Width of a sum of rooms: 32-bit rooms, ``buffers_per_conn`` of them."""
    return 32 + (params.buffers_per_conn - 1).bit_length()


def room_sums_layout(params):
    """The room up to each slot of a queue: ``through[i]`` is the sum of the rooms of slots
    ``0 .. i`` (of every slot, valid or not: only ``through[i]`` for ``i < count`` is the room of
    posted buffers); ``has_room[i]`` says that slot ``i`` has room. The room ahead of slot ``i``
    is ``through[i - 1]``, and 0 ahead of slot 0, which is not stored: the receive engine keeps
    these sums in a memory beside the buffer portion. Only the posted slots' sums are kept
    exact (:class:`FrameDecision`, :class:`tcpdct.cmd_unit.CommandDecision`): nothing reads
    the others."""
    return data.StructLayout({
        "through":  data.ArrayLayout(_sum_bits(params), params.buffers_per_conn),
        "has_room": params.buffers_per_conn,
    })


def queue_fill_layout(params):
    """How a payload of ``payload_len`` bytes fills an entry's queue, slot by slot.

    Slot ``i`` is *touched* if the payload reaches it (it is posted, has room, and
    ``payload_len > before[i]``), *full* if it is posted and the payload fills it
    (``payload_len >= before[i + 1]``) or it has no room; so a slot not posted is neither, which
    :class:`FrameDecision` relies on. ``rest[i]`` is what reaches it
    (``payload_len - before[i]``, meaningful when it is touched). The payload *fits* if it is at
    most the room of the posted buffers; ``shortfall`` is what it lacks when it does not.

    The room sums of the queue the payload leaves are the old ones less what goes before the
    first slot kept, so they are worked out here, a cycle ahead, for every slot that may come
    first: ``left[k]`` is the room through slot ``k`` less the payload (``through[k] -
    payload_len``: what remains when the payload reaches the first slot kept), ``span[s][k]``
    the room of slots ``s .. k`` (``through[k] - through[s - 1]``, for ``1 <= s <= k``: what
    remains when a PSH completes the last slot it touches and the slots kept start untouched).
    """
    depth = params.buffers_per_conn
    return data.StructLayout({
        "fits":      1,
        "shortfall": _TAKE_BITS,
        "touched":   depth,
        "full":      depth,
        "rest":      data.ArrayLayout(_TAKE_BITS, depth),
        "left":      data.ArrayLayout(_sum_bits(params), depth),
        "span":      data.ArrayLayout(data.ArrayLayout(_sum_bits(params), depth), depth),
    })


class RoomSums(wiring.Component):
    """Combinational: the prefix sums of the rooms of ``queue``, added up from scratch.

    The definition of the sums the receive engine keeps with each queue, which its decisions
    update without adding up again; the formal proofs ``rx_decision_sums`` and
    ``rx_engine_sums`` hold the kept sums to it. A balanced tree of adders per slot, over every
    slot, posted or not.
    """

    def __init__(self, params):
        self._params = params
        super().__init__({
            "queue": In(buffer_queue_layout(params)),
            "sums":  Out(room_sums_layout(params)),
        })

    def elaborate(self, platform):
        p = self._params
        m = Module()
        rooms = [self.queue.slots[i].room for i in range(p.buffers_per_conn)]
        for i in range(p.buffers_per_conn):
            m.d.comb += [self.sums.through[i].eq(tree_sum(rooms[:i + 1])),
                         self.sums.has_room[i].eq(rooms[i] != 0)]
        return m


class QueueFill(wiring.Component):
    """Combinational: how ``payload_len`` bytes fill the posted buffers, oldest first, given the
    room ahead of each slot (``sums``, from :class:`RoomSums` a cycle earlier) and the number of
    posted buffers ``count``: one comparison per slot, all in parallel."""

    def __init__(self, params):
        self._params = params
        super().__init__({
            "payload_len": In(16),
            "count":       In(params.buffers_per_conn.bit_length()),
            "sums":        In(room_sums_layout(params)),
            "fill":        Out(queue_fill_layout(params)),
        })

    def elaborate(self, platform):
        p = self._params
        m = Module()
        depth = p.buffers_per_conn
        count, fill, length = self.count, self.fill, self.payload_len
        # The room ahead of slot i, for i in 0 .. depth.
        before = [Const(0)] + [self.sums.through[i] for i in range(depth)]

        within = Signal(depth)  # the payload fits in the posted buffers up to slot i
        for i in range(depth):
            posted = i < count
            m.d.comb += [
                fill.touched[i].eq(posted & self.sums.has_room[i] & (length > before[i])),
                # A slot without room (never in a well-formed queue) counts as full, as a
                # comparison of its filled bytes with its length would.
                fill.full[i].eq(posted & ((length >= before[i + 1]) | ~self.sums.has_room[i])),
                fill.rest[i].eq(length - before[i]),
                within[i].eq(posted & (length <= before[i + 1])),
            ]
        m.d.comb += fill.fits.eq((length == 0) | within.any())
        for k in range(depth):
            m.d.comb += fill.left[k].eq(before[k + 1] - length)
            for s in range(1, k + 1):
                m.d.comb += fill.span[s][k].eq(before[k + 1] - before[s])
        with m.Switch(count):
            for posted in range(depth + 1):
                with m.Case(posted):
                    m.d.comb += fill.shortfall.eq(length - before[posted])
        return m


#: The checks of a frame that come before the room check, in the order of the table in
#: ``docs/architecture.md``: ``legacy`` with its ``reason``, ``set_sync`` and ``do_advance`` (a
#: check sends it to legacy), or ``room_check`` (it passed them all: it is placed if it fits),
#: or neither (the parser's class drops it). ``delegated``: a TCP frame that hit. Should
#: it go to legacy: ``legacy_buffer``, a legacy buffer is posted, and ``legacy_fits``, the frame
#: fits in it.
frame_checks_layout = data.StructLayout({
    "legacy":        1,
    "reason":        LegacyReason,
    "set_sync":      1,
    "do_advance":    1,
    "room_check":    1,
    "delegated":     1,
    "legacy_buffer": 1,
    "legacy_fits":   1,
})


class FrameChecks(wiring.Component):
    """Combinational: the checks of one received frame that do not depend on the room in its
    buffers (R10–R16), and whether the head of the legacy ring could take it, a cycle ahead of
    :class:`FrameDecision`, which adds the room check. The legacy ring changes only when an
    operation is emitted, so its head is the same for the whole operation."""

    def __init__(self, params):
        super().__init__({
            "desc":         In(rx_descriptor_layout(params)),
            "hit":          In(1),
            "state":        In(conn_state_layout),
            "legacy_valid": In(1),
            "legacy_head":  In(legacy_buffer_layout),
            "checks":       Out(frame_checks_layout),
        })

    def elaborate(self, platform):
        m = Module()
        desc, state, out = self.desc, self.state, self.checks
        drop_class = ((desc.cls == FrameClass.MAC_ERROR) | (desc.cls == FrameClass.TRUNCATED) |
                      (desc.cls == FrameClass.OVERSIZE))
        special    = desc.special | (desc.flags & (TCP_SYN | TCP_FIN | TCP_RST | TCP_URG)).any()
        in_seq     = desc.seq == state.rcv_nxt
        m.d.comb += [
            out.delegated.eq((desc.cls == FrameClass.TCP) & self.hit),
            out.legacy_buffer.eq(self.legacy_valid),
            out.legacy_fits.eq(self.legacy_head.length >= desc.frame_len),
        ]

        def legacy(reason, *, set_sync=0, do_advance=0):
            return [out.legacy.eq(1), out.reason.eq(reason), out.set_sync.eq(set_sync),
                    out.do_advance.eq(do_advance)]

        with m.If(drop_class):
            pass
        with m.Elif(desc.cls == FrameClass.NOT_TCP):
            m.d.comb += legacy(LegacyReason.NOT_TCP)
        with m.Elif(desc.cls == FrameClass.CHECKSUM):
            m.d.comb += legacy(LegacyReason.CHECKSUM)
        with m.Elif(~out.delegated):
            # No delegated connection. A class the parser never produces (6, 7) lands here too,
            # hit or not: it is delivered to legacy like a frame of no connection, and never
            # reaches the room check, which the receive engine would make without a fill (it
            # takes a frame that is not delegated straight from LOAD to DECIDE).
            m.d.comb += legacy(LegacyReason.NO_MATCH)
        with m.Elif(special):
            m.d.comb += legacy(LegacyReason.SPECIAL, set_sync=1, do_advance=in_seq)
        with m.Elif(state.sync_req):
            m.d.comb += legacy(LegacyReason.SYNC, do_advance=in_seq)
        with m.Elif(desc.payload_len == 0):
            m.d.comb += legacy(LegacyReason.NO_PAYLOAD)
        with m.Elif(~in_seq):
            m.d.comb += legacy(LegacyReason.OUT_OF_SEQ, set_sync=1)
        with m.Else():
            m.d.comb += out.room_check.eq(1)
        return m


#: What the room check (R17–R19) makes of a frame: ``hold``, it waits for a user buffer (it
#: passed every other check and does not fit); ``expired``, it has been waiting, still does not
#: fit, and the packet buffer or the timer has run out (it goes to legacy). Worked out a cycle
#: ahead of :class:`FrameDecision` (:func:`room_wait`), so that whether the frame waits, which
#: decides whether the receive engine takes the next operation at once, is a register.
room_wait_layout = data.StructLayout({
    "hold":    1,
    "expired": 1,
})


def room_wait(wait, checks, fits, held, high_water, timed_out):
    """The statements that set ``wait`` (``room_wait_layout``) to the room check's outcome for a
    frame whose other checks are ``checks`` (``frame_checks_layout``) and whose payload ``fits``
    its posted buffers; ``held``: it has been waiting, ``timed_out``: for BUF_REQ_TIMEOUT
    cycles, ``high_water``: the receive packet buffer is at its high-water mark."""
    no_room = checks.room_check & ~fits
    expired = no_room & held & (high_water | timed_out)
    return [wait.hold.eq(no_room & ~expired), wait.expired.eq(expired)]


class FrameDecision(wiring.Component):
    """Combinational decision for one received frame (R10–R23), given the outcome of its other
    checks (``checks``, from :class:`FrameChecks`) and how its payload fills the queue
    (``fill``, from :class:`QueueFill`), both registered a cycle earlier, and the queue's room
    sums (``sums``). ``new_sums`` are the room sums of ``new_queue``.

    The ``events`` array holds the main event (RX_PLACED, LEGACY or DROP) in slot 0 and the
    BUF_DONE of queue slot ``i`` in slot ``i + 1``; ``event_valid`` says which are sent.
    """

    def __init__(self, params):
        self._params = params
        slots = event_slots(params)
        super().__init__({
            "desc":         In(rx_descriptor_layout(params)),
            "index":        In(16),
            "state":        In(conn_state_layout),
            "queue":        In(buffer_queue_layout(params)),
            "sums":         In(room_sums_layout(params)),
            "fill":         In(queue_fill_layout(params)),
            "checks":       In(frame_checks_layout),
            "legacy_head":  In(legacy_buffer_layout),
            "wait":         In(room_wait_layout),
            "high_water":   In(1),  # the receive packet buffer is at its high-water mark

            "state_write":  Out(1),
            "new_state":    Out(conn_state_layout),
            "queue_write":  Out(1),
            "new_queue":    Out(buffer_queue_layout(params)),
            "new_sums":     Out(room_sums_layout(params)),
            "legacy_pop":   Out(1),
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

        checks     = self.checks
        delegated  = checks.delegated
        advance    = desc.payload_len + desc.flags[0] + desc.flags[1]  # FIN and SYN count one

        # Each posted buffer takes what reaches it, up to its room, oldest first.
        fill = self.fill
        take = [Signal(_TAKE_BITS, name=f"take{i}") for i in range(depth)]
        for i in range(depth):
            m.d.comb += take[i].eq(Mux(fill.full[i], queue.slots[i].room[:_TAKE_BITS],
                                       Mux(fill.touched[i], fill.rest[i], 0)))

        # The room check (R17–R19): placed if it fits, else wait for a user buffer, until the
        # packet buffer or the timer runs out (``wait``, a cycle ahead).
        hold       = self.wait.hold      # keep the frame at the head: it waits for a buffer
        expired    = self.wait.expired
        place      = Signal()
        legacy     = Signal()
        reason     = Signal(LegacyReason)
        set_sync   = Signal()
        do_advance = Signal()
        m.d.comb += [
            place.eq(checks.room_check & fill.fits),
            legacy.eq(checks.legacy | expired),
            reason.eq(Mux(~checks.room_check, checks.reason,
                          Mux(self.high_water, LegacyReason.HWM, LegacyReason.BUF_TIMEOUT))),
            set_sync.eq(checks.set_sync | expired),
            do_advance.eq(checks.do_advance | expired),
        ]
        # The first time a connection waits, the driver is asked for a buffer; a request stays
        # open (BUF_REQ set) until a frame of the connection is finally decided.
        request = hold & ~state.buf_req

        # A legacy upload that cannot be delivered is dropped as if never received.
        no_legacy = legacy & ~checks.legacy_buffer
        legacy_ok = legacy & checks.legacy_buffer & checks.legacy_fits
        m.d.comb += self.legacy_pop.eq(legacy_ok)

        # State portion. A legacy upload that cannot be delivered changes nothing but ending the
        # buffer request, as does a frame decided without needing one.
        m.d.comb += [
            self.new_state.eq(state),
            self.new_state.buf_req.eq(hold),
            self.state_write.eq(delegated & (~hold | request)),
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
            last_touched = fill.touched[i] & (~fill.touched[i + 1] if i + 1 < depth else 1)
            # Only a posted slot is full or touched (``queue_fill_layout``), so ``i < count`` is
            # not tested again here: that compare of the queue's count put it at the head of the
            # compaction's path (the receive engine's deepest group of endpoints, 366 of them).
            m.d.comb += [
                filled[i].eq(slot.filled + take[i]),
                completed[i].eq(fill.full[i] | (psh & last_touched)),
            ]
        n_completed = Signal(range(depth + 1))
        m.d.comb += n_completed.eq(sum(completed[i] for i in range(depth)))
        m.d.comb += [self.queue_write.eq(place), self.new_queue.count.eq(queue.count - n_completed)]
        # Slot ``i`` moves down by the number completed. That number is where the prefix of
        # completed slots ends (a posted slot always has room: the command unit refuses an empty
        # buffer, and a slot left without room is full, so completed), decoded from two
        # neighbouring bits rather than counted and compared: the compaction's select was on the
        # receive engine's critical path. Each new slot is then an AND-OR of its candidates.
        moved_by = [Signal(name=f"moved_by{shift}") for shift in range(depth + 1)]
        for shift in range(depth + 1):
            m.d.comb += moved_by[shift].eq((completed[shift - 1] if shift else 1)
                                           & (~completed[shift] if shift < depth else 1))
        moved = [Signal(user_buffer_layout, name=f"moved{i}") for i in range(depth)]
        for i in range(depth):
            src = queue.slots[i]
            m.d.comb += [moved[i].eq(src), moved[i].filled.eq(filled[i]),
                         moved[i].room.eq(src.room - take[i])]
        for i in range(depth):
            m.d.comb += self.new_queue.slots[i].eq(
                any_of(Mux(moved_by[shift], moved[i + shift].as_value(), 0)
                        for shift in range(depth - i)))

        # The new queue's room sums, chosen rather than added up: the rooms of the slots kept
        # are the old ones, but for what the payload takes from the first of them. So the room
        # through new slot ``i`` is the old room through slot ``i + shift`` less the room ahead
        # of the first slot kept, and less what the payload takes from it. Together, that is
        # the payload if it reaches that slot (``left``), else the room ahead of it (``span``:
        # a PSH completed the last slot touched, or the payload ended exactly there, where both
        # are the same). With no slot completed the payload reaches slot 0, if it is placed at
        # all. The sums of slots the new queue does not post are left as they fall.
        for i in range(depth):
            candidates = [Mux(moved_by[shift], self._through_kept(fill, shift, i + shift), 0)
                          for shift in range(depth - i)]
            m.d.comb += [
                self.new_sums.through[i].eq(any_of(candidates)),
                self.new_sums.has_room[i].eq(any_of(moved_by[shift]
                                                    & self.sums.has_room[i + shift]
                                                    for shift in range(depth - i))),
            ]

        # DMA job: placed payload into the segments, a legacy frame whole, or nothing.
        job = self.job
        m.d.comb += [job.buf_start.eq(desc.buf_start), job.frame_beats.eq(desc.stored_beats),
                     self.job_valid.eq(~hold | request)]
        with m.If(hold):
            m.d.comb += job.kind.eq(JobKind.FENCE)
        with m.Elif(place):
            m.d.comb += [job.kind.eq(JobKind.WRITE), job.src_offset.eq(desc.payload_offset),
                         job.n_segments.eq(sum(fill.touched[i] for i in range(depth)))]
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
                     self.event_valid[0].eq(~hold | request)]
        with m.If(hold):
            m.d.comb += [main.code.eq(EventType.BUF_REQ),
                         main.body.buf_req.bytes.eq(fill.shortfall)]
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

    @staticmethod
    def _through_kept(fill, first, k):
        """The room through old slot ``k`` once slot ``first`` is the first kept: less the
        payload if it reaches slot ``first`` (it does if nothing before is completed), else less
        the room ahead of slot ``first``."""
        if first == 0:
            return fill.left[k]
        return Mux(fill.touched[first], fill.left[k], fill.span[first][k])
