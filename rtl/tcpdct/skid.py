"""A skid buffer: a stream stage whose ``ready`` towards its source is a register.

Where a stream's ``ready`` comes from outside the core (an AXI slave's ``awready``), it arrives
late in the cycle, from wherever the interconnect makes it. Used straight, it decides whether the
block's state moves, and so reaches the enables of every register that moves with it: the DMA
writer's ``awready`` reached its AW generator and, through the end of a segment, its sequencer.
Behind a skid buffer the block sees ``ready`` as a register, and the port's ``ready`` reaches one
register and the output multiplexer.

The buffer adds no cycle: while it holds nothing, the source's beat is offered on the output in
the same cycle. A beat offered and not taken is caught (the source sees it taken, since
``ready`` was high) and offered from the buffer, ``ready`` low, until it is taken. With the
sink always ready the stream is the same cycle for cycle as without the buffer.
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out


__all__ = ["SkidBuffer"]


class SkidBuffer(wiring.Component):
    """One beat of buffering between a source and a sink, ``sink.ready`` a register.

    Parameters
    ----------
    shape : shape-castable
        The payload's shape.

    Members
    -------
    sink : In(stream.Signature(shape))
        From the source. ``ready`` is low exactly while the buffer holds a beat.
    source : Out(stream.Signature(shape))
        To the sink. ``valid`` and ``payload`` hold while stalled, as AXI requires, provided the
        source holds its own beat while ``sink.ready`` is low.
    """

    def __init__(self, shape):
        super().__init__({
            "sink":   In(stream.Signature(shape)),
            "source": Out(stream.Signature(shape)),
        })

    def elaborate(self, platform):
        m = Module()
        held = Signal()
        held_payload = Signal.like(self.sink.payload)
        m.d.comb += [
            self.sink.ready.eq(~held),
            self.source.valid.eq(held | self.sink.valid),
            self.source.payload.eq(Mux(held, held_payload, self.sink.payload)),
        ]
        with m.If(held):
            with m.If(self.source.ready):
                m.d.sync += held.eq(0)
        with m.Else():
            m.d.sync += held.eq(self.sink.valid & ~self.source.ready)
            # Loaded in every cycle it holds nothing, caught or not, so that the enable of its
            # bits is the register ``held`` and not the port's ``ready``.
            m.d.sync += held_payload.eq(self.sink.payload)
        return m
