"""The command unit: checks a command record and computes its effect on the DCT (SPEC section 5).

The checks run in the order ``docs/architecture.md`` gives ("Commands"); the first that fails is
the status, and a failed command changes nothing (R41). Every command ends with CMD_DONE (R40).
"""

from amaranth.hdl import Cat, Module, Signal, Mux
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .layouts import ConnKey, JobKind, command_layout, dma_job_layout, event_layout
from .dct_layouts import conn_state_layout, buffer_queue_layout, legacy_buffer_layout
from .records import Opcode, CmdStatus, EventType
from .rx_decision import event_slots, room_sums_layout


__all__ = ["CommandChecks", "CommandDecision", "command_checks_layout", "delegate_key"]


def delegate_key(delegate):
    """The :class:`ConnKey` a DELEGATE body names, as a value to assign to a ``ConnKey``."""
    return Cat(delegate.local_ip, delegate.remote_ip, delegate.local_port, delegate.remote_port)


#: What the checks of a command decide before the entry's buffer queue and the legacy ring are
#: known: ``status``, the first check that fails of those on the command record, the valid bits
#: and the CAM's answer (OK if none fails), and, when none fails and a full check comes next,
#: which: ``ring_full_check`` (POST_LEGACY: QUEUE_FULL if the legacy ring is full) or
#: ``queue_full_check`` (POST_BUFFER: QUEUE_FULL if the entry's queue is full).
command_checks_layout = data.StructLayout({
    "status":           CmdStatus,
    "ring_full_check":  1,
    "queue_full_check": 1,
})


class CommandChecks(wiring.Component):
    """Combinational: the checks of a command in their order (R41), all but the full checks,
    whose operands (the entry's queue, the legacy ring) are read later. Registered in the
    command's LOAD, a cycle ahead of :class:`CommandDecision`, so that the decision's write
    enables and CMD_DONE start from a status already chosen, and the 65-bit sum of a buffer's
    end and the selection of one valid bit of many are not in the decision's cycle.

    ``key_present``: the DELEGATE key is held by a valid entry (the CAM's answer).
    """

    def __init__(self, params):
        self._params = params
        super().__init__({
            "command":     In(command_layout),
            "cam_valid":   In(params.n_entries),
            "key_present": In(1),
            "checks":      Out(command_checks_layout),
        })

    def elaborate(self, platform):
        p = self._params
        m = Module()
        cmd, checks = self.command, self.checks
        opcode = cmd.code

        known = Signal()
        with m.Switch(opcode):
            for op in Opcode:
                with m.Case(op):
                    m.d.comb += known.eq(1)
        in_range  = cmd.index < p.n_entries
        delegated = in_range & self.cam_valid.bit_select(cmd.index[:p.index_bits], 1)
        # POST_BUFFER and POST_LEGACY share a body layout.
        post = cmd.body.post_buffer
        end  = post.address + post.length
        zero_length = post.length == 0
        wraps       = end[64] & end[:64].any()  # a buffer may end exactly at 2**64

        status = checks.status
        with m.If(~known):
            m.d.comb += status.eq(CmdStatus.BAD_OPCODE)
        with m.Elif((opcode != Opcode.POST_LEGACY) & ~in_range):
            m.d.comb += status.eq(CmdStatus.BAD_INDEX)
        with m.Elif(opcode == Opcode.DELEGATE):
            with m.If(delegated):
                m.d.comb += status.eq(CmdStatus.IN_USE)
            with m.Elif(self.key_present):
                m.d.comb += status.eq(CmdStatus.DUPLICATE_KEY)
        with m.Elif(opcode == Opcode.POST_LEGACY):
            self._check_buffer(m, status, zero_length, wraps, full_check=checks.ring_full_check)
        with m.Elif(~delegated):
            m.d.comb += status.eq(CmdStatus.NOT_DELEGATED)
        with m.Elif(opcode == Opcode.POST_BUFFER):
            self._check_buffer(m, status, zero_length, wraps, full_check=checks.queue_full_check)
        return m

    @staticmethod
    def _check_buffer(m, status, zero_length, wraps, *, full_check):
        """The checks of a posted buffer, user or legacy, in their order (R41); the full check,
        the last, is the decision's."""
        with m.If(zero_length):
            m.d.comb += status.eq(CmdStatus.ZERO_LENGTH)
        with m.Elif(wraps):
            m.d.comb += status.eq(CmdStatus.ADDRESS_WRAP)
        with m.Else():
            m.d.comb += full_check.eq(1)


class CommandDecision(wiring.Component):
    """Combinational decision for one command, given its :class:`CommandChecks` (``checks``,
    registered a cycle earlier) and the operands of its full checks (``queue``,
    ``legacy_full``). ``sums`` are the queue's room sums, ``new_sums`` those of ``new_queue``.

    ``events`` slot 0 is STATE (RECLAIM, QUERY), slot ``i + 1`` the BUF_DONE of queue slot ``i``
    (RECLAIM), and the last slot CMD_DONE.
    """

    def __init__(self, params):
        self._params = params
        slots = event_slots(params)
        super().__init__({
            "command":            In(command_layout),
            "checks":             In(command_checks_layout),
            "state":              In(conn_state_layout),
            "queue":              In(buffer_queue_layout(params)),
            "sums":               In(room_sums_layout(params)),
            "legacy_full":        In(1),

            "state_write":        Out(1),
            "new_state":          Out(conn_state_layout),
            "queue_write":        Out(1),
            "new_queue":          Out(buffer_queue_layout(params)),
            "new_sums":           Out(room_sums_layout(params)),
            "cam_write":          Out(1),
            "cam_write_key":      Out(ConnKey),
            "cam_write_valid":    Out(1),
            "legacy_push":        Out(1),
            "legacy_push_buffer": Out(legacy_buffer_layout),
            "job":                Out(dma_job_layout(params)),
            "events":             Out(data.ArrayLayout(event_layout, slots)),
            "event_valid":        Out(slots),
        })

    def elaborate(self, platform):
        p = self._params
        m = Module()
        cmd, state, queue = self.command, self.state, self.queue
        depth = p.buffers_per_conn
        opcode = cmd.code
        index  = cmd.index

        post   = cmd.body.post_buffer  # POST_BUFFER and POST_LEGACY share a body layout

        # The full checks, the last of a posted buffer's, on the checks made in LOAD.
        checks = self.checks
        full = ((checks.ring_full_check & self.legacy_full) |
                (checks.queue_full_check & (queue.count == depth)))
        status = Signal(CmdStatus)
        m.d.comb += status.eq(Mux(full, CmdStatus.QUEUE_FULL, checks.status))
        ok = (checks.status == CmdStatus.OK) & ~full

        delegate = cmd.body.delegate
        m.d.comb += [
            self.new_state.eq(state),
            self.new_queue.eq(queue),
            self.new_sums.eq(self.sums),
            self.cam_write_key.eq(delegate_key(delegate)),
            self.legacy_push_buffer.address.eq(post.address),
            self.legacy_push_buffer.length.eq(post.length),
            self.legacy_push_buffer.tag.eq(post.tag),
            self.job.kind.eq(JobKind.FENCE),
        ]
        # The slot after the last posted one takes the posted buffer whatever the opcode: only
        # POST_BUFFER counts it in, and a slot at or beyond ``count`` is never read (DELEGATE and
        # RECLAIM set ``count`` to 0). So neither the opcode nor the status steers the hundreds
        # of bits of a queue record, only its count and the write enables. Its room sum is the
        # one ahead of it plus its length, from registers: the sums of the slots before are
        # unchanged, and those after it are not posted.
        for i in range(depth):
            with m.If(queue.count == i):
                slot = self.new_queue.slots[i]
                ahead = self.sums.through[i - 1] if i else 0
                m.d.comb += [slot.address.eq(post.address), slot.length.eq(post.length),
                             slot.filled.eq(0), slot.room.eq(post.length), slot.tag.eq(post.tag),
                             self.new_sums.through[i].eq(ahead + post.length),
                             self.new_sums.has_room[i].eq(post.length != 0)]
        # What each opcode would write depends on the opcode alone; whether it is written
        # depends on the checks. Only the write enables wait for the status, so that it does not
        # steer the new contents.
        with m.Switch(opcode):
            with m.Case(Opcode.DELEGATE):
                m.d.comb += [
                    self.cam_write.eq(ok), self.cam_write_valid.eq(1),
                    self.state_write.eq(ok),
                    self.new_state.rcv_nxt.eq(delegate.rcv_nxt),
                    self.new_state.snd_nxt.eq(delegate.snd_nxt),
                    self.new_state.last_ack_sent.eq(delegate.rcv_nxt),
                    self.new_state.rcv_wnd.eq(delegate.rcv_wnd),
                    self.new_state.sync_req.eq(0),
                    self.new_state.buf_req.eq(0),
                    self.queue_write.eq(ok),
                    self.new_queue.count.eq(0),
                ]
            with m.Case(Opcode.POST_BUFFER):
                m.d.comb += [self.queue_write.eq(ok), self.new_queue.count.eq(queue.count + 1)]
            with m.Case(Opcode.POST_LEGACY):
                m.d.comb += self.legacy_push.eq(ok)
            with m.Case(Opcode.RESYNC):
                m.d.comb += [self.state_write.eq(ok),
                             self.new_state.rcv_nxt.eq(cmd.body.resync.rcv_nxt),
                             self.new_state.sync_req.eq(0),
                             self.new_state.buf_req.eq(0)]
            with m.Case(Opcode.RECLAIM):
                m.d.comb += [self.cam_write.eq(ok), self.cam_write_valid.eq(0),
                             self.queue_write.eq(ok), self.new_queue.count.eq(0)]

        # Events: STATE, the reclaimed buffers, CMD_DONE.
        reports = ok & ((opcode == Opcode.RECLAIM) | (opcode == Opcode.QUERY))
        report = self.events[0]
        m.d.comb += [
            report.code.eq(EventType.STATE), report.index.eq(index),
            report.body.state.valid.eq(1),
            report.body.state.sync_req.eq(state.sync_req),
            report.body.state.buf_req.eq(state.buf_req),
            report.body.state.n_buffers.eq(queue.count),
            report.body.state.rcv_wnd.eq(state.rcv_wnd),
            report.body.state.rcv_nxt.eq(state.rcv_nxt),
            report.body.state.snd_nxt.eq(state.snd_nxt),
            report.body.state.last_ack_sent.eq(state.last_ack_sent),
            self.event_valid[0].eq(reports),
        ]
        for i in range(depth):
            done = self.events[i + 1]
            m.d.comb += [
                done.code.eq(EventType.BUF_DONE), done.index.eq(index),
                done.body.buf_done.tag.eq(queue.slots[i].tag),
                done.body.buf_done.bytes.eq(queue.slots[i].filled),
                self.event_valid[i + 1].eq(ok & (opcode == Opcode.RECLAIM) & (i < queue.count)),
            ]
        cmd_done = self.events[depth + 1]
        m.d.comb += [
            cmd_done.code.eq(EventType.CMD_DONE), cmd_done.index.eq(index),
            cmd_done.body.cmd_done.opcode.eq(opcode),
            cmd_done.body.cmd_done.status.eq(status),
            self.event_valid[depth + 1].eq(1),
        ]
        return m
