"""Synchronous FIFOs whose ``w_rdy`` and ``r_rdy`` are registers, and the flags they keep them
with (:func:`full_flag`, :func:`empty_flag`), which other counts of places use too.

Amaranth's :class:`~amaranth.lib.fifo.SyncFIFO` works them out each cycle from its level, a
compare of a register. Where the flag starts a long decision in the block at the other end (the
receive engine's choice of its next operation reads the descriptor FIFO's ``r_rdy`` and the job
queue's ``w_rdy``), that compare and the wire that carries it add to the decision's path. Here
each flag is kept as a register that follows the level: written and not read, the FIFO is
non-empty and full if it was one short; read and not written, it has room and is empty if it
held one. The compares are of the registered level, off the path of the handshake.
"""

from amaranth.hdl import C, Elaboratable, Module, Mux, Signal
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.memory import Memory


__all__ = ["full_flag", "empty_flag", "SyncFIFOFlagged", "SyncFIFOHeadRegistered"]


def full_flag(m, level, capacity, added, removed, *, name):
    """A register equal to ``level == capacity`` in every cycle, for a ``level`` register (reset
    to 0) that each cycle gains ``added`` and loses ``removed``, one bit each. It follows the
    level from a compare of the registered level, so that the handshake that moves the level
    reaches it through one gate rather than through the level's adder and a compare."""
    full = Signal(name=name)
    m.d.sync += full.eq(Mux(added == removed, full, added & (level == capacity - 1)))
    return full


def empty_flag(m, level, added, removed, *, name):
    """A register equal to ``level == 0`` in every cycle, for a level as in :func:`full_flag`."""
    empty = Signal(name=name, init=1)
    m.d.sync += empty.eq(Mux(added == removed, empty, removed & (level == 1)))
    return empty


def _advance(pointer, places):
    """The statement that moves ``pointer`` to the next of ``places`` places, round the ring."""
    return pointer.eq(Mux(pointer == places - 1, 0, pointer + 1))


def _sync_fifo_members(fifo, width, depth):
    """Give ``fifo`` :class:`~amaranth.lib.fifo.SyncFIFO`'s parameters and members."""
    fifo.width  = width
    fifo.depth  = depth
    fifo.w_data = Signal(width)
    fifo.w_en   = Signal()
    fifo.w_rdy  = Signal()
    fifo.r_data = Signal(width)
    fifo.r_en   = Signal()
    fifo.r_rdy  = Signal()
    fifo.level  = Signal(range(depth + 1))


class SyncFIFOFlagged(Elaboratable):
    """:class:`~amaranth.lib.fifo.SyncFIFO` with the same members and behaviour cycle for cycle,
    but ``w_rdy`` and ``r_rdy`` are registers.

    Parameters
    ----------
    width, depth : int
        As for :class:`~amaranth.lib.fifo.SyncFIFO`.

    second : slice, optional
        Bits of each entry to show for the entry behind the head too.

    Members
    -------
    w_data, w_en, w_rdy, r_data, r_en, r_rdy, level
        As for :class:`~amaranth.lib.fifo.SyncFIFO`. ``r_data`` is the head as the LUT RAM reads it
        (valid while ``r_rdy``); ``level`` is the number of entries.
    r_second, r_second_rdy
        With ``second``: those bits of the entry behind the head, valid while ``r_second_rdy``
        (a register: the FIFO holds two entries or more). They are kept in a copy of the LUT
        RAM of their own, written with the FIFO and read one place after its head.
    """

    def __init__(self, *, width, depth, second=None):
        _sync_fifo_members(self, width, depth)
        self.second = second
        if second is not None:
            self.r_second     = Signal(len(range(width)[second]))
            self.r_second_rdy = Signal()

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = fifo = SyncFIFO(width=self.width, depth=self.depth)
        m.d.comb += [
            fifo.w_data.eq(self.w_data),
            fifo.w_en.eq(self.w_en),
            fifo.r_en.eq(self.r_en),
            self.r_data.eq(fifo.r_data),
            self.level.eq(fifo.level),
        ]
        written = self.w_en & self.w_rdy
        read    = self.r_en & self.r_rdy
        full  = full_flag(m, fifo.level, self.depth, written, read, name="full")
        empty = empty_flag(m, fifo.level, written, read, name="empty")
        m.d.comb += [self.w_rdy.eq(~full), self.r_rdy.eq(~empty)]
        if self.second is not None:
            self._second_entry(m, written, read)
        return m

    def _second_entry(self, m, written, read):
        copy = m.submodules.second_copy = Memory(shape=len(self.r_second), depth=self.depth,
                                                 init=[])
        write_port = copy.write_port()
        read_port = copy.read_port(domain="comb")
        produce = Signal(range(self.depth))
        behind  = Signal(range(self.depth), init=1)  # the place after the head
        with m.If(written):
            m.d.sync += _advance(produce, self.depth)
        with m.If(read):
            m.d.sync += _advance(behind, self.depth)
        m.d.comb += [
            write_port.addr.eq(produce),
            write_port.data.eq(self.w_data[self.second]),
            write_port.en.eq(written),
            read_port.addr.eq(behind),
            self.r_second.eq(read_port.data),
        ]
        # Two entries or more: written and not read, if there was one; read and not written,
        # if there were three or more.
        level = self.level
        m.d.sync += self.r_second_rdy.eq(Mux(written == read, self.r_second_rdy,
                                             Mux(written, level != 0,
                                                 self.r_second_rdy & (level != 2))))


class SyncFIFOHeadRegistered(Elaboratable):
    """:class:`~amaranth.lib.fifo.SyncFIFO` with the same members and behaviour cycle for cycle,
    but the head (``r_data``), ``w_rdy`` and ``r_rdy`` are registers.

    The entries behind the head are kept in a LUT RAM of ``depth - 1`` places. The head register
    loads from it, or straight from ``w_data`` when it holds nothing, so an entry written into an
    empty FIFO is at the head the next cycle, as in ``SyncFIFO`` (Amaranth's
    ``SyncFIFOBuffered`` takes a cycle more).

    Why: a reader that loads a wide register from ``r_data`` under a late handshake (the DMA
    writer taking a job as its last read is issued) makes a multiplexer whose inputs are the
    handshake and the LUT RAM's asynchronous read. The placer put that multiplexer at the RAM,
    and the 64x64 core's critical path went from the handshake out to the RAM and back to the
    reader's register. Here the reader's handshake reaches the head register's enable, the RAM's
    read pointer and the flags, and ``r_data`` comes from registers, which the placer can put at
    the reader. The writer's side (the RAM's write enable and write pointer) depends on the
    writer's handshake alone: an entry that goes straight to the head is written to the RAM too,
    and the read pointer passes over it.

    Parameters
    ----------
    width : int
    depth : int
        At least 1 (a depth of 1 is the head register alone).

    Members
    -------
    w_data, w_en, w_rdy, r_data, r_en, r_rdy, level
        As for :class:`~amaranth.lib.fifo.SyncFIFO`.
    """

    def __init__(self, *, width, depth):
        if depth < 1:
            raise ValueError(f"Depth must be at least 1, not {depth!r}")
        _sync_fifo_members(self, width, depth)

    def elaborate(self, platform):
        m = Module()
        places = self.depth - 1
        written = self.w_en & self.w_rdy
        read    = self.r_en & self.r_rdy
        head_loads = read | ~self.r_rdy
        if places:
            stored = self._storage(m, places, written, head_loads)
        else:
            # One place: the head register alone.
            stored = C(0, 1)
            with m.If(head_loads):
                m.d.sync += [self.r_data.eq(self.w_data), self.r_rdy.eq(written)]
        m.d.comb += self.level.eq(stored + self.r_rdy)
        full = full_flag(m, self.level, self.depth, written, read, name="full")
        m.d.comb += self.w_rdy.eq(~full)
        return m

    def _storage(self, m, places, written, head_loads):
        """The LUT RAM behind the head and the head's loads from it; returns the count of
        entries behind the head."""
        stored  = Signal(range(places + 1))   # entries behind the head
        # Every entry written goes to the RAM, so that the writer's side (``produce``) does not
        # depend on the reader's handshake. The head takes the oldest entry there, or, when
        # there is none, the one written in this cycle straight from ``w_data``, passing over
        # its place in the RAM all the same. Nothing is stored while the head is empty.
        from_storage = Signal()
        stored_any = ~empty_flag(m, stored, written, from_storage, name="stored_none")
        m.d.comb += from_storage.eq(head_loads & (stored_any | written))
        if places == 1:
            # A register rather than a RAM of one word, whose address would have no bits.
            oldest = Signal(self.width)
            with m.If(written):
                m.d.sync += oldest.eq(self.w_data)
        else:
            m.submodules.storage = storage = Memory(shape=self.width, depth=places, init=[])
            write_port = storage.write_port()
            read_port = storage.read_port(domain="comb")
            produce = Signal(range(places))
            consume = Signal(range(places))
            m.d.comb += [
                write_port.addr.eq(produce),
                write_port.data.eq(self.w_data),
                write_port.en.eq(written),
                read_port.addr.eq(consume),
            ]
            with m.If(written):
                m.d.sync += _advance(produce, places)
            with m.If(from_storage):
                m.d.sync += _advance(consume, places)
            oldest = read_port.data
        m.d.sync += stored.eq(stored + written - from_storage)
        with m.If(head_loads):
            m.d.sync += [
                self.r_data.eq(Mux(stored_any, oldest, self.w_data)),
                self.r_rdy.eq(stored_any | written),
            ]
        return stored
