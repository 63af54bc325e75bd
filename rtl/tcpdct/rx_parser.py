"""The receive parser: stores frames from the MAC and describes each one (R10, R11).

Stages that never stall once a beat is accepted, numbered by the cycle they take after it:

1. *Accept*: the beat is written to the packet buffer and, if it lies in the first
   ``MAX_HEADER_BYTES``, captured into the header register at its place (as it is offered:
   below, at the register).
2. *Locate*, one cycle later: from the header register, the offsets where the IPv4 header, the
   TCP header and the IPv4 packet's end fall, each split into the beat it falls in and the
   places before it in that beat. A word's place in the sums depends on header fields
   (EtherType, IHL, total length) at byte offsets no later than the word itself, so by now the
   header register holds them, however wide the beat.
3. *Mask*: the beat's index compared with those beats, once for all words, and each of the
   beat's 16-bit words kept or zeroed for the IPv4-header and the TCP checksum (beats of more
   than four words also add them in pairs).
4. *Sum*: the words added to the two accumulators; after a frame's last beat, its sums.
   Done in one cycle, stages 2 to 4 were the core's critical path (header register, offset
   adders, word compares, adder tree, accumulator). Splitting them costs neither latency nor
   FIFO places: the sums are first needed in stage 6, below, and join the frame's
   description as it enters stage 5.
3. *Record*, one cycle after the last beat was located: a snapshot of the header register,
   of its VLAN test and IHL, on which every later field's offset depends, and of the bytes
   from the IPv4 header on, moved to their place by the VLAN test.
4. to 7. *Describe*: the snapshot is turned into a descriptor, following
   ``docs/architecture.md`` "Frame classification" step by step, and pushed into the descriptor
   FIFO. Done in one cycle this was the core's critical path (header fields at offsets that
   depend on VLAN and IHL, the option scan, the checksum folds, the classification, into the
   FIFO's LUT RAM), so it is spread over four: extract the fields (4); compare them, one bit
   per test of the classification, and sum the pseudo-header (5); classify as far as the
   checksums and options allow (6); the option scan's stages and the checksums' folds beside
   them (5 to 7); complete the class and write the FIFO (7). Not more: every
   frame in a stage takes a FIFO place until its descriptor is read, and back-to-back frames of
   one beat each take a place for every cycle of that: seven of the core's eight.

Frames enter each stage at most once per cycle, so back-to-back frames of one beat each are
accepted at full rate. The only input back-pressure is a full packet buffer or a descriptor FIFO
without a free place for every frame that may still be in stages 2 to 7.
"""

from amaranth.hdl import Module, Signal, Const, Cat, Mux
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from . import headers, layouts
from .fifo import SyncFIFOFlagged, full_flag
from .logic import tree_sum
from .checksum import ones_complement_fold, network_order
from .headers import (ETH_HEADER_BYTES, VLAN_TAG_BYTES, IPV4_MIN_HEADER_BYTES,
                      IPV4_MAX_HEADER_BYTES, TCP_MIN_HEADER_BYTES, TCP_MAX_HEADER_BYTES,
                      MAX_HEADER_BYTES, ETHERTYPE_IPV4, ETHERTYPE_VLAN, IP_PROTO_TCP)
from .layouts import FrameClass
from .pipeline import register_stage
from .rx_packet_buffer import PacketBufferWriteSignature, frame_beats_bits
from .tcp_options import TcpOptionScan


__all__ = ["rx_beat_layout", "RxParser"]


#: The receive parser counts frame bytes in 16 bits and saturates there.
FRAME_LEN_MAX = 0xffff


def rx_beat_layout(data_width):
    """One beat from the MAC: ``keep`` is contiguous from byte 0; ``user`` on the last beat is the
    MAC error flag."""
    return data.StructLayout({
        "data": data_width,
        "keep": data_width // 8,
        "last": 1,
        "user": 1,
    })


def _bit_field(value, field, name):
    low, width = headers.BIT_FIELDS[(field, name)]
    return value[low:low + width]


class _Header:
    """Fields of the first ``MAX_HEADER_BYTES`` of a frame, taken from the offsets in
    :mod:`tcpdct.headers`. Shared expressions become signals so that each is computed once.

    Where the IPv4 and TCP headers lie depends on two fields, the VLAN test and the IHL. A
    caller that registered them from the same bytes a cycle earlier passes them as ``vlan``
    and ``ihl``, and the IPv4 header's window (:attr:`ip_window`, which the VLAN test selects)
    as ``ip_window``, so that the fields start from registers and the VLAN test does not
    steer a thousand multiplexers in the same cycle.
    """

    def __init__(self, m, octets, prefix, *, vlan=None, ihl=None, ip_window=None):
        def signal(name, value, width):
            sig = Signal(width, name=f"{prefix}_{name}")
            m.d.comb += sig.eq(value)
            return sig

        def be(header, base, name):
            offset, width = headers.field(header, name)
            return network_order(octets, base + offset, width // 8)

        self.ethertype_outer = be(headers.ETH_HEADER, 0, "ethertype")
        self.vlan = signal("vlan", self.ethertype_outer == ETHERTYPE_VLAN if vlan is None
                           else vlan, 1)
        self.ethertype = signal("ethertype", Mux(
            self.vlan, be(headers.VLAN_TAG, 12, "ethertype"), self.ethertype_outer), 16)
        self.ip_start = signal("ip_start", Mux(
            self.vlan, ETH_HEADER_BYTES + VLAN_TAG_BYTES, ETH_HEADER_BYTES), 5)

        # IPv4 and TCP headers as windows over the captured bytes: the IPv4 header starts at
        # one of two offsets, the TCP header at one of eleven after it.
        ip_window_bytes = IPV4_MAX_HEADER_BYTES + TCP_MAX_HEADER_BYTES
        if ip_window is None:
            ip_window = Mux(self.vlan,
                            octets[8 * (ETH_HEADER_BYTES + VLAN_TAG_BYTES):][:8 * ip_window_bytes],
                            octets[8 * ETH_HEADER_BYTES:][:8 * ip_window_bytes])
        self.ip_window = ip_window = signal("ip_window", ip_window, 8 * ip_window_bytes)

        def ip(name):
            offset, width = headers.field(headers.IPV4_HEADER, name)
            return network_order(ip_window, offset, width // 8)

        version_ihl = ip("version_ihl")
        self.version = signal("version", _bit_field(version_ihl, "version_ihl", "version"), 4)
        self.ihl = signal("ihl", _bit_field(version_ihl, "version_ihl", "ihl") if ihl is None
                          else ihl, 4)
        self.ip_header_len = signal("ip_header_len", self.ihl * 4, 6)
        self.total_length = signal("total_length", ip("total_length"), 16)
        flags_fragment = ip("flags_fragment")
        self.more_fragments = _bit_field(flags_fragment, "flags_fragment", "mf")
        self.frag_offset = _bit_field(flags_fragment, "flags_fragment", "frag_offset")
        self.protocol = ip("protocol")
        self.src_ip = ip("src_ip")
        self.dst_ip = ip("dst_ip")
        # The offsets are computed at both places the IPv4 header can start, from fixed bytes,
        # and chosen by the VLAN test last, so that their adders work beside the EtherType
        # compare instead of after it and the window's multiplexer.
        def at_ip_start(offset):
            return Mux(self.vlan, offset(ETH_HEADER_BYTES + VLAN_TAG_BYTES),
                       offset(ETH_HEADER_BYTES))

        def ip_at(start, name):
            offset, width = headers.field(headers.IPV4_HEADER, name)
            return network_order(octets, start + offset, width // 8)

        self.ip_end = signal("ip_end", at_ip_start(
            lambda start: start + ip_at(start, "total_length")), 17)
        def ihl_at(start):
            if ihl is not None:
                return ihl
            return _bit_field(ip_at(start, "version_ihl"), "version_ihl", "ihl")

        self.tcp_start = signal("tcp_start", at_ip_start(lambda start: start + 4 * ihl_at(start)),
                                7)
        self.segment_len = signal("segment_len", self.total_length - self.ip_header_len, 16)

        tcp_window = signal("tcp_window", ip_window.bit_select(self.ip_header_len * 8,
                                                               8 * TCP_MAX_HEADER_BYTES),
                            8 * TCP_MAX_HEADER_BYTES)

        def tcp(name):
            offset, width = headers.field(headers.TCP_HEADER, name)
            return network_order(tcp_window, offset, width // 8)

        offset_flags = tcp("offset_flags")
        self.src_port = tcp("src_port")
        self.dst_port = tcp("dst_port")
        self.seq = tcp("seq")
        self.ack = tcp("ack")
        self.window = tcp("window")
        self.tcp_flags = _bit_field(offset_flags, "offset_flags", "flags")
        self.data_offset = signal("data_offset",
                                  _bit_field(offset_flags, "offset_flags", "data_offset"), 4)
        self.tcp_header_len = signal("tcp_header_len", self.data_offset * 4, 6)
        self.options = tcp_window[8 * TCP_MIN_HEADER_BYTES:]


class RxParser(wiring.Component):
    """Receive parser: stores each frame in the packet buffer and emits its descriptor.

    Parameters
    ----------
    params : Params
        Build parameters.
    descriptor_depth : int
        Descriptors the internal FIFO holds, with places kept for the frames in stages 2 to 7:
        the parser holds at most this many frames whose descriptor has not been read (the
        model's ``RX_DESCRIPTOR_DEPTH``), and a consumer that falls behind costs no input cycles
        until ``descriptor_depth - 6`` descriptors are waiting.

    Members
    -------
    rx : In(stream.Signature(rx_beat_layout(data_width)))
        Frames from the MAC. Every beat but the last is either full (``keep`` all ones) or
        empty (``keep`` 0, carrying nothing); the last beat's ``keep`` is contiguous from byte 0
        (a frame that breaks this is dropped as a MAC error)
        and may be 0. ``ready`` is high whenever the packet buffer has a free beat and the
        descriptor FIFO has room, independently of ``valid``.
    descriptor : Out(stream.Signature(layouts.rx_descriptor_layout(params)))
        One per frame, after its last beat is stored. ``cls``, ``frame_len``, ``ip_csum_bad``,
        ``tcp_csum_bad`` and every header field equal ``tb/model/frame.py:parse`` (fields that
        the model leaves at 0 are 0 here too); ``buf_start`` is the beat where the frame's first
        byte is stored and ``stored_beats`` the number of beats stored: all of the frame, except
        that a frame longer than ``max_frame_bytes`` keeps only ``ceil(max_frame_bytes / W)``
        beats.
    key_ahead, key_ahead_valid : Out(ConnKey), Out(1)
        While ``descriptor`` shows no descriptor, ``key_ahead_valid`` says that a frame is in
        the last three stages, and ``key_ahead`` is the connection key of the first of them:
        the next descriptor's, one to three cycles from now. The receive engine looks it up
        ahead, so that a frame reaching an idle engine is not slowed by its lookup. For a
        frame that turns out not to be TCP, whose descriptor's key is 0, it is the key in its
        headers until the last stage (the engine uses a lookup's answer only for TCP frames).
    key_next, key_next_valid : Out(ConnKey), Out(1)
        While ``descriptor`` shows a descriptor, ``key_next_valid`` says that another frame is
        behind it, in the FIFO or in the last three stages, and ``key_next`` is that frame's
        connection key (as for ``key_ahead``). The engine looks it up while the head's
        operation is taken, so that frames that take the engine two cycles each find their
        answers at hand.
    buffer : Out(PacketBufferWriteSignature(params))
        To :class:`tcpdct.rx_packet_buffer.RxPacketBuffer` ``write``.

    Raises
    ------
    ValueError
        If ``descriptor_depth`` is less than 3.
    """

    def __init__(self, params, *, descriptor_depth=8):
        if not isinstance(descriptor_depth, int) or descriptor_depth < 3:
            raise ValueError(f"Descriptor FIFO depth must be an integer of at least 3, "
                             f"not {descriptor_depth!r}")
        self._params = params
        self._descriptor_depth = descriptor_depth
        super().__init__({
            "rx":         In(stream.Signature(rx_beat_layout(params.data_width))),
            "descriptor": Out(stream.Signature(layouts.rx_descriptor_layout(params))),
            "key_ahead":       Out(layouts.ConnKey),
            "key_ahead_valid": Out(1),
            "key_next":        Out(layouts.ConnKey),
            "key_next_valid":  Out(1),
            "buffer":     Out(PacketBufferWriteSignature(params)),
        })

    def elaborate(self, platform):
        m = Module()
        params = self._params
        width, beat_bytes = params.data_width, params.data_bytes
        max_beats = -(-params.max_frame_bytes // beat_bytes)
        header_beats = -(-MAX_HEADER_BYTES // beat_bytes)
        # Past this the beat index stops counting; it then matches neither a header beat nor a
        # stored beat, and the frame is oversize anyway.
        beat_limit = max(max_beats, header_beats)
        desc_layout = layouts.rx_descriptor_layout(params)

        fifo_depth = self._descriptor_depth
        # Its ``r_rdy``, the descriptor stream's ``valid``, is a register: the receive engine's
        # choice of its next operation starts from it.
        key_field = desc_layout["key"]
        m.submodules.descriptor_fifo = fifo = SyncFIFOFlagged(
            width=desc_layout.size, depth=fifo_depth,
            second=slice(key_field.offset, key_field.offset + key_field.width))
        m.d.comb += [
            self.descriptor.payload.eq(fifo.r_data),
            self.descriptor.valid.eq(fifo.r_rdy),
            fifo.r_en.eq(self.descriptor.ready),
        ]

        # ---- stage 1: accept -------------------------------------------------------------------
        beat = self.rx.payload
        header = Signal(8 * MAX_HEADER_BYTES)
        beat_index = Signal(range(beat_limit + 1))
        # ``beat_index == k`` for each beat of the header, kept one-hot beside the index so that
        # the header register's enables are a gate on registers rather than a compare.
        header_place = Signal(header_beats, init=1)
        frame_len = Signal(16)
        start_of_frame = Signal(init=1)
        start_addr = Signal.like(self.buffer.addr)

        locate_valid = Signal()     # stage 2 holds a beat
        locate_last = Signal()
        record_valid = Signal()     # stage 3 holds a frame
        # FIFO places taken: frames whose last beat was accepted and whose descriptor has not
        # been read yet. Counted rather than added up from the stages' valid bits, so that
        # rx.ready stays a compare of one register however many stages there are.
        reserved = Signal(range(fifo_depth + 1))

        accept = Signal()
        nonempty = beat.keep[0]
        # A beat that breaks the packing rule (a hole in a middle beat, or a last beat whose
        # bytes do not start at byte 0) means the MAC's stream is broken: rather than guess
        # where the bytes belong, the frame is dropped as a MAC error.
        contiguous = (beat.keep & (beat.keep + 1)) == 0
        packed = Mux(beat.last, contiguous, beat.keep.all() | ~beat.keep.any())
        keep_error = Signal()
        beat_bytes_count = tree_sum(beat.keep[i] for i in range(beat_bytes))
        grown_len = frame_len + beat_bytes_count
        new_len = Mux(grown_len > FRAME_LEN_MAX, FRAME_LEN_MAX, grown_len)
        frame_start_addr = Mux(start_of_frame, self.buffer.addr, start_addr)
        stored_beats = Mux(beat_index + nonempty > max_beats, max_beats, beat_index + nonempty)

        # Whether every place is taken next cycle, from this cycle's flag and a compare of the
        # registered count rather than of the count being computed: the descriptor's read
        # comes late in the cycle, from the receive engine's choice of operation.
        reserving = accept & beat.last
        releasing = self.descriptor.valid & self.descriptor.ready
        m.d.sync += reserved.eq(reserved + reserving - releasing)
        reserved_full = full_flag(m, reserved, fifo_depth, reserving, releasing,
                                  name="reserved_full")
        m.d.comb += [
            self.rx.ready.eq(~self.buffer.full & ~reserved_full),
            accept.eq(self.rx.valid & self.rx.ready),
            self.buffer.data.eq(beat.data),
            self.buffer.en.eq(accept & nonempty & (beat_index < max_beats)),
        ]
        with m.If(accept):
            with m.If(beat.last):
                m.d.sync += [
                    keep_error.eq(0),
                    start_of_frame.eq(1),
                    beat_index.eq(0),
                    header_place.eq(1),
                    frame_len.eq(0),
                ]
            with m.Else():
                m.d.sync += [
                    keep_error.eq(keep_error | ~packed),
                    start_of_frame.eq(0),
                    start_addr.eq(frame_start_addr),
                    frame_len.eq(new_len),
                ]
                with m.If(nonempty & (beat_index != beat_limit)):
                    # Past the header's last beat no place is set; the limit is past it too.
                    m.d.sync += [beat_index.eq(beat_index + 1),
                                 header_place.eq(header_place << 1)]
        # The header register takes a beat at its place whenever one is offered, accepted or
        # not: a beat not accepted is offered again, unchanged, and written again as it is
        # accepted, and until then nothing reads the place it takes (stage 2 and the record read
        # the header in the cycle after a beat is accepted, before any later beat is written).
        # So the enable of its hundreds of bits starts from the port and a register, not from
        # ``ready`` (the packet buffer's and the descriptor FIFO's flags): with it, it was five
        # levels of logic deep, the most common deep endpoint of the 64x64 core
        # (``sim/logic_depth.py``, docs/performance.md, "Critical paths").
        with m.If(self.rx.valid & nonempty):
            for k in range(header_beats):
                low = k * beat_bytes
                count = min(beat_bytes, MAX_HEADER_BYTES - low)
                with m.If(header_place[k]):
                    m.d.sync += header[8 * low:8 * (low + count)].eq(beat.data[:8 * count])

        # ---- stage 2: locate ---------------------------------------------------------------------
        locate_data = Signal(width)
        locate_index = Signal.like(beat_index)
        locate_mac_error = Signal()
        locate_len = Signal(16)
        locate_buf_start = Signal.like(start_addr)
        locate_stored_beats = Signal(frame_beats_bits(params))
        # A non-last empty beat changes no sum, so it does not enter this stage.
        m.d.sync += [
            locate_valid.eq(accept & (nonempty | beat.last)),
            locate_last.eq(beat.last),
            # An empty last beat adds nothing: its bytes are zeroed here, where it costs a gate
            # on the way in rather than one more in front of the adders.
            locate_data.eq(Mux(nonempty, beat.data, 0)),
            locate_index.eq(beat_index),
            locate_mac_error.eq(beat.user | keep_error | ~packed),
            locate_len.eq(new_len),
            locate_buf_start.eq(frame_start_addr),
            locate_stored_beats.eq(stored_beats),
        ]
        # The header register now holds the beat, so the offsets that apply to its words can be
        # taken from it, whatever the data width.
        located = _Header(m, header, "locate")

        # ---- stage 3: mask ---------------------------------------------------------------------
        # A word's offset is its beat's index and its place in the beat side by side, so it is
        # below an offset T when the index is below T's beat, or at T's beat with the place
        # below T's place in it. The places below T's are decoded here, from T alone, so that
        # the mask stage compares the index with T's beat once for all words (a compare of the
        # whole offset per word, then the adders, was the parser's critical path).
        index_shift = (beat_bytes - 1).bit_length()

        def split_offset(name, offset):
            # No place is below T's in its beat when T's is the beat's last.
            below = {f"{name}_below{j}": offset[:index_shift] > j if j < beat_bytes - 1
                     else Const(0) for j in range(beat_bytes)}
            return {f"{name}_beat": offset[index_shift:], **below}

        words = register_stage(m, "mask", {
            "valid": locate_valid,
            "last": locate_last,
            "data": locate_data,
            "index": locate_index,
            "vlan": located.vlan,
            **split_offset("tcp_start", located.tcp_start),
            **split_offset("ip_end", located.ip_end),
        })

        offsets = ("tcp_start", "ip_end")
        before_beat = {name: words["index"] < words[f"{name}_beat"] for name in offsets}
        at_beat = {name: words["index"] == words[f"{name}_beat"] for name in offsets}

        def below(name, j):
            """The byte at place ``j`` of this beat lies before the offset ``name``."""
            return before_beat[name] | at_beat[name] & words[f"{name}_below{j}"]

        ip_words, tcp_words = [], []
        for k in range(width // 16):
            offset = Cat(Const(2 * k, index_shift), words["index"])
            first = words["data"][16 * k:16 * k + 8]
            second = words["data"][16 * k + 8:16 * k + 16]
            # The IPv4 header starts at one of two offsets: compares with constants.
            in_ip_header = (Mux(words["vlan"], offset >= ETH_HEADER_BYTES + VLAN_TAG_BYTES,
                                offset >= ETH_HEADER_BYTES)
                            & below("tcp_start", 2 * k))
            # The segment may end in the middle of a word: the byte after it is Ethernet
            # padding, and the model counts a zero in its place.
            in_segment = ~below("tcp_start", 2 * k) & below("ip_end", 2 * k)
            second_in_segment = in_segment & below("ip_end", 2 * k + 1)
            ip_words.append(Mux(in_ip_header, Cat(second, first), 0))
            tcp_words.append(Cat(Mux(second_in_segment, second, 0), Mux(in_segment, first, 0)))

        # ---- stage 4: sum ----------------------------------------------------------------------
        # Up to four words a beat, the masked words are added in this stage, two levels of
        # adders and the accumulator's. Wider beats add their words in pairs in stage 3,
        # after the masks, so that this stage keeps one level of adders less.
        def pair_sums(terms):
            return [terms[i] + terms[i + 1] for i in range(0, len(terms), 2)]

        if len(ip_words) > 4:
            ip_words, tcp_words = pair_sums(ip_words), pair_sums(tcp_words)
        kept = register_stage(m, "sum", {
            "valid": words["valid"],
            "last": words["last"],
            **{f"ip{i}": value for i, value in enumerate(ip_words)},
            **{f"tcp{i}": value for i, value in enumerate(tcp_words)},
        })
        beat_ip_sum = tree_sum(kept[f"ip{i}"] for i in range(len(ip_words)))
        beat_tcp_sum = tree_sum(kept[f"tcp{i}"] for i in range(len(tcp_words)))
        # 32 bits hold the sum of any frame up to 16383 bytes (params limit) plus the
        # pseudo-header; longer frames are oversize and their sums unused.
        ip_acc = Signal(32)
        tcp_acc = Signal(32)
        # The frame's sums, registered in the cycle its descriptor is in stage 5 (compare).
        frame_ip_sum = Signal(32)
        frame_tcp_sum = Signal(32)
        with m.If(kept["valid"]):
            with m.If(kept["last"]):
                m.d.sync += [
                    ip_acc.eq(0),
                    tcp_acc.eq(0),
                    frame_ip_sum.eq(ip_acc + beat_ip_sum),
                    frame_tcp_sum.eq(tcp_acc + beat_tcp_sum),
                ]
            with m.Else():
                m.d.sync += [
                    ip_acc.eq(ip_acc + beat_ip_sum),
                    tcp_acc.eq(tcp_acc + beat_tcp_sum),
                ]

        # ---- stage 3: record -------------------------------------------------------------------
        record_header = Signal.like(header)
        record_vlan = Signal()
        record_ihl = Signal(4)
        record_ip_window = Signal.like(located.ip_window)
        record_mac_error = Signal()
        record_len = Signal(16)
        record_buf_start = Signal.like(start_addr)
        record_stored_beats = Signal.like(locate_stored_beats)
        m.d.sync += record_valid.eq(locate_valid & locate_last)
        with m.If(locate_valid & locate_last):
            m.d.sync += [
                record_header.eq(header),
                record_vlan.eq(located.vlan),
                record_ihl.eq(located.ihl),
                record_ip_window.eq(located.ip_window),
                record_mac_error.eq(locate_mac_error),
                record_len.eq(locate_len),
                record_buf_start.eq(locate_buf_start),
                record_stored_beats.eq(locate_stored_beats),
            ]

        # ---- stages 4 to 7: describe ----------------------------------------------------------
        # A pure shift register: a frame moves on every cycle, so each stage is a dict of
        # registers loaded from the stage before, and nothing needs an enable.

        # Stage 4, extract: the header fields, whose offsets depend on the VLAN test and the IHL,
        # both registered in stage 3 from the locate stage's view of the same header, with the
        # IPv4 header's window that the VLAN test selects.
        hdr = _Header(m, record_header, "rec", vlan=record_vlan, ihl=record_ihl,
                      ip_window=record_ip_window)
        extract = register_stage(m, "extract", {
            "valid": record_valid,
            "mac_error": record_mac_error,
            "len": record_len,
            "buf_start": record_buf_start,
            "stored_beats": record_stored_beats,
            # The pseudo-header's addresses, beside the adders of the header's offsets.
            "src_ip_sum": hdr.src_ip[16:] + hdr.src_ip[:16],
            "dst_ip_sum": hdr.dst_ip[16:] + hdr.dst_ip[:16],
            **{name: getattr(hdr, name) for name in (
                "vlan", "ethertype", "ip_start", "version", "ihl", "ip_header_len",
                "total_length", "more_fragments", "frag_offset", "protocol", "src_ip", "dst_ip",
                "ip_end", "tcp_start", "segment_len", "src_port", "dst_port", "seq", "ack",
                "window", "tcp_flags", "data_offset", "tcp_header_len", "options")},
        })

        # The option scan runs beside stages 5 to 7, from the extracted options; stage 7 reads
        # its results. Its length is a function of the four bits of the data offset, which its
        # first stage's compares take in the same LUTs, rather than a register of its own behind
        # the window's multiplexers.
        m.submodules.option_scan = option_scan = TcpOptionScan()
        m.d.comb += [
            option_scan.options.eq(extract["options"]),
            option_scan.length.eq(extract["data_offset"] * 4 - TCP_MIN_HEADER_BYTES),
        ]

        # Stage 5, compare: every test of the classification becomes one bit, so that the last
        # stage only chooses among them.
        e = extract
        length = e["len"]
        carried = {name: e[name] for name in (
            "valid", "mac_error", "len", "buf_start", "stored_beats", "src_ip", "dst_ip",
            "src_port", "dst_port", "seq", "ack", "window", "tcp_flags")}
        stage = register_stage(m, "compare", {
            **carried,
            "too_long": length > params.max_frame_bytes,
            "no_ethernet": (length < ETH_HEADER_BYTES)
                           | (e["vlan"] & (length < ETH_HEADER_BYTES + VLAN_TAG_BYTES)),
            "not_ipv4": e["ethertype"] != ETHERTYPE_IPV4,
            "no_ip_header": length < e["ip_start"] + IPV4_MIN_HEADER_BYTES,
            "bad_ip_header": (e["version"] != 4) | (e["ihl"] < 5)
                             | (e["total_length"] < e["ip_header_len"]),
            "no_ip_end": length < e["ip_end"],
            "not_tcp": (e["protocol"] != IP_PROTO_TCP) | (e["frag_offset"] != 0)
                       | (e["segment_len"] < TCP_MIN_HEADER_BYTES) | (e["data_offset"] < 5)
                       | (e["tcp_header_len"] > e["segment_len"]),
            "fragment": e["more_fragments"] | (e["frag_offset"] != 0),
            "ip_options": e["ihl"] > 5,
            "payload_offset": e["tcp_start"] + e["tcp_header_len"],
            "payload_len": e["segment_len"] - e["tcp_header_len"],
            "pseudo_sum": tree_sum([e["src_ip_sum"], e["dst_ip_sum"],
                                    e["segment_len"] + IP_PROTO_TCP]),
        })

        def carry(name, stage, drop=(), **new):
            values = {key: value for key, value in stage.items() if key not in drop}
            return register_stage(m, name, {**values, **new})

        # Stages 6 and 7 carry the frame on while the option scan works, and finish the sums,
        # which stage 4 (sum) registered for this frame as it entered stage 5. A fold keeps a
        # sum modulo 0xffff and whether it is 0, which is all that the last fold depends on.
        # The TCP sum's 19 bits in stage 6, once folded, are at most 0xffff + 0xf.
        s = carry("sum0", stage, drop=("pseudo_sum",),
                  ip_sum=frame_ip_sum[:16] + frame_ip_sum[16:],
                  tcp_sum=frame_tcp_sum[:16] + frame_tcp_sum[16:] + stage["pseudo_sum"])

        # Stage 6 also classifies, following docs/architecture.md "Frame classification" step
        # by step, as far as the tests that do not wait for the checksums and the option scan
        # go, and zeroes the header fields of a frame that is not TCP. Done in stage 7 this
        # steered every field of the descriptor into the FIFO's LUT RAM.
        cls = Signal(FrameClass)
        ip_checked = Signal()      # the IPv4 header is whole: its checksum is reported
        is_tcp = Signal()          # every header field is meaningful
        # The tests before the IPv4 header is whole, in priority order, and the class of each.
        before_ip_checked = [
            ("mac_error",     FrameClass.MAC_ERROR),
            ("too_long",      FrameClass.OVERSIZE),
            ("no_ethernet",   FrameClass.TRUNCATED),
            ("not_ipv4",      FrameClass.NOT_TCP),
            ("no_ip_header",  FrameClass.TRUNCATED),
            ("bad_ip_header", FrameClass.NOT_TCP),
            ("no_ip_end",     FrameClass.TRUNCATED),
        ]
        for number, (test, frame_class) in enumerate(before_ip_checked):
            with (m.If if number == 0 else m.Elif)(s[test]):
                m.d.comb += cls.eq(frame_class)
        with m.Else():
            m.d.comb += ip_checked.eq(1)
            with m.If(s["not_tcp"]):
                m.d.comb += cls.eq(FrameClass.NOT_TCP)
            with m.Else():
                m.d.comb += [
                    is_tcp.eq(1),
                    cls.eq(FrameClass.TCP),
                ]
        tcp_fields = ("src_ip", "dst_ip", "src_port", "dst_port", "seq", "ack", "window",
                      "tcp_flags", "payload_offset", "payload_len")
        c = register_stage(m, "classify", {
            **{name: s[name] for name in ("valid", "len", "buf_start", "stored_beats")},
            **{name: Mux(is_tcp, s[name], 0) for name in tcp_fields},
            "cls": cls,
            "ip_checked": ip_checked,
            "is_tcp": is_tcp,
            # The checksum of a first fragment covers bytes that are not here.
            "tcp_csum_checked": is_tcp & ~s["fragment"],
            "special": is_tcp & (s["fragment"] | s["ip_options"]),
            "ip_csum_bad": ones_complement_fold(s["ip_sum"], max_value=2 * 0xffff) != 0xffff,
            "tcp_sum": s["tcp_sum"][:16] + s["tcp_sum"][16:],
        })

        # Stage 7, classify: the checksums' and the option scan's outcomes, which it reads for
        # the frame it holds, complete the class and the descriptor.
        assert option_scan.latency == 3
        tcp_sum_bad = ones_complement_fold(c["tcp_sum"], max_value=0xffff + 0xf) != 0xffff
        ip_csum_bad = c["ip_checked"] & c["ip_csum_bad"]
        tcp_csum_bad = c["tcp_csum_checked"] & tcp_sum_bad
        desc = Signal(desc_layout)
        # The first frame in line after the FIFO: in stage 7 (written to it this cycle), 6 or 5
        # (three cycles from now).
        on_its_way = c["valid"] | s["valid"] | stage["valid"]
        with m.If(c["valid"]):
            m.d.comb += self.key_ahead.eq(desc.key)
        with m.Else():
            for field, name in (("local_ip", "dst_ip"), ("remote_ip", "src_ip"),
                                ("local_port", "dst_port"), ("remote_port", "src_port")):
                m.d.comb += getattr(self.key_ahead, field).eq(
                    Mux(s["valid"], s[name], stage[name]))
        m.d.comb += [
            desc.cls.eq(Mux(c["is_tcp"] & (ip_csum_bad | tcp_csum_bad),
                            FrameClass.CHECKSUM, c["cls"])),
            desc.ip_csum_bad.eq(ip_csum_bad),
            desc.tcp_csum_bad.eq(tcp_csum_bad),
            desc.key.local_ip.eq(c["dst_ip"]),
            desc.key.remote_ip.eq(c["src_ip"]),
            desc.key.local_port.eq(c["dst_port"]),
            desc.key.remote_port.eq(c["src_port"]),
            desc.seq.eq(c["seq"]),
            desc.ack.eq(c["ack"]),
            desc.window.eq(c["window"]),
            desc.flags.eq(c["tcp_flags"]),
            desc.special.eq(c["special"] | (c["is_tcp"] & option_scan.bad)),
            desc.payload_offset.eq(c["payload_offset"]),
            desc.payload_len.eq(c["payload_len"]),
            desc.ts_present.eq(c["is_tcp"] & option_scan.ts_present),
            desc.tsval.eq(Mux(c["is_tcp"], option_scan.tsval, 0)),
            desc.tsecr.eq(Mux(c["is_tcp"], option_scan.tsecr, 0)),
            desc.frame_len.eq(c["len"]),
            desc.buf_start.eq(c["buf_start"]),
            desc.stored_beats.eq(c["stored_beats"]),
        ]
        m.d.comb += [
            fifo.w_data.eq(desc.as_value()),
            # Never refused: rx.ready kept a FIFO place for every frame after stage 1.
            fifo.w_en.eq(c["valid"]),
            self.key_ahead_valid.eq(~fifo.r_rdy & on_its_way),
            self.key_next_valid.eq(fifo.r_second_rdy | fifo.r_rdy & on_its_way),
            self.key_next.eq(Mux(fifo.r_second_rdy, fifo.r_second, self.key_ahead)),
        ]
        return m
