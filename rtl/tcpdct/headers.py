"""Ethernet, 802.1Q, IPv4 and TCP header formats, declared once as data.

Each header is a list of fields ``(name, byte offset, width in bits)`` in network byte order,
offsets counted from the start of that header. Sub-byte fields (IHL, flags) give their bit
position inside the big-endian field they belong to through :data:`BIT_FIELDS`. The receive
parser, the transmit parser and the golden model all take their offsets from here.
"""


__all__ = [
    "ETH_HEADER", "VLAN_TAG", "IPV4_HEADER", "TCP_HEADER", "BIT_FIELDS",
    "ETH_HEADER_BYTES", "VLAN_TAG_BYTES", "IPV4_MIN_HEADER_BYTES", "TCP_MIN_HEADER_BYTES",
    "IPV4_MAX_HEADER_BYTES", "TCP_MAX_HEADER_BYTES", "MAX_HEADER_BYTES",
    "ETHERTYPE_IPV4", "ETHERTYPE_VLAN", "IP_PROTO_TCP",
    "TCP_FIN", "TCP_SYN", "TCP_RST", "TCP_PSH", "TCP_ACK", "TCP_URG",
    "TCPOPT_EOL", "TCPOPT_NOP", "TCPOPT_TIMESTAMP", "TCPOPT_TIMESTAMP_LEN",
]


ETH_HEADER = [("dst_mac", 0, 48), ("src_mac", 6, 48), ("ethertype", 12, 16)]
ETH_HEADER_BYTES = 14

#: An 802.1Q tag sits between the source MAC and the EtherType; this is its layout counted from
#: byte 12 of the frame: TPID (0x8100), TCI, then the real EtherType.
VLAN_TAG = [("tpid", 0, 16), ("tci", 2, 16), ("ethertype", 4, 16)]
VLAN_TAG_BYTES = 4

IPV4_HEADER = [
    ("version_ihl", 0, 8), ("tos", 1, 8), ("total_length", 2, 16), ("ident", 4, 16),
    ("flags_fragment", 6, 16), ("ttl", 8, 8), ("protocol", 9, 8), ("checksum", 10, 16),
    ("src_ip", 12, 32), ("dst_ip", 16, 32),
]
IPV4_MIN_HEADER_BYTES = 20
IPV4_MAX_HEADER_BYTES = 60

TCP_HEADER = [
    ("src_port", 0, 16), ("dst_port", 2, 16), ("seq", 4, 32), ("ack", 8, 32),
    ("offset_flags", 12, 16), ("window", 14, 16), ("checksum", 16, 16), ("urgent", 18, 16),
]
TCP_MIN_HEADER_BYTES = 20
TCP_MAX_HEADER_BYTES = 60

#: ``(field, name): (lowest bit, width)`` inside a big-endian field of the tables above.
BIT_FIELDS = {
    ("version_ihl", "version"):        (4, 4),
    ("version_ihl", "ihl"):            (0, 4),
    ("flags_fragment", "mf"):          (13, 1),
    ("flags_fragment", "frag_offset"): (0, 13),
    ("offset_flags", "data_offset"):   (12, 4),
    ("offset_flags", "flags"):         (0, 8),
}

#: The most header bytes any frame the engines parse can have before its TCP payload.
MAX_HEADER_BYTES = ETH_HEADER_BYTES + VLAN_TAG_BYTES + IPV4_MAX_HEADER_BYTES + TCP_MAX_HEADER_BYTES

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_VLAN = 0x8100
IP_PROTO_TCP   = 6

# TCP flag bits, as in the low byte of ``offset_flags``.
TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_PSH = 0x08
TCP_ACK = 0x10
TCP_URG = 0x20

TCPOPT_EOL = 0
TCPOPT_NOP = 1
TCPOPT_TIMESTAMP = 8
TCPOPT_TIMESTAMP_LEN = 10


def field(header, name):
    """``(byte offset, width in bits)`` of a field of one of the header tables."""
    for field_name, offset, width in header:
        if field_name == name:
            return offset, width
    raise KeyError(f"Header has no field {name!r}")
