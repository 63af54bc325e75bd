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
    """The CAM as a dict from index to key of the valid entries, and the cycles left of the
    table rewrite that follows a key write (``MatchCam.write_busy``)."""

    def __init__(self, n_entries, write_cycles):
        self.n_entries = n_entries
        self.write_cycles = write_cycles
        self.entries = {}
        self.busy = 0

    def lookup(self, key):
        hits = [index for index, entry_key in self.entries.items() if entry_key == key]
        assert len(hits) <= 1, "the stimulus broke key uniqueness (R1)"
        return (1, hits[0]) if hits else (0, 0)

    def tick(self):
        """The clock edge: called after :meth:`write` of the cycle it ends."""
        self.busy = max(0, self.busy - 1)

    def write(self, index, key, valid):
        """A write presented in the cycle that is ending. Returns whether it wrote a key."""
        if index >= self.n_entries:
            return False
        if valid:
            if self.busy:
                return False  # ignored: the writer must wait for write_busy to fall
            self.entries[index] = key
            self.busy = self.write_cycles + 1  # the edge's tick() takes one off
            return True
        self.entries.pop(index, None)
        return False

    def valid_bits(self):
        return sum(1 << index for index in self.entries)


def _key_pool(rng, size):
    """Random keys plus near misses: each differs from another pool key in a single bit, so a
    comparator that ignores any bit position is caught."""
    keys = [rng.getrandbits(96) for _ in range(size)]
    return keys + [key ^ 1 << rng.randrange(96) for key in keys]


@pytest.mark.parametrize("n_entries, nibble", [(1, 4), (5, 4), (16, 4), (64, 4), (6, 2)])
def test_random_against_dict(n_entries, nibble):
    rng = _rng(f"cam-{n_entries}-{nibble}")
    dut = MatchCam(n_entries, nibble=nibble)
    model = CamModel(n_entries, dut.write_cycles)
    pool = _key_pool(rng, 2 * n_entries + 2)
    index_range = 1 << dut.index_bits  # includes indices >= n_entries, which must write nothing
    cycles = 3000 if n_entries <= 16 else 1500
    hits_seen = [0] * dut.n_lookup
    keys_written = 0

    async def testbench(ctx):
        nonlocal keys_written
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
            elif choice < 0.34:
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
            assert ctx.get(dut.write_busy) == (model.busy > 0)
            await ctx.tick()
            if write is not None:
                keys_written += model.write(*write)
            model.tick()

            for port in range(dut.n_lookup):
                got = (ctx.get(getattr(dut, f"lookup_hit_{port}")),
                       ctx.get(getattr(dut, f"lookup_index_{port}")))
                assert got == expected[port], f"port {port}, key {keys[port]:#026x}"
                hits_seen[port] += got[0]
            assert ctx.get(dut.valid) == model.valid_bits()

    _run(dut, testbench)
    # The stimulus must have exercised hits, not only misses, and many table rewrites (a key
    # write is tried in 30 % of cycles, so most of those in a rewrite are ignored).
    assert all(hits > cycles // 10 for hits in hits_seen), hits_seen
    assert keys_written > cycles // (2 * dut.write_cycles), keys_written


def _present(ctx, dut, lookup_key):
    for port in range(dut.n_lookup):
        ctx.set(getattr(dut, f"lookup_key_{port}").as_value(), lookup_key)


def _result(ctx, dut):
    return [(ctx.get(getattr(dut, f"lookup_hit_{port}")),
             ctx.get(getattr(dut, f"lookup_index_{port}")))
            for port in range(dut.n_lookup)]


def _present_write(ctx, dut, index, key, valid=1):
    """Present a write of ``key`` (on lookup port 0) and ``valid`` into entry ``index``."""
    ctx.set(dut.write_en, 1)
    ctx.set(dut.write_index, index)
    ctx.set(dut.write_valid, valid)
    ctx.set(dut.lookup_key_0.as_value(), key)


async def _write_key(ctx, dut, index, key):
    """Write ``key`` into entry ``index`` and wait for the table rewrite to end, checking that
    ``write_busy`` is high for exactly ``write_cycles`` cycles."""
    assert not ctx.get(dut.write_busy)
    _present_write(ctx, dut, index, key)
    await ctx.tick()
    ctx.set(dut.write_en, 0)
    for _ in range(dut.write_cycles):
        assert ctx.get(dut.write_busy)
        await ctx.tick()
    assert not ctx.get(dut.write_busy)


@pytest.mark.parametrize("n_entries", [1, 16, 64])
def test_write_to_lookup_timing(n_entries):
    """A key presented on the cycle of the write sees the old entry, from the next cycle the new
    one, through the table rewrite and after it; each result appears exactly one cycle after
    its key."""
    dut = MatchCam(n_entries)
    index = n_entries - 1
    key = 0x0a000001_0a000002_1f90_c350
    other = key ^ 1 << 95

    async def testbench(ctx):
        _present(ctx, dut, key)
        await ctx.tick()
        assert _result(ctx, dut) == [(0, 0)] * dut.n_lookup
        assert ctx.get(dut.valid) == 0

        # Cycle t: insert the key presented on port 0, and look it up in the same cycle.
        _present_write(ctx, dut, index, key)
        await ctx.tick()
        ctx.set(dut.write_en, 0)
        assert _result(ctx, dut) == [(0, 0)] * dut.n_lookup, \
            "same-cycle lookup must see the old entry"
        assert ctx.get(dut.valid) == 1 << index

        # Cycle t + 1 on: the key, still presented, hits, while the tables are rewritten and
        # after; the result always belongs to the previous cycle's key.
        for cycle in range(2 * dut.write_cycles):
            assert ctx.get(dut.write_busy) == (cycle < dut.write_cycles)
            _present(ctx, dut, other if cycle % 3 == 1 else key)
            await ctx.tick()
            expected = (0, 0) if cycle % 3 == 1 else (1, index)
            assert _result(ctx, dut) == [expected] * dut.n_lookup, f"cycle t + {cycle + 2}"

        # Invalidate while looking the key up in the same cycle: still a hit, then a miss.
        _present(ctx, dut, key)
        _present_write(ctx, dut, index, key, valid=0)
        await ctx.tick()
        ctx.set(dut.write_en, 0)
        assert _result(ctx, dut) == [(1, index)] * dut.n_lookup
        assert ctx.get(dut.valid) == 0
        assert not ctx.get(dut.write_busy), "an invalidation rewrites no table"
        await ctx.tick()
        assert _result(ctx, dut) == [(0, 0)] * dut.n_lookup

    _run(dut, testbench)


def test_key_write_while_busy_is_ignored():
    """A second key write during the rewrite changes nothing; an invalidation is taken."""
    dut = MatchCam(8)
    first, second = 0x123, 0x456

    async def testbench(ctx):
        _present_write(ctx, dut, 2, first)
        await ctx.tick()
        _present_write(ctx, dut, 5, second)
        await ctx.tick()
        assert ctx.get(dut.valid) == 1 << 2, "a key write during the rewrite must be ignored"
        ctx.set(dut.write_en, 0)
        for _ in range(dut.write_cycles):
            await ctx.tick()
        _present(ctx, dut, second)
        await ctx.tick()
        assert _result(ctx, dut)[0] == (0, 0)
        _present(ctx, dut, first)
        await ctx.tick()
        assert _result(ctx, dut)[0] == (1, 2)
        # Invalidations are taken during a rewrite.
        await _write_key(ctx, dut, 7, second)
        _present_write(ctx, dut, 1, first)
        await ctx.tick()
        _present_write(ctx, dut, 7, first, valid=0)
        await ctx.tick()
        ctx.set(dut.write_en, 0)
        assert ctx.get(dut.valid) == 1 << 1 | 1 << 2
        _present(ctx, dut, second)
        await ctx.tick()
        assert _result(ctx, dut)[0] == (0, 0)

    _run(dut, testbench)


def test_group_neighbours_hit_through_a_rewrite():
    """Entries sharing table words with the one being written (its group of four) hit in every
    cycle of the rewrite; so does the written key, then the one it replaced misses."""
    dut = MatchCam(8, n_lookup=1)
    keys = {4: 0xaaaa_0000_1111, 5: 0xbbbb_0000_2222, 6: 0xcccc_0000_3333, 7: 0xdddd_0000_4444}
    replacement = 0xeeee_0000_5555

    async def testbench(ctx):
        for index, key in keys.items():
            await _write_key(ctx, dut, index, key)
        _present_write(ctx, dut, 6, replacement)
        await ctx.tick()
        ctx.set(dut.write_en, 0)
        order = [4, 5, 7, 6, None]
        for cycle in range(dut.write_cycles + 4 * len(order)):
            index = order[cycle % len(order)]
            key = replacement if index == 6 else keys[index] if index is not None else keys[6]
            ctx.set(dut.lookup_key_0.as_value(), key)
            await ctx.tick()
            expected = (1, index) if index is not None else (0, 0)
            assert _result(ctx, dut) == [expected], f"cycle {cycle}, looking up {key:#x}"

    _run(dut, testbench)


def test_ports_are_independent():
    """The two ports look up different keys in the same cycle."""
    dut = MatchCam(16)
    keys = {3: 0x111, 12: 0x222}

    async def testbench(ctx):
        for index, key in keys.items():
            await _write_key(ctx, dut, index, key)
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
