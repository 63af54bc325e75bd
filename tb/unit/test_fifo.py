"""SyncFIFOFlagged against Amaranth's SyncFIFO, side by side on the same random writes and reads:
the same flags, level and head in every cycle; and a level's registered threshold flags against
the level. Random stimulus is seeded from ``SEED``
(printed)."""

import pytest
from amaranth.hdl import Elaboratable, Fragment, Module
from amaranth.lib.fifo import SyncFIFO, SyncFIFOBuffered

from tcpdct.fifo import SyncFIFOFlagged, at_least_flag
from unit.simtools import seeded_rng, run_simulation


class _SideBySide(Elaboratable):
    def __init__(self, depth):
        self.flagged = SyncFIFOFlagged(width=8, depth=depth)
        self.reference = SyncFIFO(width=8, depth=depth)

    def elaborate(self, platform):
        m = Module()
        m.submodules.flagged = self.flagged
        m.submodules.reference = self.reference
        return m


@pytest.mark.parametrize("depth", [1, 2, 5, 8])
def test_same_as_sync_fifo(depth):
    rng = seeded_rng(f"fifo-{depth}")
    dut = _SideBySide(depth)
    seen = {"full": 0, "empty": 0}

    async def testbench(ctx):
        for cycle in range(4000):
            # Writes and reads are requested whether or not the FIFO can take them, so that
            # refused requests are tried too; phases of mostly writes and mostly reads fill
            # and empty it.
            write_rate = (0.8, 0.5, 0.2)[cycle // 100 % 3]
            data = rng.getrandbits(8)
            w_en, r_en = rng.random() < write_rate, rng.random() < 1 - write_rate
            for fifo in (dut.flagged, dut.reference):
                ctx.set(fifo.w_data, data)
                ctx.set(fifo.w_en, w_en)
                ctx.set(fifo.r_en, r_en)
            for name in ("w_rdy", "r_rdy", "level"):
                assert ctx.get(getattr(dut.flagged, name)) == \
                    ctx.get(getattr(dut.reference, name)), name
            if ctx.get(dut.reference.r_rdy):
                assert ctx.get(dut.flagged.r_data) == ctx.get(dut.reference.r_data)
            seen["full"] += not ctx.get(dut.reference.w_rdy)
            seen["empty"] += not ctx.get(dut.reference.r_rdy)
            await ctx.tick()

    run_simulation(dut, testbench)
    assert seen["full"] and seen["empty"], f"the run never filled or never emptied: {seen}"


class _Thresholds(Elaboratable):
    """A buffered FIFO (whose level is a sum, as the transmit engine's is) and an
    :func:`at_least_flag` of its level for every threshold from 0 to one past its depth."""

    def __init__(self, depth):
        self.fifo = SyncFIFOBuffered(width=8, depth=depth)
        self.depth = depth
        self.flags = {}

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = fifo = self.fifo
        written, read = fifo.w_en & fifo.w_rdy, fifo.r_en & fifo.r_rdy
        for threshold in range(self.depth + 2):
            self.flags[threshold] = at_least_flag(m, fifo.level, threshold, written, read,
                                                  name=f"at_least_{threshold}")
        return m


@pytest.mark.parametrize("depth", [1, 3, 6])
def test_at_least_flag_follows_the_level(depth):
    rng = seeded_rng(f"at-least-{depth}")
    dut = _Thresholds(depth)
    Fragment.get(dut, None)     # elaborate, so that the flags exist
    levels = set()

    async def testbench(ctx):
        for cycle in range(3000):
            write_rate = (0.8, 0.5, 0.2)[cycle // 100 % 3]
            ctx.set(dut.fifo.w_en, rng.random() < write_rate)
            ctx.set(dut.fifo.r_en, rng.random() < 1 - write_rate)
            level = ctx.get(dut.fifo.level)
            levels.add(level)
            for threshold, flag in dut.flags.items():
                assert ctx.get(flag) == (level >= threshold), (cycle, level, threshold)
            await ctx.tick()

    run_simulation(dut, testbench)
    assert levels == set(range(depth + 1)), f"the run did not reach every level: {levels}"
