"""Reductions of lists of values, as balanced as Yosys makes them: the OR and the AND of many
signals or multi-bit values (an AND-OR multiplexer is ``any_of(Mux(select, value, 0) ...)``)."""

from amaranth.hdl import Const


__all__ = ["any_of", "all_of"]


def any_of(values):
    """The OR of ``values`` (0 if there are none)."""
    result = Const(0)
    for value in values:
        result = result | value
    return result


def all_of(values):
    """The AND of ``values`` (1 if there are none)."""
    result = Const(1)
    for value in values:
        result = result & value
    return result
