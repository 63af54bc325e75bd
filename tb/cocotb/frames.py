"""Frames for the system testbench, built with scapy and handed to the benches as bytes.

A :class:`Conn` is one TCP connection seen from the core's side: frames it receives come from
``remote`` to ``local``, frames the host stack transmits go the other way (R2). Linux puts the
Timestamps option (NOP, NOP, TS) on every segment, so every segment built here carries it unless
asked not to: that is the traffic the fast path must handle.
"""

from dataclasses import dataclass
import ipaddress

from scapy.layers.l2 import Ether, Dot1Q, ARP
from scapy.layers.inet import IP, TCP, UDP, IPOption_NOP
from scapy.packet import Raw

from tcpdct.records import Command, Opcode


__all__ = ["Conn", "MIN_FRAME_BYTES", "pad", "corrupt_ip_checksum", "corrupt_tcp_checksum",
           "udp_frame", "arp_frame", "ipv6_frame", "tcp_segment", "IP_OPTIONS_NOP"]


#: Shortest Ethernet frame without FCS; a MAC pads shorter ones with zeros up to this.
MIN_FRAME_BYTES = 60

_ETH_BYTES = 14
_VLAN_BYTES = 4


def _ip_int(address):
    return int(ipaddress.IPv4Address(address))


def pad(frame, length=MIN_FRAME_BYTES):
    """The frame with zero bytes appended up to ``length``, as a MAC delivers short frames."""
    frame = bytes(frame)
    return frame + bytes(max(0, length - len(frame)))


def _ip_offset(frame):
    ethertype = int.from_bytes(frame[12:14], "big")
    return _ETH_BYTES + (_VLAN_BYTES if ethertype == 0x8100 else 0)


def _flip_checksum(frame, offset):
    # XOR with 0x00ff changes the value by less than 0xffff, so the one's complement sum can
    # never come out right again (0x0000 and 0xffff are the same number in that arithmetic).
    frame = bytearray(frame)
    frame[offset + 1] ^= 0xff
    return bytes(frame)


def corrupt_ip_checksum(frame):
    """The frame with a wrong IPv4 header checksum."""
    return _flip_checksum(frame, _ip_offset(frame) + 10)


def corrupt_tcp_checksum(frame):
    """The frame with a wrong TCP checksum."""
    ip = _ip_offset(frame)
    ihl = frame[ip] & 0xf
    return _flip_checksum(frame, ip + 4 * ihl + 16)


def tcp_segment(src_mac, dst_mac, src_ip, dst_ip, sport, dport, seq, payload=b"", *, ack=0,
                flags="A", window=0xffff, ts=(0x1000, 0x2000), options=None, ip_options=None,
                ip_flags=0, frag=0, vlan=None, urgent=0):
    """One Ethernet II / IPv4 / TCP frame as bytes, padded to the Ethernet minimum.

    Parameters
    ----------
    ts : tuple of int or None
        ``(tsval, tsecr)`` of a Linux-style NOP, NOP, Timestamps option; ``None`` for none.
    options : list or None
        scapy TCP options that replace the default Timestamps option when given.
    ip_options : list or None
        scapy IPv4 options (making the header longer than 20 bytes).
    ip_flags, frag : int
        IPv4 flags (``1`` = MF) and fragment offset in 8-byte units.
    vlan : int or None
        VLAN ID of an 802.1Q tag, or ``None`` for an untagged frame.
    """
    if options is None:
        options = [("NOP", None), ("NOP", None), ("Timestamp", ts)] if ts is not None else []
    eth = Ether(src=src_mac, dst=dst_mac)
    if vlan is not None:
        eth = eth / Dot1Q(vlan=vlan)
    ip = IP(src=src_ip, dst=dst_ip, flags=ip_flags, frag=frag, options=ip_options or [])
    tcp = TCP(sport=sport, dport=dport, seq=seq % 2**32, ack=ack % 2**32, flags=flags, window=window,
              options=options, urgptr=urgent)
    return pad(eth / ip / tcp / Raw(bytes(payload)))


def udp_frame(length=100, *, src_ip="10.0.0.9", dst_ip="10.0.0.2"):
    """An IPv4/UDP frame of ``length`` bytes in all: not TCP."""
    head = Ether() / IP(src=src_ip, dst=dst_ip) / UDP(sport=53, dport=5353)
    payload = bytes((3 * i) & 0xff for i in range(max(0, length - len(head))))
    return pad(head / Raw(payload))


def arp_frame():
    """An ARP request: not IPv4."""
    return pad(Ether(dst="ff:ff:ff:ff:ff:ff") / ARP(pdst="10.0.0.2"))


def ipv6_frame(length=90):
    """A frame with the IPv6 EtherType and arbitrary contents: not IPv4."""
    header = bytes.fromhex("020000000002" "020000000001" "86dd")
    return header + bytes((7 * i) & 0xff for i in range(length - len(header)))


@dataclass(frozen=True)
class Conn:
    """One TCP connection from the point of view of the host behind the core.

    Parameters
    ----------
    local_ip, remote_ip : str
        Dotted IPv4 addresses of this host and of the peer.
    local_port, remote_port : int
        TCP ports of this host and of the peer.
    local_mac, remote_mac : str
        Ethernet addresses (the core does not look at them).
    """

    local_ip:    str = "10.0.0.2"
    remote_ip:   str = "10.0.1.7"
    local_port:  int = 5001
    remote_port: int = 40000
    local_mac:   str = "02:00:00:00:00:02"
    remote_mac:  str = "02:00:00:00:00:01"

    def delegate(self, index, rcv_nxt, *, snd_nxt=0x1000_0000, rcv_wnd=0xffff):
        """The DELEGATE command that hands this connection to the core at ``index``."""
        return Command(Opcode.DELEGATE, index,
                       local_ip=_ip_int(self.local_ip), remote_ip=_ip_int(self.remote_ip),
                       local_port=self.local_port, remote_port=self.remote_port,
                       rcv_nxt=rcv_nxt, snd_nxt=snd_nxt, rcv_wnd=rcv_wnd)

    def rx(self, seq, payload=b"", **kwargs):
        """A segment the peer sends to this host (see :func:`tcp_segment` for ``kwargs``)."""
        return tcp_segment(self.remote_mac, self.local_mac, self.remote_ip, self.local_ip,
                           self.remote_port, self.local_port, seq, payload, **kwargs)

    def tx(self, seq, payload=b"", **kwargs):
        """A segment this host's stack transmits to the peer."""
        return tcp_segment(self.local_mac, self.remote_mac, self.local_ip, self.remote_ip,
                           self.local_port, self.remote_port, seq, payload, **kwargs)


#: A NOP-only IPv4 option list: four NOPs make the IPv4 header 24 bytes long.
IP_OPTIONS_NOP = [IPOption_NOP()] * 4
