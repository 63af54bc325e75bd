"""The match portion of the Delegated Connection Table: a CAM of connection keys (SPEC §2)."""

from amaranth.hdl import Module, Signal, Const, Cat
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .layouts import ConnKey


__all__ = ["MatchCam"]


class MatchCam(wiring.Component):
    """Valid bits and 96-bit keys of every DCT entry, looked up by all engines at once.

    The entries are kept in registers rather than a memory so that every entry is compared with
    every lookup key in the same cycle (claim 23): a lookup takes one cycle whatever the number of
    entries, and each engine has its own lookup port, so the receive and transmit engines never
    wait for each other.

    Timing, counted in clock edges:

    * A key presented on ``lookup_key_<i>`` during cycle *t* gives its result on
      ``lookup_hit_<i>`` / ``lookup_index_<i>`` during cycle *t + 1*. Both are combinational
      from registers (the per-entry compares and the valid bits, registered at the end of *t*):
      one OR tree of ``n_entries`` inputs, so a user may address a memory with the index in the
      same cycle. The key is sampled on every cycle; there is no enable.
    * A write presented during cycle *t* (``write_en`` high) stores the key presented on
      ``lookup_key_0`` during cycle *t* and updates the entry at the edge that ends cycle *t*.
      Lookup keys presented during cycle *t + 1* or later see the new contents; a key presented
      during cycle *t* itself (the written key included) still sees the old contents. ``valid``
      shows the new valid bit from cycle *t + 1* on.

    The written key comes in on lookup port 0 rather than a port of its own because each key
    bit reaches every entry: at 256 entries a second 96-bit broadcast beside the lookup key's
    was more than nextpnr could route (docs/performance.md, "64x256"). The writer loses nothing:
    a lookup in the cycle of a write is out of date by the next cycle anyway.

    Parameters
    ----------
    n_entries : int
        Number of DCT entries.
    n_lookup : int
        Number of lookup ports; port 0 belongs to the receive engine, port 1 to the transmit
        engine.

    Members
    -------
    lookup_key_<i> : In(ConnKey)
        Key to look up on port *i*.
    lookup_hit_<i> : Out(1)
        A valid entry held the key presented on the previous cycle.
    lookup_index_<i> : Out(index_bits)
        Index of that entry; 0 on a miss.
    write_en : In(1)
        Write the key on ``lookup_key_0`` and ``write_valid`` into entry ``write_index``. An
        index of ``n_entries`` or more writes nothing.
    write_index : In(index_bits)
    write_valid : In(1)
        New valid bit of the entry; 0 invalidates it.
    valid : Out(n_entries)
        Valid bit of every entry, bit *k* for entry *k*.

    ``index_bits`` is ``max(1, (n_entries - 1).bit_length())``, as :attr:`Params.index_bits`.

    Raises
    ------
    ValueError
        If ``n_entries`` or ``n_lookup`` is not a positive integer.
    """

    def __init__(self, n_entries, n_lookup=2):
        if not isinstance(n_entries, int) or n_entries < 1:
            raise ValueError(f"Number of entries must be a positive integer, not {n_entries!r}")
        if not isinstance(n_lookup, int) or n_lookup < 1:
            raise ValueError(f"Number of lookup ports must be a positive integer, "
                             f"not {n_lookup!r}")
        self.n_entries = n_entries
        self.n_lookup = n_lookup
        self.index_bits = max(1, (n_entries - 1).bit_length())
        members = {}
        for port in range(n_lookup):
            members[f"lookup_key_{port}"] = In(ConnKey)
            members[f"lookup_hit_{port}"] = Out(1)
            members[f"lookup_index_{port}"] = Out(self.index_bits)
        members.update({
            "write_en":    In(1),
            "write_index": In(self.index_bits),
            "write_valid": In(1),
            "valid":       Out(n_entries),
        })
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()

        keys = [Signal(ConnKey, name=f"key_{entry}") for entry in range(self.n_entries)]
        valid = Signal(self.n_entries)
        m.d.comb += self.valid.eq(valid)

        with m.If(self.write_en):
            for entry in range(self.n_entries):
                with m.If(self.write_index == entry):
                    m.d.sync += [
                        keys[entry].eq(self.lookup_key_0),
                        valid[entry].eq(self.write_valid),
                    ]

        # Each entry's 96-bit compare is kept a logic cone of its own, 64 LUT4: its result is
        # registered, apart from the valid bit and the OR trees behind it, and the lookup key
        # is a kept net. Yosys' ABC9 mapping of a compare merged with its neighbours took about
        # twice that (docs/performance.md, "Match CAM cost per entry"). A kept net does not stop
        # ABC9 from copying the logic that drives it into each compare, so the core also writes
        # this module with ``keep_hierarchy`` (``TcpDct.kept_hierarchy``). The valid bits are
        # registered beside the compares, so a lookup sees the valid bits and keys of the cycle
        # its key was presented in.
        valid_seen = Signal(self.n_entries)
        m.d.sync += valid_seen.eq(valid)
        for port in range(self.n_lookup):
            lookup_key = Signal(ConnKey.as_shape().size, name=f"lookup_{port}", attrs={"keep": 1})
            m.d.comb += lookup_key.eq(getattr(self, f"lookup_key_{port}").as_value())
            key_equal = Signal(self.n_entries, name=f"key_equal_{port}")
            m.d.sync += key_equal.eq(Cat(keys[entry].as_value() == lookup_key
                                         for entry in range(self.n_entries)))
            match = Signal(self.n_entries, name=f"match_{port}")
            m.d.comb += match.eq(key_equal & valid_seen)
            # Keys are unique among valid entries (R1, enforced by the command unit), so at most
            # one entry matches and its index is the OR of the matching entries' indices. A
            # priority encoder would give the same answer at the cost of a carry chain across
            # all entries; the OR keeps the index to one wide OR per index bit.
            index = Cat(Cat(Const(0, 1), *(match[entry] for entry in range(self.n_entries)
                                           if entry >> bit & 1)).any()
                        for bit in range(self.index_bits))
            m.d.comb += [
                getattr(self, f"lookup_hit_{port}").eq(match.any()),
                getattr(self, f"lookup_index_{port}").eq(index),
            ]

        return m
