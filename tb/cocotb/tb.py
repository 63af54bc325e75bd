"""System testbench of the whole core: cocotbext-axi drivers around ``tcpdct`` and the golden
model as scoreboard.

Every step (a command, a burst of received frames, transmitted frames, a register write, the
expiry of the buffer-request timer) is applied to the DUT and to :class:`model.Model`; the step
passes when the DUT's events equal the model's, the host memory of every posted buffer equals
the model's memory, and the DMA wrote exactly the bytes the model wrote, all inside posted
buffers (R52). Steps follow the ordering rule of ``docs/architecture.md`` (a command only after
every earlier frame's event, a frame only after the earlier command's ``CMD_DONE``), which is
what makes the model's order the DUT's order. A frame held by a buffer request (R17) and the
frames behind it get their events in the step that ends the hold; every received frame gets
exactly one RX_PLACED, LEGACY or DROP over the steps (R23).

The replay runner reuses :class:`TB` unchanged: it is driven by the same three step methods.
"""

import collections
import copy
import itertools
import json
import logging
import os
import random
from collections import deque

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge, ClockCycles, with_timeout, SimTimeoutError

from cocotbext.axi import (
    AxiStreamBus, AxiStreamSource, AxiStreamSink, AxiStreamFrame,
    AxiWriteBus, AxiRamWrite, AxiLiteBus, AxiLiteMaster,
)

from tcpdct.params import Params, RX_DESCRIPTOR_DEPTH
from tcpdct.layouts import packet_buffer_depth
from tcpdct.records import (
    RECORD_BYTES, Command, Event, EventType, Opcode, LegacyReason, CmdStatus,
)
from tcpdct import regmap

from model import Model
from model.frame import FRAME_LEN_MAX


__all__ = ["TB", "DmaWriteMonitor", "FaultyHostMemory", "HostMemoryError", "ScoreboardError",
           "params_from_env", "seed_from_env",
           "HOST_MEMORY_BYTES", "CLOCK_NS", "PAUSE_PATTERNS"]


#: Size of the simulated host memory. Buffers sit above 4 GiB so that the upper address bits of
#: the DMA master are exercised; cocotbext-axi's sparse memory cannot be 2**64 (``len()``).
HOST_MEMORY_BYTES = 1 << 40

#: Where :meth:`TB.alloc` starts placing buffers.
ALLOC_BASE = 0x1_2340_0000

CLOCK_NS = 4

#: Cycles a transmitted frame is given, after the host's last beat of it was taken, to update the
#: DCT: the update FIFO holds at most four updates, and each takes a few cycles of the sequencer
#: (twice as many while a held frame is decided again after every other operation).
TX_SETTLE_CYCLES = 64

#: Cycles waited after the last expected event of a step for events the model did not expect.
STRAY_EVENT_CYCLES = 16

#: Pause patterns every test is crossed with: no stalls, or random idle cycles on every input
#: and random back-pressure on every output and AXI channel (R60).
PAUSE_PATTERNS = ("none", "random")

_TERMINAL = (EventType.RX_PLACED, EventType.LEGACY, EventType.DROP)

#: Events a received frame may cause: what may follow a command's CMD_DONE in its step.
_FRAME_EVENTS = _TERMINAL + (EventType.BUF_DONE, EventType.BUF_REQ)


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


class _Grant:
    """A host-memory range the driver posted, as the monitor learned it from the command stream.

    ``state`` is ``"pending"`` from the command's acceptance to its CMD_DONE, ``"live"`` after an
    OK, ``"rejected"`` after an error status, and ``"closed"`` once the event that returns the
    buffer (BUF_DONE, LEGACY) or a reset ended it.
    """

    __slots__ = ("kind", "index", "address", "length", "tag", "state", "written", "announced",
                 "ended_by", "unannounced_reported")

    def __init__(self, kind, index, address, length, tag):
        self.kind = kind
        self.index = index
        self.address = address
        self.length = length
        self.tag = tag
        self.state = "pending"
        self.written = set()
        self.announced = 0
        self.ended_by = None
        self.unannounced_reported = False

    def holds(self, address):
        return self.address <= address < self.address + self.length

    def __repr__(self):
        owner = f"connection {self.index} " if self.kind == "user" else ""
        return (f"{self.kind} buffer tag {self.tag:#x} of {owner}at "
                f"{self.address:#x}+{self.length}")


class _Burst:
    """One AXI4 write burst between its address handshake and its write response."""

    __slots__ = ("address", "beats", "size", "received", "spans")

    def __init__(self, address, beats, size):
        self.address = address
        self.beats = beats
        self.size = size
        self.received = 0
        self.spans = {}     # id of a grant -> [first, last] offset written into it

    def beat_address(self, number):
        step = 1 << self.size
        return self.address if number == 0 else self.address - self.address % step + number * step

    def wrote(self, grant, offset):
        span = self.spans.get(id(grant))
        if span is None:
            self.spans[id(grant)] = [offset, offset]
        else:
            span[0] = min(span[0], offset)
            span[1] = max(span[1], offset)

    def touched(self, grant, first, end):
        """Whether the burst wrote any of the bytes ``first <= offset < end`` of ``grant``."""
        span = self.spans.get(id(grant))
        return span is not None and span[0] < end and first <= span[1]

    def __repr__(self):
        return f"burst {self.address:#x}+{self.beats} beat(s)"


class DmaWriteMonitor:
    """The memory-safety monitor: watches the DMA master's AXI4 write channels, the command
    stream and the event stream, and records every rule the core breaks (R50, R52).

    Which bytes the core may write is learned from the core's own streams, not from the golden
    model, so that a model bug cannot hide a wrong write: a user buffer may be written from the
    acceptance of its POST_BUFFER on ``s_axis_cmd`` until the BUF_DONE (its own, or RECLAIM's)
    that returns it on ``m_axis_evt``; a legacy buffer from its POST_LEGACY until the LEGACY
    event that uses it. A command answered with an error status grants nothing. Reset ends every
    grant. Checked while it runs:

    - ``R52a``: every strobed byte lies in a buffer granted at that moment, and no byte of a
      buffer is written twice; a posted buffer whose command was refused has not been written;
    - ``R52b``: no byte of a buffer is written after the event that completed or returned it
      (or after a reset);
    - ``R50``: an event announcing data leaves only when every write burst into that data has
      had its write response, checked in the cycle the event is taken. The data of an
      RX_PLACED are the ``length`` bytes after those announced before in the connection's
      buffers, in posting order; of a BUF_DONE and a LEGACY, their buffer;
    - ``R52-announce``: the announced bytes have been written: an RX_PLACED's, and a BUF_DONE's
      ``bytes`` (exactly the bytes written into its buffer, from its start, and exactly what
      RX_PLACED events announced there), a LEGACY's ``frame_len`` bytes from the start of its
      buffer (exactly); legacy buffers are used in the order they were posted;
    - ``AXI``: bursts are INCR, of full-width beats (``awsize`` = data width), at most
      ``max_burst_beats`` long and never across a 4 KiB boundary; ``wlast`` on exactly the last
      beat; no strobe below the start address of the first beat.

    Parameters
    ----------
    dut : cocotb handle
        The ``tcpdct`` top level.
    params : Params
        Build parameters of the DUT.
    watch : bool
        Watch the ports of ``dut`` every clock cycle (a coroutine); without it the handshakes are
        given by calls of :meth:`take_command`, :meth:`take_address`, :meth:`take_beat`,
        :meth:`take_event`, :meth:`take_response`, :meth:`reset` and :meth:`cycle`.

    Members
    -------
    written : dict of int to int
        Every byte written since :meth:`start_step`, address to value.
    violations : list of str
        Every rule broken so far, with the clock cycle, the rule, the address, the burst and the
        buffer.
    outstanding : int
        Bursts whose write response has not come back yet.
    counts : collections.Counter
        What was checked: ``"bytes"`` strobed, ``"bursts"``, ``"data events"`` checked against
        outstanding bursts, ``"buffers returned"``, ``"resets"``, ``"error responses"``.
    """

    def __init__(self, dut, params, *, watch=True):
        self.dut = dut
        self.params = params
        self.byte_lanes = params.data_bytes
        self.size = (self.byte_lanes - 1).bit_length()
        self.written = {}
        self.violations = []
        self.counts = collections.Counter()
        self._active = []           # pending and live grants
        self._ended = []            # closed and rejected grants, newest last
        self._commands = deque()    # (opcode, index, grant or None) waiting for CMD_DONE
        self._bursts = deque()      # address handshake seen, data not complete
        self._unanswered = deque()  # every burst whose write response has not come back
        self._beats = deque()       # data beats waiting for their burst's address
        self._last_grant = None
        self._cycle = 0
        self._task = cocotb.start_soon(self._run()) if watch else None

    @property
    def outstanding(self):
        return len(self._unanswered)

    def start_step(self):
        """Forget the bytes written so far: :attr:`written` then holds one step's writes."""
        self.written = {}

    # Reporting ---------------------------------------------------------------------------------

    def _violation(self, rule, text):
        message = f"DMA write monitor, cycle {self._cycle}, rule {rule}: {text}"
        logging.getLogger("cocotb.tb").error(message)
        self.violations.append(message)

    # Grants ------------------------------------------------------------------------------------

    def _command(self, word):
        opcode, index = word & 0xff, (word >> 16) & 0xffff
        grant = None
        if opcode in (Opcode.POST_BUFFER, Opcode.POST_LEGACY):
            command = Command.unpack(word)
            kind = "user" if opcode == Opcode.POST_BUFFER else "legacy"
            grant = _Grant(kind, index, command.address, command.length, command.tag)
            self._active.append(grant)
        self._commands.append((opcode, index, grant))

    def _end(self, grant, state, by):
        grant.state = state
        grant.ended_by = f"{by} at cycle {self._cycle}"
        self._active.remove(grant)
        self._ended.append(grant)

    def _cmd_done(self, event):
        if not self._commands:
            self._violation("R40", f"{event} without a command waiting for it")
            return
        opcode, index, grant = self._commands.popleft()
        if event.opcode != opcode:
            self._violation("R40", f"{event} answers the command with opcode {opcode} "
                                   f"(commands are answered in order)")
        if grant is None:
            if opcode == Opcode.RECLAIM and event.status == CmdStatus.OK:
                for kept in [g for g in self._active if g.kind == "user" and g.index == index
                             and g.state == "live"]:
                    self._violation("R52b", f"RECLAIM of connection {index} did not return "
                                            f"{kept}; it may no longer be written")
                    self._end(kept, "closed", f"RECLAIM of connection {index}")
            return
        if event.status == CmdStatus.OK:
            grant.state = "live"
            return
        self._end(grant, "rejected", f"CMD_DONE status {CmdStatus(event.status).name}")
        if grant.written:
            self._violation("R52a", f"{len(grant.written)} byte(s) written into {grant}, "
                                    f"whose post was refused ({CmdStatus(event.status).name})")

    def check_quiet(self):
        """``R52-announce`` at a moment when every decided frame's event has been taken: no byte
        of a buffer still held has been written beyond what events announced there.

        Between such moments a later job may legitimately write ahead of an earlier job's event,
        so only here can a write that no event will ever announce be told from one that is early.
        """
        for grant in self._active:
            # The announced bytes are known to be written (checked at each event), so a grant
            # with more written bytes than announced ones has written beyond them.
            if len(grant.written) <= grant.announced or grant.unannounced_reported:
                continue
            beyond = sorted(offset for offset in grant.written if offset >= grant.announced)
            if beyond:
                grant.unannounced_reported = True
                self._violation("R52-announce", f"{len(beyond)} byte(s) of {grant} written but "
                                                f"never announced, first offset {beyond[0]} "
                                                f"(events announced {grant.announced})")

    def _check_answered(self, event, grant, first, end):
        """R50: no burst into bytes ``first <= offset < end`` of ``grant`` is still waiting for
        its write response when ``event`` leaves."""
        for burst in self._unanswered:
            if burst.touched(grant, first, end):
                self._violation("R50", f"{event} left while the {burst} into bytes "
                                       f"{first}..{end - 1} of {grant} had no write response "
                                       f"yet")
                return

    def _check_announced(self, event, grant, length, *, exact=True):
        if grant.kind == "legacy" and length >= FRAME_LEN_MAX:
            return
        announced = set(range(length))
        wrong = (grant.written.symmetric_difference(announced) if exact
                 else announced - grant.written)
        if wrong:
            self._violation("R52-announce", f"{event} announces {length} byte(s) from the start "
                                            f"of {grant}, but the DMA wrote "
                                            f"{len(grant.written)} byte(s) there; first "
                                            f"differing offset {min(wrong)}")

    def _placed(self, event):
        """RX_PLACED: the next ``length`` bytes of the connection's buffers are announced."""
        self.counts["data events"] += 1
        remaining = event.length
        for grant in self._active:
            if remaining == 0:
                break
            if grant.kind != "user" or grant.index != event.index or grant.state != "live":
                continue
            first = grant.announced
            size = min(grant.length - first, remaining)
            if size <= 0:
                continue
            grant.announced += size
            remaining -= size
            self._check_answered(event, grant, first, first + size)
            missing = [offset for offset in range(first, first + size)
                       if offset not in grant.written]
            if missing:
                self._violation("R52-announce", f"{event} announces bytes {first}.."
                                                f"{first + size - 1} of {grant}, but "
                                                f"{len(missing)} of them were not written, "
                                                f"first offset {missing[0]}")
        if remaining:
            self._violation("R52-announce", f"{event} announces {remaining} byte(s) more than "
                                            f"the buffers of connection {event.index} hold")

    def _event(self, event):
        kind = event.type
        if kind == EventType.CMD_DONE:
            self._cmd_done(event)
        elif kind == EventType.RX_PLACED:
            self._placed(event)
        elif kind == EventType.BUF_DONE:
            grant = next((g for g in self._active if g.kind == "user" and g.state == "live"
                          and g.index == event.index and g.tag == event.tag), None)
            if grant is None:
                self._violation("R52b", f"{event} returns no buffer that connection "
                                        f"{event.index} holds")
                return
            self.counts["data events"] += 1
            self._check_answered(event, grant, 0, grant.length)
            self._check_announced(event, grant, event.bytes)
            if grant.announced != event.bytes:
                self._violation("R52-announce", f"{event} returns {grant} with {event.bytes} "
                                                f"byte(s), but RX_PLACED events announced "
                                                f"{grant.announced} there")
            self._end(grant, "closed", repr(event))
            self.counts["buffers returned"] += 1
        elif kind == EventType.LEGACY:
            ring = [g for g in self._active if g.kind == "legacy" and g.state == "live"]
            if not ring or ring[0].tag != event.tag:
                self._violation("R52b", f"{event} does not use the head of the legacy ring "
                                        f"({ring[0] if ring else 'empty'})")
                ring = [g for g in ring if g.tag == event.tag]
                if not ring:
                    return
            self.counts["data events"] += 1
            self._check_answered(event, ring[0], 0, ring[0].length)
            self._check_announced(event, ring[0], event.frame_len)
            self._end(ring[0], "closed", repr(event))
            self.counts["buffers returned"] += 1

    def _reset(self):
        for grant in list(self._active):
            self._end(grant, "closed", "reset")
        self._commands.clear()
        self._bursts.clear()
        self._unanswered.clear()
        self._beats.clear()

    # Writes ------------------------------------------------------------------------------------

    def _check_burst(self, address, beats, size, burst):
        if burst != 1:
            self._violation("AXI", f"burst at {address:#x} has awburst={burst}, not INCR")
        if size != self.size:
            self._violation("AXI", f"burst at {address:#x} has awsize={size}, not {self.size}")
        if beats > self.params.max_burst_beats:
            self._violation("AXI", f"burst at {address:#x} has {beats} beats, more than "
                                   f"max_burst_beats={self.params.max_burst_beats}")
        aligned = address - address % (1 << size)
        last = aligned + beats * (1 << size) - 1
        if address >> 12 != last >> 12:
            self._violation("AXI", f"burst {address:#x}..{last:#x} crosses a 4 KiB boundary")

    def _write_byte(self, burst, number, address, value):
        self.counts["bytes"] += 1
        self.written[address] = value
        where = f"beat {number} of the {burst}"
        cached = self._last_grant
        if (cached is not None and cached.state in ("pending", "live") and cached.holds(address)
                and address - cached.address not in cached.written):
            cached.written.add(address - cached.address)
            burst.wrote(cached, address - cached.address)
            return
        fresh = None
        for grant in self._active:
            if grant.holds(address):
                if address - grant.address not in grant.written:
                    fresh = grant
                    break
                fresh = fresh or False
        if fresh:
            self._last_grant = fresh
            fresh.written.add(address - fresh.address)
            burst.wrote(fresh, address - fresh.address)
            return
        if fresh is False:
            owner = next(g for g in self._active if g.holds(address))
            self._violation("R52a", f"write to {address:#x} ({where}) writes byte "
                                    f"{address - owner.address} of {owner} a second time")
            return
        ended = next((g for g in reversed(self._ended) if g.holds(address)), None)
        if ended is not None:
            rule = "R52b" if ended.state == "closed" else "R52a"
            self._violation(rule, f"write to {address:#x} ({where}) into {ended}, which ended: "
                                  f"{ended.ended_by}")
        else:
            self._violation("R52a", f"write to {address:#x} ({where}) outside every posted "
                                    f"buffer")

    def _take_beat(self, burst, data, strobe, last):
        number = burst.received
        beat_address = burst.beat_address(number)
        lane_base = beat_address - beat_address % self.byte_lanes
        first_lane = beat_address % self.byte_lanes
        if last != (number == burst.beats - 1):
            self._violation("AXI", f"beat {number} of the {burst} has wlast={int(last)}")
        for lane in range(self.byte_lanes):
            if not strobe >> lane & 1:
                continue
            if lane < first_lane:
                self._violation("AXI", f"strobe on lane {lane} below the start "
                                       f"{beat_address:#x} of beat {number} of the {burst}")
            self._write_byte(burst, number, lane_base + lane, data >> (8 * lane) & 0xff)
        burst.received += 1

    def _match(self):
        # A beat sent before its burst's address waits here; the bytes it writes count as
        # written only once the address is known, so an event that announces them before that
        # is reported (R52-announce).
        while self._bursts and self._beats:
            burst = self._bursts[0]
            self._take_beat(burst, *self._beats.popleft())
            if burst.received == burst.beats:
                self._bursts.popleft()

    # One cycle's handshakes, in the order they are taken within the cycle; :meth:`_run` calls
    # them from the ports, and a unit test may call them directly.

    def cycle(self):
        self._cycle += 1

    def reset(self):
        if self._active or self._unanswered or self._commands or self._beats:
            self.counts["resets"] += 1
        self._reset()

    def take_command(self, word):
        self._command(word)

    def take_address(self, address, beats, size, burst=1):
        self._check_burst(address, beats, size, burst)
        burst = _Burst(address, beats, size)
        self._bursts.append(burst)
        self._unanswered.append(burst)
        self.counts["bursts"] += 1
        # AXI lets W beats go before their address: beats already waiting belong to this burst.
        self._match()

    def take_beat(self, data, strobe, last):
        self._beats.append((data, strobe, last))
        self._match()

    def take_event(self, event):
        # Events before responses: an event taken in the cycle of the response that it waits
        # for left before the core could know of the response.
        self._event(event)

    def take_response(self, bresp):
        if not self._unanswered:
            self._violation("AXI", "write response without an outstanding burst")
        else:
            self._unanswered.popleft()
        if bresp:
            self.counts["error responses"] += 1

    async def _run(self):
        dut = self.dut
        clock_edge = RisingEdge(dut.clk)
        while True:
            await clock_edge
            self.cycle()
            if int(dut.rst.value):
                self.reset()
                continue
            if int(dut.s_axis_cmd_tvalid.value) and int(dut.s_axis_cmd_tready.value):
                self.take_command(int(dut.s_axis_cmd_tdata.value))
            if int(dut.m_axi_awvalid.value) and int(dut.m_axi_awready.value):
                self.take_address(int(dut.m_axi_awaddr.value), int(dut.m_axi_awlen.value) + 1,
                                  int(dut.m_axi_awsize.value), int(dut.m_axi_awburst.value))
            if int(dut.m_axi_wvalid.value) and int(dut.m_axi_wready.value):
                self.take_beat(int(dut.m_axi_wdata.value), int(dut.m_axi_wstrb.value),
                               bool(int(dut.m_axi_wlast.value)))
            if int(dut.m_axis_evt_tvalid.value) and int(dut.m_axis_evt_tready.value):
                try:
                    event = Event.unpack(int(dut.m_axis_evt_tdata.value))
                except ValueError:
                    event = None    # the scoreboard reports undecodable events
                if event is not None:
                    self.take_event(event)
            if int(dut.m_axi_bvalid.value) and int(dut.m_axi_bready.value):
                self.take_response(int(dut.m_axi_bresp.value))


def _touches(ranges, address, length):
    end = address + length
    return any(start < end and address < start + size for start, size in ranges)


class HostMemoryError(Exception):
    """A write into a range of :class:`FaultyHostMemory` that answers with an error."""


class FaultyHostMemory(AxiRamWrite):
    """cocotbext-axi's AXI4 write RAM that answers ``SLVERR`` for writes into chosen ranges.

    The write is still applied (the model applies it too, see ``Model(dma_error=...)``); the
    burst that contains it gets ``bresp = SLVERR``, which the core must count and report in the
    events of the job (R51).

    Members
    -------
    failing : list of (int, int)
        ``(address, length)`` ranges whose writes fail.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.failing = []

    def fails(self, address, data):
        """Whether a write of ``data`` at ``address`` touches a failing range."""
        return _touches(self.failing, address, len(data))

    async def _write(self, address, data):
        await super()._write(address, data)
        if self.fails(address, data):
            # cocotbext-axi turns an exception of a write into SLVERR for the whole burst.
            raise HostMemoryError(f"injected error at {address:#x}")


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
        The scoreboard's model; a fresh one from ``model_factory`` when omitted.
    model_factory : callable, optional
        ``model_factory(params, dma_error=...)`` makes the model at the start and after every
        :meth:`reset`; :class:`model.Model` when omitted. ``dma_error`` is
        :meth:`FaultyHostMemory.fails`, so that the model predicts the injected errors (R51).

    Members
    -------
    rx_source, tx_source, cmd_source : cocotbext.axi.AxiStreamSource
        Drive ``s_axis_rx``, ``s_axis_tx`` and ``s_axis_cmd``.
    tx_sink, evt_sink : cocotbext.axi.AxiStreamSink
        Take ``m_axis_tx`` and ``m_axis_evt``.
    host_memory : FaultyHostMemory
        The host memory behind ``m_axi``; writes into its ``failing`` ranges get ``SLVERR``.
    axil : cocotbext.axi.AxiLiteMaster
        Reads the registers on ``s_axil``.
    write_monitor : DmaWriteMonitor
    model : model.Model
    rng : random.Random
        Seeded from ``seed``; tests draw their random choices from it too.
    """

    def __init__(self, dut, params=None, *, seed=None, model=None, model_factory=None):
        self.dut = dut
        self.params = params_from_env() if params is None else params
        self.seed = seed_from_env() if seed is None else seed
        self.log = logging.getLogger("cocotb.tb")
        self.log.setLevel(logging.INFO)
        self.log.info("TCPDCT_SEED=%#x (set it to replay this run); %r", self.seed, self.params)
        self.rng = random.Random(self.seed)
        self._model_factory = Model if model_factory is None else model_factory

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
        self.host_memory = FaultyHostMemory(AxiWriteBus.from_prefix(dut, "m_axi"), dut.clk,
                                            dut.rst, size=HOST_MEMORY_BYTES)
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), dut.clk, dut.rst)
        # An injected error is logged by cocotbext-axi at every write it fails, and a frame a
        # source drops at a reset (which the regression does on purpose) byte by byte.
        self.host_memory.log.setLevel(logging.ERROR)
        for source in (self.rx_source, self.tx_source, self.cmd_source):
            source.log.setLevel(logging.ERROR)
        self.write_monitor = DmaWriteMonitor(dut, self.params)
        self.model = self._new_model() if model is None else model

        self._pending_events = deque()
        self._unresolved = 0   # received frames without their PLACED/LEGACY/DROP yet
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
            # Stopping a generator leaves the channel as it last set it, possibly paused for good.
            channel.pause = False

    def set_backpressure_generator(self, generator=None):
        """Back-pressure every output; ``generator`` makes one iterator per channel."""
        for channel in self._sinks():
            channel.set_pause_generator(generator() if generator else None)
            channel.pause = False

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
        await ClockCycles(self.dut.clk, count)

    def _new_model(self):
        failing = self.host_memory.failing

        # A function rather than the bound method: the model must stay deep-copyable
        # (rx_and_tx), and the memory holds simulator handles.
        def dma_error(address, data):
            return _touches(failing, address, len(data))
        return self._model_factory(self.params, dma_error=dma_error)

    async def reset(self):
        """Hold ``rst`` for a few cycles, at any moment, even in the middle of frames.

        After it the DCT is empty and no buffer is posted (SPEC §7): the testbench starts over
        with a fresh model, and everything queued in its drivers, half sent or not, and every
        event or transmitted frame not yet checked is thrown away, so that nothing from before
        the reset can be mistaken for what follows. The write monitor ends every grant, so a
        write into a buffer posted before the reset is a violation.
        """
        self.dut.rst.value = 1
        for source in (self.rx_source, self.tx_source, self.cmd_source):
            source.clear()
        await self.cycles(8)
        for sink in (self.tx_sink, self.evt_sink):
            sink.clear()
        self._pending_events.clear()
        self._unresolved = 0
        self.model = self._new_model()
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
        self.log.debug("step: %s", what)
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
        self.write_monitor.check_quiet()
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

    def _unresolved_in_model(self):
        """Received frames the model has not decided yet: a held frame and those behind it."""
        return (self.model.held is not None) + len(self.model.queued_frames)

    def _check_frames_resolved(self, what, got, new_frames):
        """Every received frame ends in exactly one RX_PLACED, LEGACY or DROP (R23), counted over
        the steps a buffer request spans: a held frame and the frames behind it get theirs in
        the step that ends the hold."""
        terminal = sum(event.type in _TERMINAL for event in got)
        resolved = self._unresolved + new_frames - self._unresolved_in_model()
        if terminal != resolved:
            raise ScoreboardError(f"{what}: {terminal} PLACED/LEGACY/DROP events where "
                                  f"{resolved} frame(s) were decided (R23): {got}")
        self._unresolved = self._unresolved_in_model()

    async def _check_step(self, what, expected, writes, timeout_ns, new_frames=0):
        """Collect and check the DUT's events of a step whose inputs have been sent."""
        self.model.last_writes = writes
        got = await self._collect(what, expected, timeout_ns)
        self._check_events(what, got, expected)
        self._check_frames_resolved(what, got, new_frames)
        self._check_memory(what)
        return got

    async def command(self, cmd):
        """Send one command and check its events (R40).

        The command's own events end with its only ``CMD_DONE``; when the command ends a buffer
        request (R18, or a RESYNC or RECLAIM that changes the held frame's fate), the events of
        the frames it releases follow.

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
        backlog = self._backlog_bytes()
        expected = self.model.command(cmd)
        self.write_monitor.start_step()
        record = cmd.to_bytes() if isinstance(cmd, Command) \
            else int(cmd).to_bytes(RECORD_BYTES, "little")
        await self.cmd_source.send(record)
        got = await self._check_step(what, expected, self.model.last_writes,
                                     self._timeout_ns(backlog))
        done = [number for number, event in enumerate(got) if event.type == EventType.CMD_DONE]
        if len(done) != 1 or any(event.type not in _FRAME_EVENTS for event in got[done[0] + 1:]):
            raise ScoreboardError(f"{what}: not exactly one CMD_DONE after the command's own "
                                  f"events: {got}")
        await self._end_step(what)
        return got

    def _backlog_bytes(self):
        """Bytes of the frames waiting on a hold, which a step may release: for its timeout."""
        held = [self.model.held.frame] if self.model.held is not None else []
        return sum(len(frame) for frame in held + self.model.queued_frames)

    async def rx(self, frames):
        """Send received frames back to back and check the events they produce.

        When nothing is held, every frame gets exactly one RX_PLACED, LEGACY or DROP (R23). A
        frame that starts a buffer request gets only its BUF_REQ here, and the frames behind it
        nothing, unless the high-water mark ends the request within the step (R17, R19); they
        are accounted for in the step that ends the hold. The step returns once the DUT has
        sent every event the model expects and, unless frames are left waiting at the MAC, has
        taken every frame.

        Parameters
        ----------
        frames : list
            Each a frame (bytes, or a scapy packet), or ``(frame, mac_error)`` to set the MAC
            error flag (``tuser`` on the last beat).

        Returns
        -------
        list of tcpdct.records.Event
            The DUT's events, equal to the model's.
        """
        items = []
        for item in frames:
            frame, mac_error = item if isinstance(item, tuple) else (item, False)
            items.append((bytes(frame), bool(mac_error)))
        what = f"rx of {len(items)} frame(s) of {[len(frame) for frame, _ in items]} bytes"
        self._start_step(what)
        backlog = self._backlog_bytes()
        expected = []
        model_writes = []
        for frame, mac_error in items:
            expected += self.model.rx_frame(frame, mac_error=mac_error)
            model_writes += self.model.last_writes
        self.write_monitor.start_step()
        for frame, mac_error in items:
            tuser = [0] * (len(frame) - 1) + [1] if mac_error else 0
            await self.rx_source.send(AxiStreamFrame(frame, tuser=tuser))
        timeout_ns = self._timeout_ns(sum(len(frame) for frame, _ in items) + backlog)
        got = await self._check_step(what, expected, model_writes, timeout_ns, len(items))
        if (len(self.model.queued_frames) <= RX_DESCRIPTOR_DEPTH
                and self.model.rx_buffer_beats <= packet_buffer_depth(self.params)):
            # Every frame fits behind a held one: the next step starts with all of them inside,
            # as the model assumes when it counts beats against the high-water mark. (Jumbo
            # frames can fill the receive packet buffer before the descriptors run out; the
            # rest then wait at the MAC.)
            await self._wait_idle(what, self.rx_source, timeout_ns)
        await self._end_step(what)
        return got

    async def _wait_idle(self, what, source, timeout_ns):
        try:
            await with_timeout(source.wait(), timeout_ns, "ns")
        except SimTimeoutError:
            raise ScoreboardError(f"{what}: the DUT did not take every frame within "
                                  f"{timeout_ns} ns") from None

    async def tx(self, frames):
        """Transmit frames from the host stack back to back; check they leave on ``m_axis_tx``
        unchanged and in order (R30), and check the events they cause: RESYNC (R32), and the
        events of a held frame an update sends on its way (and of the frames behind it).

        Parameters
        ----------
        frames : bytes or list of bytes
            One frame, or several sent back to back.

        Returns
        -------
        list of tcpdct.records.Event
            The DUT's events, equal to the model's.

        Raises
        ------
        ValueError
            If a frame other than the last ends a hold: the sequencer may then take the next
            update before the frames that waited behind the held one, which the model decides
            first.
        """
        if isinstance(frames, (bytes, bytearray)) or not isinstance(frames, (list, tuple)):
            frames = [frames]
        frames = [bytes(frame) for frame in frames]
        what = f"tx of {len(frames)} frame(s) of {[len(frame) for frame in frames]} bytes"
        self._start_step(what)
        backlog = self._backlog_bytes()
        expected = []
        model_writes = []
        for number, frame in enumerate(frames):
            held = self.model.held
            expected += self.model.tx_frame(frame)
            model_writes += self.model.last_writes
            if held is not None and self.model.held != held and number + 1 < len(frames):
                raise ValueError(f"{what}: frame {number} ends a hold; it must be the last "
                                 f"of its step")
        self.write_monitor.start_step()
        for frame in frames:
            await self.tx_source.send(frame)
        timeout_ns = self._timeout_ns(sum(len(frame) for frame in frames) + backlog)
        await self._check_tx_frames(what, frames, timeout_ns)
        got = await self._check_step(what, expected, model_writes, timeout_ns)
        await self._settle_tx(what, timeout_ns)
        self._check_no_stray_events(f"the end of {what}")
        return got

    async def _check_tx_frames(self, what, frames, timeout_ns):
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

    async def _settle_tx(self, what, timeout_ns):
        # No event marks the moment a transmit update without RESYNC has been applied; the
        # ordering rule needs it done before the next step. It is applied a bounded number of
        # cycles after the frame's last beat was taken from the host.
        await self._wait_idle(what, self.tx_source, timeout_ns)
        await ClockCycles(self.dut.clk, TX_SETTLE_CYCLES)

    async def rx_and_tx(self, rx_frames, tx_frames, *, tx_delay=0):
        """Receive and transmit frames of the same connections at the same time.

        Which of a received frame and a transmit update reaches the sequencer first depends on
        cycles the testbench does not control, so the step accepts either order: it asks the
        model both (received frames first, or transmitted frames first) and requires them to
        agree (entries, events in any order, memory). Tests choose frames for which they do:
        this checks that neither update is lost, whatever the order the engine chose.

        Parameters
        ----------
        rx_frames, tx_frames : list of bytes
        tx_delay : int
            Cycles between queueing the received frames and the transmitted ones; negative to
            queue the transmitted ones first.

        Returns
        -------
        list of tcpdct.records.Event

        Raises
        ------
        ValueError
            If the two orders do not give the same outcome in the model (a test error).
        """
        rx_frames = [bytes(frame) for frame in rx_frames]
        tx_frames = [bytes(frame) for frame in tx_frames]
        what = f"rx of {len(rx_frames)} frame(s) and tx of {len(tx_frames)} at once"
        self._start_step(what)
        if self.model.held is not None:
            raise ValueError("rx_and_tx needs no frame held: a hold would make order matter")

        def run(model, order):
            events, writes = [], []
            for kind in order:
                for frame in (rx_frames if kind == "rx" else tx_frames):
                    events += model.rx_frame(frame) if kind == "rx" else model.tx_frame(frame)
                    writes += model.last_writes
            return events, writes

        other = copy.deepcopy(self.model)
        expected, writes = run(self.model, ("rx", "tx"))
        other_events, other_writes = run(other, ("tx", "rx"))
        if (other.entries != self.model.entries or sorted(map(repr, other_events))
                != sorted(map(repr, expected)) or sorted(other_writes) != sorted(writes)
                or other.registers != self.model.registers or other.held is not None
                or self.model.held is not None):
            raise ValueError(f"{what}: the model's outcome depends on the order")
        self.write_monitor.start_step()

        async def send(source, frames, delay):
            await ClockCycles(self.dut.clk, delay + 1)
            for frame in frames:
                await source.send(frame)
        senders = [cocotb.start_soon(send(self.rx_source, rx_frames, max(0, -tx_delay))),
                   cocotb.start_soon(send(self.tx_source, tx_frames, max(0, tx_delay)))]
        timeout_ns = self._timeout_ns(sum(map(len, rx_frames + tx_frames)))
        for sender in senders:
            await sender
        await self._check_tx_frames(what, tx_frames, timeout_ns)
        self.model.last_writes = writes
        got = await self._collect(what, expected, timeout_ns)
        if sorted(map(repr, got)) != sorted(map(repr, expected)):
            self._check_events(what, got, expected)
        self._check_frames_resolved(what, got, len(rx_frames))
        self._check_memory(what)
        await self._settle_tx(what, timeout_ns)
        await self._end_step(what)
        return got

    async def write_reg(self, name, value):
        """Write a read-write register over AXI4-Lite and check the events it causes.

        Lowering ``HWM_BYTES`` below what the receive packet buffer holds during a buffer
        request ends it at once (R19): the held frame's LEGACY ``HWM`` and the events of the
        frames behind it.

        Raises
        ------
        ValueError
            When lowering ``BUF_REQ_TIMEOUT`` while a frame is held: the timer could expire at
            once, which the model cannot know; :meth:`expire_buffer_request` with
            ``timeout_cycles`` does that.
        """
        if (name == "BUF_REQ_TIMEOUT" and self.model.held is not None
                and value < self.model.registers[name]):
            raise ValueError("Lowering BUF_REQ_TIMEOUT while a frame is held may end the hold "
                             "at once: use expire_buffer_request(timeout_cycles=...)")
        what = f"write of {value:#x} to {name}"
        self._start_step(what)
        backlog = self._backlog_bytes()
        expected = self.model.write_register(name, value)
        self.write_monitor.start_step()
        await self.axil.write_dword(regmap.by_name(name).offset, value)
        got = await self._check_step(what, expected, self.model.last_writes,
                                     self._timeout_ns(backlog))
        await self._end_step(what)
        return got

    async def expire_buffer_request(self, reason=LegacyReason.BUF_TIMEOUT, *,
                                    timeout_cycles=None):
        """Let the buffer-request timer of the held frame expire and check what follows (R19).

        Waits three times ``BUF_REQ_TIMEOUT`` cycles (the hold began before this call, so that
        is well past the expiry), then tells the model: the held frame goes to legacy with
        ``BUF_TIMEOUT`` and the frames behind it are decided. Tests set ``BUF_REQ_TIMEOUT``
        small enough to wait for, and far above what the steps before it take, or pass
        ``timeout_cycles``.

        The other way a hold ends without a command or a transmitted frame, the high-water mark,
        needs no call: the model sees it coming from the frames it is given (:meth:`rx`,
        :meth:`write_reg`).

        Parameters
        ----------
        reason : LegacyReason
            Must be ``BUF_TIMEOUT``.
        timeout_cycles : int, optional
            First write ``BUF_REQ_TIMEOUT`` (over AXI4-Lite and in the model), in the same step:
            a hold that already lasted longer ends as soon as the write lands.

        Raises
        ------
        ValueError
            If ``reason`` is not ``BUF_TIMEOUT``, or no frame is held.
        """
        if reason != LegacyReason.BUF_TIMEOUT:
            raise ValueError(f"Only the timer is expired by waiting, not {reason!r}: the model "
                             f"predicts the high-water mark from the frames it is given")
        if self.model.held is None:
            raise ValueError("No frame is held by a buffer request")
        what = "expiry of the buffer-request timer"
        self._start_step(what)
        # The DUT writes the frames' data while the testbench waits.
        self.write_monitor.start_step()
        if timeout_cycles is not None:
            # Lowering the timeout gives no event in the model; the DUT's expiry events, which
            # may follow at once, are collected below.
            if self.model.write_register("BUF_REQ_TIMEOUT", timeout_cycles):
                raise AssertionError("the model ended a hold on a timeout write")
            await self.axil.write_dword(regmap.by_name("BUF_REQ_TIMEOUT").offset,
                                        timeout_cycles)
        await ClockCycles(self.dut.clk, 3 * self.model.registers["BUF_REQ_TIMEOUT"])
        backlog = self._backlog_bytes()
        expected = self.model.expire_buffer_request(reason)
        got = await self._check_step(what, expected, self.model.last_writes,
                                     self._timeout_ns(backlog))
        await self._end_step(what)
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
        """End of a test: no frame left waiting on a buffer request, nothing unsent or
        unexpected, registers equal the model's."""
        if self._unresolved:
            raise ScoreboardError(f"the test ended with {self._unresolved} received frame(s) "
                                  f"held or waiting behind a held frame (R23)")
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

