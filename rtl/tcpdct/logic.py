"""Reductions of lists of values as balanced trees: the OR and the AND of many signals or
multi-bit values (an AND-OR multiplexer is ``any_of(Mux(select, value, 0) ...)``). Balanced
in the RTL, so that the logic depth does not rest on Yosys and ABC rebalancing a chain."""

from amaranth.hdl import Const


__all__ = ["any_of", "all_of"]


def _tree(values, combine, empty):
    values = list(values)
    if not values:
        return empty
    while len(values) > 1:
        values = [combine(values[i], values[i + 1]) if i + 1 < len(values) else values[i]
                  for i in range(0, len(values), 2)]
    return values[0]


def any_of(values):
    """The OR of ``values`` (0 if there are none)."""
    return _tree(values, lambda a, b: a | b, Const(0))


def all_of(values):
    """The AND of ``values`` (1 if there are none)."""
    return _tree(values, lambda a, b: a & b, Const(1))
