"""Functional coverage of the rules of SPEC.md: a bin per rule and outcome the tests can reach,
counted while a testbench runs.

Most bins are counted on the decisions of the golden model (:class:`CoveredModel`, a subclass
that records which branch of each rule it took): the scoreboard of :class:`tb.TB` requires the
DUT's events, memory and registers to equal the model's at every step, so a decision the model
took and the step passed is a decision the DUT took too. The rest come from monitors on the
DUT's ports: what the memory-safety monitor checked (R50, R52) and the stalls seen on every
channel (:class:`StallCounter`, R60). The module is named ``rule_coverage`` rather than
``coverage`` so that it never shadows the coverage.py package.
"""

import collections
import json

import cocotb
from cocotb.triggers import RisingEdge

from tcpdct.headers import TCP_SYN, TCP_FIN, TCP_RST, TCP_URG, TCP_PSH
from tcpdct.records import (
    NO_CONNECTION, Opcode, CmdStatus, EventType, LegacyReason, DropReason,
)

from model import Model
from model.dct import ConnKey
from model.frame import Cls, parse, parse_tx


__all__ = ["Coverage", "CoveredModel", "StallCounter", "bins_for", "CHANNELS"]


#: Every channel of the top level, with its valid and ready signals and the side that drives
#: ``valid`` (R60).
CHANNELS = [
    ("s_axis_rx",   "s_axis_rx_tvalid",  "s_axis_rx_tready",  "testbench"),
    ("s_axis_tx",   "s_axis_tx_tvalid",  "s_axis_tx_tready",  "testbench"),
    ("s_axis_cmd",  "s_axis_cmd_tvalid", "s_axis_cmd_tready", "testbench"),
    ("m_axis_tx",   "m_axis_tx_tvalid",  "m_axis_tx_tready",  "dut"),
    ("m_axis_evt",  "m_axis_evt_tvalid", "m_axis_evt_tready", "dut"),
    ("m_axi.aw",    "m_axi_awvalid",     "m_axi_awready",     "dut"),
    ("m_axi.w",     "m_axi_wvalid",      "m_axi_wready",      "dut"),
    ("m_axi.b",     "m_axi_bvalid",      "m_axi_bready",      "testbench"),
    ("s_axil.aw",   "s_axil_awvalid",    "s_axil_awready",    "testbench"),
    ("s_axil.w",    "s_axil_wvalid",     "s_axil_wready",     "testbench"),
    ("s_axil.b",    "s_axil_bvalid",     "s_axil_bready",     "dut"),
    ("s_axil.ar",   "s_axil_arvalid",    "s_axil_arready",    "testbench"),
    ("s_axil.r",    "s_axil_rvalid",     "s_axil_rready",     "dut"),
]

_SPECIAL_KINDS = ("SYN", "FIN", "RST", "URG", "fragment", "IPv4 options", "TCP option")

#: Reset bins: what was in flight when ``rst`` rose (the regression's mid-traffic resets).
RESET_BINS = ("reset in the middle of a received frame", "reset in the middle of a transmitted frame",
              "reset with DMA writes in flight", "reset with a frame held")


def bins_for(params):
    """``{bin name: rule}`` of every bin a run on a build with ``params`` can and must reach."""
    bins = {
        "R3 placed across the sequence-number wrap": "R3",
        "R10 Ethernet padding ignored": "R10",
        "R10 802.1Q-tagged frame placed": "R10",
        "R11 bad IPv4 header checksum": "R11",
        "R11 bad TCP checksum": "R11",
        "R11 delegated key with a bad checksum not looked up": "R11",
        "R14 frame of a connection waiting for resync": "R14",
        "R16 retransmission (seq behind rcv_nxt)": "R16",
        "R16 frame ahead of rcv_nxt": "R16",
        "R17 BUF_REQ": "R17",
        "R17 frame waits behind a held frame": "R17",
        "R17 re-decided, still held, no second BUF_REQ": "R17",
        "R18 held frame placed after POST_BUFFER": "R18",
        "R18 held frame out of sequence after RESYNC or ACK": "R18",
        "R18 held frame of no connection after RECLAIM": "R18",
        "R20 BUF_DONE of a full buffer": "R20",
        "R20 BUF_DONE of a partly filled buffer (PSH)": "R20",
        "R21 legacy frame of a delegated connection": "R21",
        "R22 failed legacy delivery of a delegated connection's frame": "R22",
        "R2 transmit update hits an entry": "R2",
        "R30 transmitted frame passed through": "R30",
        "R30 transmitted frame that gives no update": "R30",
        "R31 ACK ahead moves rcv_nxt": "R31",
        "R32 RESYNC by the stack's ACK": "R32",
        "R33 snd_nxt advanced": "R33",
        "R33 snd_nxt kept (retransmission)": "R33",
        "R41 BAD_INDEX with index 0xFFFF": "R41",
        "R51 dma_error on RX_PLACED": "R51",
        "R51 dma_error on LEGACY": "R51",
        "R51 SLVERR responses": "R51",
        "R50 data events checked against outstanding writes": "R50",
        "R52 strobed bytes checked": "R52",
        "R52 buffers returned and checked": "R52",
    }
    for kind in _SPECIAL_KINDS:
        bins[f"R13 special {kind}"] = "R13"
    for reason in LegacyReason:
        rule = {"NOT_TCP": "R12", "NO_MATCH": "R12", "CHECKSUM": "R11", "SPECIAL": "R13",
                "SYNC": "R14", "NO_PAYLOAD": "R15", "OUT_OF_SEQ": "R16"}.get(reason.name, "R19")
        bins[f"LEGACY {reason.name}"] = f"{rule}, R21"
    for reason in DropReason:
        bins[f"DROP {reason.name}"] = "R11" if reason < DropReason.NO_LEGACY_BUFFER else "R22"
    for k in range(1, params.buffers_per_conn + 1):
        bins[f"R20 placed into {k} buffer(s)"] = "R20"
    for opcode in Opcode:
        bins[f"R40 {opcode.name} OK"] = "R40"
    for status in CmdStatus:
        if status != CmdStatus.OK:
            bins[f"R41 {status.name}"] = "R41"
    for name, _, _, _ in CHANNELS:
        bins[f"R60 stall on {name}"] = "R60"
    for name in RESET_BINS:
        bins[name] = "SPEC §7"
    if params.max_frame_bytes > 1522:
        bins["R10 jumbo frame (over 1518 bytes) placed"] = "R10"
    return bins


class Coverage:
    """Counts per bin, a report, and JSON.

    Parameters
    ----------
    params : Params
        The build; it decides which bins exist (:func:`bins_for`).

    Members
    -------
    counts : dict of str to int
        Hits per bin, every bin present.
    rules : dict of str to str
        The rule of every bin.
    """

    def __init__(self, params):
        self.rules = bins_for(params)
        self.counts = {name: 0 for name in self.rules}

    def hit(self, name, count=1):
        if name not in self.counts:
            raise KeyError(f"Coverage bin must be one of {sorted(self.counts)}, not {name!r}")
        self.counts[name] += count

    @property
    def missing(self):
        """Bins never hit, in their order."""
        return [name for name, count in self.counts.items() if not count]

    def report(self, title="functional coverage"):
        width = max(map(len, self.counts))
        lines = [f"{title}: {len(self.counts) - len(self.missing)} of {len(self.counts)} bins hit"]
        for name, count in self.counts.items():
            mark = "  " if count else "!!"
            lines.append(f"  {mark} {name:<{width}}  {self.rules[name]:<9} {count}")
        return "\n".join(lines)

    def as_dict(self):
        return {"bins": {name: {"rule": self.rules[name], "count": count}
                         for name, count in self.counts.items()},
                "missing": self.missing}

    def write_json(self, path, **extra):
        with open(path, "w") as handle:
            json.dump({**extra, **self.as_dict()}, handle, indent=1)


class CoveredModel(Model):
    """The golden model, recording into a :class:`Coverage` which branch of each rule it took.

    It decides exactly as :class:`model.Model` does; it only looks at the arguments and results
    of the model's steps. Takes the arguments of :class:`model.Model` and ``coverage``.
    """

    def __init__(self, params=None, *, dma_error=None, coverage):
        super().__init__(params, dma_error=dma_error)
        self.coverage = coverage
        self._cause = None

    def _hit(self, name):
        self.coverage.hit(name)

    # Inputs ------------------------------------------------------------------------------------

    def rx_frame(self, frame, mac_error=False):
        if self.held is not None:
            self._hit("R17 frame waits behind a held frame")
        self._cause = "rx"
        return super().rx_frame(frame, mac_error)

    def tx_frame(self, frame):
        self._hit("R30 transmitted frame passed through")
        if parse_tx(frame) is None:
            self._hit("R30 transmitted frame that gives no update")
        self._cause = "tx"
        return super().tx_frame(frame)

    def command(self, cmd):
        self._cause = cmd & 0xff if isinstance(cmd, int) else int(cmd.opcode)
        return super().command(cmd)

    # Decisions ---------------------------------------------------------------------------------

    def _job(self, decide):
        events = super()._job(decide)
        for event in events:
            if event.dma_error and event.type in (EventType.RX_PLACED, EventType.LEGACY):
                self._hit(f"R51 dma_error on {event.type.name}")
        return events

    def _decide(self, frame, mac_error=False):
        p = parse(frame, mac_error=mac_error, max_frame_bytes=self.params.max_frame_bytes)
        events = super()._decide(frame, mac_error)
        if events and events[0].type == EventType.DROP and p.cls != Cls.TCP \
                and p.cls not in (Cls.NOT_TCP, Cls.CHECKSUM):
            self._hit(f"DROP {DropReason(events[0].reason).name}")
        if p.cls in (Cls.TCP, Cls.CHECKSUM):
            ip = 18 if frame[12:14] == b"\x81\x00" else 14
            if len(frame) > ip + int.from_bytes(frame[ip + 2:ip + 4], "big"):
                self._hit("R10 Ethernet padding ignored")
        if p.cls == Cls.CHECKSUM:
            if p.ip_csum_bad:
                self._hit("R11 bad IPv4 header checksum")
            if p.tcp_csum_bad:
                self._hit("R11 bad TCP checksum")
            if self.lookup(ConnKey(p.local_ip, p.remote_ip, p.local_port, p.remote_port)) \
                    is not None:
                self._hit("R11 delegated key with a bad checksum not looked up")
        return events

    def _delegated(self, frame, p, index):
        entry = self.entries[index]
        ahead = (p.seq - entry.rcv_nxt) % 2**32
        sync_req = entry.sync_req
        events = super()._delegated(frame, p, index)
        if events and events[0].type == EventType.LEGACY:
            reason = events[0].reason
            if reason == LegacyReason.SYNC and sync_req:
                self._hit("R14 frame of a connection waiting for resync")
            if reason == LegacyReason.OUT_OF_SEQ:
                self._hit("R16 frame ahead of rcv_nxt" if ahead < 1 << 31
                          else "R16 retransmission (seq behind rcv_nxt)")
        return events

    def _legacy(self, frame, p, reason, index=NO_CONNECTION):
        events = super()._legacy(frame, p, reason, index)
        event = events[0]
        if event.type == EventType.DROP:
            self._hit(f"DROP {DropReason(event.reason).name}")
            if index != NO_CONNECTION:
                self._hit("R22 failed legacy delivery of a delegated connection's frame")
            return events
        self._hit(f"LEGACY {LegacyReason(reason).name}")
        if index != NO_CONNECTION:
            self._hit("R21 legacy frame of a delegated connection")
        if reason == LegacyReason.SPECIAL:
            ip = 18 if frame[12:14] == b"\x81\x00" else 14
            kinds = [name for name, flag in (("SYN", TCP_SYN), ("FIN", TCP_FIN),
                                             ("RST", TCP_RST), ("URG", TCP_URG))
                     if p.flags & flag]
            if p.is_fragment:
                kinds.append("fragment")
            if frame[ip] & 0xf > 5:
                kinds.append("IPv4 options")
            if p.special and not kinds:
                kinds.append("TCP option")
            for kind in kinds:
                self._hit(f"R13 special {kind}")
        return events

    def _hold(self, frame, p, index):
        events = super()._hold(frame, p, index)
        self._hit("R17 BUF_REQ" if events else "R17 re-decided, still held, no second BUF_REQ")
        return events

    def _redecide(self):
        held = self.held
        events = super()._redecide()
        if held is None or not events or self.held == held:
            return events
        outcome, cause = events[0], self._cause
        if outcome.type == EventType.RX_PLACED and cause == Opcode.POST_BUFFER:
            self._hit("R18 held frame placed after POST_BUFFER")
        elif (outcome.type == EventType.LEGACY and outcome.reason == LegacyReason.OUT_OF_SEQ
              and cause in (Opcode.RESYNC, "tx")):
            self._hit("R18 held frame out of sequence after RESYNC or ACK")
        elif (outcome.type == EventType.LEGACY and outcome.reason == LegacyReason.NO_MATCH
              and cause == Opcode.RECLAIM):
            self._hit("R18 held frame of no connection after RECLAIM")
        return events

    def _place(self, frame, p, index):
        entry = self.entries[index]
        lengths = {id(buffer): buffer.length for buffer in entry.queue}
        queue = list(entry.queue)
        writes = len(self.last_writes)
        vlan = frame[12:14] == b"\x81\x00"
        events = super()._place(frame, p, index)
        self._hit(f"R20 placed into {len(self.last_writes) - writes} buffer(s)")
        if p.seq + p.payload_len > 2**32:
            self._hit("R3 placed across the sequence-number wrap")
        if vlan:
            self._hit("R10 802.1Q-tagged frame placed")
        if len(frame) > 1518 and "R10 jumbo frame (over 1518 bytes) placed" in self.coverage.counts:
            self._hit("R10 jumbo frame (over 1518 bytes) placed")
        done = [buffer for buffer in queue if buffer not in entry.queue]
        for buffer in done:
            full = buffer.filled == lengths[id(buffer)]
            self._hit("R20 BUF_DONE of a full buffer" if full
                      else "R20 BUF_DONE of a partly filled buffer (PSH)")
            assert full or p.flags & TCP_PSH
        return events

    def _tx_update(self, update):
        if update is None:
            return super()._tx_update(update)
        index = self.lookup(ConnKey(update.local_ip, update.remote_ip, update.local_port,
                                    update.remote_port))
        if index is None:
            return super()._tx_update(update)
        entry = self.entries[index]
        rcv_nxt, snd_nxt = entry.rcv_nxt, entry.snd_nxt
        events = super()._tx_update(update)
        self._hit("R2 transmit update hits an entry")
        if entry.rcv_nxt != rcv_nxt:
            self._hit("R31 ACK ahead moves rcv_nxt")
        if any(event.type == EventType.RESYNC for event in events):
            self._hit("R32 RESYNC by the stack's ACK")
        self._hit("R33 snd_nxt advanced" if entry.snd_nxt != snd_nxt
                  else "R33 snd_nxt kept (retransmission)")
        return events

    def _execute(self, cmd):
        events = super()._execute(cmd)
        done = events[-1]
        if done.status == CmdStatus.OK:
            self._hit(f"R40 {Opcode(done.opcode).name} OK")
        else:
            self._hit(f"R41 {CmdStatus(done.status).name}")
            if done.status == CmdStatus.BAD_INDEX and done.index == NO_CONNECTION:
                self._hit("R41 BAD_INDEX with index 0xFFFF")
        return events


class StallCounter:
    """Counts, per channel of the top level, the cycles in which a transfer was held up (R60):
    ``valid`` high and ``ready`` low, or, on a channel the testbench drives, its driver holding
    back what it has to send (an idle cycle of its pause generator).

    Parameters
    ----------
    dut : cocotb handle
    drivers : dict of str to object
        The cocotbext-axi driver of each testbench-driven channel, by channel name; its ``pause``
        and ``idle()`` tell an idle cycle.

    Members
    -------
    stalls : collections.Counter
        Stalled cycles per channel name.
    """

    def __init__(self, dut, drivers):
        self.dut = dut
        self.stalls = collections.Counter()
        self._channels = [(name, getattr(dut, valid), getattr(dut, ready), drivers.get(name))
                          for name, valid, ready, _ in CHANNELS]
        self._task = cocotb.start_soon(self._run())

    def record(self, coverage):
        for name, _, _, _ in CHANNELS:
            coverage.hit(f"R60 stall on {name}", self.stalls[name])

    def stop(self):
        self._task.cancel()

    async def _run(self):
        clock_edge = RisingEdge(self.dut.clk)
        rst = self.dut.rst
        while True:
            await clock_edge
            if int(rst.value):
                continue
            for name, valid, ready, driver in self._channels:
                if int(valid.value):
                    if not int(ready.value):
                        self.stalls[name] += 1
                elif driver is not None and driver.pause and not driver.idle():
                    self.stalls[name] += 1
