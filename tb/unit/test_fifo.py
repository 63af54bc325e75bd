"""SyncFIFOFlagged and SyncFIFOHeadRegistered against Amaranth's SyncFIFO, side by side on the same
random writes and reads: the same flags, level and head in every cycle, outputs that the cycle's
requests do not move (they are registers), and the entry behind the head (``second``) as a list
of the entries says. Random stimulus is seeded from ``SEED`` (printed)."""

from collections import deque

import pytest
from amaranth.hdl import Elaboratable, Module
from amaranth.lib.fifo import SyncFIFO

from tcpdct.fifo import SyncFIFOFlagged, SyncFIFOHeadRegistered
from unit.simtools import seeded_rng, run_simulation


class _SideBySide(Elaboratable):
    def __init__(self, depth):
        # Bits 2 to 6 of the entry behind the head, where there can be one.
        self.flagged = SyncFIFOFlagged(width=8, depth=depth,
                                       second=slice(2, 7) if depth > 1 else None)
        self.head_registered = SyncFIFOHeadRegistered(width=8, depth=depth)
        self.reference = SyncFIFO(width=8, depth=depth)
        self.checked = [(self.flagged, ("w_rdy", "r_rdy")),
                        (self.head_registered, ("w_rdy", "r_rdy", "r_data"))]

    def elaborate(self, platform):
        m = Module()
        m.submodules.flagged = self.flagged
        m.submodules.head_registered = self.head_registered
        m.submodules.reference = self.reference
        return m


@pytest.mark.parametrize("depth", [1, 2, 5, 8])
def test_same_as_sync_fifo(depth):
    rng = seeded_rng(f"fifo-{depth}")
    dut = _SideBySide(depth)
    seen = {"full": 0, "empty": 0, "second": 0}
    entries = deque()

    async def testbench(ctx):
        for cycle in range(4000):
            # Writes and reads are requested whether or not the FIFO can take them, so that
            # refused requests are tried too; phases of mostly writes and mostly reads fill
            # and empty it.
            write_rate = (0.8, 0.5, 0.2)[cycle // 100 % 3]
            data = rng.getrandbits(8)
            w_en, r_en = rng.random() < write_rate, rng.random() < 1 - write_rate
            before = {(id(fifo), name): ctx.get(getattr(fifo, name))
                      for fifo, names in dut.checked for name in names}
            for fifo in (dut.reference, *(fifo for fifo, _ in dut.checked)):
                ctx.set(fifo.w_data, data)
                ctx.set(fifo.w_en, w_en)
                ctx.set(fifo.r_en, r_en)
            for fifo, registers in dut.checked:
                for name in registers:
                    assert ctx.get(getattr(fifo, name)) == before[id(fifo), name], \
                        f"{type(fifo).__name__}.{name} follows this cycle's requests"
                for name in ("w_rdy", "r_rdy", "level"):
                    assert ctx.get(getattr(fifo, name)) == \
                        ctx.get(getattr(dut.reference, name)), f"{type(fifo).__name__}.{name}"
                if ctx.get(dut.reference.r_rdy):
                    assert ctx.get(fifo.r_data) == ctx.get(dut.reference.r_data), \
                        f"{type(fifo).__name__}.r_data"
            if depth > 1:
                assert ctx.get(dut.flagged.r_second_rdy) == (len(entries) >= 2)
                if len(entries) >= 2:
                    assert ctx.get(dut.flagged.r_second) == (entries[1] >> 2) & 0x1f
                    seen["second"] += 1
            if r_en and ctx.get(dut.reference.r_rdy):
                entries.popleft()
            if w_en and ctx.get(dut.reference.w_rdy):
                entries.append(data)
            seen["full"] += not ctx.get(dut.reference.w_rdy)
            seen["empty"] += not ctx.get(dut.reference.r_rdy)
            await ctx.tick()

    run_simulation(dut, testbench)
    assert seen["full"] and seen["empty"], f"the run never filled or never emptied: {seen}"
    assert seen["second"] or depth == 1, "two entries were never held"
