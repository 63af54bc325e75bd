"""Reductions of lists of values as balanced trees: the OR and the AND of many signals or
multi-bit values (an AND-OR multiplexer is ``any_of(Mux(select, value, 0) ...)``) and their sum.
Balanced in the RTL, so that the depth grows with log2 of their number rather than linearly, and
does not rest on Yosys and ABC rebalancing a chain. And a test of a sum against a value that
needs no carry chain (:func:`sum_equals`)."""

import operator

from amaranth.hdl import Cat, Const, Value


__all__ = ["any_of", "all_of", "tree_sum", "sum_equals"]


def _balanced(values, combine):
    """``values`` (a non-empty list) combined pairwise, half against half."""
    if len(values) == 1:
        return values[0]
    half = len(values) // 2
    return combine(_balanced(values[:half], combine), _balanced(values[half:], combine))


def any_of(values):
    """The OR of ``values`` (0 if there are none)."""
    values = list(values)
    return _balanced(values, operator.or_) if values else Const(0)


def all_of(values):
    """The AND of ``values`` (1 if there are none)."""
    values = list(values)
    return _balanced(values, operator.and_) if values else Const(1)


def tree_sum(terms):
    """The sum of ``terms`` as a balanced tree of adders."""
    terms = [Value.cast(term) for term in terms]
    if not terms:
        raise ValueError("Cannot sum an empty list of terms")
    return _balanced(terms, operator.add)


def sum_equals(a, b, total):
    """Whether ``a + b == total`` modulo ``2 ** len(total)``, without adding: bit by bit from
    the two bits below, then one AND tree, rather than a carry chain through every bit.

    If the sum is ``total``, the carry into each bit is ``a ^ b ^ total`` there, and the carry
    out of it follows from that bit alone: ``a & b | (a | b) & ~total``. So the sum is ``total``
    exactly when every bit's carry in, so worked out, is the carry out of the bit below (none
    into bit 0). ``a`` and ``b`` are zero-extended or truncated to the width of ``total``.
    """
    total = Value.cast(total)
    width = len(total)
    # Narrower operands are zero-extended by the operators below.
    a = Value.cast(a)[:width]
    b = Value.cast(b)[:width]
    carry_in = a ^ b ^ total
    carry_out = a & b | (a | b) & ~total
    return all_of(list(~(carry_in ^ Cat(Const(0, 1), carry_out[:width - 1]))))
