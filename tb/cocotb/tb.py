"""System testbench of the whole core: cocotbext-axi drivers around ``tcpdct`` and the golden
model as scoreboard.

Every step (a command, a burst of received frames, a transmitted frame) is applied to the DUT
and to :class:`model.Model`; the step passes when the DUT's events equal the model's, the host
memory of every posted buffer equals the model's memory, and the DMA wrote exactly the bytes the
model wrote, all inside posted buffers (R52). Steps follow the ordering rule of
``docs/architecture.md`` (a command only after every earlier frame's event, a frame only after
the earlier command's ``CMD_DONE``), which is what makes the model's order the DUT's order.

The replay runner reuses :class:`TB` unchanged: it is driven by the same three step methods.
"""

import itertools
import json
import logging
import os
import random
from collections import deque

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge, with_timeout, SimTimeoutError

from cocotbext.axi import (
    AxiStreamBus, AxiStreamSource, AxiStreamSink, AxiStreamFrame,
    AxiWriteBus, AxiRamWrite, AxiLiteBus, AxiLiteMaster,
)

from tcpdct.params import Params
from tcpdct.records import RECORD_BYTES, Command, Event, EventType, Opcode
from tcpdct import regmap

from model import Model


__all__ = ["TB", "DmaWriteMonitor", "ScoreboardError", "params_from_env", "seed_from_env",
           "HOST_MEMORY_BYTES", "CLOCK_NS", "PAUSE_PATTERNS"]


#: Size of the simulated host memory. Buffers sit above 4 GiB so that the upper address bits of
#: the DMA master are exercised; cocotbext-axi's sparse memory cannot be 2**64 (``len()``).
HOST_MEMORY_BYTES = 1 << 40

#: Where :meth:`TB.alloc` starts placing buffers.
ALLOC_BASE = 0x1_2340_0000

CLOCK_NS = 4

#: Cycles a transmitted frame is given, after it has left, to update the DCT.
TX_SETTLE_CYCLES = 32

#: Cycles waited after the last expected event of a step for events the model did not expect.
STRAY_EVENT_CYCLES = 16

#: Pause patterns every test is crossed with: no stalls, or random idle cycles on every input
#: and random back-pressure on every output and AXI channel (R60).
PAUSE_PATTERNS = ("none", "random")

_TERMINAL = (EventType.RX_PLACED, EventType.LEGACY, EventType.DROP)


class ScoreboardError(AssertionError):
    """The DUT disagreed with the golden model or broke a rule the monitor checks."""


def params_from_env():
    """The :class:`Params` the pytest wrapper built the DUT with (``TCPDCT_PARAMS``, JSON)."""
    text = os.environ.get("TCPDCT_PARAMS")
    return Params() if not text else Params(**json.loads(text))


def seed_from_env():
    """The random seed of this run: ``TCPDCT_SEED``, or a fresh one that is printed to replay."""
    text = os.environ.get("TCPDCT_SEED")
    return int(text, 0) if text else random.randrange(1 << 32)


def _random_pauses(rng, probability):
    while True:
        yield rng.random() < probability


class DmaWriteMonitor:
    """Watches the AXI4 write channels of the DMA master and records every strobed byte.

    Checks while it runs, recording each failure in :attr:`violations`:

    - every strobed byte lies in one of :attr:`granted` (R52);
    - bursts are INCR, of full-width beats (``awsize`` = data width), at most
      ``max_burst_beats`` long and never across a 4 KiB boundary;
    - ``wlast`` is set on exactly the last beat of each burst, and no strobe is set on a lane
      below the start address of the first beat.

    Parameters
    ----------
    dut : cocotb handle
        The ``tcpdct`` top level.
    params : Params
        Build parameters of the DUT.

    Members
    -------
    granted : list of (int, int)
        ``(address, length)`` ranges DMA may write right now; the testbench sets it per step.
    written : dict of int to int
        Every byte written since :meth:`start_step`, address to value.
    violations : list of str
        Every rule broken so far, with the clock cycle.
    outstanding : int
        Bursts whose write response has not come back yet.
    """

    def __init__(self, dut, params):
        self.dut = dut
        self.params = params
        self.byte_lanes = params.data_bytes
        self.size = (self.byte_lanes - 1).bit_length()
        self.granted = []
        self.written = {}
        self.violations = []
        self._bursts = deque()
        self._beats = deque()
        self._cycle = 0
        self.outstanding = 0
        self._task = cocotb.start_soon(self._run())

    def start_step(self, granted):
        self.granted = [(address, length) for address, length in granted]
        self.written = {}

    def _violation(self, text):
        message = f"DMA write monitor, cycle {self._cycle}: {text}"
        logging.getLogger("cocotb.tb").error(message)
        self.violations.append(message)

    def _inside_granted(self, address):
        return any(start <= address < start + length for start, length in self.granted)

    def _check_burst(self, address, beats, size, burst):
        if burst != 1:
            self._violation(f"burst at {address:#x} has awburst={burst}, not INCR")
        if size != self.size:
            self._violation(f"burst at {address:#x} has awsize={size}, not {self.size}")
        if beats > self.params.max_burst_beats:
            self._violation(f"burst at {address:#x} has {beats} beats, more than "
                            f"max_burst_beats={self.params.max_burst_beats}")
        aligned = address - address % (1 << size)
        last = aligned + beats * (1 << size) - 1
        if address >> 12 != last >> 12:
            self._violation(f"burst {address:#x}..{last:#x} crosses a 4 KiB boundary")

    def _take_beat(self, burst, data, strobe, last):
        address, beats, size, number = burst
        step = 1 << size
        beat_address = address if number == 0 else address - address % step + number * step
        lane_base = beat_address - beat_address % self.byte_lanes
        first_lane = beat_address % self.byte_lanes
        if last != (number == beats - 1):
            self._violation(f"beat {number} of the {beats}-beat burst at {address:#x} has "
                            f"wlast={int(last)}")
        for lane in range(self.byte_lanes):
            if not strobe >> lane & 1:
                continue
            byte_address = lane_base + lane
            if lane < first_lane:
                self._violation(f"strobe on lane {lane} below the start {beat_address:#x} of "
                                f"beat {number} of the burst at {address:#x}")
            if not self._inside_granted(byte_address):
                self._violation(f"write to {byte_address:#x}, outside every posted buffer")
            self.written[byte_address] = data >> (8 * lane) & 0xff

    def _match(self):
        while self._bursts and self._beats:
            burst = self._bursts[0]
            data, strobe, last = self._beats.popleft()
            self._take_beat(burst, data, strobe, last)
            address, beats, size, number = burst
            if number + 1 == beats:
                self._bursts.popleft()
            else:
                self._bursts[0] = (address, beats, size, number + 1)

    async def _run(self):
        dut = self.dut
        clock_edge = RisingEdge(dut.clk)
        while True:
            await clock_edge
            self._cycle += 1
            if int(dut.rst.value):
                self._bursts.clear()
                self._beats.clear()
                self.outstanding = 0
                continue
            if int(dut.m_axi_awvalid.value) and int(dut.m_axi_awready.value):
                address = int(dut.m_axi_awaddr.value)
                beats = int(dut.m_axi_awlen.value) + 1
                size = int(dut.m_axi_awsize.value)
                self._check_burst(address, beats, size, int(dut.m_axi_awburst.value))
                self._bursts.append((address, beats, size, 0))
                self.outstanding += 1
            if int(dut.m_axi_wvalid.value) and int(dut.m_axi_wready.value):
                self._beats.append((int(dut.m_axi_wdata.value), int(dut.m_axi_wstrb.value),
                                    bool(int(dut.m_axi_wlast.value))))
            if int(dut.m_axi_bvalid.value) and int(dut.m_axi_bready.value):
                self.outstanding -= 1
            self._match()


class TB:
    """The whole core under test, its host and the golden model that predicts it.

    Parameters
    ----------
    dut : cocotb handle
        The ``tcpdct`` top level (clock ``clk``, synchronous active-high reset ``rst``).
    params : Params, optional
        Build parameters of the DUT; from ``TCPDCT_PARAMS`` when omitted.
    seed : int, optional
        Seed of every random choice (pauses, buffer placement); from ``TCPDCT_SEED`` when
        omitted, else fresh. It is logged so that a failure can be replayed.
    model : model.Model, optional
        The scoreboard's model; a fresh ``Model(params)`` when omitted.

    Members
    -------
    rx_source, tx_source, cmd_source : cocotbext.axi.AxiStreamSource
        Drive ``s_axis_rx``, ``s_axis_tx`` and ``s_axis_cmd``.
    tx_sink, evt_sink : cocotbext.axi.AxiStreamSink
        Take ``m_axis_tx`` and ``m_axis_evt``.
    host_memory : cocotbext.axi.AxiRamWrite
        The host memory behind ``m_axi``.
    axil : cocotbext.axi.AxiLiteMaster
        Reads the registers on ``s_axil``.
    write_monitor : DmaWriteMonitor
    model : model.Model
    rng : random.Random
        Seeded from ``seed``; tests draw their random choices from it too.
    """

    def __init__(self, dut, params=None, *, seed=None, model=None):
        self.dut = dut
        self.params = params_from_env() if params is None else params
        self.seed = seed_from_env() if seed is None else seed
        self.log = logging.getLogger("cocotb.tb")
        self.log.setLevel(logging.INFO)
        self.log.info("TCPDCT_SEED=%#x (set it to replay this run); %r", self.seed, self.params)
        self.rng = random.Random(self.seed)
        self.model = Model(self.params) if model is None else model

        self._clock = Clock(dut.clk, CLOCK_NS, unit="ns").start()

        # The drivers log every frame and burst at INFO, which slows the simulation down.
        logging.getLogger(f"cocotb.{dut._name}").setLevel(logging.WARNING)

        def axis(prefix):
            return AxiStreamBus.from_prefix(dut, prefix)

        self.rx_source = AxiStreamSource(axis("s_axis_rx"), dut.clk, dut.rst)
        self.tx_source = AxiStreamSource(axis("s_axis_tx"), dut.clk, dut.rst)
        self.cmd_source = AxiStreamSource(axis("s_axis_cmd"), dut.clk, dut.rst)
        self.tx_sink = AxiStreamSink(axis("m_axis_tx"), dut.clk, dut.rst)
        self.evt_sink = AxiStreamSink(axis("m_axis_evt"), dut.clk, dut.rst)
        self.host_memory = AxiRamWrite(AxiWriteBus.from_prefix(dut, "m_axi"), dut.clk, dut.rst,
                                       size=HOST_MEMORY_BYTES)
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), dut.clk, dut.rst)
        self.write_monitor = DmaWriteMonitor(dut, self.params)

        self._pending_events = deque()
        self._step = self._previous = "reset"
        self._alloc_next = ALLOC_BASE
        self._tags = itertools.count(0x7a90_0001)

    # Pauses ------------------------------------------------------------------------------------

    def _sources(self):
        """Channels the TB drives: input streams of the DUT and the AXI responses it receives."""
        return [self.rx_source, self.tx_source, self.cmd_source,
                self.host_memory.b_channel,
                self.axil.write_if.aw_channel, self.axil.write_if.w_channel,
                self.axil.read_if.ar_channel]

    def _sinks(self):
        """Channels the TB accepts: output streams of the DUT and its AXI requests."""
        return [self.tx_sink, self.evt_sink,
                self.host_memory.aw_channel, self.host_memory.w_channel,
                self.axil.write_if.b_channel, self.axil.read_if.r_channel]

    def set_idle_generator(self, generator=None):
        """Insert idle cycles on every input; ``generator`` makes one iterator per channel."""
        for channel in self._sources():
            channel.set_pause_generator(generator() if generator else None)

    def set_backpressure_generator(self, generator=None):
        """Back-pressure every output; ``generator`` makes one iterator per channel."""
        for channel in self._sinks():
            channel.set_pause_generator(generator() if generator else None)

    def set_pauses(self, pattern):
        """Apply one of :data:`PAUSE_PATTERNS`.

        Each channel gets its own stream of pauses, from a generator seeded from :attr:`rng`,
        with its own probability, so that the channels are not in step with one another.
        """
        if pattern not in PAUSE_PATTERNS:
            raise ValueError(f"Pause pattern must be one of {PAUSE_PATTERNS!r}, not {pattern!r}")
        if pattern == "none":
            self.set_idle_generator(None)
            self.set_backpressure_generator(None)
            return

        def generator():
            rng = random.Random(self.rng.randrange(1 << 32))
            return _random_pauses(rng, rng.choice((0.1, 0.3, 0.5, 0.8)))
        self.set_idle_generator(generator)
        self.set_backpressure_generator(generator)

    # Reset -------------------------------------------------------------------------------------

    async def cycles(self, count):
        for _ in range(count):
            await RisingEdge(self.dut.clk)

    async def reset(self):
        """Hold ``rst`` for a few cycles; the DCT is empty and no buffer is posted after it."""
        self.dut.rst.value = 1
        await self.cycles(8)
        self.dut.rst.value = 0
        await self.cycles(8)

    # Host memory -------------------------------------------------------------------------------

    def alloc(self, length, *, cross_page=False):
        """A fresh host-memory range of ``length`` bytes, at an odd address.

        With ``cross_page`` the range straddles a 4 KiB boundary (``length`` must be at least 2),
        so that the DMA master has to split its bursts there.
        """
        base = self._alloc_next
        if cross_page:
            if length < 2:
                raise ValueError(f"A range crossing a page needs 2 bytes or more, not {length!r}")
            boundary = (base + length + 0xfff) & ~0xfff
            address = (boundary - self.rng.randrange(1, length)) | 1
        else:
            address = base + self.rng.randrange(0, 64) * 2 + 1
        self._alloc_next = (address + length + 64 + 0xff) & ~0xff
        return address

    def next_tag(self):
        """A tag no other buffer of this run has, so that events name their buffer unambiguously."""
        return next(self._tags)

    def _prefill(self, cmd):
        # A known, non-zero pattern in both memories makes a write of zeros, or a write of the
        # right bytes to the wrong place, visible to the memory comparison.
        if not isinstance(cmd, Command) or cmd.opcode not in (Opcode.POST_BUFFER,
                                                              Opcode.POST_LEGACY):
            return
        if cmd.length == 0 or cmd.address + cmd.length > HOST_MEMORY_BYTES:
            return
        pattern = bytes((cmd.tag + 37 * i) & 0xff | 0x80 for i in range(cmd.length))
        self.host_memory.write(cmd.address, pattern)
        self.model.memory.write(cmd.address, pattern)

    # Steps -------------------------------------------------------------------------------------

    def _timeout_ns(self, n_bytes):
        # Generous (a beat of 8 bytes may take 300 cycles): channels may pause most of the time,
        # and the receive pipeline, the DMA and the event queue each add their own latency.
        return CLOCK_NS * (4000 + 40 * n_bytes)

    async def _collect(self, what, expected, timeout_ns):
        """The DUT's next ``len(expected)`` events, or a :class:`ScoreboardError` on timeout."""
        got = []
        while len(got) < len(expected):
            if not self._pending_events:
                try:
                    frame = await with_timeout(self.evt_sink.recv(), timeout_ns, "ns")
                except SimTimeoutError:
                    raise ScoreboardError(
                        f"{what}: timed out after {timeout_ns} ns waiting for event "
                        f"{len(got) + 1} of {len(expected)}\n"
                        f"  expected: {expected}\n  got:      {got}") from None
                data = bytes(frame.tdata)
                if len(data) % RECORD_BYTES:
                    raise ScoreboardError(f"{what}: event stream frame of {len(data)} bytes, "
                                          f"not a whole number of {RECORD_BYTES}-byte records")
                for offset in range(0, len(data), RECORD_BYTES):
                    self._pending_events.append(data[offset:offset + RECORD_BYTES])
            record = self._pending_events.popleft()
            try:
                got.append(Event.unpack(record))
            except ValueError as error:
                raise ScoreboardError(f"{what}: undecodable event {record.hex()}: {error}\n"
                                      f"  expected: {expected}\n  got so far: {got}") from None
        return got

    def _check_no_stray_events(self, where):
        def decode(record):
            try:
                return Event.unpack(record)
            except ValueError:
                return f"undecodable {bytes(record).hex()}"

        if self._pending_events or not self.evt_sink.empty():
            stray = [decode(record) for record in self._pending_events]
            while not self.evt_sink.empty():
                data = bytes(self.evt_sink.recv_nowait().tdata)
                stray += [decode(data[i:i + RECORD_BYTES])
                          for i in range(0, len(data), RECORD_BYTES)]
            self._pending_events.clear()
            raise ScoreboardError(f"at {where}: events the model did not expect: {stray}")

    def _start_step(self, what):
        self._check_no_stray_events(f"the start of {what}")
        self._check_violations(what)
        self._previous, self._step = self._step, what

    async def _end_step(self, what):
        """Give a stray event of this step (one the model did not predict) time to arrive, so
        that it is reported against this step rather than the next."""
        await self.cycles(STRAY_EVENT_CYCLES)
        self._check_no_stray_events(f"the end of {what}")

    def _check_violations(self, what):
        if self.write_monitor.violations:
            violations = "\n  ".join(self.write_monitor.violations)
            raise ScoreboardError(f"{what}: DMA write monitor:\n  {violations}")

    def _check_events(self, what, got, expected):
        if got != expected:
            lines = []
            for number in range(max(len(got), len(expected))):
                mine = expected[number] if number < len(expected) else "(none)"
                theirs = got[number] if number < len(got) else "(none)"
                mark = "  " if mine == theirs else "!="
                lines.append(f"  {mark} #{number}: model {mine}\n         dut   {theirs}")
            raise ScoreboardError(f"{what}: events differ (previous step: {self._previous})\n"
                                  + "\n".join(lines))

    def _check_memory(self, what):
        """Every posted buffer reads the same in the DUT's host memory as in the model's, and the
        DMA wrote exactly the bytes the model wrote in this step (R52: only announced bytes).

        Called in the same instant the step's last event arrives, so that it also checks that
        the data was written and acknowledged before the event announcing it (R50).
        """
        self._check_violations(what)
        if self.write_monitor.outstanding:
            raise ScoreboardError(f"{what}: the last event came with "
                                  f"{self.write_monitor.outstanding} write burst(s) not yet "
                                  f"acknowledged (R50)")
        model_written = {}
        for address, data in self.model.last_writes:
            for offset, value in enumerate(data):
                model_written[address + offset] = value
        extra = sorted(set(self.write_monitor.written) - set(model_written))
        missing = sorted(set(model_written) - set(self.write_monitor.written))
        if extra or missing:
            raise ScoreboardError(
                f"{what}: DMA wrote {len(extra)} byte(s) the model did not (first "
                f"{[hex(a) for a in extra[:8]]}) and missed {len(missing)} the model wrote "
                f"(first {[hex(a) for a in missing[:8]]})")
        for grant in self.model.granted:
            if grant.address + grant.length > HOST_MEMORY_BYTES:
                continue
            mine = self.model.memory.read(grant.address, grant.length)
            theirs = self.host_memory.read(grant.address, grant.length)
            if mine != theirs:
                wrong = [i for i in range(grant.length) if mine[i] != theirs[i]]
                raise ScoreboardError(
                    f"{what}: host memory of {grant.kind} buffer tag {grant.tag:#x} at "
                    f"{grant.address:#x}+{grant.length} differs in {len(wrong)} byte(s), "
                    f"first at offset {wrong[0]}: model {mine[wrong[0]:wrong[0] + 16].hex()} "
                    f"dut {theirs[wrong[0]:wrong[0] + 16].hex()}")

    async def command(self, cmd):
        """Send one command and check its events, ``CMD_DONE`` last (R40).

        Parameters
        ----------
        cmd : tcpdct.records.Command or int
            A command, or a raw 256-bit record (to send opcodes :class:`Opcode` lacks).

        Returns
        -------
        list of tcpdct.records.Event
            The DUT's events, equal to the model's.
        """
        what = f"command {cmd!r}" if isinstance(cmd, Command) else f"command {cmd:#x}"
        self._start_step(what)
        self._prefill(cmd)
        expected = self.model.command(cmd)
        # A command never makes the DMA write anything.
        self.write_monitor.start_step([])
        record = cmd.to_bytes() if isinstance(cmd, Command) \
            else int(cmd).to_bytes(RECORD_BYTES, "little")
        await self.cmd_source.send(record)
        got = await self._collect(what, expected, self._timeout_ns(0))
        self._check_events(what, got, expected)
        if got[-1].type != EventType.CMD_DONE or \
                sum(event.type == EventType.CMD_DONE for event in got) != 1:
            raise ScoreboardError(f"{what}: not exactly one CMD_DONE, last: {got}")
        self._check_memory(what)
        await self._end_step(what)
        return got

    async def rx(self, frames):
        """Send received frames back to back and check the events they produce.

        Parameters
        ----------
        frames : list
            Each a frame (bytes, or a scapy packet), or ``(frame, mac_error)`` to set the MAC
            error flag (``tuser`` on the last beat).

        Returns
        -------
        list of tcpdct.records.Event
            Exactly one RX_PLACED, LEGACY or DROP per frame, each RX_PLACED followed by the
            BUF_DONEs of the buffers it completed.
        """
        items = []
        for item in frames:
            frame, mac_error = item if isinstance(item, tuple) else (item, False)
            items.append((bytes(frame), bool(mac_error)))
        what = f"rx of {len(items)} frame(s) of {[len(frame) for frame, _ in items]} bytes"
        self._start_step(what)
        expected = []
        model_writes = []
        for frame, mac_error in items:
            expected += self.model.rx_frame(frame, mac_error=mac_error)
            model_writes += self.model.last_writes
        self.model.last_writes = model_writes
        self.write_monitor.start_step((grant.address, grant.length)
                                      for grant in self.model.granted)
        for frame, mac_error in items:
            tuser = [0] * (len(frame) - 1) + [1] if mac_error else 0
            await self.rx_source.send(AxiStreamFrame(frame, tuser=tuser))
        got = await self._collect(what, expected,
                                  self._timeout_ns(sum(len(frame) for frame, _ in items)))
        self._check_events(what, got, expected)
        terminal = sum(event.type in _TERMINAL for event in got)
        if terminal != len(items):
            raise ScoreboardError(f"{what}: {terminal} PLACED/LEGACY/DROP events for "
                                  f"{len(items)} frames (R23): {got}")
        self._check_memory(what)
        await self._end_step(what)
        return got

    async def tx(self, frames):
        """Transmit frames from the host stack back to back; check they leave on ``m_axis_tx``
        unchanged and in order (R30), and check the events they cause.

        Parameters
        ----------
        frames : bytes or list of bytes
            One frame, or several sent back to back.

        Returns
        -------
        list of tcpdct.records.Event
        """
        if isinstance(frames, (bytes, bytearray)) or not isinstance(frames, (list, tuple)):
            frames = [frames]
        frames = [bytes(frame) for frame in frames]
        what = f"tx of {len(frames)} frame(s) of {[len(frame) for frame in frames]} bytes"
        self._start_step(what)
        expected = []
        for frame in frames:
            expected += self.model.tx_frame(frame)
        self.model.last_writes = []
        self.write_monitor.start_step([])
        for frame in frames:
            await self.tx_source.send(frame)
        timeout_ns = self._timeout_ns(sum(len(frame) for frame in frames))
        for number, frame in enumerate(frames):
            try:
                sent = await with_timeout(self.tx_sink.recv(), timeout_ns, "ns")
            except SimTimeoutError:
                raise ScoreboardError(f"{what}: frame {number} not on m_axis_tx after "
                                      f"{timeout_ns} ns") from None
            if bytes(sent.tdata) != frame:
                raise ScoreboardError(f"{what}: m_axis_tx sent frame {number} as "
                                      f"{len(sent.tdata)} bytes {bytes(sent.tdata).hex()}\n"
                                      f"  instead of {len(frame)} bytes {frame.hex()}")
        got = await self._collect(what, expected, timeout_ns)
        self._check_events(what, got, expected)
        self._check_memory(what)
        # The transmit engine may update the DCT after the frame has left (R31-R33) and no event
        # marks the moment; the ordering rule needs the update done before the next step.
        await self.cycles(TX_SETTLE_CYCLES)
        self._check_no_stray_events(f"the end of {what}")
        return got

    # Registers ---------------------------------------------------------------------------------

    async def read_reg(self, name):
        """The value of register ``name`` of :mod:`tcpdct.regmap`, read over AXI4-Lite."""
        return await self.axil.read_dword(regmap.by_name(name).offset)

    async def check_registers(self):
        """Every register, read in address order (``_LO`` before ``_HI``), equals the model's."""
        expected = self.model.registers
        wrong = []
        for reg in sorted(regmap.REGISTERS, key=lambda reg: reg.offset):
            value = await self.read_reg(reg.name)
            if value != expected[reg.name]:
                wrong.append(f"{reg.name} ({reg.offset:#x}): model {expected[reg.name]:#x} "
                             f"dut {value:#x}")
        if wrong:
            raise ScoreboardError("registers differ from the model:\n  " + "\n  ".join(wrong))

    async def finish(self):
        """End of a test: nothing left unsent or unexpected, registers equal the model's."""
        await self.cycles(200)
        self._check_no_stray_events("the end of the test")
        self._check_violations("the end of the test")
        if not self.tx_sink.empty():
            raise ScoreboardError(f"{self.tx_sink.count()} unexpected frame(s) on m_axis_tx")
        await self.check_registers()

    # Conveniences for tests --------------------------------------------------------------------

    async def post_buffer(self, index, length, *, cross_page=False, address=None):
        """Post a user buffer of ``length`` bytes to connection ``index``; ``(address, tag)``."""
        address = self.alloc(length, cross_page=cross_page) if address is None else address
        tag = self.next_tag()
        await self.command(Command(Opcode.POST_BUFFER, index, address=address, length=length,
                                   tag=tag))
        return address, tag

    async def post_legacy(self, length=1536, *, cross_page=False, address=None):
        """Post a legacy buffer of ``length`` bytes; ``(address, tag)``."""
        address = self.alloc(length, cross_page=cross_page) if address is None else address
        tag = self.next_tag()
        await self.command(Command(Opcode.POST_LEGACY, address=address, length=length, tag=tag))
        return address, tag

