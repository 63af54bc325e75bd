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
from .rx_decision import event_slots


__all__ = ["CommandChecks", "CommandDecision", "command_checks_layout", "delegate_key"]


def delegate_key(delegate):
    """The :class:`ConnKey` a DELEGATE body names, as a value to assign to a ``ConnKey``."""
    return Cat(delegate.local_ip, delegate.remote_ip, delegate.local_port, delegate.remote_port)


#: The checks of a command that depend on the command record alone (and on the valid bits):
#: ``known`` opcode, ``in_range`` index, ``delegated`` (the indexed entry is valid), and, for
#: a posted buffer, ``zero_length`` and ``wraps`` (``address + length > 2**64``).
command_checks_layout = data.StructLayout({
    "known":       1,
    "in_range":    1,
    "delegated":   1,
    "zero_length": 1,
    "wraps":       1,
})


class CommandChecks(wiring.Component):
    """Combinational: the checks of :data:`command_checks_layout`, a cycle ahead of
    :class:`CommandDecision`, so that the 65-bit sum of a buffer's end and the selection of one
    valid bit of many are not in the same cycle as the decision."""

    def __init__(self, params):
        self._params = params
        super().__init__({
            "command":   In(command_layout),
            "cam_valid": In(params.n_entries),
            "checks":    Out(command_checks_layout),
        })

    def elaborate(self, platform):
        p = self._params
        m = Module()
        cmd, checks = self.command, self.checks
        with m.Switch(cmd.code):
            for op in Opcode:
                with m.Case(op):
                    m.d.comb += checks.known.eq(1)
        in_range = cmd.index < p.n_entries
        # POST_BUFFER and POST_LEGACY share a body layout.
        post = cmd.body.post_buffer
        end  = post.address + post.length
        m.d.comb += [
            checks.in_range.eq(in_range),
            checks.delegated.eq(in_range &
                                self.cam_valid.bit_select(cmd.index[:p.index_bits], 1)),
            checks.zero_length.eq(post.length == 0),
            checks.wraps.eq(end[64] & end[:64].any()),  # a buffer may end exactly at 2**64
        ]
        return m


class CommandDecision(wiring.Component):
    """Combinational decision for one command, given its :class:`CommandChecks` (``checks``,
    registered a cycle earlier).

    ``events`` slot 0 is STATE (RECLAIM, QUERY), slot ``i + 1`` the BUF_DONE of queue slot ``i``
    (RECLAIM), and the last slot CMD_DONE.
    """

    def __init__(self, params):
        self._params = params
        slots = event_slots(params)
        super().__init__({
            "command":            In(command_layout),
            "checks":             In(command_checks_layout),
            "key_present":        In(1),  # the DELEGATE key is held by a valid entry
            "state":              In(conn_state_layout),
            "queue":              In(buffer_queue_layout(params)),
            "legacy_full":        In(1),

            "state_write":        Out(1),
            "new_state":          Out(conn_state_layout),
            "queue_write":        Out(1),
            "new_queue":          Out(buffer_queue_layout(params)),
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

        checks    = self.checks
        in_range  = checks.in_range
        delegated = checks.delegated
        known     = checks.known
        post      = cmd.body.post_buffer  # POST_BUFFER and POST_LEGACY share a body layout

        status = Signal(CmdStatus)
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
            self._check_buffer(m, status, checks, full=self.legacy_full)
        with m.Elif(~delegated):
            m.d.comb += status.eq(CmdStatus.NOT_DELEGATED)
        with m.Elif(opcode == Opcode.POST_BUFFER):
            self._check_buffer(m, status, checks, full=queue.count == depth)
        ok = status == CmdStatus.OK

        delegate = cmd.body.delegate
        m.d.comb += [
            self.new_state.eq(state),
            self.new_queue.eq(queue),
            self.cam_write_key.eq(delegate_key(delegate)),
            self.legacy_push_buffer.address.eq(post.address),
            self.legacy_push_buffer.length.eq(post.length),
            self.legacy_push_buffer.tag.eq(post.tag),
            self.job.kind.eq(JobKind.FENCE),
        ]
        # The slot after the last posted one takes the posted buffer whatever the opcode: only
        # POST_BUFFER counts it in, and a slot at or beyond ``count`` is never read (DELEGATE and
        # RECLAIM set ``count`` to 0). So neither the opcode nor the status steers the hundreds
        # of bits of a queue record, only its count and the write enables.
        for i in range(depth):
            with m.If(queue.count == i):
                slot = self.new_queue.slots[i]
                m.d.comb += [slot.address.eq(post.address), slot.length.eq(post.length),
                             slot.filled.eq(0), slot.room.eq(post.length), slot.tag.eq(post.tag)]
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

    @staticmethod
    def _check_buffer(m, status, checks, *, full):
        """The checks of a posted buffer, user or legacy, in their order (R41)."""
        with m.If(checks.zero_length):
            m.d.comb += status.eq(CmdStatus.ZERO_LENGTH)
        with m.Elif(checks.wraps):
            m.d.comb += status.eq(CmdStatus.ADDRESS_WRAP)
        with m.Elif(full):
            m.d.comb += status.eq(CmdStatus.QUEUE_FULL)
