"""A synchronous FIFO whose ``w_rdy`` and ``r_rdy`` are registers.

Amaranth's :class:`~amaranth.lib.fifo.SyncFIFO` works them out each cycle from its level, a
compare of a register. Where the flag starts a long decision in the block at the other end (the
receive engine's choice of its next operation reads the descriptor FIFO's ``r_rdy`` and the job
queue's ``w_rdy``), that compare and the wire that carries it add to the decision's path. Here
each flag is kept as a register that follows the level: written and not read, the FIFO is non-empty
and full if it was one short; read and not written, it has room and is empty if it held one. The
compares are of the registered level, off the path of the handshake.
"""

from amaranth.hdl import Elaboratable, Module, Signal
from amaranth.lib.fifo import SyncFIFO


__all__ = ["SyncFIFOFlagged"]


class SyncFIFOFlagged(Elaboratable):
    """:class:`~amaranth.lib.fifo.SyncFIFO` with the same members and behaviour cycle for cycle,
    but ``w_rdy`` and ``r_rdy`` are registers.

    Parameters
    ----------
    width, depth : int
        As for :class:`~amaranth.lib.fifo.SyncFIFO`.

    Members
    -------
    w_data, w_en, w_rdy, r_data, r_en, r_rdy, level
        As for :class:`~amaranth.lib.fifo.SyncFIFO`. ``r_data`` is the head as the LUT RAM reads it
        (valid while ``r_rdy``); ``level`` is the number of entries.
    """

    def __init__(self, *, width, depth):
        self.width = width
        self.depth = depth
        self.w_data = Signal(width)
        self.w_en   = Signal()
        self.w_rdy  = Signal(init=1)
        self.r_data = Signal(width)
        self.r_en   = Signal()
        self.r_rdy  = Signal()
        self.level  = Signal(range(depth + 1))

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = fifo = SyncFIFO(width=self.width, depth=self.depth)
        m.d.comb += [
            fifo.w_data.eq(self.w_data),
            fifo.w_en.eq(self.w_en),
            fifo.r_en.eq(self.r_en),
            self.r_data.eq(fifo.r_data),
            self.level.eq(fifo.level),
        ]
        written = self.w_en & self.w_rdy
        read    = self.r_en & self.r_rdy
        with m.If(written & ~read):
            m.d.sync += [self.r_rdy.eq(1), self.w_rdy.eq(fifo.level != self.depth - 1)]
        with m.If(read & ~written):
            m.d.sync += [self.w_rdy.eq(1), self.r_rdy.eq(fifo.level != 1)]
        return m
