"""DMA writer AXI channels: AW and W hold valid and every payload bit from a stall until ready.

AXI4 requires it of a master (IHI 0022, A3.2.1): once ``awvalid``/``wvalid`` is high it stays high
until the handshake, and the address or data with it does not change. Jobs arrive under the
stream rules (assumed), the slave's ``awready``/``wready``, the B channel and the packet-buffer
data are free.
"""

from tcpdct.dma_writer import DmaWriter
from tcpdct.params import Params

from .common import AxiChannel, StreamRulesHarness
from .runner import Proof


__all__ = ["harness", "proofs"]


AW_PAYLOAD = ("addr", "len", "size", "burst", "id", "lock", "cache", "prot")
W_PAYLOAD = ("data", "strb", "last")


def harness(writer_class=DmaWriter):
    """The AW/W harness, for :class:`DmaWriter` or a variant of it."""
    return StreamRulesHarness(
        lambda: writer_class(Params(), jobs_in_flight=2),
        outputs=lambda writer: {"aw": AxiChannel(writer, "axi_aw", AW_PAYLOAD),
                                "w":  AxiChannel(writer, "axi_w", W_PAYLOAD)})


def proofs():
    return [
        Proof("dma_writer_axi", harness, "prove", 4, quick=True,
              description="AXI AW and W: valid and payload hold while stalled"),
        Proof("dma_writer_cover", harness, "cover", 12,
              description="AW and W each stall and then move on"),
    ]
