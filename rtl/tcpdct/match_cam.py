"""The match portion of the Delegated Connection Table: a CAM of connection keys (SPEC §2)."""

from amaranth.hdl import Module, Signal, Const, Cat, Mux, Shape, Value, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .layouts import ConnKey


__all__ = ["MatchCam", "write_cycles"]


#: Key bits per table: each table is addressed by one nibble of the key. Four is the address
#: width of an ECP5 distributed RAM (TRELLIS_DPR16X4).
NIBBLE = 4
#: Entries per table word: a word is written whole, so the entries sharing it are rewritten
#: together. Four is the data width of that RAM.
GROUP = 4
#: Steps of a key write before its first table word: the group's keys are read one per cycle,
#: each arriving two cycles later (the block RAM's output is registered before use).
_READ_STEPS = GROUP + 2


def write_cycles(nibble=NIBBLE):
    """Cycles ``MatchCam.write_busy`` stays high after a key write, with ``nibble``-bit
    nibbles: the group's keys are read, then each table word is computed and written."""
    return _READ_STEPS + (1 << nibble) + 1


class MatchCam(wiring.Component):
    """Valid bits and 96-bit keys of every DCT entry, every entry compared with each lookup key
    in the same cycle (claim 23).

    The keys are held as tables in distributed RAM, not as registers with a 96-bit comparator
    each. Key bits are taken four at a time: for each nibble *k* of the key a 16-word table has
    bit *e* of word *v* set when entry *e*'s nibble *k* is *v*. A lookup reads the 24 tables at
    its key's 24 nibbles, and entry *e* holds the key when bit *e* of all 24 words is set. Each
    lookup key bit then reaches one RAM read input per entry, as it reached one comparator input
    before, but the 96 key flip-flops per entry and the wires from each to its comparator are
    gone: at 256 entries (24,576 flip-flops, 16,384 compare LUTs) that was more wiring than
    nextpnr could route on an LFE5U-85F (docs/performance.md, "64x256").

    A table word holds four entries (``GROUP``), the width of one ECP5 distributed RAM, and is
    written whole. So writing a key rewrites its group's 16 words, from the four keys of the
    group kept in a key store (a block RAM). That takes ``write_cycles`` cycles in the
    background, while lookups go on: until the tables hold the new key, the entry being written
    is compared with the key in a register instead.

    Timing, counted in clock edges:

    * A key presented on ``lookup_key_<i>`` during cycle *t* gives its result on
      ``lookup_hit_<i>`` / ``lookup_index_<i>`` during cycle *t + 1*. Both are combinational
      from registers (the per-entry match bits and the valid bits, registered at the end of
      *t*): one OR tree of ``n_entries`` inputs, so a user may address a memory with the index
      in the same cycle. The key is sampled on every cycle; there is no enable.
    * A write presented during cycle *t* (``write_en`` high) stores the key presented on
      ``lookup_key_0`` during cycle *t* and the valid bit ``write_valid`` into entry
      ``write_index`` at the edge that ends cycle *t*. Lookup keys presented during cycle *t + 1*
      or later see the new contents; a key presented during cycle *t* itself (the written key
      included) still sees the old contents. ``valid`` shows the new valid bit from cycle
      *t + 1* on.
    * A write with ``write_valid`` high makes ``write_busy`` high for the next ``write_cycles``
      cycles, while the tables are rewritten. A write with ``write_valid`` high during a cycle
      with ``write_busy`` high is ignored altogether (entry and valid bit unchanged): the writer
      must wait. Writes with ``write_valid`` low (invalidations) only change a valid bit and are
      taken in any cycle.

    The written key comes in on lookup port 0 rather than a port of its own because each key
    bit reaches every entry: a second 96-bit broadcast beside the lookup key's is wiring the
    large tables cannot afford. The writer loses nothing: a lookup in the cycle of a write is
    out of date by the next cycle anyway.

    Parameters
    ----------
    n_entries : int
        Number of DCT entries.
    n_lookup : int
        Number of lookup ports; each has tables of its own (a distributed RAM has one read
        port). Port 0 belongs to the receive engine, which also writes.
    key_shape : shape-castable
        The key, :class:`ConnKey`. A formal proof may take a narrower one, and narrower
        nibbles (``nibble`` bits, ``NIBBLE`` by default): a shorter key means fewer tables, a
        narrower nibble fewer words per table and so a shorter rewrite, and nothing else
        depends on either.

    Members
    -------
    lookup_key_<i> : In(key_shape)
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
    write_busy : Out(1)
        A key is being written into the tables; another cannot be until this falls.
    valid : Out(n_entries)
        Valid bit of every entry, bit *k* for entry *k*.

    ``index_bits`` is ``max(1, (n_entries - 1).bit_length())``, as :attr:`Params.index_bits`.

    Raises
    ------
    ValueError
        If ``n_entries`` or ``n_lookup`` is not a positive integer, or ``key_shape`` is not a
        whole number of nibbles.
    """

    def __init__(self, n_entries, n_lookup=2, key_shape=ConnKey, nibble=NIBBLE):
        if not isinstance(n_entries, int) or n_entries < 1:
            raise ValueError(f"Number of entries must be a positive integer, not {n_entries!r}")
        if not isinstance(n_lookup, int) or n_lookup < 1:
            raise ValueError(f"Number of lookup ports must be a positive integer, "
                             f"not {n_lookup!r}")
        self.key_bits = Shape.cast(key_shape).width
        if not isinstance(nibble, int) or nibble < 1:
            raise ValueError(f"Nibble width must be a positive integer, not {nibble!r}")
        if self.key_bits < 1 or self.key_bits % nibble:
            raise ValueError(f"Key must be a positive whole number of {nibble}-bit nibbles, "
                             f"not {self.key_bits} bits")
        self.nibble = nibble
        self._rows = 1 << nibble
        self.write_cycles = write_cycles(nibble)
        self._last_step = self.write_cycles - 1
        self.n_entries = n_entries
        self.n_lookup = n_lookup
        self.index_bits = max(1, (n_entries - 1).bit_length())
        members = {}
        for port in range(n_lookup):
            members[f"lookup_key_{port}"] = In(key_shape)
            members[f"lookup_hit_{port}"] = Out(1)
            members[f"lookup_index_{port}"] = Out(self.index_bits)
        members.update({
            "write_en":    In(1),
            "write_index": In(self.index_bits),
            "write_valid": In(1),
            "write_busy":  Out(1),
            "valid":       Out(n_entries),
        })
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()

        nibble_bits = self.nibble
        n_nibbles = self.key_bits // nibble_bits
        n_groups = -(-self.n_entries // GROUP)
        width = n_groups * GROUP  # entries past n_entries fill the last group; never valid

        valid = Signal(self.n_entries)
        m.d.comb += self.valid.eq(valid)

        # -- Writes --------------------------------------------------------------------------
        busy       = Signal()
        step       = Signal(range(self._last_step + 1))
        new_key    = Signal(self.key_bits)    # the key being written ...
        new_entry  = Signal(self.index_bits)  # ... into this entry ...
        overridden = Signal(width)            # ... compared from new_key, not the tables
        group_en   = Signal(n_groups)         # the group whose words are rewritten
        m.d.comb += self.write_busy.eq(busy)

        in_range = self.write_index < self.n_entries
        starts_rewrite = self.write_en & self.write_valid & in_range & ~busy
        with m.If(self.write_en & in_range & ~(self.write_valid & busy)):
            m.d.sync += valid.bit_select(self.write_index, 1).eq(self.write_valid)

        key_store = Memory(shape=unsigned(self.key_bits), depth=width, init=[])
        m.submodules.key_store = key_store
        store_wr = key_store.write_port()
        store_rd = key_store.read_port()
        m.d.comb += [store_wr.addr.eq(self.write_index), store_wr.data.eq(self.lookup_key_0),
                     store_wr.en.eq(starts_rewrite)]

        with m.If(starts_rewrite):
            m.d.sync += [busy.eq(1), step.eq(0), new_key.eq(self.lookup_key_0),
                         new_entry.eq(self.write_index),
                         overridden.eq(1 << self.write_index),
                         group_en.eq(1 << (self.write_index // GROUP))]
        with m.If(busy):
            m.d.sync += step.eq(step + 1)
            with m.If(step == self._last_step):
                m.d.sync += [busy.eq(0), overridden.eq(0)]

        # Steps 0 to GROUP - 1 read the group's keys from the store; each is registered as it
        # comes out (a block RAM's output is slow: 4.3 ns, the CAM's worst path unregistered)
        # and kept a step after. The new key was stored in the cycle of its write, before the
        # first read.
        group_keys = [Signal(self.key_bits, name=f"group_key_{lane}") for lane in range(GROUP)]
        group_base = (new_entry // GROUP) * GROUP
        store_data = Signal(self.key_bits)
        m.d.comb += store_rd.addr.eq(group_base + step[:GROUP.bit_length() - 1])
        m.d.sync += store_data.eq(store_rd.data)
        for lane in range(GROUP):
            with m.If(busy & (step == lane + 2)):
                m.d.sync += group_keys[lane].eq(store_data)

        # Steps _READ_STEPS to _last_step - 1 each compute one word of every table; the word is
        # written in the step after, from registers, since it goes to every group's RAM.
        row = Signal(range(self._rows))
        row_valid = Signal()
        row_words = [Signal(GROUP, name=f"row_word_{nibble}") for nibble in range(n_nibbles)]
        m.d.sync += row_valid.eq(busy & (step >= _READ_STEPS) & (step < self._last_step))
        m.d.sync += row.eq(step - _READ_STEPS)
        for nibble in range(n_nibbles):
            bits = slice(nibble * nibble_bits, (nibble + 1) * nibble_bits)
            m.d.sync += row_words[nibble].eq(
                Cat(group_keys[lane][bits] == step - _READ_STEPS for lane in range(GROUP)))

        # -- Tables and lookups --------------------------------------------------------------
        tables = []
        for nibble in range(n_nibbles):
            table = Memory(shape=unsigned(width), depth=self._rows, init=[])
            m.submodules[f"table_{nibble}"] = table
            table_wr = table.write_port(granularity=GROUP)
            m.d.comb += [table_wr.addr.eq(row),
                         table_wr.data.eq(row_words[nibble].replicate(n_groups)),
                         table_wr.en.eq(Mux(row_valid, group_en, 0))]
            tables.append(table)

        # The valid bits and which entry is being written are registered beside the match bits,
        # so a lookup sees the state of the cycle its key was presented in. The tables' answer
        # and the new key's are registered apart and merged after (one LUT4 per entry with the
        # valid bit): merged before, the new key's 96-bit compare fanned out to every entry in
        # series with the tables' (cam256's worst path).
        valid_seen = Signal(self.n_entries)
        overridden_seen = Signal(self.n_entries)
        m.d.sync += [valid_seen.eq(valid), overridden_seen.eq(overridden)]
        for port in range(self.n_lookup):
            lookup_key = Value.cast(getattr(self, f"lookup_key_{port}"))
            words = []
            for nibble, table in enumerate(tables):
                table_rd = table.read_port(domain="comb")
                m.d.comb += table_rd.addr.eq(
                    lookup_key[nibble * nibble_bits:(nibble + 1) * nibble_bits])
                words.append(table_rd.data)
            in_tables = Signal(self.n_entries, name=f"in_tables_{port}")
            m.d.sync += in_tables.eq(Cat(Cat(word[entry] for word in words).all()
                                         for entry in range(self.n_entries)))
            new_key_hit = Signal(self.n_entries, name=f"new_key_hit_{port}")
            m.d.sync += new_key_hit.eq(Mux(new_key == lookup_key, overridden, 0))
            match = Signal(self.n_entries, name=f"match_{port}")
            m.d.comb += match.eq((in_tables & ~overridden_seen | new_key_hit) & valid_seen)
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
