"""Reference parses: what the receive parser must conclude of a received frame (R10, R11), and
what the transmit engine must extract from a transmitted one (R31–R33).

:func:`parse` is the behaviour the RTL parser's descriptor is checked against, field by field.
The order of the checks is the order written in ``docs/architecture.md`` ("Frame classification").
:func:`parse_tx` is the transmit update of ``docs/architecture.md`` ("Transmit engine").
"""

from dataclasses import dataclass, field

from tcpdct.headers import (
    ETH_HEADER_BYTES, VLAN_TAG_BYTES, IPV4_MIN_HEADER_BYTES, TCP_MIN_HEADER_BYTES,
    ETHERTYPE_IPV4, ETHERTYPE_VLAN, IP_PROTO_TCP,
    TCP_FIN, TCP_SYN, TCP_RST, TCP_URG,
    TCPOPT_EOL, TCPOPT_NOP, TCPOPT_TIMESTAMP, TCPOPT_TIMESTAMP_LEN,
)


__all__ = ["Parsed", "parse", "TxUpdate", "parse_tx", "ones_complement_sum", "FRAME_LEN_MAX"]


#: The receive parser counts frame bytes in 16 bits and saturates there.
FRAME_LEN_MAX = 0xffff


class Cls:
    """Mirror of ``tcpdct.layouts.FrameClass`` without importing Amaranth."""
    TCP, NOT_TCP, CHECKSUM, MAC_ERROR, TRUNCATED, OVERSIZE = range(6)


@dataclass
class Parsed:
    cls:            int
    frame_len:      int
    ip_csum_bad:    int = 0
    tcp_csum_bad:   int = 0
    local_ip:       int = 0
    remote_ip:      int = 0
    local_port:     int = 0
    remote_port:    int = 0
    seq:            int = 0
    ack:            int = 0
    window:         int = 0
    flags:          int = 0
    special:        int = 0
    payload_offset: int = 0
    payload_len:    int = 0
    ts_present:     int = 0
    tsval:          int = 0
    tsecr:          int = 0
    # Not in the hardware descriptor; for the model's convenience.
    is_fragment:    bool = field(default=False, compare=False)


def ones_complement_sum(data, initial=0):
    """RFC 1071 sum of ``data`` (odd length padded with a zero byte), folded to 16 bits.

    ``initial`` is a non-negative partial sum to continue from.
    """
    if len(data) % 2:
        data = bytes(data) + b"\0"
    # A sum of 16-bit words folded with end-around carries is the sum modulo 0xffff, in
    # 1..0xffff unless every word (and ``initial``) is zero; and as 2**16 is 1 modulo 0xffff,
    # the data read as one big-endian integer has the same residue as the sum of its words.
    # One int.from_bytes instead of a Python loop per word: the replays parse every frame.
    total = initial + int.from_bytes(data, "big")
    if total == 0:
        return 0
    return (total - 1) % 0xffff + 1


def _be(frame, offset, size):
    return int.from_bytes(frame[offset:offset + size], "big")


def _tcp_options(options):
    """``(bad, ts)`` for the bytes between the fixed TCP header and the payload.

    Only NOP, EOL (which ends the list) and well-formed Timestamps keep a frame on the fast
    path; when Timestamps appears twice the last one counts.
    """
    ts = None
    i = 0
    while i < len(options):
        kind = options[i]
        if kind == TCPOPT_EOL:
            break
        if kind == TCPOPT_NOP:
            i += 1
            continue
        if (kind == TCPOPT_TIMESTAMP and i + 1 < len(options)
                and options[i + 1] == TCPOPT_TIMESTAMP_LEN
                and i + TCPOPT_TIMESTAMP_LEN <= len(options)):
            ts = (_be(options, i + 2, 4), _be(options, i + 6, 4))
            i += TCPOPT_TIMESTAMP_LEN
            continue
        return True, ts
    return False, ts


def parse(frame, *, mac_error=False, max_frame_bytes=1522):
    """Classify a received frame and extract what the receive engine needs from it."""
    frame = bytes(frame)
    length = len(frame)
    p = Parsed(cls=Cls.TCP, frame_len=min(length, FRAME_LEN_MAX))

    if mac_error:
        p.cls = Cls.MAC_ERROR
        return p
    if length > max_frame_bytes:
        p.cls = Cls.OVERSIZE
        return p
    if length < ETH_HEADER_BYTES:
        p.cls = Cls.TRUNCATED
        return p
    ip = ETH_HEADER_BYTES
    ethertype = _be(frame, 12, 2)
    if ethertype == ETHERTYPE_VLAN:
        if length < ETH_HEADER_BYTES + VLAN_TAG_BYTES:
            p.cls = Cls.TRUNCATED
            return p
        ip += VLAN_TAG_BYTES
        ethertype = _be(frame, 16, 2)
    if ethertype != ETHERTYPE_IPV4:
        p.cls = Cls.NOT_TCP
        return p

    if length < ip + IPV4_MIN_HEADER_BYTES:
        p.cls = Cls.TRUNCATED
        return p
    version, ihl = frame[ip] >> 4, frame[ip] & 0xf
    total_length = _be(frame, ip + 2, 2)
    if version != 4 or ihl < 5 or total_length < ihl * 4:
        p.cls = Cls.NOT_TCP
        return p
    if length < ip + total_length:
        p.cls = Cls.TRUNCATED
        return p
    p.ip_csum_bad = int(ones_complement_sum(frame[ip:ip + ihl * 4]) != 0xffff)

    flags_fragment = _be(frame, ip + 6, 2)
    more_fragments, frag_offset = (flags_fragment >> 13) & 1, flags_fragment & 0x1fff
    p.is_fragment = bool(more_fragments or frag_offset)
    tcp = ip + ihl * 4
    segment_len = total_length - ihl * 4
    if frame[ip + 9] != IP_PROTO_TCP or frag_offset != 0 or segment_len < TCP_MIN_HEADER_BYTES:
        # A fragment other than the first carries no TCP header to look up.
        p.cls = Cls.NOT_TCP
        return p
    data_offset = frame[tcp + 12] >> 4
    if data_offset < 5 or data_offset * 4 > segment_len:
        p.cls = Cls.NOT_TCP
        return p

    if not p.is_fragment:
        # The checksum of a first fragment covers bytes that are not here: it is not checked.
        pseudo = frame[ip + 12:ip + 20] + bytes([0, IP_PROTO_TCP]) + segment_len.to_bytes(2, "big")
        segment = frame[tcp:ip + total_length]
        p.tcp_csum_bad = int(ones_complement_sum(pseudo + segment) != 0xffff)

    p.remote_ip, p.local_ip = _be(frame, ip + 12, 4), _be(frame, ip + 16, 4)
    p.remote_port, p.local_port = _be(frame, tcp, 2), _be(frame, tcp + 2, 2)
    p.seq, p.ack = _be(frame, tcp + 4, 4), _be(frame, tcp + 8, 4)
    p.flags = frame[tcp + 13]
    p.window = _be(frame, tcp + 14, 2)
    p.payload_offset = tcp + data_offset * 4
    p.payload_len = segment_len - data_offset * 4
    bad_option, ts = _tcp_options(frame[tcp + TCP_MIN_HEADER_BYTES:tcp + data_offset * 4])
    if ts is not None:
        p.ts_present, (p.tsval, p.tsecr) = 1, ts
    p.special = int(p.is_fragment or ihl > 5 or bad_option)
    if p.ip_csum_bad or p.tcp_csum_bad:
        p.cls = Cls.CHECKSUM
    return p


def special_flags(flags):
    """SYN, FIN, RST or URG: the flags that make a segment a special case (R13)."""
    return bool(flags & (TCP_SYN | TCP_FIN | TCP_RST | TCP_URG))


@dataclass(frozen=True)
class TxUpdate:
    """What the transmit engine hands the sequencer for one transmitted frame (R31–R33).

    The key is the local host's view of a frame it sends (R2): the IPv4 source is the local
    address and the TCP source port the local port.
    """
    local_ip:    int
    remote_ip:   int
    local_port:  int
    remote_port: int
    seq:         int
    ack:         int
    window:      int
    flags:       int
    payload_len: int


def parse_tx(frame):
    """The transmit update of a frame the host stack sends, or ``None`` if it gives none.

    The rules are those of ``docs/architecture.md``, "Transmit engine": IPv4 after at most one
    802.1Q tag, version 4, IHL >= 5, protocol TCP, not a fragment, a data offset >= 5 that fits
    the segment, and a frame at least as long as its IPv4 total length. Checksums are not
    checked: with checksum offload the stack's frames carry none yet.
    """
    frame = bytes(frame)
    length = len(frame)
    if length < ETH_HEADER_BYTES:
        return None
    ip = ETH_HEADER_BYTES
    ethertype = _be(frame, 12, 2)
    if ethertype == ETHERTYPE_VLAN:
        if length < ETH_HEADER_BYTES + VLAN_TAG_BYTES:
            return None
        ip += VLAN_TAG_BYTES
        ethertype = _be(frame, 16, 2)
    if ethertype != ETHERTYPE_IPV4 or length < ip + IPV4_MIN_HEADER_BYTES:
        return None
    version, ihl = frame[ip] >> 4, frame[ip] & 0xf
    total_length = _be(frame, ip + 2, 2)
    segment_len = total_length - ihl * 4
    if version != 4 or ihl < 5 or frame[ip + 9] != IP_PROTO_TCP:
        return None
    if _be(frame, ip + 6, 2) & 0x3fff:              # MF or a fragment offset
        return None
    if segment_len < TCP_MIN_HEADER_BYTES or length < ip + total_length:
        return None
    tcp = ip + ihl * 4
    data_offset = frame[tcp + 12] >> 4
    if data_offset < 5 or data_offset * 4 > segment_len:
        return None
    return TxUpdate(
        local_ip=_be(frame, ip + 12, 4), remote_ip=_be(frame, ip + 16, 4),
        local_port=_be(frame, tcp, 2), remote_port=_be(frame, tcp + 2, 2),
        seq=_be(frame, tcp + 4, 4), ack=_be(frame, tcp + 8, 4),
        flags=frame[tcp + 13], window=_be(frame, tcp + 14, 2),
        payload_len=segment_len - data_offset * 4)
