"""Building blocks shared by the property harnesses.

Every harness is a :class:`amaranth.hdl.Module` that instantiates one block, drives each of its
inputs from a free variable (``AnySeq``) and states properties about its outputs. The solver then
explores every input sequence that satisfies the harness's assumptions.

Reset is not a free input: the harness assumes it low, so a trace starts from the ``init``
values (the state a reset produces) in the base case, and from any state in the induction step.
"""

import re

from amaranth.asserts import AnySeq
from amaranth.hdl import (Assert, Assume, Cat, Cover, Elaboratable, Fragment, Module,
                          ResetSignal, Signal, Value)
from amaranth.lib import stream, wiring


__all__ = ["harness_module", "past", "drive_inputs", "stream_rules", "stream_members",
           "elaborate", "signals_named", "AxiChannel", "StreamRulesHarness"]


def harness_module():
    """A module for a harness, with reset held low, and a flag that is set from cycle 1 on.

    Returns
    -------
    (Module, Signal)
        The module and ``started``, which gates every property that looks at a past value: in
        the first cycle of a trace there is no past.
    """
    m = Module()
    m.d.comb += Assume(~ResetSignal())
    started = Signal()
    m.d.sync += started.eq(1)
    return m, started


def past(m, value, name):
    """A register holding ``value`` as it was in the previous cycle.

    Amaranth 0.5 has no ``Past()``; a register in the harness is the same thing and shows up in
    counterexample traces under ``name``.
    """
    reg = Signal.like(value, name=f"past_{name}")
    m.d.sync += reg.eq(value)
    return reg


def elaborate(dut):
    """Elaborate ``dut`` once so that a harness can refer to its internal signals.

    Returns the fragment, to be added as the harness's submodule in place of ``dut``: adding
    ``dut`` itself would elaborate it a second time, with new internal signals.
    """
    return Fragment.get(dut, platform=None)


def signals_named(fragment, pattern, *, domain=None):
    """Signals assigned anywhere in ``fragment`` (not its subfragments) whose name matches, or
    only those assigned in ``domain``.

    For white-box properties: a harness may need a block's state (the CAM's stored keys) that no
    port shows. The block is not changed for it; the harness finds the signals by name, so a
    renaming in the block makes the harness fail loudly rather than prove nothing. A name may
    also be that of a subcomponent's port that the block drives (a register ``queue`` and the
    ``queue`` input of a unit fed from elsewhere): asking for a register, pass ``domain="sync"``,
    and two registers of one name are an error.

    Returns
    -------
    dict of str to Signal
    """
    regex = re.compile(pattern)
    found = {}
    for name, statements in fragment.statements.items():
        if domain is not None and name != domain:
            continue
        for statement in statements:
            for signal in statement._lhs_signals():
                if not regex.fullmatch(signal.name):
                    continue
                if domain is not None and found.get(signal.name, signal) is not signal:
                    raise RuntimeError(f"Two signals named {signal.name!r} in {domain}")
                found[signal.name] = signal
    return found


def stream_members(dut):
    """Names and flows of the ``lib.stream`` members of ``dut``'s signature.

    Returns
    -------
    list of (str, Flow)
        ``In`` for a stream the block receives, ``Out`` for one it sends.
    """
    result = []
    for name, member in dut.signature.members.items():
        if member.is_signature and isinstance(member.signature.flip()
                                              if member.flow == wiring.In else member.signature,
                                              stream.Signature):
            result.append((name, member.flow))
    return result


def drive_inputs(m, dut):
    """Drive every input port of ``dut`` from its own free variable (a new value each cycle)."""
    for path, member, value in dut.signature.flatten(dut):
        if member.flow == wiring.In:
            m.d.comb += value.eq(AnySeq(len(Value.cast(value))))


def stream_rules(m, started, port, name, *, environment):
    """The AXI-Stream rules on one stream: once valid, valid and payload hold until ready.

    Parameters
    ----------
    m : Module
    started : Signal
        From :func:`harness_module`.
    port : stream interface
        Any object with ``valid``, ``ready`` and ``payload``.
    name : str
        Used to name the harness's registers.
    environment : bool
        ``True`` for a stream the block receives: the rules are assumed of its sender. ``False``
        for a stream the block sends: the rules are asserted of the block.

    Returns
    -------
    Signal
        High in a cycle in which the stream was stalled (valid without ready) the cycle before;
        harnesses cover it to show the rule is not vacuous.
    """
    payload = Value.cast(port.payload)
    past_valid = past(m, port.valid, f"{name}_valid")
    past_ready = past(m, port.ready, f"{name}_ready")
    past_payload = past(m, payload, f"{name}_payload")
    stalled = Signal(name=f"{name}_was_stalled")
    m.d.comb += stalled.eq(started & past_valid & ~past_ready)
    rule = ~stalled | (port.valid & (payload == past_payload))
    check = Assume if environment else Assert
    m.d.comb += check(rule, f"{name}: valid or payload changed while stalled")
    return stalled


class AxiChannel:
    """A valid/ready channel made of flat ports, for :func:`stream_rules`.

    Parameters
    ----------
    block : object
        The component whose ports these are.
    prefix : str
        Port name prefix, as ``axi_aw``.
    payload : iterable of str
        The channel's payload port names without the prefix, as ``("addr", "len")``.
    """

    def __init__(self, block, prefix, payload):
        self.valid = getattr(block, f"{prefix}valid")
        self.ready = getattr(block, f"{prefix}ready")
        self.payload = Cat(*(getattr(block, f"{prefix}{name}") for name in payload))


class StreamRulesHarness(Elaboratable):
    """The AXI-Stream rules asserted on a block's outputs, assumed on its inputs.

    Parameters
    ----------
    block_factory : callable
        Returns the block (a fresh one on each call).
    outputs : callable
        Given the block, returns ``{name: channel}`` of the channels to check; ``None`` means
        every ``lib.stream`` output of the block's signature.
    inputs : callable
        Given the block, returns ``{name: channel}`` of flat-port channels (:class:`AxiChannel`)
        whose sender obeys the rules too; every ``lib.stream`` input is included without it.
    invariants : callable
        Given the harness's module and the block's elaborated fragment, asserts facts about the
        block's internal state. The induction step starts from any state that satisfies the
        assertions for ``depth`` cycles, unreachable ones included; where an output's rule rests
        on internal state (a queue whose head is read from its RAM holds still only if its level
        agrees with its pointers), the invariants rule those states out, and are proved too.
    """

    def __init__(self, block_factory, outputs=None, inputs=None, invariants=None):
        self.block_factory = block_factory
        self.outputs = outputs
        self.inputs = inputs
        self.invariants = invariants

    def elaborate(self, platform):
        m, started = harness_module()
        block = self.block_factory()
        if self.invariants is None:
            m.submodules.block = block
        else:
            fragment = elaborate(block)
            m.submodules.block = fragment
            self.invariants(m, fragment)
        drive_inputs(m, block)

        in_channels = {name: getattr(block, name) for name, flow in stream_members(block)
                       if flow == wiring.In}
        if self.inputs is not None:
            in_channels.update(self.inputs(block))
        for name, channel in in_channels.items():
            stream_rules(m, started, channel, name, environment=True)

        if self.outputs is None:
            out_channels = {name: getattr(block, name) for name, flow in stream_members(block)
                            if flow == wiring.Out}
        else:
            out_channels = self.outputs(block)
        if not out_channels:
            raise RuntimeError(f"{type(block).__name__} has no output stream to check")
        for name, channel in out_channels.items():
            stalled = stream_rules(m, started, channel, name, environment=False)
            # Non-vacuity: the output does stall, and does move on afterwards.
            m.d.comb += Cover(stalled & channel.ready)
        return m
