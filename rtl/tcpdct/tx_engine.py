"""The transmit engine: reads what the host stack sends and turns each TCP segment into an update
of its connection's entry (R31–R33, ``docs/architecture.md``, "Transmit engine").

It watches the frames as the transmit path accepts them from the host, keeps the first
:data:`TX_HEADER_BYTES` bytes, and after a frame's last beat pushes a :data:`tx_update_layout`
record into a small FIFO that the receive engine's sequencer drains. The sequencer applies the
update with :class:`TxDecision` in its own slot, so the state portion has one writer at a time.
"""

from amaranth.hdl import Module, Signal, Mux
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from .checksum import network_order
from .headers import (ETH_HEADER_BYTES, VLAN_TAG_BYTES, IPV4_MAX_HEADER_BYTES,
                      IPV4_MIN_HEADER_BYTES, TCP_MIN_HEADER_BYTES, ETHERTYPE_IPV4, ETHERTYPE_VLAN,
                      IP_PROTO_TCP, TCP_FIN, TCP_SYN, TCP_ACK)
from .layouts import tx_update_layout
from .dct_layouts import conn_state_layout
from .tx_path import beat_layout


__all__ = ["TX_HEADER_BYTES", "TxEngine", "TxDecision", "serial_gt", "segment_end"]


#: Enough for an 802.1Q tag, the longest IPv4 header and the fixed TCP header.
TX_HEADER_BYTES = ETH_HEADER_BYTES + VLAN_TAG_BYTES + IPV4_MAX_HEADER_BYTES + TCP_MIN_HEADER_BYTES

#: Updates waiting for the sequencer. A few absorb a burst of short frames while the sequencer
#: is busy; when they are all taken the transmit path stops taking frames from the host.
TX_UPDATE_DEPTH = 4


def serial_gt(a, b):
    """``a > b`` in 32-bit serial arithmetic (R3): ``0 < (a - b) mod 2**32 < 2**31``.

    "Not zero" is ``a != b``, side by side with the subtraction rather than after it."""
    return (a[:32] != b[:32]) & ~(a - b)[31]


def segment_end(update):
    """The sequence number after a transmit update's segment (R33): ``seq + payload_len``, plus
    one for SYN and one for FIN, modulo ``2**32``."""
    return (update.seq + update.payload_len + ((update.flags & TCP_SYN) != 0)
            + ((update.flags & TCP_FIN) != 0))[:32]


class TxEngine(wiring.Component):
    """Transmit engine.

    Members
    -------
    beat : In(``beat_layout``)
        The beat the transmit path takes from the host this cycle, when ``beat_valid``.
    beat_valid : In(1)
    busy : Out(1)
        The update FIFO may not take another frame's update: the transmit path must stop
        taking frames from the host.
    update : Out(stream of ``tx_update_layout``)
        One update per IPv4/TCP segment the stack sent.
    """

    def __init__(self, params):
        self._params = params
        super().__init__({
            "beat":       In(beat_layout(params.data_width)),
            "beat_valid": In(1),
            "busy":       Out(1),
            "update":     Out(stream.Signature(tx_update_layout)),
        })

    def elaborate(self, platform):
        p = self._params
        m = Module()
        beat_bytes = p.data_bytes
        header_beats = -(-TX_HEADER_BYTES // beat_bytes)

        m.submodules.fifo = fifo = SyncFIFOBuffered(width=tx_update_layout.size,
                                                    depth=TX_UPDATE_DEPTH)
        # One place is kept for the frame whose update is being worked out.
        m.d.comb += self.busy.eq(fifo.level >= TX_UPDATE_DEPTH - 1)

        header    = Signal(8 * TX_HEADER_BYTES)
        beat_index = Signal(range(header_beats + 1))
        length    = Signal(16)
        ended     = Signal()  # the frame in ``header`` ended on the previous cycle
        frame_len = Signal(16)

        beat = self.beat
        count = sum(beat.keep[i] for i in range(beat_bytes))
        with m.If(self.beat_valid):
            for k in range(header_beats):
                low = k * beat_bytes
                size = min(beat_bytes, TX_HEADER_BYTES - low)
                with m.If(beat_index == k):
                    m.d.sync += header[8 * low:8 * (low + size)].eq(beat.data[:8 * size])
            with m.If(beat.last):
                m.d.sync += [beat_index.eq(0), length.eq(0), frame_len.eq(length + count)]
            with m.Else():
                m.d.sync += length.eq(length + count)
                with m.If(beat_index != header_beats):
                    m.d.sync += beat_index.eq(beat_index + 1)
        m.d.sync += ended.eq(self.beat_valid & beat.last)

        # The frame that ended is worked out on the next cycle, before the next frame's first
        # beat (written at the end of that cycle) overwrites its header.
        def field(offset, size):
            return network_order(header, offset, size)

        vlan = field(12, 2) == ETHERTYPE_VLAN
        ip = Mux(vlan, ETH_HEADER_BYTES + VLAN_TAG_BYTES, ETH_HEADER_BYTES)
        ethertype = Mux(vlan, field(16, 2), field(12, 2))
        ip_header = Signal(8 * IPV4_MIN_HEADER_BYTES)
        m.d.comb += ip_header.eq(Mux(vlan, header[8 * 18:], header[8 * 14:]))

        def ip_field(offset, size):
            return network_order(ip_header, offset, size)

        version, ihl = ip_header[4:8], ip_header[0:4]
        total_length = ip_field(2, 2)
        flags_fragment = ip_field(6, 2)
        fragment = flags_fragment[13] | (flags_fragment[:13] != 0)
        ip_header_bytes = ihl * 4
        segment_len = Signal(16)
        m.d.comb += segment_len.eq(total_length - ip_header_bytes)

        tcp_header = Signal(8 * TCP_MIN_HEADER_BYTES)
        m.d.comb += tcp_header.eq(header.bit_select((ip + ip_header_bytes) * 8,
                                                    8 * TCP_MIN_HEADER_BYTES))

        def tcp_field(offset, size):
            return network_order(tcp_header, offset, size)

        data_offset = tcp_header[8 * 12 + 4:8 * 12 + 8]
        tcp = ((frame_len >= ip + IPV4_MIN_HEADER_BYTES) & (ethertype == ETHERTYPE_IPV4) &
               (frame_len >= ETH_HEADER_BYTES) & (~vlan | (frame_len >= ETH_HEADER_BYTES +
                                                          VLAN_TAG_BYTES)) &
               (version == 4) & (ihl >= 5) & (total_length >= ip_header_bytes) &
               (frame_len >= ip + total_length) & (ip_field(9, 1) == IP_PROTO_TCP) & ~fragment &
               (segment_len >= TCP_MIN_HEADER_BYTES) & (data_offset >= 5) &
               (data_offset * 4 <= segment_len))

        update = data.View(tx_update_layout, fifo.w_data)
        m.d.comb += [
            update.key.local_ip.eq(ip_field(12, 4)),
            update.key.remote_ip.eq(ip_field(16, 4)),
            update.key.local_port.eq(tcp_field(0, 2)),
            update.key.remote_port.eq(tcp_field(2, 2)),
            update.seq.eq(tcp_field(4, 4)),
            update.ack.eq(tcp_field(8, 4)),
            update.flags.eq(tcp_header[8 * 13:8 * 14]),
            update.window.eq(tcp_field(14, 2)),
            update.payload_len.eq(segment_len - data_offset * 4),
            fifo.w_en.eq(ended & tcp),
            self.update.payload.eq(fifo.r_data),
            self.update.valid.eq(fifo.r_rdy),
            fifo.r_en.eq(self.update.ready),
        ]
        return m


class TxDecision(wiring.Component):
    """R31–R33 for one transmit update of a valid entry, as combinational logic.

    Parameters
    ----------
    given_end : bool
        The end of the segment is an input, ``end`` (:func:`segment_end` of the update, which
        does not depend on the entry, so that the receive engine works it out a cycle ahead),
        instead of being worked out here.
    """

    def __init__(self, *, given_end=False):
        self._given_end = given_end
        members = {
            "update":    In(tx_update_layout),
            "state":     In(conn_state_layout),
            "new_state": Out(conn_state_layout),
            "resync":    Out(1),
        }
        if given_end:
            members["end"] = In(32)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        update, state, new = self.update, self.state, self.new_state
        end = self.end if self._given_end else segment_end(update)
        ack_flag = (update.flags & TCP_ACK) != 0
        ack_ahead = Signal()
        m.d.comb += ack_ahead.eq(serial_gt(update.ack, state.rcv_nxt))
        # R32 compares the ACK with rcv_nxt after R31: equal if R31 just moved rcv_nxt to it, or
        # if it already was. Both comparisons are made with the rcv_nxt that was read, side by
        # side, rather than one after the other.
        m.d.comb += [
            self.resync.eq(state.sync_req & ack_flag &
                           (ack_ahead | (update.ack == state.rcv_nxt))),
            new.eq(state),
            new.rcv_nxt.eq(Mux(ack_flag & ack_ahead, update.ack, state.rcv_nxt)),
            new.sync_req.eq(state.sync_req & ~self.resync),
            new.buf_req.eq(state.buf_req & ~self.resync),
            new.last_ack_sent.eq(Mux(ack_flag, update.ack, state.last_ack_sent)),
            new.rcv_wnd.eq(update.window),
            new.snd_nxt.eq(Mux(serial_gt(end, state.snd_nxt), end, state.snd_nxt)),
        ]
        return m
