"""Constrained-random regression of the whole core against the golden model, with functional
coverage of the rules and resets in the middle of traffic.

Every entry of the build is used: some delegated, some not, delegated again under new keys after
RECLAIM. Each of ``TCPDCT_REGRESS_COUNT`` random actions is one of: a burst of received frames
(in sequence, out of sequence, retransmitted, special, pure ACKs, frames of no connection, not
TCP, bad checksums, MAC errors, truncated, oversize; 60 bytes up to ``max_frame_bytes``),
transmitted frames (ACKs that resynchronise, ACKs ahead, data, frames that give no update), a
command (good, or bad in every field: unknown opcodes, index >= n_entries and 0xFFFF, zero
length, wrapping addresses, full queues, free entries — each bad command followed at times by a
QUERY of another connection, which the scoreboard compares with the model's unchanged entry),
the end of a buffer request (a buffer posted, an ACK or RESYNC past the frame, RECLAIM, the
timer, the high-water mark), a new pattern of pauses on every channel, or a reset in the middle
of frames. Buffers are placed at random alignments, across 4 KiB pages, and sometimes in host
memory that answers SLVERR (R51).

A reset in the middle of traffic: ``rst`` rises while a frame is half sent on ``s_axis_rx``
(and, at times, on ``s_axis_tx``, with a command queued and DMA writes in flight). The outcome
the core must show, checked here: for 300 cycles after it nothing leaves (no event, no
transmitted frame, no DMA write); every register reads its reset value; every entry answers
QUERY with NOT_DELEGATED; a frame of no connection is dropped for want of a legacy buffer (the
ring is empty); and the traffic that follows, against a fresh model, matches it — so nothing from
before the reset is emitted afterwards.

Every step is checked by :class:`tb.TB` (events, memory, the memory-safety monitor); a failure
names ``TCPDCT_SEED``, which replays the run. ``TCPDCT_COVERAGE_JSON`` names the file the
coverage is written to.
"""

import copy
import json
import logging
import os
import time

import cocotb
from cocotb.triggers import RisingEdge

from cocotbext.axi import AxiStreamFrame

from tcpdct.params import RX_DESCRIPTOR_DEPTH
from tcpdct.records import Command, Opcode, CmdStatus, EventType, DropReason

from tb import TB, ScoreboardError, params_from_env
from frames import (
    Conn, IP_OPTIONS_NOP, arp_frame, ipv6_frame, udp_frame, corrupt_ip_checksum,
    corrupt_tcp_checksum,
)
from rule_coverage import Coverage, CoveredModel, StallCounter


#: Header bytes of the segments built here: Ethernet, IPv4, TCP with NOP, NOP, Timestamps.
HEADER_BYTES = 14 + 20 + 32

#: A value of BUF_REQ_TIMEOUT far above what any step takes, so that only the regression's own
#: expiry (with a short timeout written just before) ends a hold by the timer.
LONG_TIMEOUT = 1 << 28

#: Cycles after a reset in which nothing may leave the core.
QUIET_CYCLES = 300

def _wrapping(rng):
    """``(address, length)`` of a buffer that runs past the top of the 64-bit address space."""
    length = rng.choice((2, 100, 0xffff_ffff))
    return 2**64 - rng.randrange(1, length), length


class Regression:
    """The random actions and their bookkeeping, on one :class:`tb.TB`."""

    def __init__(self, tb, coverage):
        self.tb = tb
        self.rng = tb.rng
        self.params = tb.params
        self.coverage = coverage
        self.n = tb.params.n_entries
        self.keys = {index: self._fresh_conn(index) for index in range(self.n)}
        self._key_serial = 0
        #: TCPDCT_REGRESS_RESETS=0 leaves out the resets, to tell whether a failure needs one.
        self.resets = os.environ.get("TCPDCT_REGRESS_RESETS", "1").strip() != "0"
        self.tally = {"rx frames": 0, "tx frames": 0, "commands": 0, "bad commands": 0,
                      "resets": 0, "holds ended": 0, "steps": 0}

    # Connections -------------------------------------------------------------------------------

    def _fresh_conn(self, index):
        serial = getattr(self, "_key_serial", 0) + 1
        self._key_serial = serial
        return Conn(remote_ip=f"10.{1 + index}.{serial // 250 % 250}.{1 + serial % 250}",
                    remote_port=20000 + serial % 40000, local_port=5001 + index)

    def entry(self, index):
        return self.tb.model.entries[index]

    def delegated(self):
        return [index for index in range(self.n) if self.entry(index).valid]

    # Frames ------------------------------------------------------------------------------------

    def payload_length(self):
        """A payload that makes a frame of 60 bytes up to the largest the build takes."""
        biggest = self.params.max_frame_bytes - 4 if self.rng.random() < 0.2 else 1518
        biggest = min(biggest, self.params.max_frame_bytes - 4)
        size = self.rng.choice((60, 64, 65, self.rng.randrange(60, biggest + 1), biggest))
        return max(0, size - HEADER_BYTES)

    def received(self, index, seq):
        """One received frame for the connection of ``index`` and the sequence number after it."""
        rng = self.rng
        conn = self.keys[index]
        length = self.payload_length()
        payload = rng.randbytes(length)
        header = dict(vlan=rng.choice((None, None, None, None, rng.randrange(4096))),
                      ts=(rng.randrange(2**32), rng.randrange(2**32)))
        kind = rng.random()
        if kind < 0.5:
            return conn.rx(seq, payload, flags="PA" if rng.random() < 0.3 else "A",
                           **header), seq + length
        if kind < 0.53:
            return conn.rx(seq, b"", **header), seq
        if kind < 0.64:
            special = rng.choice((dict(flags="S"), dict(flags="FA"), dict(flags="RA"),
                                  dict(flags="UA", urgent=1), dict(ip_flags=1),
                                  dict(ip_options=IP_OPTIONS_NOP),
                                  dict(options=[("MSS", 1460)]),
                                  dict(options=[("SAckOK", b""), ("Timestamp", (1, 2))])))
            return conn.rx(seq, payload[:1000], **{**header, **special}), seq + len(payload[:1000])
        if kind < 0.69:
            return conn.rx(seq + rng.randrange(1, 1 << 20), payload, **header), seq
        if kind < 0.73:
            return conn.rx(seq - rng.randrange(1, 5000), payload, **header), seq
        if kind < 0.755:
            return corrupt_tcp_checksum(conn.rx(seq, payload, **header)), seq
        if kind < 0.77:
            return corrupt_ip_checksum(conn.rx(seq, payload, **header)), seq
        if kind < 0.79:
            return (conn.rx(seq, payload, **header), True), seq
        if kind < 0.81:
            frame = conn.rx(seq, payload, **header)
            return frame[:rng.randrange(1, len(frame) - 8)], seq
        if kind < 0.83:
            extra = self.params.max_frame_bytes + rng.randrange(1, 200) - HEADER_BYTES
            return conn.rx(seq, rng.randbytes(extra), **header), seq
        if kind < 0.88:
            return rng.choice((udp_frame(rng.randrange(42, 1500)), arp_frame(),
                               ipv6_frame(rng.randrange(60, 300)))), seq
        return Conn(remote_port=rng.randrange(1, 20000)).rx(seq, payload, **header), seq

    async def rx_burst(self):
        frames = []
        seqs = {}
        for _ in range(self.rng.randrange(1, 7)):
            index = self.rng.randrange(self.n)
            seq = seqs.get(index, self.entry(index).rcv_nxt)
            frame, seqs[index] = self.received(index, seq % 2**32)
            frames.append(frame)
        self.tally["rx frames"] += len(frames)
        await self.tb.rx(frames)

    async def tx_frames(self):
        rng = self.rng
        count = 1 if self.tb.model.held is not None else rng.randrange(1, 4)
        frames = []
        for _ in range(count):
            index = rng.randrange(self.n)
            entry = self.entry(index)
            conn = self.keys[index]
            kind = rng.random()
            if kind < 0.45:
                ack = entry.rcv_nxt
            elif kind < 0.6:
                ack = entry.rcv_nxt + rng.randrange(1, 5000)
            elif kind < 0.75:
                ack = entry.rcv_nxt - rng.randrange(0, 5000)
            else:
                frames.append(rng.choice((udp_frame(rng.randrange(60, 300)), arp_frame(),
                                          rng.randbytes(rng.randrange(1, 200)))))
                continue
            seq = entry.snd_nxt - (rng.randrange(1, 3000) if rng.random() < 0.2 else 0)
            flags = rng.choice(("A", "A", "PA", "FA", "S"))
            frames.append(conn.tx(seq % 2**32, rng.randbytes(rng.randrange(0, 300)),
                                  ack=ack % 2**32, window=rng.randrange(1, 0x10000),
                                  flags=flags))
        self.tally["tx frames"] += len(frames)
        await self.tb.tx(frames)

    # Commands ----------------------------------------------------------------------------------

    def buffer_address(self, length):
        rng = self.rng
        address = self.tb.alloc(length, cross_page=length > 1 and rng.random() < 0.3)
        if rng.random() < 0.05:
            self.tb.host_memory.failing.append((address, length))
        return address

    def user_buffer_length(self):
        rng = self.rng
        biggest = max(4000, self.params.max_frame_bytes)
        return rng.choice((rng.randrange(1, 65), rng.randrange(64, 2000),
                           rng.randrange(1, biggest + 1)))

    async def command(self, cmd):
        self.tally["commands"] += 1
        return await self.tb.command(cmd)

    async def good_command(self):
        rng = self.rng
        delegated = self.delegated()
        free = [index for index in range(self.n) if index not in delegated]
        choice = rng.random()
        waiting = [index for index in delegated if self.entry(index).sync_req]
        if waiting and choice < 0.25:
            # The stack resynchronises a connection that waits for it (R14 ends).
            index = rng.choice(waiting)
            await self.command(Command(Opcode.RESYNC, index, rcv_nxt=self.entry(index).rcv_nxt))
        elif free and (choice < 0.15 or len(delegated) < self.n // 2):
            index = rng.choice(free)
            if rng.random() < 0.5:
                self.keys[index] = self._fresh_conn(index)
            # Near the top of sequence space at times, so that placement wraps (R3).
            rcv_nxt = (2**32 - rng.randrange(1, 20000) if rng.random() < 0.3
                       else rng.randrange(2**32))
            await self.command(self.keys[index].delegate(
                index, rcv_nxt=rcv_nxt, snd_nxt=rng.randrange(2**32),
                rcv_wnd=rng.randrange(0x10000)))
        elif choice < 0.3 and len(self.tb.model.legacy_ring) < self.params.legacy_ring_depth // 2:
            await self.post_legacy()
        elif delegated and choice < 0.55:
            index = rng.choice(delegated)
            if len(self.entry(index).queue) < self.params.buffers_per_conn:
                await self.post_user_buffer(index)
        elif choice < 0.75:
            if len(self.tb.model.legacy_ring) < self.params.legacy_ring_depth:
                await self.post_legacy()
        elif delegated and choice < 0.85:
            index = rng.choice(delegated)
            rcv_nxt = self.entry(index).rcv_nxt
            if rng.random() < 0.3:
                rcv_nxt += rng.randrange(1, 1 << 31)
            await self.command(Command(Opcode.RESYNC, index, rcv_nxt=rcv_nxt % 2**32))
        elif delegated and choice < 0.93:
            await self.command(Command(Opcode.QUERY, rng.choice(delegated)))
        elif delegated:
            await self.command(Command(Opcode.RECLAIM, rng.choice(delegated)))

    async def post_user_buffer(self, index):
        length = self.user_buffer_length()
        await self.command(Command(Opcode.POST_BUFFER, index, address=self.buffer_address(length),
                                   length=length, tag=self.tb.next_tag()))

    async def post_legacy(self):
        length = self.rng.choice((64, 200, 700, 1536, 1536, self.params.max_frame_bytes))
        await self.command(Command(Opcode.POST_LEGACY, address=self.buffer_address(length),
                                   length=length, tag=self.tb.next_tag()))

    async def bad_command(self):
        """A command that must be refused and change nothing (R41)."""
        rng = self.rng
        n = self.n
        delegated = self.delegated()
        free = [index for index in range(n) if index not in delegated]
        kind = rng.randrange(9)
        tag = self.tb.next_tag()
        buffer = dict(address=self.tb.alloc(64), length=64, tag=tag)
        if kind == 0:
            opcode = rng.choice((0, 7, 8, 0x80, 0xff))
            cmd = opcode | rng.randrange(0x10000) << 16 | rng.getrandbits(224) << 32
        elif kind == 1:
            index = rng.choice((n, rng.randrange(n, 0x10000), 0xffff))
            opcode = rng.choice([op for op in Opcode if op != Opcode.POST_LEGACY])
            fields = buffer if opcode == Opcode.POST_BUFFER else {}
            cmd = (self.keys[0].delegate(index, rcv_nxt=1) if opcode == Opcode.DELEGATE
                   else Command(opcode, index, **fields))
        elif kind == 2 and delegated:
            index = rng.choice(delegated)
            cmd = Command(Opcode.POST_BUFFER, index, address=buffer["address"], length=0, tag=tag)
        elif kind == 3:
            cmd = Command(Opcode.POST_LEGACY, address=buffer["address"], length=0, tag=tag)
        elif kind == 4:
            address, length = _wrapping(rng)
            if delegated and rng.random() < 0.5:
                cmd = Command(Opcode.POST_BUFFER, rng.choice(delegated), address=address,
                              length=length, tag=tag)
            else:
                cmd = Command(Opcode.POST_LEGACY, address=address, length=length, tag=tag)
        elif kind == 5 and free:
            opcode = rng.choice((Opcode.POST_BUFFER, Opcode.RESYNC, Opcode.RECLAIM, Opcode.QUERY))
            cmd = Command(opcode, rng.choice(free),
                          **(buffer if opcode == Opcode.POST_BUFFER else {}))
        elif kind == 6 and delegated:
            index = rng.choice(delegated)
            if rng.random() < 0.5 and free:
                cmd = self.keys[index].delegate(rng.choice(free), rcv_nxt=5)   # DUPLICATE_KEY
            else:
                cmd = self.keys[index].delegate(index, rcv_nxt=5)              # IN_USE
        elif kind == 7 and delegated:
            index = rng.choice(delegated)
            while len(self.entry(index).queue) < self.params.buffers_per_conn:
                await self.post_user_buffer(index)
                if self.tb.model.held is not None:
                    return
            cmd = Command(Opcode.POST_BUFFER, index, **buffer)
        elif kind == 8:
            while len(self.tb.model.legacy_ring) < self.params.legacy_ring_depth:
                await self.command(Command(Opcode.POST_LEGACY, address=self.tb.alloc(1536),
                                           length=1536, tag=self.tb.next_tag()))
            cmd = Command(Opcode.POST_LEGACY, **buffer)
        else:
            return
        before = copy.deepcopy((self.tb.model.entries, self.tb.model.legacy_ring))
        events = await self.command(cmd)
        self.tally["bad commands"] += 1
        done = next(event for event in events if event.type == EventType.CMD_DONE)
        if done.status == CmdStatus.OK:
            raise ScoreboardError(f"the bad command {cmd!r} was accepted: {events}")
        if (self.tb.model.entries, self.tb.model.legacy_ring) != before:
            raise ScoreboardError(f"the bad command {cmd!r} changed the model's DCT or legacy "
                                  f"ring")
        if delegated and rng.random() < 0.5:
            # The DUT's entry, compared through the scoreboard with the model's, which the
            # command did not change.
            await self.command(Command(Opcode.QUERY, rng.choice(delegated)))

    # Buffer requests ---------------------------------------------------------------------------

    async def end_hold(self):
        """End the buffer request of the held frame, one of the ways there are (R18, R19)."""
        tb, rng = self.tb, self.rng
        held = tb.model.held
        index = held.index
        entry = self.entry(index)
        queued = len(tb.model.queued_frames)
        way = rng.random()
        if way < 0.45 and len(entry.queue) < self.params.buffers_per_conn:
            length = held.shortfall + rng.randrange(0, 3000)
            await self.command(Command(Opcode.POST_BUFFER, index,
                                       address=self.buffer_address(length), length=length,
                                       tag=tb.next_tag()))
        elif way < 0.55:
            self.tally["tx frames"] += 1
            await tb.tx(self.keys[index].tx(entry.snd_nxt, b"",
                                            ack=(entry.rcv_nxt + rng.randrange(1, 5000)) % 2**32))
        elif way < 0.62:
            await self.command(Command(Opcode.RESYNC, index,
                                       rcv_nxt=(entry.rcv_nxt + rng.randrange(1, 5000)) % 2**32))
        elif way < 0.68:
            await self.command(Command(Opcode.RECLAIM, index))
        elif way < 0.84 and queued <= RX_DESCRIPTOR_DEPTH:
            if not tb.model.legacy_ring:
                await self.post_legacy()
            # Below the one frame held: the request ends at once (R19). A frame behind that
            # starts a new one ends the same way, whatever else the buffer holds.
            await tb.write_reg("HWM_BYTES", rng.randrange(1, 64))
            await tb.write_reg("HWM_BYTES", 0xffff_ffff)
        elif queued == 0:
            if not tb.model.legacy_ring:
                await self.post_legacy()
            # Only with nothing behind: a frame behind could start a new request that the short
            # timeout ends before the model is told.
            await tb.expire_buffer_request(timeout_cycles=rng.randrange(300, 800))
            await tb.write_reg("BUF_REQ_TIMEOUT", LONG_TIMEOUT)
        else:
            await self.command(Command(Opcode.RECLAIM, index))
        self.tally["holds ended"] += 1

    # Resets ------------------------------------------------------------------------------------

    async def configure(self):
        """Registers the random traffic needs: only the regression's own actions end holds."""
        await self.tb.write_reg("HWM_BYTES", 0xffff_ffff)
        await self.tb.write_reg("BUF_REQ_TIMEOUT", LONG_TIMEOUT)

    async def reset_mid_frame(self):
        """Raise ``rst`` in the middle of a received frame (and at times of a transmitted one,
        with a command queued), then check that the core starts from nothing."""
        tb, rng, dut = self.tb, self.rng, self.tb.dut
        if tb.model.held is not None:
            self.coverage.hit("reset with a frame held")
        frames = []
        index = rng.randrange(self.n)
        seq = self.entry(index).rcv_nxt
        for _ in range(rng.randrange(1, 4)):
            frame, seq = self.received(index, seq % 2**32)
            frames.append(frame if isinstance(frame, bytes) else frame[0])
        longest = self.keys[index].rx(seq % 2**32, rng.randbytes(1400))
        frames.append(longest)
        for frame in frames:
            tb.rx_source.send_nowait(AxiStreamFrame(frame))
        with_tx = rng.random() < 0.5
        if rng.random() < 0.5:
            tb.cmd_source.send_nowait(Command(Opcode.QUERY, index).to_bytes())
        data_bytes = self.params.data_bytes
        if with_tx:
            transmitted = self.keys[index].tx(1, rng.randbytes(1400), ack=seq)
            tb.tx_source.send_nowait(transmitted)
            # Into the transmitted frame by a random number of beats; the received frames are
            # long enough that one of them is being taken too, most of the time.
            valid, ready = dut.s_axis_tx_tvalid, dut.s_axis_tx_tready
            target = rng.randrange(1, -(-len(transmitted) // data_bytes))
        else:
            # Into the last, longest received frame by a random number of beats.
            valid, ready = dut.s_axis_rx_tvalid, dut.s_axis_rx_tready
            target = sum(-(-len(frame) // data_bytes) for frame in frames[:-1]) \
                + rng.randrange(1, -(-len(longest) // data_bytes))
        beats = 0
        for _ in range(20_000):
            await RisingEdge(dut.clk)
            if int(valid.value) and int(ready.value):
                beats += 1
                if beats >= target:
                    break
        if rng.random() < 0.5:
            # Or a little later, once a DMA burst is under way.
            for _ in range(2000):
                if tb.write_monitor.outstanding:
                    break
                await RisingEdge(dut.clk)
        if int(dut.s_axis_rx_tvalid.value) or not tb.rx_source.idle():
            self.coverage.hit("reset in the middle of a received frame")
        if with_tx and not tb.tx_source.idle():
            self.coverage.hit("reset in the middle of a transmitted frame")
        if tb.write_monitor.outstanding:
            self.coverage.hit("reset with DMA writes in flight")
        await tb.reset()
        self.tally["resets"] += 1
        await self.check_quiet_after_reset()

    async def check_quiet_after_reset(self):
        tb = self.tb
        bursts = tb.write_monitor.counts["bursts"]
        await tb.cycles(QUIET_CYCLES)
        leaked = []
        if not tb.evt_sink.empty():
            leaked.append(f"{tb.evt_sink.count()} event frame(s)")
        if not tb.tx_sink.empty():
            leaked.append(f"{tb.tx_sink.count()} transmitted frame(s)")
        if tb.write_monitor.counts["bursts"] != bursts:
            leaked.append(f"{tb.write_monitor.counts['bursts'] - bursts} DMA burst(s)")
        if leaked:
            raise ScoreboardError(f"after a reset the core sent {', '.join(leaked)} "
                                  f"in {QUIET_CYCLES} cycles, with nothing given to it")
        await tb.check_registers()
        for index in range(self.n):
            events = await self.command(Command(Opcode.QUERY, index))
            assert events[-1].status == CmdStatus.NOT_DELEGATED, events
        events = await tb.rx([udp_frame(100)])
        assert [(event.type, event.reason) for event in events] == [
            (EventType.DROP, DropReason.NO_LEGACY_BUFFER)], f"after reset the legacy ring is not empty: {events}"
        self.keys = {index: self._fresh_conn(index) for index in range(self.n)}
        await self.configure()

    # The run -----------------------------------------------------------------------------------

    async def step(self, number, count):
        tb, rng = self.tb, self.rng
        self.tally["steps"] += 1
        if number % 100 == 0:
            tb.set_pauses(rng.choice(("none", "random", "random")))
        held = tb.model.held
        if held is not None and (rng.random() < 0.5 or len(tb.model.queued_frames) > 10):
            await self.end_hold()
            return
        action = rng.random()
        self.tb.log.debug("action %d: %.3f, %d delegated", number, action, len(self.delegated()))
        reset_chance = 0.02 if held is not None else 0.004
        if self.resets and (number == count // 2 or action < reset_chance):
            await self.reset_mid_frame()
        elif action < 0.45:
            await self.rx_burst()
        elif action < 0.58:
            await self.tx_frames()
        elif action < 0.9:
            await self.good_command()
        else:
            await self.bad_command()

    async def finish(self):
        tb = self.tb
        while tb.model.held is not None:
            await self.end_hold()
        for index in self.delegated():
            await self.command(Command(Opcode.RECLAIM, index))
        await tb.finish()


@cocotb.test()
async def test_regress(dut):
    """``TCPDCT_REGRESS_COUNT`` random actions (150 when not set), scoreboarded, with coverage."""
    count = int(os.environ.get("TCPDCT_REGRESS_COUNT", "150"))
    params = params_from_env()
    coverage = Coverage(params)

    def model_factory(params, dma_error):
        return CoveredModel(params, dma_error=dma_error, coverage=coverage)

    tb = TB(dut, params, model_factory=model_factory)
    if os.environ.get("TCPDCT_VERBOSE", "").strip() in ("1", "yes", "true", "on"):
        tb.log.setLevel(logging.DEBUG)
    regression = Regression(tb, coverage)
    stalls = StallCounter(dut, {"s_axis_rx": tb.rx_source, "s_axis_tx": tb.tx_source,
                                "s_axis_cmd": tb.cmd_source, "m_axi.b": tb.host_memory.b_channel,
                                "s_axil.aw": tb.axil.write_if.aw_channel,
                                "s_axil.w": tb.axil.write_if.w_channel,
                                "s_axil.ar": tb.axil.read_if.ar_channel})
    started = time.monotonic()
    number = -1
    passed = False
    try:
        await tb.reset()
        await regression.configure()
        for number in range(count):
            await regression.step(number, count)
        await regression.finish()
        passed = True
    except AssertionError as error:
        tb.log.info("at the failure: s_axis_cmd tvalid=%s tready=%s; commands without CMD_DONE: "
                    "%s; DMA bursts unanswered: %d; legacy ring in the model: %d",
                    dut.s_axis_cmd_tvalid.value, dut.s_axis_cmd_tready.value,
                    list(tb.write_monitor._commands), tb.write_monitor.outstanding,
                    len(tb.model.legacy_ring))
        raise ScoreboardError(f"TCPDCT_SEED={tb.seed:#x} reproduces this failure, at action "
                              f"{number} of {count}: {error}") from error
    finally:
        stalls.stop()
        stalls.record(coverage)
        counts = tb.write_monitor.counts
        coverage.hit("R50 data events checked against outstanding writes", counts["data events"])
        coverage.hit("R52 strobed bytes checked", counts["bytes"])
        coverage.hit("R52 buffers returned and checked", counts["buffers returned"])
        coverage.hit("R51 SLVERR responses", counts["error responses"])
        wall = time.monotonic() - started
        tally = dict(regression.tally, wall_seconds=round(wall, 1), seed=tb.seed, count=count,
                     params=params.as_dict(), passed=passed)
        tb.log.info("regression: %s", json.dumps(tally))
        tb.log.info("%s", coverage.report())
        path = os.environ.get("TCPDCT_COVERAGE_JSON")
        if path:
            coverage.write_json(path, run=tally)
