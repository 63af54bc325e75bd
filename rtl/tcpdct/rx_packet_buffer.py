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
        No beat is free. The writer may assert ``en`` only while ``full`` is low; it counts the
        writes and frees of earlier cycles, and at most one beat is written per cycle. A
        register, so that the writer's ``ready`` to the MAC is a gate on registers.
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
        enabled). Reading a beat in the same cycle as it is written is never needed, since a
        frame is read only after its descriptor, so the port is not transparent.
    free_valid : In(1)
        Return ``free_beats`` beats at the oldest end of the ring to the free space this cycle.
        Frames are freed in the order they were written.
    free_beats : In(frame_beats_bits)
        Beats to free: a frame's ``stored_beats``.
    used_beats : Out(range(depth + 1))
        Beats holding frames not yet freed: what the high-water mark (R19) is compared with.
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

        head = Signal.like(self.write.addr)
        used = Signal.like(self.used_beats)
        freed = Mux(self.free_valid, self.free_beats, 0)
        # The ring is full next cycle if nothing is freed and it is full now, or one beat short
        # and written: a compare of the registered level, not of the level being computed, so
        # that the write enable's path ends in two gates.
        full = Signal()
        one_short = used == self._depth - 1

        m.d.comb += [
            write_port.addr.eq(head),
            write_port.data.eq(self.write.data),
            write_port.en.eq(self.write.en),
            read_port.addr.eq(self.read_addr),
            self.read_data.eq(read_port.data),
            self.write.addr.eq(head),
            self.write.full.eq(full),
            self.used_beats.eq(used),
        ]
        # The depth is a power of two, so the head wraps by overflowing its width.
        m.d.sync += [
            head.eq(head + self.write.en),
            used.eq(used + self.write.en - freed),
            full.eq((freed == 0) & (full | one_short & self.write.en)),
        ]
        return m
