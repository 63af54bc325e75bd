"""The AXI4-Lite register block: identification, build parameters and counters (SPEC §6)."""

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from . import ports, regmap
from .layouts import event_layout
from .records import EventType, LegacyReason, DropReason


__all__ = ["Csr"]


class Csr(wiring.Component):
    """AXI4-Lite slave serving the registers of :data:`tcpdct.regmap.REGISTERS`.

    The address decode is generated from the register table; every register in it must have a
    source here (a constant or a counter), or construction fails, so the table and the hardware
    cannot drift apart.

    Counters count what leaves the core: an event whose ``event_fire`` is high in cycle t, or a
    transmitted frame whose ``tx_frame`` is, is counted at the end of cycle t + 1, and a read
    whose AR handshake happens in cycle t + 2 or later sees it. (Which counters an event
    advances, and by how much, is registered first, so that the counters' enables are registers:
    decoded from the event stream's handshake, they were five levels of logic deep. Until the
    seventeenth session a read in cycle t + 1 saw it.) 32-bit counters wrap at 2**32. A 64-bit
    byte counter is read as ``_LO`` then ``_HI``: reading ``_LO`` copies the upper word into a
    latch that ``_HI`` returns, so the pair is consistent even if the counter moves between the
    two reads; ``_HI`` read before any ``_LO`` returns 0.

    AXI4-Lite behaviour:

    * Every register is read-only. A write completes with OKAY and changes nothing, as a write
      to a read-only register of a Corundum register block does.
    * A read of an address outside the map returns 0 with OKAY, as Corundum's register blocks do,
      so that a driver probing a newer map on an older core reads zeros rather than taking a bus
      error. The two low address bits are ignored.
    * AW and W are accepted independently, in either order or together; the write response is
      sent once both have arrived. One write and one read may be in flight at a time. Every
      ready comes straight from a register: none depends combinationally on a valid.

    Parameters
    ----------
    params : Params
        Build parameters; those in the register map are readable.

    Members
    -------
    axil_* : ports.axil_slave("axil")
        The AXI4-Lite slave (``axil_awaddr``, ``axil_awvalid``, ... ``axil_rready``).
    event : In(event_layout)
        The event on the event stream.
    event_fire : In(1)
        ``event`` left the core on this cycle (``m_axis_evt`` valid and ready).
    tx_frame : In(1)
        The last beat of a transmitted frame left on ``m_axis_tx`` on this cycle.

    Attributes
    ----------
    counters : dict of str to Signal
        The counter registers by counter name (the register name without ``_LO``/``_HI``), so
        that a testbench can preload one near its wrap-around.

    Raises
    ------
    ValueError
        If a register of the map has no source, a counter has no register, or the map is not
        word-aligned and unique within the AXI4-Lite address space.
    """

    def __init__(self, params):
        self.params = params
        self._settings = [reg for reg in regmap.REGISTERS if reg.access == "rw"]
        super().__init__({
            **ports.axil_slave("axil"),
            "event":      In(event_layout),
            "event_fire": In(1),
            "tx_frame":   In(1),
            "tx_matched": In(1),
            # One output per read-write register of the map, named after it in lower case.
            **{reg.name.lower(): Out(32, init=regmap.reset_value(reg, params))
               for reg in self._settings},
        })
        self._counter_table = self._counters()
        self.counters = {name: counter for name, (counter, _, _) in self._counter_table.items()}
        # Check the register map now rather than at elaboration, so a bad map fails early.
        self._decode(self.counters)

    def _counter_sources(self):
        """Per counter name, the (condition, amount) that advances it, per regmap's descriptions."""
        event = self.event

        def fired(event_type):
            return self.event_fire & (event.code == event_type)

        sources = {
            "RX_FRAMES":    (fired(EventType.RX_PLACED) | fired(EventType.LEGACY)
                             | fired(EventType.DROP), 1),
            "RX_PLACED":    (fired(EventType.RX_PLACED), 1),
            "RX_LEGACY":    (fired(EventType.LEGACY), 1),
            "RX_DROPPED":   (fired(EventType.DROP), 1),
            "BYTES_PLACED": (fired(EventType.RX_PLACED), event.body.rx_placed.length),
            "BYTES_LEGACY": (fired(EventType.LEGACY), event.body.legacy.frame_len),
            "TX_FRAMES":    (self.tx_frame, 1),
            "TX_MATCHED":   (self.tx_matched, 1),
            "BUF_REQS":     (fired(EventType.BUF_REQ), 1),
            "RESYNCS":      (fired(EventType.RESYNC), 1),
            "CMD_ERRORS":   (fired(EventType.CMD_DONE) & (event.body.cmd_done.status != 0), 1),
            "DMA_ERRORS":   (self.event_fire & event.dma_error, 1),
            "BUF_DONES":    (fired(EventType.BUF_DONE), 1),
            "COMMANDS":     (fired(EventType.CMD_DONE), 1),
        }
        for reason in LegacyReason:
            sources[f"LEGACY_{reason.name}"] = (
                fired(EventType.LEGACY) & (event.body.legacy.reason == reason), 1)
        for reason in DropReason:
            sources[f"DROP_{reason.name}"] = (
                fired(EventType.DROP) & (event.body.drop.reason == reason), 1)
        return sources

    def _counters(self):
        """Per counter name, its register (64 bits wide where the map has a ``_LO``/``_HI`` pair),
        the condition that advances it and by how much."""
        names = {reg.name for reg in regmap.REGISTERS}
        counters = {}
        for name, (condition, amount) in self._counter_sources().items():
            if {f"{name}_LO", f"{name}_HI"} <= names:
                width = 64
            elif name in names:
                width = 32
            else:
                raise ValueError(f"Counter {name!r} has no register in the register map")
            counters[name] = (Signal(width, name=f"count_{name.lower()}"), condition, amount)
        return counters

    def _decode(self, counters):
        """Per word address, the read value of its register and the statements a read performs."""
        constants = {
            "ID":      regmap.ID_VALUE,
            "VERSION": regmap.VERSION_VALUE,
            **{name.upper(): value for name, value in self.params.as_dict().items()},
        }
        high_latches = {name: Signal(32, name=f"latch_{name.lower()}_hi")
                        for name, counter in counters.items() if len(counter) == 64}
        decode = {}
        for reg in regmap.REGISTERS:
            if reg.offset % 4 or not 0 <= reg.offset < 1 << ports.AXIL_ADDR_WIDTH:
                raise ValueError(f"Register {reg.name} must sit at a word address inside the "
                                 f"AXI4-Lite space, not at {reg.offset:#x}")
            word = reg.offset >> 2
            if word in decode:
                raise ValueError(f"Register {reg.name} overlaps another at {reg.offset:#x}")
            stem, half = reg.name[:-3], reg.name[-3:]
            if reg.name in counters:
                decode[word] = (counters[reg.name], [])
            elif stem in high_latches and half == "_LO":
                counter = counters[stem]
                decode[word] = (counter[:32], [high_latches[stem].eq(counter[32:])])
            elif stem in high_latches and half == "_HI":
                decode[word] = (high_latches[stem], [])
            elif reg.access == "rw":
                decode[word] = (getattr(self, reg.name.lower()), [])
            elif reg.name in constants:
                value = constants[reg.name]
                if not 0 <= value < 1 << 32:
                    raise ValueError(f"Register {reg.name} must hold a 32-bit value, not {value!r}")
                decode[word] = (value, [])
            else:
                raise ValueError(f"Register {reg.name} has no source in the register block")
        return decode

    def elaborate(self, platform):
        m = Module()
        for name, (counter, condition, amount) in self._counter_table.items():
            counts = Signal(name=f"counts_{name.lower()}")
            m.d.sync += counts.eq(condition)
            if not isinstance(amount, int):
                by = Signal.like(amount, name=f"by_{name.lower()}")
                m.d.sync += by.eq(amount)
                amount = by
            with m.If(counts):
                m.d.sync += counter.eq(counter + amount)
        decode = self._decode(self.counters)

        # Write channel: each of AW and W is held until both are there, then the write takes
        # effect (byte strobes honoured) on a read-write register and is ignored elsewhere.
        aw_held = Signal()
        w_held = Signal()
        write_addr = Signal.like(self.axil_awaddr)
        write_data = Signal.like(self.axil_wdata)
        write_strb = Signal.like(self.axil_wstrb)
        m.d.comb += [
            self.axil_awready.eq(~aw_held),
            self.axil_wready.eq(~w_held),
            self.axil_bresp.eq(0),
        ]
        with m.If(self.axil_awvalid & self.axil_awready):
            m.d.sync += [aw_held.eq(1), write_addr.eq(self.axil_awaddr)]
        with m.If(self.axil_wvalid & self.axil_wready):
            m.d.sync += [w_held.eq(1), write_data.eq(self.axil_wdata),
                         write_strb.eq(self.axil_wstrb)]
        with m.If(self.axil_bvalid & self.axil_bready):
            m.d.sync += self.axil_bvalid.eq(0)
        with m.If(aw_held & w_held & ~self.axil_bvalid):
            m.d.sync += [
                self.axil_bvalid.eq(1),
                aw_held.eq(0),
                w_held.eq(0),
            ]
            for reg in self._settings:
                setting = getattr(self, reg.name.lower())
                with m.If(write_addr[2:] == reg.offset >> 2):
                    for byte in range(4):
                        with m.If(write_strb[byte]):
                            m.d.sync += setting.word_select(byte, 8).eq(
                                write_data.word_select(byte, 8))

        # Read channel: the address is decoded into a registered rdata, which holds until the
        # R handshake because no new address is taken while R is valid.
        m.d.comb += [
            self.axil_arready.eq(~self.axil_rvalid),
            self.axil_rresp.eq(0),
        ]
        with m.If(self.axil_rvalid & self.axil_rready):
            m.d.sync += self.axil_rvalid.eq(0)
        with m.If(self.axil_arvalid & self.axil_arready):
            m.d.sync += self.axil_rvalid.eq(1)
            with m.Switch(self.axil_araddr[2:]):
                for word, (value, action) in decode.items():
                    with m.Case(word):
                        m.d.sync += [self.axil_rdata.eq(value), *action]
                with m.Default():
                    m.d.sync += self.axil_rdata.eq(0)

        return m
