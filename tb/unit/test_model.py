"""Unit tests of the golden model (``tb/model``): each rule of SPEC §2, §3, §5, §6 as refined in
``docs/architecture.md``, on frames built with scapy."""

import ipaddress

import pytest
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.layers.inet import IP, TCP, IPOption_Router_Alert
from scapy.layers.inet6 import IPv6

from tcpdct.params import Params
from tcpdct.records import (
    NO_CONNECTION, Opcode, CmdStatus, EventType, LegacyReason, DropReason, Command, Event,
)
from model import Model, HostMemory, ConnKey, Grant, parse, seq_gt
from model.frame import Cls


LOCAL_IP, REMOTE_IP = "10.0.0.1", "10.0.0.2"
LOCAL_PORT, REMOTE_PORT = 80, 40000
KEY = ConnKey(int(ipaddress.IPv4Address(LOCAL_IP)), int(ipaddress.IPv4Address(REMOTE_IP)),
              LOCAL_PORT, REMOTE_PORT)
CONN = 2
RCV_NXT = 100_000
LEGACY_BASE = 0x8000_0000
LEGACY_SIZE = 2048
TS_OPTIONS = [("NOP", None), ("NOP", None), ("Timestamp", (0x11223344, 0x55667788))]

PARAMS = Params(n_entries=4, buffers_per_conn=4, legacy_ring_depth=4)


def ether():
    return Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:02")


def segment(payload=b"", *, seq=RCV_NXT, ack=7, flags="A", window=4321, options=(),
            ip=None, tcp=None, vlan=None, pad=0):
    """A received frame of the delegated connection (or of another key, through ``ip``/``tcp``)."""
    layers = ether()
    if vlan is not None:
        layers = layers / Dot1Q(vlan=vlan)
    layers = layers / IP(**{"src": REMOTE_IP, "dst": LOCAL_IP, **(ip or {})})
    layers = layers / TCP(**{"sport": REMOTE_PORT, "dport": LOCAL_PORT, "seq": seq, "ack": ack,
                             "flags": flags, "window": window, "options": list(options),
                             **(tcp or {})})
    return bytes(layers / payload) + bytes(pad)


def padded(frame, length):
    """``frame`` with Ethernet padding up to ``length`` bytes."""
    return frame + bytes(length - len(frame))


def done(events, status=CmdStatus.OK):
    assert events[-1].type == EventType.CMD_DONE
    assert events[-1].status == status, events
    return events


def delegate(m, index=CONN, key=KEY, rcv_nxt=RCV_NXT, snd_nxt=5000, rcv_wnd=65535):
    return m.command(Command(Opcode.DELEGATE, index, local_ip=key.local_ip,
                             remote_ip=key.remote_ip, local_port=key.local_port,
                             remote_port=key.remote_port, rcv_nxt=rcv_nxt, snd_nxt=snd_nxt,
                             rcv_wnd=rcv_wnd))


def post_buffer(m, address, length, tag, index=CONN):
    return m.command(Command(Opcode.POST_BUFFER, index, address=address, length=length, tag=tag))


def post_legacy(m, address, length, tag):
    return m.command(Command(Opcode.POST_LEGACY, NO_CONNECTION, address=address, length=length,
                             tag=tag))


def delegated_model():
    """A model with one delegated connection and a full ring of legacy buffers."""
    model = Model(PARAMS)
    done(delegate(model))
    for number in range(PARAMS.legacy_ring_depth):
        done(post_legacy(model, LEGACY_BASE + number * 0x1000, LEGACY_SIZE, 0x100 + number))
    return model


@pytest.fixture
def m():
    return delegated_model()


def snapshot(m):
    """Everything a frame might change, for "nothing changed" checks."""
    return (repr(m.entries), list(m.legacy_ring),
            {page: bytes(data) for page, data in m.memory.pages.items()})


def legacy_event(m, frame, reason, index=NO_CONNECTION, **fields):
    """The LEGACY event expected for ``frame`` landing in the head of ``m``'s legacy ring."""
    return Event(EventType.LEGACY, index, tag=m.legacy_ring[0].tag, frame_len=len(frame),
                 reason=reason, **fields)


def check_legacy(m, frame, reason, index=NO_CONNECTION, **fields):
    head = m.legacy_ring[0]
    expected = legacy_event(m, frame, reason, index, **fields)
    assert m.rx_frame(frame) == [expected]
    assert m.memory.read(head.address, len(frame)) == frame
    assert m.last_writes == [(head.address, frame)]
    assert head not in m.legacy_ring


# Host memory -------------------------------------------------------------------------------------

def test_host_memory_sparse_64_bit():
    mem = HostMemory()
    assert mem.read(0x1234, 4) == bytes(4)
    mem.write(0xffd, b"abcdefgh")                    # across a 4 KiB page boundary
    assert mem.read(0xffc, 10) == b"\0abcdefgh\0"
    top = (1 << 64) - 3
    mem.write(top, b"xyz")
    assert mem.read(top - 1, 4) == b"\0xyz"
    with pytest.raises(ValueError, match="leaves the 64-bit"):
        mem.write(top, b"wxyz")
    with pytest.raises(ValueError, match="64-bit address space"):
        mem.read(-1, 1)
    other = HostMemory()
    other.write(0x5000, bytes(8))                   # zeros equal unwritten bytes
    other.write(0xffd, b"abcdefgh")
    other.write(top, b"xyz")
    assert mem == other
    other.write(0x5001, b"!")
    assert mem != other
    assert mem.differences(other) == [0x5001]


# Reference parse: checksums ----------------------------------------------------------------------

@pytest.mark.parametrize("payload", [b"", b"odd", b"even", bytes(range(256)) * 5])
@pytest.mark.parametrize("vlan", [None, 9])
def test_parse_good_checksums(payload, vlan):
    frame = segment(payload, options=TS_OPTIONS, vlan=vlan)
    p = parse(frame)
    assert p.cls == Cls.TCP
    assert (p.ip_csum_bad, p.tcp_csum_bad) == (0, 0)
    assert frame[p.payload_offset:p.payload_offset + p.payload_len] == payload
    assert (p.local_ip, p.remote_ip, p.local_port, p.remote_port) == KEY
    assert (p.ts_present, p.tsval, p.tsecr) == (1, 0x11223344, 0x55667788)


def test_parse_bad_checksums():
    p = parse(segment(b"data", ip={"chksum": 0x1234}))
    assert (p.cls, p.ip_csum_bad, p.tcp_csum_bad) == (Cls.CHECKSUM, 1, 0)
    p = parse(segment(b"data", tcp={"chksum": 0x1234}))
    assert (p.cls, p.ip_csum_bad, p.tcp_csum_bad) == (Cls.CHECKSUM, 0, 1)
    corrupted = bytearray(segment(b"data"))
    corrupted[-1] ^= 0x40                           # a payload bit
    p = parse(corrupted)
    assert (p.cls, p.ip_csum_bad, p.tcp_csum_bad) == (Cls.CHECKSUM, 0, 1)
    corrupted = bytearray(segment(b"data"))
    corrupted[14 + 8] ^= 1                          # the TTL
    p = parse(corrupted)
    assert (p.cls, p.ip_csum_bad, p.tcp_csum_bad) == (Cls.CHECKSUM, 1, 0)
    # Padding is not part of the TCP checksum.
    p = parse(segment(b"x", pad=20) [:-1] + b"\xff")
    assert (p.cls, p.tcp_csum_bad) == (Cls.TCP, 0)


def test_parse_first_fragment_checksum_not_checked():
    p = parse(segment(b"data", ip={"flags": "MF"}, tcp={"chksum": 0x1234}))
    assert (p.cls, p.tcp_csum_bad, p.special) == (Cls.TCP, 0, 1)


# Placement (R20) ---------------------------------------------------------------------------------

def test_place_into_one_buffer(m):
    done(post_buffer(m, 0x10_0000, 1000, tag=0xaa))
    payload = bytes(range(100))
    frame = segment(payload, seq=RCV_NXT, ack=0xdeadbeef, window=0x1234, flags="A",
                    options=TS_OPTIONS)
    events = m.rx_frame(frame)
    assert events == [Event(EventType.RX_PLACED, CONN, seq=RCV_NXT, ack=0xdeadbeef, window=0x1234,
                            flags=0x10, length=100, ts_present=1, tsval=0x11223344,
                            tsecr=0x55667788)]
    assert m.memory.read(0x10_0000, 101) == payload + b"\0"
    assert m.last_writes == [(0x10_0000, payload)]
    entry = m.entries[CONN]
    assert entry.rcv_nxt == RCV_NXT + 100
    assert [(b.filled, b.tag) for b in entry.queue] == [(100, 0xaa)]
    assert not entry.sync_req
    # The next segment continues at address + filled.
    events = m.rx_frame(segment(b"more", seq=RCV_NXT + 100))
    assert events[0].type == EventType.RX_PLACED and events[0].ts_present == 0
    assert m.memory.read(0x10_0000, 104) == payload + b"more"
    assert entry.queue[0].filled == 104


def test_place_spanning_buffers_and_full_completion(m):
    for number, length in enumerate([10, 7, 100]):
        done(post_buffer(m, 0x20_0000 + number * 0x1000, length, tag=number))
    payload = bytes(range(1, 31))
    events = m.rx_frame(segment(payload))
    assert events[1:] == [Event(EventType.BUF_DONE, CONN, tag=0, bytes=10),
                          Event(EventType.BUF_DONE, CONN, tag=1, bytes=7)]
    assert events[0].type == EventType.RX_PLACED and events[0].length == 30
    assert m.memory.read(0x20_0000, 10) == payload[:10]
    assert m.memory.read(0x20_1000, 8) == payload[10:17] + b"\0"
    assert m.memory.read(0x20_2000, 14) == payload[17:] + b"\0"
    assert m.last_writes == [(0x20_0000, payload[:10]), (0x20_1000, payload[10:17]),
                             (0x20_2000, payload[17:])]
    queue = m.entries[CONN].queue
    assert [(b.tag, b.filled) for b in queue] == [(2, 13)]
    assert m.entries[CONN].rcv_nxt == RCV_NXT + 30


def test_psh_completes_partly_filled_buffer(m):
    done(post_buffer(m, 0x30_0000, 8, tag=1))
    done(post_buffer(m, 0x31_0000, 100, tag=2))
    done(post_buffer(m, 0x32_0000, 100, tag=3))
    events = m.rx_frame(segment(b"0123456789", flags="PA"))
    assert events[1:] == [Event(EventType.BUF_DONE, CONN, tag=1, bytes=8),
                          Event(EventType.BUF_DONE, CONN, tag=2, bytes=2)]
    assert [b.tag for b in m.entries[CONN].queue] == [3]
    # The next frame starts in the next buffer, at its beginning.
    m.rx_frame(segment(b"abc", seq=RCV_NXT + 10))
    assert m.memory.read(0x32_0000, 3) == b"abc"


def test_psh_on_exact_fill_leaves_next_buffer(m):
    done(post_buffer(m, 0x30_0000, 4, tag=1))
    done(post_buffer(m, 0x31_0000, 100, tag=2))
    events = m.rx_frame(segment(b"abcd", flags="PA"))
    assert events[1:] == [Event(EventType.BUF_DONE, CONN, tag=1, bytes=4)]
    assert [(b.tag, b.filled) for b in m.entries[CONN].queue] == [(2, 0)]


def test_ethernet_padding_ignored(m):
    done(post_buffer(m, 0x40_0000, 100, tag=1))
    frame = segment(b"hi", pad=10)
    assert len(frame) == 66
    events = m.rx_frame(frame)
    assert events[0].length == 2
    assert m.memory.read(0x40_0000, 3) == b"hi\0"
    assert m.entries[CONN].rcv_nxt == RCV_NXT + 2
    # A legacy frame is uploaded with its padding, as received.
    check_legacy(m, segment(b"", pad=10, seq=RCV_NXT + 2), LegacyReason.NO_PAYLOAD, CONN)


def test_vlan_tagged_frame_is_placed(m):
    done(post_buffer(m, 0x40_0000, 100, tag=1))
    assert m.rx_frame(segment(b"tagged", vlan=42))[0].type == EventType.RX_PLACED
    assert m.memory.read(0x40_0000, 6) == b"tagged"


def test_serial_number_wrap(m):
    start = (1 << 32) - 10
    done(m.command(Command(Opcode.RESYNC, CONN, rcv_nxt=start)))
    done(post_buffer(m, 0x50_0000, 100, tag=1))
    events = m.rx_frame(segment(bytes(25), seq=start))
    assert events[0].type == EventType.RX_PLACED
    assert m.entries[CONN].rcv_nxt == 15
    assert m.rx_frame(segment(b"next", seq=15))[0].type == EventType.RX_PLACED
    assert m.entries[CONN].rcv_nxt == 19
    # Legacy advance wraps too.
    done(m.command(Command(Opcode.RESYNC, CONN, rcv_nxt=(1 << 32) - 1)))
    check_legacy(m, segment(b"ab", seq=(1 << 32) - 1, flags="FA"), LegacyReason.SPECIAL, CONN)
    assert m.entries[CONN].rcv_nxt == 2
    assert seq_gt(2, (1 << 32) - 1) and not seq_gt((1 << 32) - 1, 2)


# Legacy reasons (R12–R19, R21) -------------------------------------------------------------------

@pytest.mark.parametrize("frame", [
    bytes(ether() / ARP(pdst=LOCAL_IP)),
    bytes(ether() / IPv6(src="fe80::2", dst="fe80::1") / TCP(sport=1, dport=2, flags="A") / b"x"),
    bytes(ether() / Dot1Q(vlan=1) / Dot1Q(vlan=2) / IP(src=REMOTE_IP, dst=LOCAL_IP)
          / TCP(sport=REMOTE_PORT, dport=LOCAL_PORT, seq=RCV_NXT, flags="A") / b"qinq"),
    segment(b"x", ip={"ihl": 4}),                  # IHL < 5
    segment(b"x", ip={"version": 6}),
    segment(b"x", ip={"frag": 8}),                 # not the first fragment
    segment(b"x", tcp={"dataofs": 4}),             # data offset < 5
    segment(b"x", tcp={"dataofs": 15}),            # header past the segment
    bytes(ether() / IP(src=REMOTE_IP, dst=LOCAL_IP, proto=17) / (b"\0" * 30)),
], ids=["arp", "ipv6", "qinq", "ihl", "version", "fragment", "dataofs-small", "dataofs-large",
        "udp"])
def test_legacy_not_tcp(m, frame):
    before = repr(m.entries)
    check_legacy(m, frame, LegacyReason.NOT_TCP)
    assert repr(m.entries) == before


def test_legacy_not_tcp_reports_ip_checksum():
    m = Model(PARAMS)
    done(post_legacy(m, LEGACY_BASE, LEGACY_SIZE, 1))
    frame = bytes(ether() / IP(src=REMOTE_IP, dst=LOCAL_IP, proto=17, chksum=1) / (b"\0" * 8))
    check_legacy(m, frame, LegacyReason.NOT_TCP, ip_csum_bad=1)


def test_legacy_no_match(m):
    done(post_buffer(m, 0x10_0000, 1000, tag=1))
    for frame in [segment(b"x", tcp={"sport": REMOTE_PORT + 1}),
                  segment(b"x", tcp={"dport": LOCAL_PORT + 1}),
                  segment(b"x", ip={"src": "10.0.0.3"}),
                  segment(b"x", ip={"src": LOCAL_IP, "dst": REMOTE_IP}),    # reversed direction
                  segment(b"x", tcp={"sport": LOCAL_PORT, "dport": REMOTE_PORT})]:
        if not m.legacy_ring:
            done(post_legacy(m, LEGACY_BASE, LEGACY_SIZE, 0x200))
        before = repr(m.entries)
        check_legacy(m, frame, LegacyReason.NO_MATCH)
        assert repr(m.entries) == before


@pytest.mark.parametrize("corruption,bits", [
    ({"ip": {"chksum": 0x1111}}, {"ip_csum_bad": 1}),
    ({"tcp": {"chksum": 0x1111}}, {"tcp_csum_bad": 1}),
    ({"ip": {"chksum": 0x1111}, "tcp": {"chksum": 0x1111}}, {"ip_csum_bad": 1, "tcp_csum_bad": 1}),
])
def test_legacy_checksum_never_touches_dct(m, corruption, bits):
    done(post_buffer(m, 0x10_0000, 1000, tag=1))
    before = repr(m.entries)
    # Even with SYN, out of sequence or in sequence: the key is not trusted.
    for flags in ["A", "SA"]:
        check_legacy(m, segment(b"data", flags=flags, **corruption), LegacyReason.CHECKSUM, **bits)
    assert repr(m.entries) == before


@pytest.mark.parametrize("kind", [
    {"flags": "SA"}, {"flags": "FA"}, {"flags": "RA"}, {"flags": "UA"},
    {"ip": {"flags": "MF"}},
    {"ip": {"options": [IPOption_Router_Alert()]}},
    {"options": [("MSS", 1460)]},
    {"options": [("SAck", (RCV_NXT - 100, RCV_NXT - 50))]},
    {"options": [("SAckOK", b"")]},
    {"options": [("WScale", 7)]},
    {"options": [("NOP", None), ("Timestamp", (1, 2)), ("MSS", 1460)]},
    {"options": [(8, b"\0" * 4)]},                  # Timestamps of the wrong length
], ids=["syn", "fin", "rst", "urg", "fragment", "ip-options", "mss", "sack", "sackok", "wscale",
        "ts-then-mss", "short-ts"])
def test_legacy_special(m, kind):
    done(post_buffer(m, 0x10_0000, 1000, tag=1))
    flags = kind.get("flags", "A")
    extra = {"flags": flags, **{k: v for k, v in kind.items() if k != "flags"}}
    plus_one = int("S" in flags) + int("F" in flags)
    frame = segment(b"special", **extra)
    check_legacy(m, frame, LegacyReason.SPECIAL, CONN)
    entry = m.entries[CONN]
    assert entry.sync_req
    assert entry.rcv_nxt == RCV_NXT + 7 + plus_one
    assert entry.queue[0].filled == 0
    assert m.memory.read(0x10_0000, 8) == bytes(8)


def test_legacy_special_out_of_sequence_does_not_advance(m):
    check_legacy(m, segment(b"x", seq=RCV_NXT + 50, flags="FA"), LegacyReason.SPECIAL, CONN)
    assert m.entries[CONN].sync_req and m.entries[CONN].rcv_nxt == RCV_NXT


def test_special_without_payload_advances_for_syn_fin(m):
    check_legacy(m, segment(flags="FA"), LegacyReason.SPECIAL, CONN)
    assert m.entries[CONN].rcv_nxt == RCV_NXT + 1
    check_legacy(m, segment(flags="RA", seq=RCV_NXT + 1), LegacyReason.SPECIAL, CONN)
    assert m.entries[CONN].rcv_nxt == RCV_NXT + 1


def test_timestamps_stay_on_fast_path(m):
    done(post_buffer(m, 0x10_0000, 1000, tag=1))
    options = [("Timestamp", (5, 6)), ("NOP", None), ("NOP", None), ("EOL", None)]
    events = m.rx_frame(segment(b"ts", options=options))
    assert events[0].type == EventType.RX_PLACED
    assert (events[0].ts_present, events[0].tsval, events[0].tsecr) == (1, 5, 6)


def test_legacy_sync_advances_only_in_sequence(m):
    done(post_buffer(m, 0x10_0000, 1000, tag=1))
    check_legacy(m, segment(b"x", seq=RCV_NXT + 9), LegacyReason.OUT_OF_SEQ, CONN)
    entry = m.entries[CONN]
    assert entry.sync_req and entry.rcv_nxt == RCV_NXT
    check_legacy(m, segment(b"abc"), LegacyReason.SYNC, CONN)
    assert entry.sync_req and entry.rcv_nxt == RCV_NXT + 3
    check_legacy(m, segment(b"abc", seq=RCV_NXT + 50), LegacyReason.SYNC, CONN)
    assert entry.rcv_nxt == RCV_NXT + 3
    # SYNC goes before NO_PAYLOAD.
    check_legacy(m, segment(b"", seq=RCV_NXT + 3), LegacyReason.SYNC, CONN)
    assert entry.queue[0].filled == 0
    # An explicit RESYNC puts the connection back on the fast path.
    done(m.command(Command(Opcode.RESYNC, CONN, rcv_nxt=RCV_NXT + 3)))
    assert not entry.sync_req
    assert m.rx_frame(segment(b"abc", seq=RCV_NXT + 3))[0].type == EventType.RX_PLACED


def test_legacy_no_payload(m):
    done(post_buffer(m, 0x10_0000, 1000, tag=1))
    before = repr(m.entries)
    check_legacy(m, segment(b"", seq=RCV_NXT), LegacyReason.NO_PAYLOAD, CONN)
    check_legacy(m, segment(b"", seq=RCV_NXT + 77), LegacyReason.NO_PAYLOAD, CONN)
    assert repr(m.entries) == before


def test_legacy_out_of_seq():
    for seq in [RCV_NXT + 1, RCV_NXT - 1]:
        model = Model(PARAMS)
        done(delegate(model))
        done(post_legacy(model, LEGACY_BASE, LEGACY_SIZE, 1))
        check_legacy(model, segment(b"late", seq=seq), LegacyReason.OUT_OF_SEQ, CONN)
        assert model.entries[CONN].sync_req and model.entries[CONN].rcv_nxt == RCV_NXT


def test_exact_room_is_enough(m):
    done(post_buffer(m, 0x10_0000, 4, tag=1))
    done(post_buffer(m, 0x11_0000, 6, tag=2))
    events = m.rx_frame(segment(bytes(10)))
    assert [e.type for e in events] == [EventType.RX_PLACED] + [EventType.BUF_DONE] * 2
    assert m.entries[CONN].queue == []


def test_legacy_buffers_used_in_order(m):
    tags = [buffer.tag for buffer in m.legacy_ring]
    for tag in tags:
        events = m.rx_frame(segment(b"x", tcp={"sport": 1}))
        assert events[0].tag == tag
    assert m.legacy_ring == []


# Drops (R11, R22) --------------------------------------------------------------------------------

@pytest.mark.parametrize("frame,mac_error,reason", [
    (segment(b"fine"), True, DropReason.MAC_ERROR),
    (segment(b"payload")[:-3], False, DropReason.TRUNCATED),
    (segment(b"x")[:13], False, DropReason.TRUNCATED),
    (segment(b"x", vlan=1)[:17], False, DropReason.TRUNCATED),
    (segment(b"x")[:14 + 19], False, DropReason.TRUNCATED),
    (padded(segment(bytes(1400), vlan=1), 1523), False, DropReason.OVERSIZE),
], ids=["mac-error", "short-of-ip-length", "short-ethernet", "short-vlan", "short-ip-header",
        "oversize"])
def test_drop_invalid(m, frame, mac_error, reason):
    done(post_buffer(m, 0x10_0000, 2000, tag=1))
    before = snapshot(m)
    assert m.rx_frame(frame, mac_error=mac_error) == [
        Event(EventType.DROP, NO_CONNECTION, reason=reason, frame_len=len(frame))]
    assert snapshot(m) == before
    assert m.last_writes == []


def test_max_frame_bytes_parameter():
    m = Model(Params(n_entries=1, max_frame_bytes=100))
    done(post_legacy(m, LEGACY_BASE, LEGACY_SIZE, 1))
    frame = padded(segment(b"x"), 101)
    assert m.rx_frame(frame) == [Event(EventType.DROP, reason=DropReason.OVERSIZE, frame_len=101)]
    assert m.rx_frame(frame[:100])[0].type == EventType.LEGACY


def test_max_frame_bytes_is_accepted(m):
    frame = padded(segment(bytes(1400), seq=RCV_NXT + 1, vlan=1), 1522)
    assert len(frame) == 1522
    check_legacy(m, frame, LegacyReason.OUT_OF_SEQ, CONN)


@pytest.mark.parametrize("frame,reason,index", [
    (segment(b"x", seq=RCV_NXT + 5), LegacyReason.OUT_OF_SEQ, CONN),
    (segment(b"x", flags="SA"), LegacyReason.SPECIAL, CONN),
    (segment(b"x", tcp={"sport": 9}), LegacyReason.NO_MATCH, NO_CONNECTION),
    (segment(b"x", tcp={"chksum": 1}), LegacyReason.CHECKSUM, NO_CONNECTION),
], ids=["out-of-seq", "special", "no-match", "checksum"])
def test_failed_legacy_delivery_changes_nothing(frame, reason, index):
    m = Model(PARAMS)
    done(delegate(m))
    before = snapshot(m)
    assert m.rx_frame(frame) == [Event(EventType.DROP, index, reason=DropReason.NO_LEGACY_BUFFER,
                                       frame_len=len(frame))]
    assert snapshot(m) == before
    done(post_legacy(m, LEGACY_BASE, len(frame) - 1, tag=5))
    before = snapshot(m)
    assert m.rx_frame(frame) == [Event(EventType.DROP, index, reason=DropReason.LEGACY_TOO_SMALL,
                                       frame_len=len(frame))]
    assert snapshot(m) == before
    assert m.legacy_ring[0].tag == 5
    assert m.last_writes == []
    # Once a big enough buffer is at the head, the same frame is delivered and takes effect.
    m.legacy_ring.clear()
    done(post_legacy(m, LEGACY_BASE, len(frame), tag=6))
    check_legacy(m, frame, reason, index, tcp_csum_bad=int(reason == LegacyReason.CHECKSUM))
    assert m.entries[CONN].sync_req == (index == CONN)


# Commands (R40, R41) -----------------------------------------------------------------------------

def test_delegate_initialises_entry():
    m = Model(PARAMS)
    m.entries[1].sync_req = True                  # stale flags must be cleared
    assert delegate(m, index=1, rcv_nxt=0xfffffff0, snd_nxt=0x1234, rcv_wnd=999) == [
        Event(EventType.CMD_DONE, 1, opcode=Opcode.DELEGATE, status=CmdStatus.OK)]
    entry = m.entries[1]
    assert entry.valid and entry.key == KEY
    assert (entry.rcv_nxt, entry.snd_nxt, entry.last_ack_sent, entry.rcv_wnd) == \
        (0xfffffff0, 0x1234, 0xfffffff0, 999)
    assert not entry.sync_req and not entry.buf_req and entry.queue == []


def test_command_errors_change_nothing(m):
    done(post_buffer(m, 0x10_0000, 100, tag=1))
    other = ConnKey(1, 2, 3, 4)
    cases = [
        (Command(Opcode.DELEGATE, PARAMS.n_entries), CmdStatus.BAD_INDEX),
        (Command(Opcode.DELEGATE, 0xffff), CmdStatus.BAD_INDEX),
        (Command(Opcode.POST_BUFFER, PARAMS.n_entries, address=0, length=1), CmdStatus.BAD_INDEX),
        (Command(Opcode.RESYNC, 100), CmdStatus.BAD_INDEX),
        (Command(Opcode.RECLAIM, PARAMS.n_entries), CmdStatus.BAD_INDEX),
        (Command(Opcode.QUERY, PARAMS.n_entries), CmdStatus.BAD_INDEX),
        (Command(Opcode.DELEGATE, CONN, local_ip=other.local_ip), CmdStatus.IN_USE),
        (Command(Opcode.DELEGATE, 0, **KEY._asdict()), CmdStatus.DUPLICATE_KEY),
        (Command(Opcode.POST_BUFFER, 0, address=0, length=1), CmdStatus.NOT_DELEGATED),
        (Command(Opcode.POST_BUFFER, 0, address=0, length=0), CmdStatus.NOT_DELEGATED),
        (Command(Opcode.POST_BUFFER, CONN, address=0x1000, length=0), CmdStatus.ZERO_LENGTH),
        (Command(Opcode.POST_BUFFER, CONN, address=(1 << 64) - 4, length=5),
         CmdStatus.ADDRESS_WRAP),
        (Command(Opcode.POST_BUFFER, CONN, address=(1 << 64) - 4, length=0),
         CmdStatus.ZERO_LENGTH),
        (Command(Opcode.RESYNC, 0, rcv_nxt=5), CmdStatus.NOT_DELEGATED),
        (Command(Opcode.RECLAIM, 0), CmdStatus.NOT_DELEGATED),
        (Command(Opcode.QUERY, 3), CmdStatus.NOT_DELEGATED),
        (Command(Opcode.POST_LEGACY, 0, address=0x1000, length=0), CmdStatus.ZERO_LENGTH),
        (Command(Opcode.POST_LEGACY, 0, address=(1 << 64) - 1, length=2), CmdStatus.ADDRESS_WRAP),
        (Command(Opcode.POST_LEGACY, 0, address=0x1000, length=64), CmdStatus.QUEUE_FULL),
    ]
    for cmd, status in cases:
        before = (snapshot(m), list(m.granted))
        assert m.command(cmd) == [Event(EventType.CMD_DONE, cmd.index, opcode=cmd.opcode,
                                        status=status)], cmd
        assert (snapshot(m), list(m.granted)) == before
    assert m.counters["CMD_ERRORS"] == len(cases)


def test_post_buffer_queue_full(m):
    for number in range(PARAMS.buffers_per_conn):
        done(post_buffer(m, 0x1000 * number, 10, tag=number))
    done(post_buffer(m, 0x9000, 10, tag=9), CmdStatus.QUEUE_FULL)
    assert [b.tag for b in m.entries[CONN].queue] == list(range(PARAMS.buffers_per_conn))


def test_address_wrap_boundary(m):
    m.legacy_ring.clear()
    done(post_buffer(m, (1 << 64) - 5, 5, tag=1))              # ends exactly at 2**64
    done(post_legacy(m, (1 << 64) - 5, 5, tag=2))
    assert m.entries[CONN].queue[0].address == (1 << 64) - 5


def test_post_legacy_ignores_index():
    m = Model(PARAMS)
    assert m.command(Command(Opcode.POST_LEGACY, 0xbeef, address=0x1000, length=64, tag=3)) == [
        Event(EventType.CMD_DONE, 0xbeef, opcode=Opcode.POST_LEGACY, status=CmdStatus.OK)]
    assert [(b.address, b.length, b.tag) for b in m.legacy_ring] == [(0x1000, 64, 3)]


def test_raw_commands():
    m = Model(PARAMS)
    for opcode in [0, 7, 0xff]:
        word = opcode | 0x1234 << 16 | 0xdead << 40
        assert m.command(word) == [Event(EventType.CMD_DONE, 0x1234, opcode=opcode,
                                         status=CmdStatus.BAD_OPCODE)]
    # A raw integer with a known opcode is decoded.
    delegate_cmd = Command(Opcode.DELEGATE, 1, **KEY._asdict(), rcv_nxt=42)
    done(m.command(delegate_cmd.pack()))
    assert m.entries[1].valid and m.entries[1].rcv_nxt == 42 and m.entries[1].key == KEY
    assert m.counters["COMMANDS"] == 4 and m.counters["CMD_ERRORS"] == 3
    # An index wider than 16 bits is answered truncated, as the record carries 16 bits.
    assert m.command(Command(Opcode.QUERY, 0x1_0003))[-1].index == 3


def test_resync_clears_flags(m):
    entry = m.entries[CONN]
    entry.sync_req = entry.buf_req = True
    assert m.command(Command(Opcode.RESYNC, CONN, rcv_nxt=77)) == [
        Event(EventType.CMD_DONE, CONN, opcode=Opcode.RESYNC, status=CmdStatus.OK)]
    assert (entry.rcv_nxt, entry.sync_req, entry.buf_req) == (77, False, False)


def test_query(m):
    done(post_buffer(m, 0x1000, 10, tag=1))
    done(post_buffer(m, 0x2000, 10, tag=2))
    m.rx_frame(segment(b"xy", seq=RCV_NXT + 1))                # sets SYNC_REQ
    assert m.command(Command(Opcode.QUERY, CONN)) == [
        Event(EventType.STATE, CONN, valid=1, sync_req=1, buf_req=0, n_buffers=2, rcv_wnd=65535,
              rcv_nxt=RCV_NXT, snd_nxt=5000, last_ack_sent=RCV_NXT),
        Event(EventType.CMD_DONE, CONN, opcode=Opcode.QUERY, status=CmdStatus.OK)]
    assert m.entries[CONN].valid


def test_reclaim(m):
    done(post_buffer(m, 0x1000, 10, tag=1))
    done(post_buffer(m, 0x2000, 10, tag=2))
    done(post_buffer(m, 0x3000, 10, tag=3))
    m.rx_frame(segment(bytes(13)))
    assert m.command(Command(Opcode.RECLAIM, CONN)) == [
        Event(EventType.STATE, CONN, valid=1, sync_req=0, buf_req=0, n_buffers=2, rcv_wnd=65535,
              rcv_nxt=RCV_NXT + 13, snd_nxt=5000, last_ack_sent=RCV_NXT),
        Event(EventType.BUF_DONE, CONN, tag=2, bytes=3),
        Event(EventType.BUF_DONE, CONN, tag=3, bytes=0),
        Event(EventType.CMD_DONE, CONN, opcode=Opcode.RECLAIM, status=CmdStatus.OK)]
    assert not m.entries[CONN].valid and m.entries[CONN].queue == []
    done(m.command(Command(Opcode.QUERY, CONN)), CmdStatus.NOT_DELEGATED)
    # Later frames of the key take the non-delegated path...
    check_legacy(m, segment(b"x", seq=RCV_NXT + 13), LegacyReason.NO_MATCH)
    # ...and the key may be delegated again, in another entry.
    done(delegate(m, index=0, rcv_nxt=1))
    assert m.entries[0].queue == []


# Host view: writes, grants, counters (R23, R52) ---------------------------------------------------

def test_granted_ranges(m):
    done(post_buffer(m, 0x7000, 300, tag=0x77))
    assert m.granted[:4] == [Grant(LEGACY_BASE + n * 0x1000, LEGACY_SIZE, "legacy", 0x100 + n)
                             for n in range(4)]
    assert m.granted[4:] == [Grant(0x7000, 300, "user", 0x77)]
    writes = []
    for frame in [segment(bytes(range(200)), flags="PA"), segment(b"x", tcp={"sport": 1})]:
        m.rx_frame(frame)
        writes += m.last_writes
    assert [address for address, _ in writes] == [0x7000, LEGACY_BASE]
    for address, data in writes:
        assert any(g.address <= address and address + len(data) <= g.address + g.length
                   for g in m.granted)


def test_counters(m):
    done(post_buffer(m, 0x1000, 8, tag=1))
    m.rx_frame(segment(b"abcde"))                             # placed
    m.rx_frame(segment(b"abc", seq=RCV_NXT + 5))              # placed, fills: BUF_DONE
    legacy = segment(b"x", tcp={"sport": 1})
    m.rx_frame(legacy)                                        # NO_MATCH
    m.rx_frame(segment(b"x", seq=RCV_NXT + 100))              # OUT_OF_SEQ
    m.rx_frame(segment(b"x"), mac_error=True)                 # MAC_ERROR
    m.command(Command(Opcode.QUERY, 0))                       # error
    m.command(Command(Opcode.RECLAIM, CONN))                  # nothing left queued
    assert m.tx_frame(segment(b"out")) == []
    counters = m.counters
    expected = {
        "RX_FRAMES": 5, "RX_PLACED": 2, "RX_LEGACY": 2, "RX_DROPPED": 1,
        "BYTES_PLACED_LO": 8, "BYTES_LEGACY_LO": 2 * len(legacy),
        "LEGACY_NO_MATCH": 1, "LEGACY_OUT_OF_SEQ": 1, "DROP_MAC_ERROR": 1,
        "BUF_DONES": 1, "COMMANDS": 1 + 4 + 1 + 2, "CMD_ERRORS": 1, "TX_FRAMES": 1,
    }
    assert {name: value for name, value in counters.items() if value} == expected
    assert m.registers["ID"] == 0x54444354
    assert m.registers["N_ENTRIES"] == PARAMS.n_entries
    assert m.counter64("BYTES_PLACED") == 8


def test_wide_counter_split():
    m = Model(PARAMS)
    m._counts["BYTES_PLACED"] = (5 << 32) + 7
    assert (m.counters["BYTES_PLACED_LO"], m.counters["BYTES_PLACED_HI"]) == (7, 5)


def test_tx_frame_of_no_connection_records_nothing(m):
    done(post_buffer(m, 0x1000, 8, tag=1))
    before = (snapshot(m), list(m.granted))
    outgoing = bytes(ether() / IP(src=LOCAL_IP, dst=REMOTE_IP)
                     / TCP(sport=LOCAL_PORT, dport=REMOTE_PORT + 1, seq=5000, ack=RCV_NXT + 50,
                           flags="A") / b"data")
    assert m.tx_frame(outgoing) == []
    assert (snapshot(m), list(m.granted)) == before
    assert m.last_writes == []


def test_dma_error_hook():
    m = Model(PARAMS, dma_error=lambda address, data: address == 0x2000)
    done(delegate(m))
    done(post_buffer(m, 0x1000, 4, tag=1))
    done(post_buffer(m, 0x2000, 100, tag=2))
    events = m.rx_frame(segment(bytes(6)))
    assert [e.dma_error for e in events] == [1, 1]
    assert m.counters["DMA_ERRORS"] == 2
    assert m.entries[CONN].rcv_nxt == RCV_NXT + 6
    assert all(e.dma_error == 0 for e in m.command(Command(Opcode.QUERY, CONN)))
