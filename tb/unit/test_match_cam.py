"""MatchCam against a Python dict: random insert/invalidate/lookup on every port.

Random stimulus is seeded from ``SEED`` (printed, so a failure replays with ``SEED=<n>``).
"""

import gc
import os
import random
import warnings

import pytest
from amaranth.hdl import UnusedElaboratable
from amaranth.sim import Simulator

from tcpdct.match_cam import MatchCam


def _rng(salt):
    seed = int(os.environ.get("SEED", random.randrange(1 << 32)))
    print(f"SEED={seed}")
    return random.Random(f"{seed}-{salt}")


def _run(dut, testbench):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()


class CamModel:
    """The CAM as a dict from index to key of the valid entries."""

    def __init__(self, n_entries):
        self.n_entries = n_entries
        self.entries = {}

    def lookup(self, key):
        hits = [index for index, entry_key in self.entries.items() if entry_key == key]
        assert len(hits) <= 1, "the stimulus broke key uniqueness (R1)"
        return (1, hits[0]) if hits else (0, 0)

    def write(self, index, key, valid):
        if index >= self.n_entries:
            return
        if valid:
            self.entries[index] = key
        else:
            self.entries.pop(index, None)

    def valid_bits(self):
        return sum(1 << index for index in self.entries)


def _key_pool(rng, size):
    """Random keys plus near misses: each differs from another pool key in a single bit, so a
    comparator that ignores any bit position is caught."""
    keys = [rng.getrandbits(96) for _ in range(size)]
    return keys + [key ^ 1 << rng.randrange(96) for key in keys]


@pytest.mark.parametrize("n_entries", [1, 5, 16, 64])
def test_random_against_dict(n_entries):
    rng = _rng(f"cam-{n_entries}")
    dut = MatchCam(n_entries)
    model = CamModel(n_entries)
    pool = _key_pool(rng, 2 * n_entries + 2)
    index_range = 1 << dut.index_bits  # includes indices >= n_entries, which must write nothing
    cycles = 1500 if n_entries <= 16 else 800
    hits_seen = [0] * dut.n_lookup

    async def testbench(ctx):
        for _ in range(cycles):
            keys = []
            for port in range(dut.n_lookup):
                if model.entries and rng.random() < 0.6:
                    key = rng.choice(list(model.entries.values()))
                else:
                    key = rng.choice(pool)
                keys.append(key)
                ctx.set(getattr(dut, f"lookup_key_{port}").as_value(), key)

            write = None
            choice = rng.random()
            if choice < 0.3:
                index = rng.randrange(index_range)
                free = [key for key in pool if key not in model.entries.values()
                        or model.entries.get(index) == key]
                write = (index, rng.choice(free), 1)
            elif choice < 0.5:
                index = (rng.choice(list(model.entries)) if model.entries and rng.random() < 0.8
                         else rng.randrange(index_range))
                write = (index, rng.choice(pool), 0)
            ctx.set(dut.write_en, write is not None)
            if write is not None:
                ctx.set(dut.write_index, write[0])
                ctx.set(dut.write_valid, write[2])

            if write is not None:
                # The CAM writes the key on lookup port 0, which also looks it up.
                keys[0] = write[1]
                ctx.set(dut.lookup_key_0.as_value(), write[1])
            expected = [model.lookup(key) for key in keys]
            await ctx.tick()
            if write is not None:
                model.write(*write)

            for port in range(dut.n_lookup):
                got = (ctx.get(getattr(dut, f"lookup_hit_{port}")),
                       ctx.get(getattr(dut, f"lookup_index_{port}")))
                assert got == expected[port], f"port {port}, key {keys[port]:#026x}"
                hits_seen[port] += got[0]
            assert ctx.get(dut.valid) == model.valid_bits()

    _run(dut, testbench)
    # The stimulus must have exercised hits, not only misses.
    assert all(hits > cycles // 10 for hits in hits_seen), hits_seen


@pytest.mark.parametrize("n_entries", [1, 16, 64])
def test_write_to_lookup_timing(n_entries):
    """A key presented on the cycle of the write sees the old entry, from the next cycle the new
    one; each result appears exactly one cycle after its key."""
    dut = MatchCam(n_entries)
    index = n_entries - 1
    key = 0x0a000001_0a000002_1f90_c350
    other = key ^ 1 << 95

    async def testbench(ctx):
        def present(lookup_key):
            for port in range(dut.n_lookup):
                ctx.set(getattr(dut, f"lookup_key_{port}").as_value(), lookup_key)

        def result():
            return [(ctx.get(getattr(dut, f"lookup_hit_{port}")),
                     ctx.get(getattr(dut, f"lookup_index_{port}")))
                    for port in range(dut.n_lookup)]

        present(key)
        await ctx.tick()
        assert result() == [(0, 0)] * dut.n_lookup
        assert ctx.get(dut.valid) == 0

        # Cycle t: insert the key presented on port 0, and look it up in the same cycle.
        ctx.set(dut.write_en, 1)
        ctx.set(dut.write_index, index)
        ctx.set(dut.write_valid, 1)
        await ctx.tick()
        ctx.set(dut.write_en, 0)
        assert result() == [(0, 0)] * dut.n_lookup, "same-cycle lookup must see the old entry"
        assert ctx.get(dut.valid) == 1 << index

        # Cycle t + 1: the key, still presented, is now the first to see the entry.
        await ctx.tick()
        assert result() == [(1, index)] * dut.n_lookup
        present(other)
        await ctx.tick()
        assert result() == [(0, 0)] * dut.n_lookup, "result must belong to the previous key"
        present(key)
        await ctx.tick()
        assert result() == [(1, index)] * dut.n_lookup

        # Invalidate while looking the key up in the same cycle: still a hit, then a miss.
        ctx.set(dut.write_en, 1)
        ctx.set(dut.write_valid, 0)
        await ctx.tick()
        ctx.set(dut.write_en, 0)
        assert result() == [(1, index)] * dut.n_lookup
        assert ctx.get(dut.valid) == 0
        await ctx.tick()
        assert result() == [(0, 0)] * dut.n_lookup

    _run(dut, testbench)


def test_ports_are_independent():
    """The two ports look up different keys in the same cycle."""
    dut = MatchCam(16)
    keys = {3: 0x111, 12: 0x222}

    async def testbench(ctx):
        ctx.set(dut.write_en, 1)
        ctx.set(dut.write_valid, 1)
        for index, key in keys.items():
            ctx.set(dut.write_index, index)
            ctx.set(dut.lookup_key_0.as_value(), key)
            await ctx.tick()
        ctx.set(dut.write_en, 0)
        ctx.set(dut.lookup_key_0.as_value(), keys[12])
        ctx.set(dut.lookup_key_1.as_value(), keys[3])
        await ctx.tick()
        assert (ctx.get(dut.lookup_hit_0), ctx.get(dut.lookup_index_0)) == (1, 12)
        assert (ctx.get(dut.lookup_hit_1), ctx.get(dut.lookup_index_1)) == (1, 3)

    _run(dut, testbench)


@pytest.mark.parametrize("args", [(0,), (16, 0), ("16",)])
def test_bad_arguments(args):
    with warnings.catch_warnings():
        # The half-built component would warn that it was never elaborated when collected.
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(ValueError, match="must be a positive integer"):
            MatchCam(*args)
        gc.collect()
