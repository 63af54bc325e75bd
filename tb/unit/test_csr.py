"""Csr through a small AXI4-Lite master, against a Python count of the events it was fed.

Random stimulus is seeded from ``SEED`` (printed, so a failure replays with ``SEED=<n>``).
"""

import gc
import os
import random
import warnings

import pytest
from amaranth.hdl import UnusedElaboratable
from amaranth.sim import Simulator

from tcpdct import regmap
from tcpdct.csr import Csr
from tcpdct.params import Params
from tcpdct.records import (Event, EventType, LegacyReason, DropReason, EVENT_FIELDS,
                            NO_CONNECTION)


PARAMS = Params(data_width=128, n_entries=16, buffers_per_conn=3, legacy_ring_depth=32,
                rx_buffer_bytes=8192, max_frame_bytes=1522, max_burst_beats=16)

OKAY = 0
#: Upper bound on the cycles any one handshake may take before the slave is declared stuck.
TIMEOUT = 100


def _rng(salt):
    seed = int(os.environ.get("SEED", random.randrange(1 << 32)))
    print(f"SEED={seed}")
    return random.Random(f"{seed}-{salt}")


class CounterModel:
    """The counters as regmap.py describes them, counted in Python from Event objects."""

    WIDE = {"BYTES_PLACED", "BYTES_LEGACY"}

    def __init__(self):
        self.counts = {}
        self.high_latches = {name: 0 for name in self.WIDE}
        self.settings = {reg.name: regmap.reset_value(reg, PARAMS)
                         for reg in regmap.REGISTERS if reg.access == "rw"}

    def write(self, offset, data, strobe):
        reg = next((reg for reg in regmap.REGISTERS if reg.offset == offset & ~3), None)
        if reg is None or reg.access != "rw":
            return
        mask = sum(0xff << (8 * byte) for byte in range(4) if strobe >> byte & 1)
        self.settings[reg.name] = self.settings[reg.name] & ~mask | data & mask

    def _add(self, name, amount=1):
        mask = (1 << (64 if name in self.WIDE else 32)) - 1
        self.counts[name] = (self.counts.get(name, 0) + amount) & mask

    def event(self, event):
        if event.dma_error:
            self._add("DMA_ERRORS")
        if event.code == EventType.RX_PLACED:
            self._add("RX_FRAMES")
            self._add("RX_PLACED")
            self._add("BYTES_PLACED", event.length)
        elif event.code == EventType.LEGACY:
            self._add("RX_FRAMES")
            self._add("RX_LEGACY")
            self._add("BYTES_LEGACY", event.frame_len)
            if event.reason in LegacyReason.__members__.values():
                self._add(f"LEGACY_{LegacyReason(event.reason).name}")
        elif event.code == EventType.DROP:
            self._add("RX_FRAMES")
            self._add("RX_DROPPED")
            if event.reason in DropReason.__members__.values():
                self._add(f"DROP_{DropReason(event.reason).name}")
        elif event.code == EventType.CMD_DONE:
            self._add("COMMANDS")
            if event.status != 0:
                self._add("CMD_ERRORS")
        elif event.code == EventType.BUF_DONE:
            self._add("BUF_DONES")
        elif event.code == EventType.RESYNC:
            self._add("RESYNCS")
        elif event.code == EventType.BUF_REQ:
            self._add("BUF_REQS")

    def tx_frame(self):
        self._add("TX_FRAMES")

    def tx_matched(self):
        self._add("TX_MATCHED")

    def read(self, offset):
        """The value a read of ``offset`` returns, latching a high word as the hardware does."""
        constants = {"ID": regmap.ID_VALUE, "VERSION": regmap.VERSION_VALUE,
                     "DATA_WIDTH": PARAMS.data_width, "N_ENTRIES": PARAMS.n_entries,
                     "BUFFERS_PER_CONN": PARAMS.buffers_per_conn,
                     "LEGACY_RING_DEPTH": PARAMS.legacy_ring_depth,
                     "RX_BUFFER_BYTES": PARAMS.rx_buffer_bytes,
                     "MAX_FRAME_BYTES": PARAMS.max_frame_bytes}
        reg = next((reg for reg in regmap.REGISTERS if reg.offset == offset & ~3), None)
        if reg is None:
            return 0
        if reg.name in constants:
            return constants[reg.name]
        if reg.name in self.settings:
            return self.settings[reg.name]
        stem = reg.name[:-3]
        if stem in self.WIDE and reg.name.endswith("_LO"):
            self.high_latches[stem] = self.counts.get(stem, 0) >> 32
            return self.counts.get(stem, 0) & 0xffffffff
        if stem in self.WIDE and reg.name.endswith("_HI"):
            return self.high_latches[stem]
        return self.counts.get(reg.name, 0)


def random_event(rng):
    """An event of any type with random fields; reasons and statuses are sometimes values that
    no enum defines, which must count in no per-reason counter."""
    code = rng.choice(list(EventType))
    fields = {}
    for name, width in EVENT_FIELDS[code]:
        if name is None:
            continue
        if name == "reason":
            known = LegacyReason if code == EventType.LEGACY else DropReason
            fields[name] = rng.choice(list(known)) if rng.random() < 0.85 else rng.randrange(16)
        elif name == "status":
            fields[name] = 0 if rng.random() < 0.5 else rng.randrange(256)
        else:
            fields[name] = rng.getrandbits(width)
    index = rng.choice([NO_CONNECTION, rng.randrange(PARAMS.n_entries)])
    return Event(code, index, dma_error=int(rng.random() < 0.2), **fields)


class Bench:
    """An AXI4-Lite master and an event source sharing one clock, stepped cycle by cycle, so that
    the model knows exactly which events a read's AR handshake comes after."""

    def __init__(self, dut, rng=None, event_rate=0.0, tx_rate=0.0):
        self.dut = dut
        self.rng = rng
        self.event_rate = event_rate
        self.tx_rate = tx_rate
        self.model = CounterModel()
        self.events_fed = 0
        self._uncounted = []    # what left in the last cycle, to count at the end of this one

    def preload(self, ctx, name, value):
        ctx.set(self.dut.counters[name], value)
        self.model.counts[name] = value

    async def cycle(self, ctx, event=None, tx_frame=False, tx_matched=False):
        """One clock cycle; an event (given, or random at ``event_rate``) leaves on it."""
        dut = self.dut
        if event is None and self.rng is not None and self.rng.random() < self.event_rate:
            event = random_event(self.rng)
        if self.rng is not None:
            tx_frame = tx_frame or self.rng.random() < self.tx_rate
            tx_matched = tx_matched or self.rng.random() < self.tx_rate
            # Junk on the event input while it is not firing must not be counted.
            ctx.set(dut.event.as_value(), event.pack() if event else random_event(self.rng).pack())
        elif event is not None:
            ctx.set(dut.event.as_value(), event.pack())
        ctx.set(dut.event_fire, event is not None)
        ctx.set(dut.tx_frame, tx_frame)
        ctx.set(dut.tx_matched, tx_matched)
        await ctx.tick()
        # What leaves in a cycle is counted at the end of the next (the Csr's docstring): a
        # read whose AR handshake is in the cycle after it does not see it yet.
        for count in self._uncounted:
            count()
        self._uncounted = []
        if event is not None:
            self._uncounted.append(lambda: self.model.event(event))
            self.events_fed += 1
        if tx_frame:
            self._uncounted.append(self.model.tx_frame)
        if tx_matched:
            self._uncounted.append(self.model.tx_matched)

    def _set_valid(self, ctx, valid, ready, value):
        """Drive a valid and check that its ready did not follow it combinationally."""
        before = ctx.get(ready)
        ctx.set(valid, value)
        assert ctx.get(ready) == before, "ready depends combinationally on valid"

    async def write(self, ctx, addr, data, aw_delay=0, w_delay=0, b_delay=0, strobe=0xf):
        """Write with AW and W offered ``aw_delay`` / ``w_delay`` cycles from now and B accepted
        from ``b_delay`` cycles; returns BRESP."""
        dut = self.dut
        ctx.set(dut.axil_awaddr, addr)
        ctx.set(dut.axil_wdata, data)
        ctx.set(dut.axil_wstrb, strobe)
        aw_done = w_done = False
        b_seen = False
        for cycle in range(TIMEOUT):
            self._set_valid(ctx, dut.axil_awvalid, dut.axil_awready,
                            not aw_done and cycle >= aw_delay)
            self._set_valid(ctx, dut.axil_wvalid, dut.axil_wready, not w_done and cycle >= w_delay)
            ctx.set(dut.axil_bready, cycle >= b_delay)
            aw_fire = ctx.get(dut.axil_awvalid) and ctx.get(dut.axil_awready)
            w_fire = ctx.get(dut.axil_wvalid) and ctx.get(dut.axil_wready)
            bvalid = ctx.get(dut.axil_bvalid)
            assert bvalid or not b_seen, "BVALID dropped before the handshake"
            if bvalid:
                assert aw_done and w_done, "B before both AW and W were accepted"
            b_seen = bvalid
            bresp = ctx.get(dut.axil_bresp)
            b_fire = bvalid and cycle >= b_delay
            await self.cycle(ctx)
            aw_done |= aw_fire
            w_done |= w_fire
            if b_fire:
                ctx.set(dut.axil_bready, 0)
                self.model.write(addr, data, strobe)
                return bresp
        raise AssertionError(f"write to {addr:#x} did not complete in {TIMEOUT} cycles")

    async def read(self, ctx, addr, ar_delay=0, r_delay=0):
        """Read with AR offered from ``ar_delay`` cycles and R accepted from ``r_delay`` cycles;
        returns (RDATA, RRESP, what the model says the read must return)."""
        dut = self.dut
        ctx.set(dut.axil_araddr, addr)
        ar_done = False
        expected = None
        held = None
        for cycle in range(TIMEOUT):
            self._set_valid(ctx, dut.axil_arvalid, dut.axil_arready,
                            not ar_done and cycle >= ar_delay)
            ctx.set(dut.axil_rready, cycle >= r_delay)
            rvalid = ctx.get(dut.axil_rvalid)
            response = (ctx.get(dut.axil_rdata), ctx.get(dut.axil_rresp))
            if rvalid:
                assert ar_done, "R before AR was accepted"
                assert held in (None, response), "R changed before its handshake"
                held = response
            else:
                assert held is None, "RVALID dropped before the handshake"
            ar_fire = ctx.get(dut.axil_arvalid) and ctx.get(dut.axil_arready)
            if ar_fire:
                # The read samples the counters as they are before this clock edge.
                expected = self.model.read(addr)
            r_fire = rvalid and cycle >= r_delay
            await self.cycle(ctx)
            ar_done |= bool(ar_fire)
            if r_fire:
                ctx.set(dut.axil_rready, 0)
                return (*response, expected)
        raise AssertionError(f"read of {addr:#x} did not complete in {TIMEOUT} cycles")

    async def check_read(self, ctx, addr, **delays):
        rdata, rresp, expected = await self.read(ctx, addr, **delays)
        assert rresp == OKAY, f"read of {addr:#x}"
        assert rdata == expected, f"read of {addr:#x}: {rdata:#x}, expected {expected:#x}"
        return rdata

    async def check_all(self, ctx):
        for reg in regmap.REGISTERS:
            await self.check_read(ctx, reg.offset)


def _run(dut, testbench):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()


UNMAPPED = sorted({0x020, 0x0fc, 0x138, 0x17c, 0x1fc, 0xffc}
                  - {reg.offset for reg in regmap.REGISTERS})


def test_every_register_after_reset():
    dut = Csr(PARAMS)
    bench = Bench(dut)

    async def testbench(ctx):
        values = {}
        for reg in regmap.REGISTERS:
            values[reg.name] = await bench.check_read(ctx, reg.offset)
        # The constants are checked here against the spec values, not only against the model.
        assert values["ID"] == 0x54444354
        assert values["DATA_WIDTH"] == 128 and values["N_ENTRIES"] == 16
        assert values["BUFFERS_PER_CONN"] == 3 and values["LEGACY_RING_DEPTH"] == 32
        assert values["RX_BUFFER_BYTES"] == 8192 and values["MAX_FRAME_BYTES"] == 1522
        for addr in UNMAPPED:
            assert await bench.check_read(ctx, addr) == 0
        # The two low address bits are ignored.
        assert await bench.check_read(ctx, regmap.by_name("ID").offset + 3) == regmap.ID_VALUE

    _run(dut, testbench)


@pytest.mark.parametrize("aw_delay, w_delay, b_delay", [
    (0, 0, 0),   # AW and W together
    (0, 3, 0),   # AW before W
    (4, 0, 0),   # W before AW
    (0, 0, 6),   # B stalled
    (5, 1, 9),   # W first, B stalled
])
def test_writes_answer_okay_and_change_only_settings(aw_delay, w_delay, b_delay):
    dut = Csr(PARAMS)
    bench = Bench(dut)

    async def testbench(ctx):
        bench.preload(ctx, "RX_PLACED", 1234)
        bench.preload(ctx, "BYTES_PLACED", 0x1_2345_6789)
        targets = [reg.offset for reg in regmap.REGISTERS] + UNMAPPED
        for addr in targets:
            resp = await bench.write(ctx, addr, 0xffffffff, aw_delay, w_delay, b_delay)
            assert resp == OKAY, f"write to {addr:#x}"
        await bench.check_all(ctx)
        assert bench.model.counts["RX_PLACED"] == 1234
        # Settings take writes, byte by byte as the strobes say, and drive the core.
        timeout = regmap.by_name("BUF_REQ_TIMEOUT")
        await bench.write(ctx, timeout.offset, 0x1234_5678, aw_delay, w_delay, b_delay,
                          strobe=0b0101)
        assert ctx.get(dut.buf_req_timeout) == 0xff34_ff78
        assert ctx.get(dut.hwm_bytes) == 0xffff_ffff
        await bench.check_all(ctx)

    _run(dut, testbench)


@pytest.mark.parametrize("delays", [
    dict(ar_delay=0, r_delay=0),
    dict(ar_delay=3, r_delay=0),
    dict(ar_delay=0, r_delay=5),
])
def test_read_stalls(delays):
    dut = Csr(PARAMS)
    bench = Bench(dut)

    async def testbench(ctx):
        bench.preload(ctx, "COMMANDS", 0xdeadbeef)
        assert await bench.check_read(ctx, regmap.by_name("COMMANDS").offset, **delays) \
            == 0xdeadbeef
        assert await bench.check_read(ctx, regmap.by_name("VERSION").offset, **delays) \
            == regmap.VERSION_VALUE

    _run(dut, testbench)


def test_counters_follow_random_events():
    """Random events every cycle while the master reads random registers with random stalls
    (every read compared with the model as of its AR handshake) and interleaves writes."""
    rng = _rng("csr-random")
    dut = Csr(PARAMS)
    bench = Bench(dut, rng, event_rate=0.7, tx_rate=0.3)
    offsets = [reg.offset for reg in regmap.REGISTERS]
    # Read each _LO before its _HI often, so that latching under a moving counter is exercised.
    pairs = [(regmap.by_name(f"{stem}_LO").offset, regmap.by_name(f"{stem}_HI").offset)
             for stem in CounterModel.WIDE]

    async def testbench(ctx):
        bench.preload(ctx, "BYTES_PLACED", (1 << 32) - 200_000)
        bench.preload(ctx, "BYTES_LEGACY", (1 << 64) - 100_000)
        for _ in range(600):
            choice = rng.random()
            delays = dict(ar_delay=rng.choice([0, 0, 1, 3]), r_delay=rng.choice([0, 0, 2, 4]))
            if choice < 0.25:
                low, high = rng.choice(pairs)
                await bench.check_read(ctx, low, **delays)
                for _ in range(rng.randrange(3)):
                    await bench.cycle(ctx)
                await bench.check_read(ctx, high, **delays)
            elif choice < 0.85:
                await bench.check_read(ctx, rng.choice(offsets), **delays)
            else:
                await bench.write(ctx, rng.choice(offsets), rng.getrandbits(32),
                                  rng.randrange(3), rng.randrange(3), rng.randrange(3))
        bench.event_rate = bench.tx_rate = 0
        await bench.check_all(ctx)

    _run(dut, testbench)
    print(f"{bench.events_fed} events fed")
    assert bench.events_fed > 1500
    model = bench.model.counts
    # The stimulus must have reached every counter and carried both byte counters over.
    for reg in regmap.REGISTERS:
        if (reg.name not in ("ID", "VERSION") and reg.access == "ro"
                and not hasattr(PARAMS, reg.name.lower())):
            stem = reg.name[:-3] if reg.name[:-3] in CounterModel.WIDE else reg.name
            assert model.get(stem, 0) != 0, f"{reg.name} was never counted"
    assert model["BYTES_PLACED"] >> 32 == 1
    assert model["BYTES_LEGACY"] < 1 << 32


def test_high_word_latched_by_low_read():
    dut = Csr(PARAMS)
    bench = Bench(dut)
    low, high = regmap.by_name("BYTES_PLACED_LO").offset, regmap.by_name("BYTES_PLACED_HI").offset

    def placed(length):
        return Event(EventType.RX_PLACED, 0, length=length)

    async def testbench(ctx):
        assert await bench.check_read(ctx, high) == 0
        bench.preload(ctx, "BYTES_PLACED", 0x7_ffff_fff0)
        assert await bench.check_read(ctx, low) == 0xffff_fff0
        await bench.cycle(ctx, placed(0x20))  # carries into the high word after the _LO read
        assert await bench.check_read(ctx, high) == 7, "_HI must be the word latched with _LO"
        assert await bench.check_read(ctx, high) == 7
        assert await bench.check_read(ctx, low) == 0x10
        assert await bench.check_read(ctx, high) == 8
        # The event counted on the very cycle of the AR handshake is not in that read.
        bench.preload(ctx, "BYTES_PLACED", 0xffff_ffff_ffff_fffe)
        ctx.set(dut.axil_araddr, low)
        ctx.set(dut.axil_arvalid, 1)
        assert bench.model.read(low) == 0xffff_fffe
        await bench.cycle(ctx, placed(3))
        ctx.set(dut.axil_arvalid, 0)
        assert (ctx.get(dut.axil_rvalid), ctx.get(dut.axil_rdata)) == (1, 0xffff_fffe)
        ctx.set(dut.axil_rready, 1)
        await bench.cycle(ctx)
        ctx.set(dut.axil_rready, 0)
        assert await bench.check_read(ctx, high) == 0xffff_ffff
        assert await bench.check_read(ctx, low) == 1, "64-bit byte counter wraps at 2**64"
        assert await bench.check_read(ctx, high) == 0

    _run(dut, testbench)


def test_counters_wrap_at_32_bits():
    dut = Csr(PARAMS)
    bench = Bench(dut)
    events = [
        Event(EventType.RX_PLACED, 1, dma_error=1, length=5),
        Event(EventType.LEGACY, reason=LegacyReason.HWM, frame_len=60),
        Event(EventType.DROP, reason=DropReason.OVERSIZE, frame_len=2000),
        Event(EventType.CMD_DONE, 2, opcode=1, status=3),
        Event(EventType.BUF_DONE, 2, tag=9, bytes=100),
        Event(EventType.RESYNC, 2, rcv_nxt=77),
    ]

    async def testbench(ctx):
        for name in dut.counters:
            if name not in CounterModel.WIDE:
                bench.preload(ctx, name, 0xffff_fffe)
        for _ in range(3):
            for event in events:
                await bench.cycle(ctx, event, tx_frame=True)
        await bench.check_all(ctx)

    _run(dut, testbench)
    counts = bench.model.counts
    assert counts["RX_FRAMES"] == (0xffff_fffe + 9) & 0xffff_ffff == 7
    assert counts["LEGACY_HWM"] == counts["DROP_OVERSIZE"] == 1
    assert counts["LEGACY_NOT_TCP"] == 0xffff_fffe


def _renamed(name, offset):
    return [regmap.Register(reg.name, offset, reg.access, reg.doc) if reg.name == name else reg
            for reg in regmap.REGISTERS]


@pytest.mark.parametrize("registers, message", [
    (regmap.REGISTERS + [regmap.Register("SPARE", 0x200, "ro", "")], "has no source"),
    (_renamed("TX_FRAMES", regmap.by_name("ID").offset), "overlaps"),
    (_renamed("RX_PLACED", 0x106), "word address"),
    (_renamed("RX_PLACED", 0x1000), "word address"),
    ([reg for reg in regmap.REGISTERS if reg.name != "RESYNCS"], "no register"),
])
def test_register_map_checked(monkeypatch, registers, message):
    """A register map the block cannot serve is an error at construction, not a silent zero."""
    monkeypatch.setattr(regmap, "REGISTERS", registers)
    with warnings.catch_warnings():
        # The half-built component would warn that it was never elaborated when collected.
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(ValueError, match=message):
            Csr(PARAMS)
        gc.collect()
