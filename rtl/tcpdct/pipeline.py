"""A pipeline stage as a named set of registers, for blocks that split a computation over cycles."""

from amaranth.hdl import Signal, Value


__all__ = ["register_stage"]


def register_stage(m, stage, values):
    """Registers loaded every cycle from ``values``; the dict of them, under the same names.

    Each register is named ``<stage>_<name>`` so that a stage can be found in a waveform or a
    timing report. There is no enable: used where a value moves on every cycle (a shift register
    of stages), which keeps the enable logic off the paths being split.

    Parameters
    ----------
    m : Module
    stage : str
    values : dict of str to value-castable
    """
    registers = {}
    for name, value in values.items():
        value = Value.cast(value)
        registers[name] = Signal(value.shape(), name=f"{stage}_{name}")
        m.d.sync += registers[name].eq(value)
    return registers
