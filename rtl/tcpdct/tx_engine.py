"""The transmit engine: reads what the host stack sends and turns each TCP segment into an update
of its connection's entry (R31–R33, ``docs/architecture.md``, "Transmit engine").

It watches the frames as the transmit path accepts them from the host, keeps the first
:data:`TX_HEADER_BYTES` bytes, and after a frame's last beat pushes a :data:`tx_update_layout`
record into a small FIFO that the receive engine's sequencer drains. The sequencer applies the
update with :class:`TxDecision` in its own slot, so the state portion has one writer at a time.
"""

from amaranth.hdl import Module, Signal, Mux
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .checksum import network_order
from .fifo import SyncFIFOFlagged
from .headers import (ETH_HEADER_BYTES, VLAN_TAG_BYTES, IPV4_MAX_HEADER_BYTES,
                      IPV4_MIN_HEADER_BYTES, TCP_MIN_HEADER_BYTES, ETHERTYPE_IPV4, ETHERTYPE_VLAN,
                      IP_PROTO_TCP, TCP_FIN, TCP_SYN, TCP_ACK)
from .layouts import ConnKey, tx_update_layout
from .dct_layouts import conn_state_layout
from .tx_path import beat_layout


__all__ = ["TX_HEADER_BYTES", "TX_UPDATE_DEPTH", "TX_PARSE_STAGES", "TxEngine", "TxDecision", "serial_gt", "segment_end"]


#: Enough for an 802.1Q tag, the longest IPv4 header and the fixed TCP header.
TX_HEADER_BYTES = ETH_HEADER_BYTES + VLAN_TAG_BYTES + IPV4_MAX_HEADER_BYTES + TCP_MIN_HEADER_BYTES

#: Updates waiting for the sequencer, and the frames on their way to becoming one. A few absorb
#: a burst of short frames while the sequencer is busy; when they are all taken the transmit path
#: stops taking frames from the host.
TX_UPDATE_DEPTH = 6

#: Cycles from a frame's end to its update in the FIFO, each a register stage (see
#: :class:`TxEngine`). Each stage holds one frame, so as many FIFO places are kept for them.
TX_PARSE_STAGES = 3


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

    A frame's update is worked out in three register stages after its last beat, one step of
    the header's layout per stage, so that no path crosses the whole 98-byte header:

    1. ``ended``: the frame's header is complete. The 802.1Q tag is found, and the IPv4 header
       and the 64 bytes after its fixed part (where the TCP header starts, at an offset that
       depends on IHL alone from here) are copied out of the header register, which the next
       frame's first beat overwrites.
    2. The TCP header is selected by IHL (11 places), the IPv4 checks and the TCP header's
       length checks are made and the segment length worked out.
    3. The payload length, and the update into the FIFO.

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
    key_ahead, key_ahead_valid : Out(ConnKey), Out(1)
        While the update FIFO is empty, ``key_ahead_valid`` says that an update enters it in
        this cycle, whose key is ``key_ahead``: the receive engine looks the key up ahead.
    """

    def __init__(self, params):
        self._params = params
        super().__init__({
            "beat":       In(beat_layout(params.data_width)),
            "beat_valid": In(1),
            "busy":       Out(1),
            "update":     Out(stream.Signature(tx_update_layout)),
            "key_ahead":       Out(ConnKey),
            "key_ahead_valid": Out(1),
        })

    def elaborate(self, platform):
        p = self._params
        m = Module()
        beat_bytes = p.data_bytes
        header_beats = -(-TX_HEADER_BYTES // beat_bytes)

        # The head is read from the FIFO's LUT RAM, not from a register at its output (as in
        # Amaranth's ``SyncFIFOBuffered``): the receive engine takes an update late in its
        # cycle, and that take then moves a read pointer and two flags rather than loading a
        # register as wide as the update. The engine registers the head itself, in every cycle
        # in which it may take one.
        m.submodules.fifo = fifo = SyncFIFOFlagged(width=tx_update_layout.size,
                                                   depth=TX_UPDATE_DEPTH)
        # A place is kept for each frame in a parse stage and for one ending this cycle.
        m.d.comb += self.busy.eq(fifo.level >= TX_UPDATE_DEPTH - TX_PARSE_STAGES)
        # A key is announced ahead only into an empty FIFO (``r_rdy`` is a register).
        fifo_empty = ~fifo.r_rdy

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

        # Stage 1, on the cycle after the last beat, before the next frame's first beat
        # (written at the end of this cycle) overwrites the header: undo the 802.1Q tag.
        def field(offset, size):
            return network_order(header, offset, size)

        # The IPv4 header and everything after its fixed part, wherever the tag put them.
        after_ip_bytes = TX_HEADER_BYTES - VLAN_TAG_BYTES - ETH_HEADER_BYTES
        vlan = field(12, 2) == ETHERTYPE_VLAN
        s1_valid     = Signal()
        s1_vlan      = Signal()
        s1_ethertype = Signal(16)
        s1_frame_len = Signal(16)
        s1_ip        = Signal(8 * after_ip_bytes)
        m.d.sync += [
            s1_valid.eq(ended),
            s1_vlan.eq(vlan),
            s1_ethertype.eq(Mux(vlan, field(16, 2), field(12, 2))),
            s1_frame_len.eq(frame_len),
            s1_ip.eq(Mux(vlan, header[8 * (ETH_HEADER_BYTES + VLAN_TAG_BYTES):],
                         header[8 * ETH_HEADER_BYTES:])),
        ]

        # Stage 2: the IPv4 checks, and the TCP header, at one of 11 places set by IHL.
        def ip_field(offset, size):
            return network_order(s1_ip, offset, size)

        version, ihl = s1_ip[4:8], s1_ip[0:4]
        total_length = ip_field(2, 2)
        flags_fragment = ip_field(6, 2)
        fragment = flags_fragment[13] | (flags_fragment[:13] != 0)
        ip_header_bytes = ihl * 4
        ip_offset = Mux(s1_vlan, ETH_HEADER_BYTES + VLAN_TAG_BYTES, ETH_HEADER_BYTES)
        ip_ok = ((s1_frame_len >= ip_offset + IPV4_MIN_HEADER_BYTES) &
                 (s1_ethertype == ETHERTYPE_IPV4) & (s1_frame_len >= ETH_HEADER_BYTES) &
                 (~s1_vlan | (s1_frame_len >= ETH_HEADER_BYTES + VLAN_TAG_BYTES)) &
                 (version == 4) & (ihl >= 5) & (total_length >= ip_header_bytes) &
                 (s1_frame_len >= ip_offset + total_length) &
                 (ip_field(9, 1) == IP_PROTO_TCP) & ~fragment)

        tcp_header = Signal(8 * TCP_MIN_HEADER_BYTES)
        with m.Switch(ihl):
            for words in range(IPV4_MIN_HEADER_BYTES // 4, IPV4_MAX_HEADER_BYTES // 4 + 1):
                with m.Case(words):
                    m.d.comb += tcp_header.eq(
                        s1_ip[32 * words:32 * words + 8 * TCP_MIN_HEADER_BYTES])
        # An IHL below 5 fails ``ip_ok``: its TCP header is left 0.

        # The TCP header's length checks, made here for each of the IHL's places and chosen by
        # it, so that stage 3 finds them in a register: whether an update is on its way (the key
        # announced ahead, which the receive engine's choice of key starts from) is then a gate
        # on registers. With the IPv4 checks passed (the total length covers the IPv4 header),
        # a data offset of at least 5 words within the segment is 4 * (data offset + IHL) <=
        # total length; the segment's 20 bytes follow from it.
        tcp_lengths_ok = Signal()
        with m.Switch(ihl):
            for words in range(IPV4_MIN_HEADER_BYTES // 4, IPV4_MAX_HEADER_BYTES // 4 + 1):
                with m.Case(words):
                    offset_words = s1_ip[32 * words + 8 * 12 + 4:32 * words + 8 * 12 + 8]
                    m.d.comb += tcp_lengths_ok.eq(
                        (offset_words >= TCP_MIN_HEADER_BYTES // 4) &
                        (offset_words + words <= total_length[2:]))

        s2_valid       = Signal()
        s2_ip_ok       = Signal()
        s2_tcp_ok      = Signal()
        s2_segment_len = Signal(16)
        s2_local_ip    = Signal(32)
        s2_remote_ip   = Signal(32)
        s2_tcp         = Signal(8 * TCP_MIN_HEADER_BYTES)
        m.d.sync += [
            s2_valid.eq(s1_valid),
            s2_ip_ok.eq(ip_ok),
            s2_tcp_ok.eq(tcp_lengths_ok),
            s2_segment_len.eq(total_length - ip_header_bytes),
            s2_local_ip.eq(ip_field(12, 4)),
            s2_remote_ip.eq(ip_field(16, 4)),
            s2_tcp.eq(tcp_header),
        ]

        # Stage 3: the TCP checks, and the update.
        def tcp_field(offset, size):
            return network_order(s2_tcp, offset, size)

        data_offset = s2_tcp[8 * 12 + 4:8 * 12 + 8]
        tcp = s2_ip_ok & s2_tcp_ok

        update = data.View(tx_update_layout, fifo.w_data)
        m.d.comb += [
            update.key.local_ip.eq(s2_local_ip),
            update.key.remote_ip.eq(s2_remote_ip),
            update.key.local_port.eq(tcp_field(0, 2)),
            update.key.remote_port.eq(tcp_field(2, 2)),
            update.seq.eq(tcp_field(4, 4)),
            update.ack.eq(tcp_field(8, 4)),
            update.flags.eq(s2_tcp[8 * 13:8 * 14]),
            update.window.eq(tcp_field(14, 2)),
            update.payload_len.eq(s2_segment_len - data_offset * 4),
            fifo.w_en.eq(s2_valid & tcp),
            self.key_ahead.eq(update.key),
            self.key_ahead_valid.eq(s2_valid & tcp & fifo_empty),
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
