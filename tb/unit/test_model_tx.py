"""Unit tests of the golden model's transmit engine (R30–R33): the transmit parse
(``model.frame.parse_tx``) and the DCT updates of ``docs/architecture.md``, "Transmit engine"."""

import pytest
from scapy.layers.l2 import ARP, Dot1Q
from scapy.layers.inet import IP, TCP, IPOption_Router_Alert
from scapy.layers.inet6 import IPv6

from tcpdct.records import Opcode, EventType, LegacyReason, Command, Event
from model import Model, TxUpdate, parse_tx

from unit.test_model import (
    LOCAL_IP, REMOTE_IP, LOCAL_PORT, REMOTE_PORT, KEY, CONN, RCV_NXT, PARAMS,
    ether, segment, padded, done, delegate, post_buffer, snapshot, check_legacy, delegated_model,
)


@pytest.fixture
def m():
    return delegated_model()


SND_NXT = 5000


def outgoing(payload=b"", *, seq=SND_NXT, ack=RCV_NXT, flags="A", window=2000, options=(),
             ip=None, tcp=None, vlan=None):
    """A frame the local stack sends on the delegated connection (or another key)."""
    layers = ether()
    if vlan is not None:
        layers = layers / Dot1Q(vlan=vlan)
    layers = layers / IP(**{"src": LOCAL_IP, "dst": REMOTE_IP, **(ip or {})})
    layers = layers / TCP(**{"sport": LOCAL_PORT, "dport": REMOTE_PORT, "seq": seq, "ack": ack,
                             "flags": flags, "window": window, "options": list(options),
                             **(tcp or {})})
    return bytes(layers / payload)


def state(m):
    entry = m.entries[CONN]
    return dict(rcv_nxt=entry.rcv_nxt, snd_nxt=entry.snd_nxt, last_ack_sent=entry.last_ack_sent,
                rcv_wnd=entry.rcv_wnd, sync_req=entry.sync_req)


def set_sync_req(m):
    """Set SYNC_REQ the way the hardware does: an out-of-sequence segment (R16)."""
    check_legacy(m, segment(b"late", seq=RCV_NXT + 100), LegacyReason.OUT_OF_SEQ, CONN)
    assert m.entries[CONN].sync_req


# Transmit parse ----------------------------------------------------------------------------------

def test_parse_tx_fields():
    frame = outgoing(b"hello", seq=0x12345678, ack=0x9abcdef0, flags="PA", window=0x4321,
                     options=[("NOP", None), ("NOP", None), ("Timestamp", (1, 2))])
    assert parse_tx(frame) == TxUpdate(*KEY, seq=0x12345678, ack=0x9abcdef0, window=0x4321,
                                       flags=0x18, payload_len=5)


@pytest.mark.parametrize("frame,payload_len", [
    (outgoing(b"tagged", vlan=7), 6),
    (outgoing(b"ipopt", ip={"options": [IPOption_Router_Alert()]}), 5),
    (outgoing(b"mss", flags="S", options=[("MSS", 1460), ("WScale", 7)]), 3),
    (outgoing(b"badsum", ip={"chksum": 1}, tcp={"chksum": 1}), 6),
    (padded(outgoing(b"p"), 80), 1),
    (outgoing(b"", flags="F"), 0),
], ids=["vlan", "ip-options", "tcp-options", "bad-checksums", "padding", "no-payload"])
def test_parse_tx_accepts(frame, payload_len):
    # For transmit there is no "special" path: options, flags and checksums do not matter.
    update = parse_tx(frame)
    assert update is not None
    assert (update.local_ip, update.remote_ip, update.local_port, update.remote_port) == KEY
    assert update.payload_len == payload_len


@pytest.mark.parametrize("frame", [
    bytes(ether() / ARP(pdst=REMOTE_IP)),
    bytes(ether() / IPv6(src="fe80::1", dst="fe80::2") / TCP(sport=1, dport=2) / b"x"),
    bytes(ether() / Dot1Q(vlan=1) / Dot1Q(vlan=2) / IP(src=LOCAL_IP, dst=REMOTE_IP)
          / TCP(sport=LOCAL_PORT, dport=REMOTE_PORT, flags="A") / b"qinq"),
    outgoing(b"x", ip={"version": 6}),
    outgoing(b"x", ip={"ihl": 4}),
    outgoing(b"x", ip={"proto": 17}),
    outgoing(b"x", ip={"flags": "MF"}),
    outgoing(b"x", ip={"frag": 1}),
    outgoing(b"x", tcp={"dataofs": 4}),
    outgoing(b"x", tcp={"dataofs": 6}),             # 24-byte header in a 21-byte segment
    outgoing(b"x", ip={"len": 20 + 19}),            # segment shorter than a TCP header
    outgoing(b"x", ip={"len": 16}),                 # total length < IHL * 4
    outgoing(b"payload")[:-1],                      # shorter than its total length
    outgoing(b"x")[:13],
    outgoing(b"x", vlan=1)[:17],
    outgoing(b"x")[:14 + 19],
], ids=["arp", "ipv6", "qinq", "version", "ihl", "udp", "more-fragments", "fragment-offset",
        "dataofs-small", "dataofs-large", "short-segment", "total-below-header", "truncated",
        "short-ethernet", "short-vlan", "short-ip"])
def test_parse_tx_rejects(frame):
    assert parse_tx(frame) is None


# R31 ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("ack,rcv_nxt", [
    (RCV_NXT + 1, RCV_NXT + 1),                     # ahead: copied
    (RCV_NXT + 0x7fffffff, RCV_NXT + 0x7fffffff),   # the most a serial number can be ahead
    (RCV_NXT, RCV_NXT),                             # equal
    (RCV_NXT - 1, RCV_NXT),                         # behind: the stack acks an older segment
    (RCV_NXT + 0x80000000, RCV_NXT),                # half the space away counts as behind
])
def test_r31_ack_ahead_moves_rcv_nxt(m, ack, rcv_nxt):
    assert m.tx_frame(outgoing(ack=ack % (1 << 32))) == []
    assert m.entries[CONN].rcv_nxt == rcv_nxt % (1 << 32)


def test_r31_needs_ack_flag(m):
    assert m.tx_frame(outgoing(ack=RCV_NXT + 500, flags="")) == []
    assert m.entries[CONN].rcv_nxt == RCV_NXT
    assert m.tx_frame(outgoing(ack=RCV_NXT + 500, flags="S")) == []
    assert m.entries[CONN].rcv_nxt == RCV_NXT


def test_r31_across_the_wrap():
    m = Model(PARAMS)
    done(delegate(m, rcv_nxt=(1 << 32) - 5))
    m.tx_frame(outgoing(ack=3))
    assert m.entries[CONN].rcv_nxt == 3
    m.tx_frame(outgoing(ack=(1 << 32) - 2))
    assert m.entries[CONN].rcv_nxt == 3


def test_r31_moves_placement(m):
    # Bytes the stack acknowledged arrived another way: the next expected segment is after them.
    done(post_buffer(m, 0x1000, 100, tag=1))
    m.tx_frame(outgoing(ack=RCV_NXT + 10))
    check_legacy(m, segment(b"old", seq=RCV_NXT), LegacyReason.OUT_OF_SEQ, CONN)
    done(m.command(Command(Opcode.RESYNC, CONN, rcv_nxt=RCV_NXT + 10)))
    assert m.rx_frame(segment(b"new", seq=RCV_NXT + 10))[0].type == EventType.RX_PLACED


# R32 ---------------------------------------------------------------------------------------------

def test_r32_resync_when_ack_reaches_rcv_nxt(m):
    done(post_buffer(m, 0x1000, 100, tag=1))
    set_sync_req(m)
    assert m.tx_frame(outgoing(ack=RCV_NXT)) == [Event(EventType.RESYNC, CONN, rcv_nxt=RCV_NXT)]
    assert not m.entries[CONN].sync_req
    assert m.counters["RESYNCS"] == 1
    # Placement resumes.
    assert m.rx_frame(segment(b"abc"))[0].type == EventType.RX_PLACED


def test_r32_after_r31(m):
    # The stack got the bytes through legacy and acks past rcv_nxt: R31 copies, then R32 fires
    # with the new value.
    set_sync_req(m)
    assert m.tx_frame(outgoing(ack=RCV_NXT + 64)) == [
        Event(EventType.RESYNC, CONN, rcv_nxt=RCV_NXT + 64)]
    assert state(m)["rcv_nxt"] == RCV_NXT + 64 and not state(m)["sync_req"]


@pytest.mark.parametrize("ack,flags", [(RCV_NXT - 1, "A"), (RCV_NXT, ""), (RCV_NXT, "R")],
                         ids=["behind", "no-ack-flag", "rst-without-ack"])
def test_r32_no_resync(m, ack, flags):
    set_sync_req(m)
    assert m.tx_frame(outgoing(ack=ack, flags=flags)) == []
    assert m.entries[CONN].sync_req
    assert m.counters["RESYNCS"] == 0


def test_r32_only_with_sync_req(m):
    assert m.tx_frame(outgoing(ack=RCV_NXT)) == []
    assert m.tx_frame(outgoing(ack=RCV_NXT + 5)) == []
    assert m.counters["RESYNCS"] == 0


def test_r32_resync_of_entry_index():
    m = Model(PARAMS)
    done(delegate(m, index=3))
    m.entries[3].sync_req = True
    assert m.tx_frame(outgoing(ack=RCV_NXT)) == [Event(EventType.RESYNC, 3, rcv_nxt=RCV_NXT)]


# R33 ---------------------------------------------------------------------------------------------

def test_r33_copies_ack_window_and_end(m):
    m.tx_frame(outgoing(b"0123456789", seq=SND_NXT, ack=RCV_NXT - 3, window=777))
    assert state(m) == dict(rcv_nxt=RCV_NXT, snd_nxt=SND_NXT + 10, last_ack_sent=RCV_NXT - 3,
                            rcv_wnd=777, sync_req=False)
    assert m.command(Command(Opcode.QUERY, CONN))[0] == Event(
        EventType.STATE, CONN, valid=1, rcv_wnd=777, rcv_nxt=RCV_NXT, snd_nxt=SND_NXT + 10,
        last_ack_sent=RCV_NXT - 3)


def test_r33_last_ack_sent_needs_ack_flag(m):
    m.tx_frame(outgoing(b"x", ack=0x5555, flags="", window=9))
    assert state(m)["last_ack_sent"] == RCV_NXT
    assert state(m)["rcv_wnd"] == 9                # the window is copied whatever the flags
    assert state(m)["snd_nxt"] == SND_NXT + 1


@pytest.mark.parametrize("flags,extra", [("SA", 1), ("FA", 1), ("SFA", 2), ("RA", 0),
                                         ("PA", 0)])
def test_r33_syn_and_fin_take_a_sequence_number(m, flags, extra):
    m.tx_frame(outgoing(b"abc", seq=SND_NXT + 1, flags=flags))
    assert state(m)["snd_nxt"] == SND_NXT + 1 + 3 + extra


def test_r33_snd_nxt_never_goes_back(m):
    m.tx_frame(outgoing(bytes(100), seq=SND_NXT))
    assert state(m)["snd_nxt"] == SND_NXT + 100
    # A retransmission of the first half, and a pure ACK at an old sequence number.
    m.tx_frame(outgoing(bytes(50), seq=SND_NXT, window=1))
    m.tx_frame(outgoing(seq=SND_NXT + 20, window=2))
    assert state(m)["snd_nxt"] == SND_NXT + 100
    assert state(m)["rcv_wnd"] == 2
    # Exactly at snd_nxt: not more advanced, no change either way.
    m.tx_frame(outgoing(seq=SND_NXT + 100))
    assert state(m)["snd_nxt"] == SND_NXT + 100


def test_r33_serial_wrap():
    m = Model(PARAMS)
    done(delegate(m, snd_nxt=(1 << 32) - 4))
    m.tx_frame(outgoing(bytes(10), seq=(1 << 32) - 4, flags="FA"))
    assert m.entries[CONN].snd_nxt == 7
    m.tx_frame(outgoing(bytes(10), seq=(1 << 32) - 8))
    assert m.entries[CONN].snd_nxt == 7


# Frames that give no update or miss -------------------------------------------------------------

@pytest.mark.parametrize("frame", [
    segment(b"x", seq=1, ack=RCV_NXT + 9),                          # received direction
    outgoing(b"x", ack=RCV_NXT + 9, tcp={"sport": LOCAL_PORT + 1}),
    outgoing(b"x", ack=RCV_NXT + 9, tcp={"dport": REMOTE_PORT + 1}),
    outgoing(b"x", ack=RCV_NXT + 9, ip={"src": "10.0.0.9"}),
    outgoing(b"x", ack=RCV_NXT + 9, ip={"dst": "10.0.0.9"}),
    outgoing(b"x", ack=RCV_NXT + 9, ip={"flags": "MF"}),
    outgoing(b"x", ack=RCV_NXT + 9, ip={"frag": 3}),
    outgoing(b"x", ack=RCV_NXT + 9, ip={"proto": 17}),
    outgoing(b"x", ack=RCV_NXT + 9, vlan=1)[:-1],
    bytes(ether() / Dot1Q(vlan=1) / Dot1Q(vlan=2) / IP(src=LOCAL_IP, dst=REMOTE_IP)
          / TCP(sport=LOCAL_PORT, dport=REMOTE_PORT, ack=RCV_NXT + 9, flags="A") / b"qinq"),
], ids=["received-direction", "sport", "dport", "src-ip", "dst-ip", "more-fragments",
        "fragment-offset", "udp", "truncated", "qinq"])
def test_no_update(m, frame):
    m.entries[CONN].sync_req = True
    before = (snapshot(m), list(m.granted))
    assert m.tx_frame(frame) == []
    assert (snapshot(m), list(m.granted)) == before
    assert m.last_writes == []
    assert (m.counters["TX_FRAMES"], m.counters["TX_MATCHED"]) == (1, 0)


def test_vlan_tagged_frame_updates(m):
    m.tx_frame(outgoing(b"vl", ack=RCV_NXT + 2, vlan=5))
    assert state(m)["rcv_nxt"] == RCV_NXT + 2 and state(m)["snd_nxt"] == SND_NXT + 2


def test_tx_counters(m):
    m.tx_frame(outgoing(ack=RCV_NXT))
    m.tx_frame(bytes(ether() / ARP()))
    m.tx_frame(outgoing(b"x", ip={"ihl": 4}))
    m.tx_frame(outgoing(b"x", tcp={"dport": 1}))
    m.tx_frame(outgoing(b"y", vlan=3))
    assert (m.counters["TX_FRAMES"], m.counters["TX_MATCHED"]) == (5, 2)
    assert m.registers["TX_MATCHED"] == 2


def test_reclaimed_entry_is_not_updated(m):
    done(m.command(Command(Opcode.RECLAIM, CONN)))
    m.tx_frame(outgoing(b"late", ack=RCV_NXT + 50))
    assert m.counters["TX_MATCHED"] == 0
    assert m.entries[CONN].rcv_nxt == 0 and not m.entries[CONN].valid
