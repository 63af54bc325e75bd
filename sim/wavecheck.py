"""Check the AXI handshakes of the ``tcpdct`` top level in a waveform dump.

Every valid/ready channel of the top level (the AXI4-Stream ports, the AW, W and B channels of
``m_axi`` and the five channels of ``s_axil``) is found by name in the dump (the names are those of
:func:`tcpdct.ports.top_ports`) and sampled on the rising edges of ``clk``, except while ``rst`` is
high. The rules checked:

- once ``valid`` is high it stays high until the transfer (valid and ready on one edge);
- the payload (every other signal of the channel) holds while valid is high and ready is low;
- ``valid`` and ``ready`` are never unknown (``x``/``z``) out of reset;
- ``m_axi``: ``wlast`` on exactly the beat ``awlen`` says, no INCR burst across a 4 KiB boundary,
  a write response only after the address and the last data beat of its burst;
- ``s_axil``: a write response only after both the address and the data, a read response only
  after the address.

A rule broken on a channel whose ``valid`` the core drives is the core's fault (side ``DUT``); on a
channel the testbench drives, the testbench's (side ``testbench``). The per-channel statistics
(transfers, cycles valid, cycles stalled, utilisation) come with the report.

The dump is read as VCD by a reader of its own that keeps only the top-level ports: a dump of the
whole design as Verilator writes it, 100 000 cycles in 250 MB, is checked in about 3 s. FST is
converted first with GTKWave's ``fst2vcd`` when that is on ``PATH`` (Debian package ``gtkwave``);
otherwise record VCD (``WAVE_FORMAT=vcd``, see ``docs/verification.md``).

Run as a script: ``python sim/wavecheck.py DUMP [--json REPORT]``; the exit status is 1 when any
rule is broken, 2 when the dump cannot be read.
"""

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from amaranth.lib.wiring import Flow

from tcpdct.params import Params
from tcpdct.ports import top_ports


__all__ = ["WaveFormatError", "Violation", "Channel", "ChannelReport", "WaveCheckReport",
           "top_channels", "port_ids", "edge_samples", "check_dump", "main"]


#: Violations kept per channel and rule; the rest are only counted.
MAX_KEPT = 5

_AXI4_PAGE = 4096
_UNKNOWN = (b"x", b"X", b"z", b"Z")


class WaveFormatError(ValueError):
    """The dump cannot be read, or lacks a signal the check needs."""


@dataclass(frozen=True)
class Violation:
    """One broken rule.

    Parameters
    ----------
    channel : str
        Name of the channel, as in :class:`ChannelReport`.
    side : str
        ``"DUT"`` or ``"testbench"``: who broke the rule.
    rule : str
        Short name of the rule: ``valid-dropped``, ``payload-changed``, ``unknown``, ``wlast``,
        ``4k-crossing``, ``early-response``.
    signal : str
        The top-level port whose value broke the rule.
    time : int
        Dump time of the rising clock edge, in the units of the dump's ``$timescale``.
    cycle : int
        Index of that rising edge, counted from the first edge of the dump.
    message : str
    """

    channel: str
    side: str
    rule: str
    signal: str
    time: int
    cycle: int
    message: str

    def __str__(self):
        return (f"{self.channel}: {self.rule} by the {self.side} at t={self.time} "
                f"(cycle {self.cycle}) on {self.signal}: {self.message}")


@dataclass(frozen=True)
class Channel:
    """A valid/ready channel of the top level.

    Parameters
    ----------
    name : str
        ``s_axis_rx`` for a stream port, ``m_axi.AW`` for a channel of an AXI bus.
    bus : str
        The port prefix: ``s_axis_rx``, ``m_axi``, ``s_axil``.
    valid, ready : str
        Names of the handshake ports.
    payload : tuple of str
        Every other port of the channel.
    dut_drives : bool
        Whether the core drives ``valid`` and the payload.
    """

    name: str
    bus: str
    valid: str
    ready: str
    payload: tuple
    dut_drives: bool

    @property
    def driver(self):
        return "DUT" if self.dut_drives else "testbench"


@dataclass
class ChannelReport:
    """What one channel did after reset.

    Members
    -------
    channel : Channel
    cycles : int
        Rising edges out of reset.
    transfers : int
        Edges with valid and ready.
    cycles_valid : int
        Edges with valid.
    cycles_stalled : int
        Edges with valid and not ready.
    violations : list of Violation
        The first :data:`MAX_KEPT` of each rule.
    violation_count : int
        All of them, kept or not.
    """

    channel: Channel
    cycles: int = 0
    transfers: int = 0
    cycles_valid: int = 0
    cycles_stalled: int = 0
    violations: list = field(default_factory=list)
    violation_count: int = 0
    _kept: dict = field(default_factory=dict, repr=False)

    @property
    def utilisation(self):
        """Transfers per cycle out of reset."""
        return self.transfers / self.cycles if self.cycles else 0.0

    def add(self, violation):
        self.violation_count += 1
        kept = self._kept.get(violation.rule, 0)
        if kept < MAX_KEPT:
            self._kept[violation.rule] = kept + 1
            self.violations.append(violation)

    def as_dict(self):
        return {"bus": self.channel.bus, "driver": self.channel.driver,
                "cycles": self.cycles, "transfers": self.transfers,
                "cycles_valid": self.cycles_valid, "cycles_stalled": self.cycles_stalled,
                "utilisation": round(self.utilisation, 6),
                "violation_count": self.violation_count,
                "violations": [{"side": v.side, "rule": v.rule, "signal": v.signal,
                                "time": v.time, "cycle": v.cycle, "message": v.message}
                               for v in self.violations]}


@dataclass
class WaveCheckReport:
    """The result of :func:`check_dump`.

    Members
    -------
    path : Path
        The dump.
    timescale : str
        The dump's ``$timescale``, the unit of every ``time``.
    edges : int
        Rising clock edges in the dump.
    cycles : int
        Of them, edges out of reset.
    channels : dict of str to ChannelReport
        By channel name, in port order.
    """

    path: Path
    timescale: str
    edges: int
    cycles: int
    channels: dict

    @property
    def violation_count(self):
        return sum(report.violation_count for report in self.channels.values())

    @property
    def violations(self):
        """Every kept violation, in time order."""
        return sorted((v for report in self.channels.values() for v in report.violations),
                      key=lambda v: (v.time, v.channel))

    @property
    def ok(self):
        return self.violation_count == 0

    def as_dict(self):
        return {"path": str(self.path), "timescale": self.timescale, "edges": self.edges,
                "cycles": self.cycles, "violation_count": self.violation_count,
                "channels": {name: report.as_dict() for name, report in self.channels.items()}}

    def table(self):
        """The per-channel statistics as a Markdown table."""
        lines = ["| channel | driven by | transfers | cycles valid | cycles stalled | "
                 "utilisation | violations |",
                 "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
        for name, report in self.channels.items():
            lines.append(f"| {name} | {report.channel.driver} | {report.transfers} | "
                         f"{report.cycles_valid} | {report.cycles_stalled} | "
                         f"{report.utilisation:.3f} | {report.violation_count} |")
        return "\n".join(lines)

    def summary(self):
        """The table, then the kept violations."""
        text = [f"{self.path}: {self.cycles} cycles out of reset ({self.edges} clock edges, "
                f"time unit {self.timescale})", self.table()]
        if self.ok:
            text.append("no handshake violation")
        else:
            text.append(f"{self.violation_count} handshake violation(s); the first ones:")
            text.extend(f"  {violation}" for violation in self.violations)
        return "\n".join(text)


def top_channels(params=None):
    """Every valid/ready channel of the top level, from :func:`tcpdct.ports.top_ports`.

    A channel is a ``<prefix>valid`` port, its ``<prefix>ready`` and every other port that starts
    with ``<prefix>``; stream ports have the prefix ``<port>_t``, AXI channels ``<bus>_<ch>``.

    Parameters
    ----------
    params : Params, optional
        Only the names and directions are used, and they do not depend on the parameters.

    Returns
    -------
    list of Channel
    """
    ports = top_ports(params or Params())
    channels = []
    for name, member in ports.items():
        if not name.endswith("valid"):
            continue
        prefix = name[:-len("valid")]
        ready = prefix + "ready"
        if ready not in ports:
            raise WaveFormatError(f"Port {name!r} has no {ready!r}")
        payload = tuple(other for other in ports
                        if other.startswith(prefix) and other not in (name, ready))
        if prefix.endswith("_t"):
            bus = channel_name = prefix[:-2]
        else:
            bus, _, kind = prefix.rpartition("_")
            channel_name = f"{bus}.{kind.upper()}"
        channels.append(Channel(channel_name, bus, name, prefix + "ready", payload,
                                dut_drives=member.flow == Flow.Out))
    return channels


# Reading VCD ---------------------------------------------------------------------------------


def _parse_header(handle):
    """``(timescale, {scope path: {name: (id, width)}})`` and leaves ``handle`` after the header.

    Verilator writes a bit range after the name (``m_axi_awaddr [63:0]``); it is not part of the
    name.
    """
    scopes, stack, timescale = {}, [], "1"
    tokens = []
    for raw in handle:
        tokens.extend(raw.split())
        while tokens and b"$end" in tokens:
            end = tokens.index(b"$end")
            command, body = tokens[0], tokens[1:end]
            del tokens[:end + 1]
            if command == b"$scope":
                stack.append(body[1].decode() if len(body) > 1 else "")
            elif command == b"$upscope":
                stack.pop()
            elif command == b"$var":
                _, width, ident, reference = body[:4]
                scopes.setdefault(".".join(stack), {})[reference.decode()] = \
                    (ident, int(width))
            elif command == b"$timescale":
                timescale = b"".join(body).decode()
            elif command == b"$enddefinitions":
                return timescale, scopes
    raise WaveFormatError("The dump has no $enddefinitions: not a VCD file, or cut short")


def _top_scope(scopes, wanted):
    """The scope that holds the most of ``wanted``; the shallowest of equals."""
    def score(item):
        path, signals = item
        return (sum(name in signals for name in wanted), -path.count("."))
    path, signals = max(scopes.items(), key=score, default=("", {}))
    return path, signals


_SCALAR_VALUES = frozenset(b"01xzXZ")


def _rising_edges(handle, clock_id, slots, n_slots):
    """Yield ``(time, values)`` at each rising edge of ``clock_id``.

    ``values`` is the list of the values of the wanted signals (``slots`` maps their ids to an
    index, the clock's included) just before the edge's time step, which is what the flip-flops
    sample: the core's registers and the testbench's drivers both change within the edge's time
    step. The list is reused: copy what must outlive the next edge. Scalars are one byte
    (``b"1"``), vectors their bits (``b"0101"``), unknown until first set (``b"x"``).

    One value change per line, as every common writer does; this loop is the reader's cost.
    """
    values = [b"x"] * n_slots
    step = []
    time = 0
    clock, clock_before = b"x", b"x"
    slot_of = slots.get
    for line in handle:
        first = line[0]
        if first == 98:                                   # b<bits> <id>
            space = line.rfind(b" ")
            slot = slot_of(line[space + 1:].rstrip())
            if slot is not None:
                step.append((slot, line[1:space]))
        elif first in _SCALAR_VALUES:                     # <value><id>
            ident = line[1:].rstrip()
            slot = slot_of(ident)
            if slot is not None:
                if ident == clock_id:
                    clock = line[:1]
                step.append((slot, line[:1]))
        elif first == 35:                                 # #<time>
            if clock == b"1" and clock_before == b"0":
                yield time, values
            for slot, value in step:
                values[slot] = value
            step.clear()
            clock_before = clock
            time = int(line[1:])
        elif first in b" \t" and line.strip():
            raise WaveFormatError(f"Indented value change {line.strip()!r} at time {time}: "
                                  f"this reader takes one unindented change per line")
    if clock == b"1" and clock_before == b"0":
        yield time, values


def port_ids(path):
    """The VCD identifier of every signal of the top-level scope of a VCD dump.

    Parameters
    ----------
    path : path-like

    Returns
    -------
    dict of str to bytes
        By port name; the scope is the one holding the most ports of the core.
    """
    with open(path, "rb") as handle:
        _, scopes = _parse_header(handle)
    _, signals = _top_scope(scopes, list(top_ports(Params())))
    return {name: ident for name, (ident, _) in signals.items()}


def edge_samples(path, names, *, clock="clk"):
    """Yield ``(time, values)`` at each rising edge of ``clock`` in a VCD dump.

    Parameters
    ----------
    path : path-like
    names : list of str
        Ports of the top-level scope to sample.
    clock : str

    Yields
    ------
    time : int
        Dump time of the edge.
    values : tuple of bytes
        The values of ``names`` sampled by the edge (those just before its time step): ``b"1"``
        for a scalar, the bits for a vector.
    """
    ids = port_ids(path)
    slots = {ids[clock]: 0}
    index = [slots.setdefault(ids[name], len(slots)) for name in names]
    with open(path, "rb", buffering=1 << 20) as handle:
        _parse_header(handle)
        for time, values in _rising_edges(handle, ids[clock], slots, len(slots)):
            yield time, tuple(values[slot] for slot in index)


def _fst_to_vcd(path, directory):
    converter = shutil.which("fst2vcd")
    if converter is None:
        raise WaveFormatError(
            f"{path} is FST and there is no fst2vcd (Debian package gtkwave) to convert it; "
            f"record VCD instead: WAVES=1 WAVE_FORMAT=vcd, or run_cocotb(..., waves=True, "
            f"wave_format='vcd')")
    target = Path(directory) / (path.stem + ".vcd")
    with open(target, "wb") as out:
        result = subprocess.run([converter, str(path)], stdout=out, stderr=subprocess.PIPE)
    if result.returncode != 0:
        raise WaveFormatError(f"fst2vcd could not convert {path}: "
                              f"{result.stderr.decode(errors='replace').strip()}")
    return target


# Checking ------------------------------------------------------------------------------------


def _norm(bits):
    # Writers may or may not pad a vector with leading zeros; the value is the same.
    return bits.lstrip(b"0") or b"0"


def _show(bits):
    text = bits.decode()
    return f"{int(text, 2):#x}" if text.strip("01") == "" else text


class _ChannelState:
    """Per-channel memory from one edge to the next."""

    def __init__(self, channel, report, index):
        self.channel = channel
        self.report = report
        self.valid_slot = index[channel.valid]
        self.ready_slot = index[channel.ready]
        self.payload_slots = [index[name] for name in channel.payload]
        self.reset()

    def reset(self):
        self.stalled_payload = None
        self.transfer = False

    def violate(self, rule, signal, time, cycle, message, side=None):
        channel = self.channel
        self.report.add(Violation(channel.name, side or channel.driver, rule, signal, time,
                                  cycle, message))

    def edge(self, values, time, cycle):
        channel, report = self.channel, self.report
        valid, ready = values[self.valid_slot], values[self.ready_slot]
        report.cycles += 1
        self.transfer = False
        for name, value, side in ((channel.valid, valid, channel.driver),
                                  (channel.ready, ready,
                                   "testbench" if channel.dut_drives else "DUT")):
            if len(value) != 1 or value in _UNKNOWN:
                self.violate("unknown", name, time, cycle, f"{name} is {value.decode()}",
                             side=side)
        held = self.stalled_payload
        if valid == b"1":
            report.cycles_valid += 1
            if held is not None:
                for slot, name, before in zip(self.payload_slots, channel.payload, held):
                    if _norm(values[slot]) != before:
                        self.violate("payload-changed", name, time, cycle,
                                     f"{name} changed from {_show(before)} to "
                                     f"{_show(values[slot])} while stalled")
            if ready == b"1":
                report.transfers += 1
                self.transfer = True
                self.stalled_payload = None
            else:
                report.cycles_stalled += 1
                self.stalled_payload = [_norm(values[slot]) for slot in self.payload_slots]
        else:
            if held is not None:
                self.violate("valid-dropped", channel.valid, time, cycle,
                             f"{channel.valid} fell before the transfer")
            self.stalled_payload = None


def _bits(values, slot):
    return int(values[slot].replace(b"x", b"0").replace(b"z", b"0"), 2)


class _AxiWriteMaster:
    """``m_axi``: bursts of the AW channel against beats of W and responses of B."""

    def __init__(self, states, index, bus):
        self.aw, self.w, self.b = (states[f"{bus}.{kind}"] for kind in ("AW", "W", "B"))
        self.bus = bus
        self.addr, self.len, self.size, self.burst, self.wlast = (
            index[f"{bus}_{name}"] for name in ("awaddr", "awlen", "awsize", "awburst", "wlast"))
        self.reset()

    def reset(self):
        self.burst_beats = []     # beats of each burst whose address was taken, W not done
        self.data_bursts = []     # beats of each W burst done before its address
        self.beat = 0             # beats of the W burst in progress
        self.complete = 0         # bursts with address and last beat both taken
        self.responses = 0
        self.flagged = -1         # the response last reported early, reported once

    def edge(self, values, time, cycle):
        # Responses can only follow what was complete at earlier edges.
        if (values[self.b.valid_slot] == b"1" and self.responses >= self.complete
                and self.flagged != self.responses):
            self.flagged = self.responses
            self.b.violate("early-response", self.b.channel.valid, time, cycle,
                           f"response {self.responses + 1} before the address and last data "
                           f"beat of its burst ({self.complete} burst(s) complete)")
        if self.b.transfer:
            self.responses += 1
        if self.aw.transfer:
            self.address(values, time, cycle)
        if self.w.transfer:
            self.data(values, time, cycle)

    def address(self, values, time, cycle):
        address, beats = _bits(values, self.addr), _bits(values, self.len) + 1
        size = 1 << _bits(values, self.size)
        if _bits(values, self.burst) == 1:
            first = address & ~(size - 1)
            last = first + beats * size - 1
            if first // _AXI4_PAGE != last // _AXI4_PAGE:
                self.aw.violate("4k-crossing", f"{self.bus}_awaddr", time, cycle,
                                f"burst {address:#x}..{last:#x} ({beats} beats of {size} bytes) "
                                f"crosses a 4 KiB boundary")
        if self.data_bursts:
            done = self.data_bursts.pop(0)
            if done != beats:
                self.aw.violate("wlast", f"{self.bus}_wlast", time, cycle,
                                f"burst at {address:#x} has awlen+1={beats} beats but its "
                                f"wlast came on beat {done}")
            self.complete += 1
        else:
            self.burst_beats.append(beats)

    def data(self, values, time, cycle):
        self.beat += 1
        last = values[self.wlast] == b"1"
        if self.burst_beats:
            beats = self.burst_beats[0]
            if last != (self.beat == beats):
                self.w.violate("wlast", f"{self.bus}_wlast", time, cycle,
                               f"wlast={int(last)} on beat {self.beat} of a {beats}-beat burst")
            if not (last or self.beat >= beats):
                return
            self.burst_beats.pop(0)
            self.complete += 1
        elif not last:
            return
        else:
            self.data_bursts.append(self.beat)
        self.beat = 0


class _AxiLiteSlave:
    """``s_axil``: a response only after its request."""

    def __init__(self, states, bus):
        self.aw, self.w, self.b, self.ar, self.r = (
            states[f"{bus}.{kind}"] for kind in ("AW", "W", "B", "AR", "R"))
        self.reset()

    def reset(self):
        self.addresses = self.data = self.writes = self.reads = self.read_addresses = 0
        # The response last reported early on each channel, so that it is reported once.
        self.flagged = {"B": -1, "R": -1}

    def edge(self, values, time, cycle):
        for kind, response, done, requested, what in (
                ("B", self.b, self.writes, min(self.addresses, self.data), "address and data"),
                ("R", self.r, self.reads, self.read_addresses, "address")):
            if (values[response.valid_slot] == b"1" and done >= requested
                    and self.flagged[kind] != done):
                self.flagged[kind] = done
                response.violate("early-response", response.channel.valid, time, cycle,
                                 f"response {done + 1} before its {what}")
        self.writes += self.b.transfer
        self.reads += self.r.transfer
        self.addresses += self.aw.transfer
        self.data += self.w.transfer
        self.read_addresses += self.ar.transfer


def check_dump(path, *, clock="clk", reset="rst", params=None):
    """Check every channel of the top level in a dump.

    Parameters
    ----------
    path : path-like
        A VCD file, or an FST file when ``fst2vcd`` is on ``PATH``.
    clock, reset : str
        The clock (checked on its rising edges) and the active-high reset.
    params : Params, optional
        Passed to :func:`top_channels`.

    Returns
    -------
    WaveCheckReport

    Raises
    ------
    WaveFormatError
        If the dump cannot be read or lacks a port of the top level.
    """
    path = Path(path)
    with tempfile.TemporaryDirectory() as scratch:
        vcd = _fst_to_vcd(path, scratch) if path.suffix == ".fst" else path
        with open(vcd, "rb", buffering=1 << 20) as handle:
            return _check(handle, path, clock, reset, params)


def _check(handle, path, clock, reset, params):
    channels = top_channels(params)
    wanted = [clock, reset, *dict.fromkeys(
        name for channel in channels
        for name in (channel.valid, channel.ready, *channel.payload))]
    timescale, scopes = _parse_header(handle)
    scope, signals = _top_scope(scopes, wanted)
    missing = [name for name in wanted if name not in signals]
    if missing:
        raise WaveFormatError(f"{path}: the scope {scope!r} lacks {', '.join(missing)}; "
                              f"not a dump of the tcpdct top level?")
    # Ports with the same id (constants shared by the writer) share a slot.
    slots, index = {}, {}
    for name in wanted:
        ident = signals[name][0]
        index[name] = slots.setdefault(ident, len(slots))
    clock_id = signals[clock][0]
    reset_slot = index[reset]

    reports = {channel.name: ChannelReport(channel) for channel in channels}
    states = {channel.name: _ChannelState(channel, reports[channel.name], index)
              for channel in channels}
    buses = []
    for bus in dict.fromkeys(channel.bus for channel in channels):
        kinds = {name.rpartition(".")[2] for name in states if name.startswith(bus + ".")}
        if kinds == {"AW", "W", "B"}:
            buses.append(_AxiWriteMaster(states, index, bus))
        elif kinds == {"AW", "W", "B", "AR", "R"}:
            buses.append(_AxiLiteSlave(states, bus))
    every_state = list(states.values())

    edges = cycles = 0
    in_reset = True
    for time, values in _rising_edges(handle, clock_id, slots, len(slots)):
        edges += 1
        if values[reset_slot] != b"0":
            if not in_reset:
                for state in (*every_state, *buses):
                    state.reset()
            in_reset = True
            continue
        in_reset = False
        cycle = edges - 1
        cycles += 1
        for state in every_state:
            state.edge(values, time, cycle)
        for bus in buses:
            bus.edge(values, time, cycle)
    return WaveCheckReport(path, timescale, edges, cycles, reports)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Check the AXI handshakes of the tcpdct top level in a VCD (or FST) dump.")
    parser.add_argument("dump", type=Path, help="the wave file (dump.vcd or dump.fst)")
    parser.add_argument("--json", type=Path, metavar="REPORT",
                        help="also write the report as JSON to this file")
    parser.add_argument("--clock", default="clk", help="the clock port (default: clk)")
    parser.add_argument("--reset", default="rst",
                        help="the active-high reset port (default: rst)")
    options = parser.parse_args(argv)
    try:
        report = check_dump(options.dump, clock=options.clock, reset=options.reset)
    except (WaveFormatError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(report.summary())
    if options.json:
        options.json.write_text(json.dumps(report.as_dict(), indent=2) + "\n")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
