"""The reductions of ``tcpdct.logic`` against Python's arithmetic, in the Amaranth simulator."""

import random

import pytest
from amaranth.hdl import Module, Signal
from amaranth.sim import Simulator

from tcpdct.logic import sum_equals


def _sum_equals_circuit(width_a, width_b, width_total):
    m = Module()
    a, b, total = Signal(width_a), Signal(width_b), Signal(width_total)
    equal = Signal()
    m.d.comb += equal.eq(sum_equals(a, b, total))
    return m, a, b, total, equal


def _check(width_a, width_b, width_total, cases):
    m, a, b, total, equal = _sum_equals_circuit(width_a, width_b, width_total)
    mask = (1 << width_total) - 1
    wrong = []

    async def testbench(ctx):
        for x, y, k in cases:
            ctx.set(a, x)
            ctx.set(b, y)
            ctx.set(total, k)
            expected = ((x & ((1 << width_a) - 1)) + (y & ((1 << width_b) - 1))) & mask == k
            if ctx.get(equal) != expected:
                wrong.append((x, y, k))

    sim = Simulator(m)
    sim.add_testbench(testbench)
    sim.run()
    assert not wrong, f"{len(wrong)} wrong answers, first a={wrong[0][0]:#x} b={wrong[0][1]:#x} " \
                      f"total={wrong[0][2]:#x}"


def test_sum_equals_every_case_of_four_bits():
    """Every a, b and total of four bits: the sum wraps around, and the test must say so."""
    _check(4, 4, 4, [(x, y, k) for x in range(16) for y in range(16) for k in range(16)])


@pytest.mark.parametrize("width_b", [3, 6])
def test_sum_equals_a_narrower_addend(width_b):
    """A narrower ``b`` is zero-extended: every case of a and total of six bits."""
    _check(6, width_b, 6, [(x, y, k) for x in range(64) for y in range(1 << width_b)
                           for k in range(64) if k in ((x + y) % 64, (x + y + 1) % 64, x, y)])


def test_sum_equals_64_bit_addresses():
    """An address plus a 16-bit length against 64-bit addresses: the true end, and ends off by
    one bit anywhere (carries across long runs of ones included), as the DMA writer asks it."""
    rng = random.Random(5)
    cases = []
    for _ in range(400):
        address = rng.getrandbits(64)
        if rng.random() < 0.3:
            address |= (1 << rng.randrange(16, 64)) - 1   # a long run of ones: a long carry
        length = rng.getrandbits(16)
        end = (address + length) % (1 << 64)
        cases.append((address, length, end))
        cases.append((address, length, end ^ (1 << rng.randrange(64))))
        cases.append((address, length, (end + 1) % (1 << 64)))
    _check(64, 16, 64, cases)
