"""Event queue: holds each job's events until the DMA writer reports the job done (R50, R51).

The receive engine queues a job's events as it decides; the host must not see an event before
the data it announces is in host memory. Completions arrive from the DMA writer in job order
with no back-pressure, so they wait in their own small FIFO until the first event of their job
reaches the head of the event FIFO.
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from . import layouts
from .fifo import SyncFIFOFlagged, full_flag


__all__ = ["EventQueue"]


class EventQueue(wiring.Component):
    """Orders events behind the DMA writes of their job.

    Parameters
    ----------
    params : :class:`tcpdct.params.Params`
        Build parameters (unused today; taken for symmetry with the other blocks).
    depth : int
        Events the queue holds, not counting the one registered on the input and the one on
        the output.
    completion_depth : int or None
        Completions the queue holds before the first event of their job has left. ``None``
        means ``depth``. A completion is pending from the DMA writer's ``done`` pulse until its
        job's first event leaves, so this must be at least the number of jobs that can complete
        while their first events wait: if the engine queues a job's events no later than it
        hands the job to the DMA writer, every pending completion has its first event inside
        this queue, and ``depth`` is enough; otherwise add the jobs the DMA writer can hold
        (its job FIFO plus ``DmaWriter.jobs_in_flight`` plus one).

    Members
    -------
    push : In(stream.Signature(layouts.queued_event_layout))
        Events from the receive engine, ``first`` set on the first event of each job; every job
        has at least one event. ``ready`` is low while the queue is full.
    done_valid : In(1)
        One pulse per job, in job order, from the DMA writer.
    done_error : In(1)
        With ``done_valid``: some write of the job failed.
    event : Out(stream.Signature(layouts.event_layout))
        Events in push order, each with ``dma_error`` copied from its job's completion.

    Raises
    ------
    ValueError
        If a depth is not a positive integer.
    """

    def __init__(self, params, *, depth=32, completion_depth=None):
        if completion_depth is None:
            completion_depth = depth
        for name, value in (("Event queue depth", depth),
                            ("Completion queue depth", completion_depth)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        self._params = params
        self._depth = depth
        self._completion_depth = completion_depth
        super().__init__({
            "push":       In(stream.Signature(layouts.queued_event_layout)),
            "done_valid": In(1),
            "done_error": In(1),
            "event":      Out(stream.Signature(layouts.event_layout)),
        })

    def elaborate(self, platform):
        m = Module()

        m.submodules.events = events = SyncFIFOBuffered(
            width=layouts.queued_event_layout.size, depth=self._depth)
        # ``r_rdy`` is a register: whether the head event's completion is in starts the event's
        # move, which feeds back into this FIFO's level; a compare of that level sat on the path.
        m.submodules.completions = completions = SyncFIFOFlagged(
            width=1, depth=self._completion_depth)

        # A pushed event is registered before the FIFO's LUT RAM takes it: the receive engine's
        # choice of the event to push (by pending slot, in its EMIT) straight into the RAM's
        # write port was the 64x64 core's critical path. It costs each event a cycle.
        in_valid = Signal()
        in_event = Signal(layouts.queued_event_layout)
        m.d.comb += [
            events.w_en.eq(in_valid),
            events.w_data.eq(in_event.as_value()),
        ]
        with m.If(self.push.ready):
            m.d.sync += [in_valid.eq(self.push.valid), in_event.eq(self.push.payload)]
        # ``push.ready`` is a register: the receive engine ends an operation on it, and a
        # compare of the FIFO's level there sat on the path to the engine's next take. The
        # queue is full when the input register and the FIFO are: ``held`` counts both, and
        # ``full`` follows it from a compare of the registered count, so that it equals
        # ``~in_valid | events.w_rdy`` in every cycle.
        held = Signal(range(self._depth + 2))
        pushed = self.push.valid & self.push.ready
        popped = events.r_en & events.r_rdy
        m.d.sync += held.eq(held + pushed - popped)
        full = full_flag(m, held, self._depth + 1, pushed, popped, name="full")
        m.d.comb += self.push.ready.eq(~full)
        m.d.comb += [
            completions.w_en.eq(self.done_valid),
            completions.w_data.eq(self.done_error),
        ]

        head = data.View(layouts.queued_event_layout, events.r_data)
        job_error = Signal()   # completion error of the job whose events are leaving

        head_cleared = events.r_rdy & (~head.first | completions.r_rdy)
        output_free = ~self.event.valid | self.event.ready
        head_moves = head_cleared & output_free
        head_error = Signal()
        m.d.comb += head_error.eq(Mux(head.first, completions.r_data, job_error))

        m.d.comb += [
            events.r_en.eq(head_moves),
            completions.r_en.eq(head_moves & head.first),
        ]
        with m.If(head_moves):
            m.d.sync += [
                job_error.eq(head_error),
                self.event.valid.eq(1),
                self.event.payload.eq(head.event),
                self.event.payload.dma_error.eq(head_error),
            ]
        with m.Elif(self.event.ready):
            m.d.sync += self.event.valid.eq(0)

        return m

