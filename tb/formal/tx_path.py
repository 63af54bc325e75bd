"""Transmit path output: valid and the beat hold towards the MAC from a stall until ``tready``.

The host side obeys the same rules (assumed); every other input (``hold``, when the block has
it) is free.
"""

from tcpdct.params import Params
from tcpdct.tx_path import TxPath

from .common import StreamRulesHarness
from .runner import Proof


__all__ = ["harness", "proofs"]


def harness(path_class=TxPath):
    """The stream-rules harness of ``mac``, for :class:`TxPath` or a variant of it."""
    return StreamRulesHarness(lambda: path_class(Params()),
                              outputs=lambda path: {"mac": path.mac})


def proofs():
    return [
        Proof("tx_path_stream", harness, "prove", 4, quick=True,
              description="mac: valid and payload hold while stalled"),
        Proof("tx_path_cover", harness, "cover", 8,
              description="mac stalls and then moves on"),
    ]
