"""Event queue output: valid and the event hold from the first stalled cycle until ``ready``.

The queue moves its head into the output register only when the register is free, so a stalled
event must stay put even while a completion arrives or new events are pushed behind it. The
push stream obeys the same rules (assumed); completions are free pulses.
"""

from tcpdct.event_queue import EventQueue
from tcpdct.params import Params

from .common import StreamRulesHarness
from .runner import Proof


__all__ = ["harness", "proofs"]


def harness(queue_class=EventQueue):
    """The stream-rules harness of ``event``, for :class:`EventQueue` or a variant of it."""
    return StreamRulesHarness(lambda: queue_class(Params(), depth=4, completion_depth=4))


def proofs():
    return [
        Proof("event_queue_stream", harness, "prove", 4, quick=True,
              description="event: valid and payload hold while stalled"),
        Proof("event_queue_cover", harness, "cover", 8,
              description="event stalls and then moves on"),
    ]
