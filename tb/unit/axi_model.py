"""An AXI4 write slave for the Amaranth simulator, with back-pressure, response delays, error
injection and protocol assertions.

The slave is a simulator process that samples the bus at each clock edge, so every check sees
exactly what a real slave would register. It accepts W beats before their AW (AXI allows a master
to send write data first) and pairs them with bursts in order.
"""

from dataclasses import dataclass, field


__all__ = ["AxiWriteSlave", "AxiBurst", "AxiProtocolError"]


AXI_BURST_INCR = 0b01
AXI_RESP_OKAY = 0b00
AXI_RESP_SLVERR = 0b10

_AW_PAYLOAD = ("awid", "awaddr", "awlen", "awsize", "awburst", "awlock", "awcache", "awprot")
_W_PAYLOAD = ("wdata", "wstrb", "wlast")


class AxiProtocolError(AssertionError):
    """The master broke an AXI4 rule or a rule of this core's DMA (R50-R52)."""


@dataclass
class AxiBurst:
    """One accepted write burst and what became of it."""
    addr: int
    len: int                  # awlen: beats - 1
    aw_cycle: int
    error: bool = False
    beats_done: int = 0
    b_due: int = None         # cycle from which the response may be presented
    b_cycle: int = None       # cycle of the response handshake
    w_cycles: list = field(default_factory=list)
    written: set = field(default_factory=set)   # host byte addresses it strobed


class AxiWriteSlave:
    """AXI4 write slave with a sparse byte memory.

    Parameters
    ----------
    bus : object
        Has the flat members ``{prefix}_awaddr``, ``{prefix}_wdata`` ... of
        ``tcpdct.ports.axi4_write_master``.
    data_width : int
        W channel width in bits.
    max_burst_beats : int
        Longest burst allowed.
    rng : random.Random
        Source of stalls, delays and error choices.
    prefix : str
        Prefix of the bus members.
    aw_ready_prob, w_ready_prob : float
        Probability that ``awready``/``wready`` is high in a cycle.
    b_delay : (int, int)
        Bounds of the random cycles between the last W beat of a burst and its response.
    b_present_prob : float
        Probability of presenting a response that is due in a given cycle (more jitter).
    error : callable or None
        ``error(addr, awlen) -> bool`` decides per burst whether the response is SLVERR.
    expect_cache : int
        ``awcache`` the master must drive.

    Attributes
    ----------
    memory : dict
        Host byte address to byte value, for every byte written with its strobe set.
    write_counts : dict
        Host byte address to the number of times it was written.
    bursts : list of :class:`AxiBurst`
        Every accepted burst in AW order.
    w_cycles : list of int
        Cycle of every W handshake.
    cycle : int
        Clock edges seen.
    """

    def __init__(self, bus, *, data_width, max_burst_beats, rng, prefix="axi",
                 aw_ready_prob=1.0, w_ready_prob=1.0, b_delay=(0, 0), b_present_prob=1.0,
                 error=None, expect_cache=0b0011):
        self._bus = bus
        self._prefix = prefix
        self._data_bytes = data_width // 8
        self._max_burst_beats = max_burst_beats
        self._rng = rng
        self.aw_ready_prob = aw_ready_prob
        self.w_ready_prob = w_ready_prob
        self.b_delay = b_delay
        self.b_present_prob = b_present_prob
        self.error = error
        self._expect_cache = expect_cache

        self.memory = {}
        self.write_counts = {}
        self.bursts = []
        self.w_cycles = []
        self.cycle = 0

        self._w_pending = []     # beats accepted before their burst's AW
        self._unfilled = []      # bursts still waiting for W beats, oldest first
        self._responses = []     # bursts whose W is complete, awaiting B, oldest first

    def _sig(self, name):
        return getattr(self._bus, f"{self._prefix}_{name}")

    def _check(self, condition, message):
        if not condition:
            raise AxiProtocolError(f"cycle {self.cycle}: {message}")

    def _accept_aw(self, aw):
        size = (self._data_bytes - 1).bit_length()
        self._check(aw["awburst"] == AXI_BURST_INCR, f"awburst {aw['awburst']} is not INCR")
        self._check(aw["awsize"] == size, f"awsize {aw['awsize']} is not {size}")
        self._check(aw["awid"] == 0, f"awid {aw['awid']} is not 0")
        self._check(aw["awlock"] == 0, "awlock set")
        self._check(aw["awprot"] == 0, f"awprot {aw['awprot']} is not 0")
        self._check(aw["awcache"] == self._expect_cache,
                    f"awcache {aw['awcache']:#06b} is not {self._expect_cache:#06b}")
        self._check(aw["awlen"] <= self._max_burst_beats - 1,
                    f"awlen {aw['awlen']} longer than {self._max_burst_beats} beats")
        start = aw["awaddr"] - aw["awaddr"] % self._data_bytes
        end = start + (aw["awlen"] + 1) * self._data_bytes - 1
        self._check(start // 4096 == end // 4096,
                    f"burst {aw['awaddr']:#x}+{aw['awlen'] + 1} beats crosses 4 KiB")
        burst = AxiBurst(addr=aw["awaddr"], len=aw["awlen"], aw_cycle=self.cycle)
        burst.error = bool(self.error(burst.addr, burst.len)) if self.error else False
        self.bursts.append(burst)
        self._unfilled.append(burst)

    def _fill(self):
        while self._unfilled and self._w_pending:
            burst = self._unfilled[0]
            wdata, wstrb, wlast, cycle = self._w_pending.pop(0)
            beat = burst.beats_done
            self._check(bool(wlast) == (beat == burst.len),
                        f"wlast={wlast} on beat {beat} of a {burst.len + 1}-beat burst "
                        f"at {burst.addr:#x}")
            aligned = burst.addr - burst.addr % self._data_bytes
            beat_addr = aligned + beat * self._data_bytes
            for lane in range(self._data_bytes):
                if wstrb >> lane & 1:
                    addr = beat_addr + lane
                    self._check(addr >= burst.addr,
                                f"strobe below the unaligned start address {burst.addr:#x}")
                    self.memory[addr] = wdata >> (8 * lane) & 0xFF
                    burst.written.add(addr)
                    self.write_counts[addr] = self.write_counts.get(addr, 0) + 1
            burst.w_cycles.append(cycle)
            burst.beats_done += 1
            if burst.beats_done == burst.len + 1:
                self._unfilled.pop(0)
                burst.b_due = self.cycle + self._rng.randint(*self.b_delay)
                self._responses.append(burst)

    async def process(self, ctx):
        """The slave; add with ``sim.add_process(slave.process)``."""
        aw_names = [self._sig(name) for name in _AW_PAYLOAD]
        w_names = [self._sig(name) for name in _W_PAYLOAD]
        awvalid, awready = self._sig("awvalid"), self._sig("awready")
        wvalid, wready = self._sig("wvalid"), self._sig("wready")
        bvalid, bready = self._sig("bvalid"), self._sig("bready")
        bresp = self._sig("bresp")

        stalled_aw = None        # AW payload offered but not accepted at the previous edge
        stalled_w = None
        presenting = None        # burst whose response is on B
        ctx.set(awready, 0)
        ctx.set(wready, 0)
        ctx.set(bvalid, 0)
        sampled = (awvalid, awready, wvalid, wready, bvalid, bready, *aw_names, *w_names)
        async for _, rst, *values in ctx.tick().sample(*sampled):
            self.cycle += 1
            if rst:
                continue
            s_awvalid, s_awready, s_wvalid, s_wready, s_bvalid, s_bready = values[:6]
            aw = dict(zip(_AW_PAYLOAD, values[6:6 + len(aw_names)]))
            w = tuple(values[6 + len(aw_names):])

            if stalled_aw is not None:
                self._check(s_awvalid, "awvalid dropped before awready")
                self._check(aw == stalled_aw, f"AW payload changed while stalled: "
                            f"{stalled_aw} -> {aw}")
            if stalled_w is not None:
                self._check(s_wvalid, "wvalid dropped before wready")
                self._check(w == stalled_w, "W payload changed while stalled")

            stalled_aw = aw if s_awvalid and not s_awready else None
            stalled_w = w if s_wvalid and not s_wready else None
            if s_awvalid and s_awready:
                self._accept_aw(aw)
            if s_wvalid and s_wready:
                self.w_cycles.append(self.cycle)
                self._w_pending.append((*w, self.cycle))
            self._fill()

            if presenting is not None and s_bvalid and s_bready:
                presenting.b_cycle = self.cycle
                presenting = None
            if presenting is None and self._responses and self._responses[0].b_due <= self.cycle:
                if self._rng.random() < self.b_present_prob:
                    presenting = self._responses.pop(0)

            ctx.set(awready, self._rng.random() < self.aw_ready_prob)
            ctx.set(wready, self._rng.random() < self.w_ready_prob)
            ctx.set(bvalid, presenting is not None)
            ctx.set(bresp, AXI_RESP_SLVERR if presenting is not None and presenting.error
                    else AXI_RESP_OKAY)
