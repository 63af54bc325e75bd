"""The receive packet buffer: a ring of whole frames between the receive parser and the DMA writer.

Frames are written in arrival order at the head of the ring and freed in the same order at its
tail, so the only state is the head address and the number of beats in use; the reader always
knows where a frame is from its descriptor (``buf_start``) and never needs the tail address.
"""

from amaranth.hdl import Module, Signal, Mux
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from . import layouts


__all__ = ["PacketBufferWriteSignature", "RxPacketBuffer", "buffer_addr_bits", "frame_beats_bits"]


def buffer_addr_bits(params):
    """Width of a beat address in the receive packet buffer."""
    return (layouts.packet_buffer_depth(params) - 1).bit_length()


def frame_beats_bits(params):
    """Width of a count of the beats of one stored frame (up to ``ceil(max_frame_bytes / W)``)."""
    return (-(-params.max_frame_bytes // params.data_bytes)).bit_length()


class PacketBufferWriteSignature(wiring.Signature):
    """The write side of :class:`RxPacketBuffer`, seen from the writer (the receive parser).

    Members
    -------
    en : Out(1)
        Store ``data`` at ``addr`` this cycle; the head advances by one beat.
    data : Out(data_width)
        The beat, byte 0 in bits [7:0].
    addr : In(addr_bits)
        Where the next beat will be stored (the head of the ring).
    full : In(1)
        No beat may be written. The writer may assert ``en`` only while ``full`` is low; at most
        one beat is written per cycle. A register, so that the writer's ``ready`` to the MAC is
        a gate on registers; it counts every beat written up to the cycle before as stored, so
        that it never depends on this cycle's ``en``, and may therefore refuse the last free
        beat of the ring (:class:`RxPacketBuffer`).
    """

    def __init__(self, params):
        depth = layouts.packet_buffer_depth(params)
        super().__init__({
            "en":   Out(1),
            "data": Out(params.data_width),
            "addr": In(buffer_addr_bits(params)),
            "full": In(1),
        })


class RxPacketBuffer(wiring.Component):
    """Ring of ``rx_buffer_bytes // data_bytes`` beats holding received frames.

    Parameters
    ----------
    params : Params
        Build parameters.

    Members
    -------
    write : In(PacketBufferWriteSignature(params))
        Written by :class:`tcpdct.rx_parser.RxParser`; frames start at a beat boundary.
    read_addr : In(addr_bits)
        Beat to read.
    read_data : Out(data_width)
        Contents of ``read_addr`` as sampled one cycle earlier (synchronous port, always
        enabled). A beat is stored in the block RAM the cycle after it is written here (below),
        and readable the cycle after that; a frame is read only after its descriptor, many
        cycles later, so the port is not transparent.
    free_valid : In(1)
        Return ``free_beats`` beats at the oldest end of the ring to the free space this cycle.
        Frames are freed in the order they were written.
    free_beats : In(frame_beats_bits)
        Beats to free: a frame's ``stored_beats``.
    used_beats : Out(range(depth + 1))
        Beats holding frames not yet freed, from the cycle after they are stored: what the
        high-water mark (R19) is compared with.

    A written beat is registered (data, and the write itself) and stored in the block RAM and
    counted in ``used_beats`` in the next cycle. The ring's block RAMs and its fill count then
    take their inputs from registers rather than from the writer's handshake with the MAC,
    which crossed the die to them and was the 64x64 core's critical path. ``write.full`` is
    worked out from the count including the beat in flight plus one more (the writer's ``en``
    of this cycle is not waited for): the ring refuses a beat when one beat is free and the
    writer did not write in the cycle before, so it holds at least ``depth - 1`` beats, and
    ``depth`` when written beat after beat.
    """

    def __init__(self, params):
        self._params = params
        self._depth = layouts.packet_buffer_depth(params)
        super().__init__({
            "write":      In(PacketBufferWriteSignature(params)),
            "read_addr":  In(buffer_addr_bits(params)),
            "read_data":  Out(params.data_width),
            "free_valid": In(1),
            "free_beats": In(frame_beats_bits(params)),
            "used_beats": Out(range(self._depth + 1)),
        })

    @property
    def depth(self):
        """Beats in the ring."""
        return self._depth

    def elaborate(self, platform):
        m = Module()

        m.submodules.storage = storage = Memory(shape=self._params.data_width, depth=self._depth,
                                                init=[])
        write_port = storage.write_port()
        read_port = storage.read_port(transparent_for=())

        # The beat written last cycle, on its way to the block RAM.
        stored_en   = Signal()
        stored_data = Signal.like(self.write.data)
        m.d.sync += [stored_en.eq(self.write.en), stored_data.eq(self.write.data)]

        head = Signal.like(self.write.addr)     # where the beat on its way is stored
        used = Signal.like(self.used_beats)
        freed = Mux(self.free_valid, self.free_beats, 0)
        used_next = Signal.like(used)
        full = Signal()
        m.d.comb += used_next.eq(used + stored_en - freed)

        m.d.comb += [
            write_port.addr.eq(head),
            write_port.data.eq(stored_data),
            write_port.en.eq(stored_en),
            read_port.addr.eq(self.read_addr),
            self.read_data.eq(read_port.data),
            # The depth is a power of two, so addresses wrap by overflowing their width.
            self.write.addr.eq(head + stored_en),
            self.write.full.eq(full),
            self.used_beats.eq(used),
        ]
        m.d.sync += [
            head.eq(head + stored_en),
            used.eq(used_next),
            # Next cycle the ring holds ``used_next`` beats and at most one on its way.
            full.eq(used_next >= self._depth - 1),
        ]
        return m
