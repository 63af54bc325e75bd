"""Reductions of lists of values as balanced trees: the OR and the AND of many signals or
multi-bit values (an AND-OR multiplexer is ``any_of(Mux(select, value, 0) ...)``) and their sum.
Balanced in the RTL, so that the depth grows with log2 of their number rather than linearly, and
does not rest on Yosys and ABC rebalancing a chain."""

import operator

from amaranth.hdl import Const, Value


__all__ = ["any_of", "all_of", "tree_sum"]


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
