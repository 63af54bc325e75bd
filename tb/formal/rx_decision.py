"""The room sums a decision leaves with its queue.

The receive engine keeps the prefix sums of each queue's rooms beside it, and the decisions
update them rather than add them up again (``docs/architecture.md``, "The rooms added up as a
queue is written"): a frame chooses among differences :class:`~tcpdct.rx_decision.QueueFill`
worked out, a POST_BUFFER adds its length to the room ahead of its slot. For any queue whose
posted buffers have room (the command unit refuses an empty one, and a frame completes a buffer
it fills), given sums that are that queue's for every slot it posts, the sums each decision
gives are those of the queue it writes (:class:`~tcpdct.rx_decision.RoomSums`, added up from
scratch) for every slot that queue posts. Combinational: every input is free in the one step
checked, the payload, the PSH flag and the command's length among them.

The receive engine's own proof (``rx_engine_sums``) checks the same of the sums it loads, through
its memories and forwarding, less deep: with the decisions' adders and subtractors in the loop,
each cycle costs the solver more.
"""

from amaranth.asserts import AnySeq
from amaranth.hdl import Assert, Assume, Cat, Elaboratable, Signal

from tcpdct.cmd_unit import CommandDecision
from tcpdct.dct_layouts import buffer_queue_layout
from tcpdct.params import Params
from tcpdct.rx_decision import FrameDecision, QueueFill, RoomSums, room_sums_layout

from .common import drive_inputs, harness_module
from .runner import Proof


__all__ = ["DecisionSumsHarness", "proofs"]


def params(buffers):
    """Small tables; ``buffers`` per connection."""
    return Params(n_entries=4, buffers_per_conn=buffers, legacy_ring_depth=4)


#: Two buffers per connection already have every case: a payload ending inside the first or
#: exactly at its end, a PSH completing it with room left, both completed, and the second slot
#: moved down.
PARAMS = params(2)


def posted_sums_match(sums, reference, count, depth):
    """Whether ``sums`` equal ``reference`` (both ``room_sums_layout``) for slots below
    ``count``."""
    return Cat((i >= count) | ((sums.through[i] == reference.through[i])
                               & (sums.has_room[i] == reference.has_room[i]))
               for i in range(depth)).all()


class DecisionSumsHarness(Elaboratable):
    """The sums :class:`FrameDecision` and :class:`CommandDecision` (or variants with the same
    ports) give with their new queue, against that queue's rooms added up."""

    def __init__(self, frame_class=FrameDecision, command_class=CommandDecision, params=PARAMS):
        self.frame_class = frame_class
        self.command_class = command_class
        self.params = params

    def elaborate(self, platform):
        p = self.params
        depth = p.buffers_per_conn
        m, _ = harness_module()
        queue = Signal(buffer_queue_layout(p))
        sums = Signal(room_sums_layout(p))
        m.d.comb += [queue.eq(AnySeq(len(queue.as_value()))),
                     sums.eq(AnySeq(len(sums.as_value())))]
        m.submodules.queue_sums = queue_sums = RoomSums(p)
        m.d.comb += queue_sums.queue.eq(queue)
        # Well formed: at most ``depth`` buffers, each with room, and the sums kept for them.
        m.d.comb += [
            Assume(queue.count <= depth),
            Assume(Cat((i >= queue.count) | (queue.slots[i].room != 0)
                       for i in range(depth)).all()),
            Assume(posted_sums_match(sums, queue_sums.sums, queue.count, depth)),
        ]

        m.submodules.fill = fill = QueueFill(p)
        m.submodules.frame = frame = self.frame_class(p)
        m.submodules.command = command = self.command_class(p)
        drive_inputs(m, fill)
        drive_inputs(m, frame)
        drive_inputs(m, command)
        m.d.comb += [
            fill.count.eq(queue.count), fill.sums.eq(sums),
            fill.payload_len.eq(frame.desc.payload_len),
            frame.queue.eq(queue), frame.sums.eq(sums), frame.fill.eq(fill.fill),
            command.queue.eq(queue), command.sums.eq(sums),
        ]

        for name, decision in (("frame", frame), ("command", command)):
            m.submodules[f"{name}_sums"] = left = RoomSums(p)
            m.d.comb += [
                left.queue.eq(decision.new_queue),
                Assert(~decision.queue_write
                       | posted_sums_match(decision.new_sums, left.sums,
                                           decision.new_queue.count, depth),
                       f"{name}: sums left are not those of the queue left"),
            ]
        return m


def proofs():
    # The solver's time grows fast with the buffers: 2 s for 2, 2 minutes for 3, more than 10
    # for 4 (the unit test test_decisions_leave_the_room_sums_of_their_queue covers 4 and 5,
    # on random queues).
    return [
        Proof("rx_decision_sums", DecisionSumsHarness, "bmc", 1, quick=True,
              description="a frame's and a command's new room sums are their new queue's "
                          "(2 buffers)"),
        Proof("rx_decision_sums_3", lambda: DecisionSumsHarness(params=params(3)), "bmc", 1,
              timeout=1200, description="the same, with 3 buffers per connection"),
    ]
