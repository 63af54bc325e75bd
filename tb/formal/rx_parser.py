"""Receive parser output: a descriptor holds, valid and every bit, from a stall until ``ready``.

The descriptor is several hundred bits wide and comes out of the parser's FIFO while frames keep
arriving behind it, which is what makes this worth checking; the MAC side obeys the stream rules
(assumed) with free frame contents. Bounded: the FIFO's pointers and level are separate
registers, and an inconsistent (unreachable) pair of them breaks the induction step.
"""

from tcpdct.params import Params
from tcpdct.rx_parser import RxParser

from .common import StreamRulesHarness
from .runner import Proof


__all__ = ["harness", "proofs"]


def harness(parser_class=RxParser):
    """The stream-rules harness of ``descriptor``, for :class:`RxParser` or a variant of it."""
    return StreamRulesHarness(lambda: parser_class(Params(), descriptor_depth=3),
                              outputs=lambda parser: {"descriptor": parser.descriptor})


def proofs():
    return [
        Proof("rx_parser_stream", harness, "bmc", 20,
              description="descriptor: valid and payload hold while stalled"),
        Proof("rx_parser_cover", harness, "cover", 14,
              description="descriptor stalls and then moves on"),
    ]
