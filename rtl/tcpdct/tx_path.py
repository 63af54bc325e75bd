"""The transmit path: frames from the host stack to the MAC, unchanged and in order (R30).

The transmit engine (:mod:`.tx_engine`) watches the beats this path takes from the host. A small
FIFO decouples the MAC's ``tready`` from the host side so that back-pressure never needs a
combinational path across the core.
"""

from amaranth.hdl import Module
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out


__all__ = ["beat_layout", "TxPath"]


def beat_layout(data_width, user_width=0):
    """One beat of a frame on an internal stream."""
    fields = {"data": data_width, "keep": data_width // 8, "last": 1}
    if user_width:
        fields["user"] = user_width
    return data.StructLayout(fields)


class TxPath(wiring.Component):
    """Transmit pass-through.

    Members
    -------
    host : In(stream of ``beat_layout``)
        Frames from the host stack.
    mac : Out(stream of ``beat_layout``)
        The same frames to the MAC, at one beat per cycle.
    frame_sent : Out(1)
        Pulses when a frame's last beat leaves on ``mac``.
    hold : In(1)
        Take nothing from ``host`` this cycle (the transmit engine cannot queue another update).
    """

    def __init__(self, params):
        self._params = params
        layout = beat_layout(params.data_width)
        super().__init__({
            "host":       In(stream.Signature(layout)),
            "mac":        Out(stream.Signature(layout)),
            "frame_sent": Out(1),
            "hold":       In(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=self.host.payload.shape().size, depth=4)
        m.d.comb += [
            fifo.w_data.eq(self.host.payload),
            fifo.w_en.eq(self.host.valid & ~self.hold),
            self.host.ready.eq(fifo.w_rdy & ~self.hold),
            self.mac.payload.eq(fifo.r_data),
            self.mac.valid.eq(fifo.r_rdy),
            fifo.r_en.eq(self.mac.ready),
            self.frame_sent.eq(self.mac.valid & self.mac.ready & self.mac.payload.last),
        ]
        return m
