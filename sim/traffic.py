"""The bench's synthetic traffic: frames of one size, or IMIX, on delegated connections and not.

:mod:`bench` measures the core on it, and :mod:`fast_harness` trains the compiler's
profile-guided optimisation of the harness on a little of it.

Traffic:

``placed``
    Every frame in sequence on one delegated connection: all RX_PLACED.
``spread``
    Every entry of the table delegated, frames round-robin over them, each connection in
    sequence: all RX_PLACED.
``legacy``
    Every other frame of a connection that is not delegated: half LEGACY (``NO_MATCH``), half
    RX_PLACED on one delegated connection.

Each received frame comes with a transmitted frame of the same size, of a connection that is not
delegated, so its transmit update is looked up (and competes with the received frames for the
receive engine) without changing any entry. Frame sizes are Ethernet frame sizes *with* the
4-byte FCS, which the core never sees: a 64-byte frame is 60 bytes on ``s_axis_rx``, Ethernet,
IPv4 and TCP headers without options (54 bytes) and 6 bytes of payload. IMIX is 7:4:1 of 64,
576 and 1518 in a fixed order.
"""

import struct

from tcpdct.records import Command, Opcode, EventType
from model.frame import ones_complement_sum

from harness_script import HarnessScript


__all__ = ["SIZES", "TRAFFIC", "cell_frames", "cell_script"]


SIZES = ("64", "128", "256", "576", "1518", "imix")
TRAFFIC = ("placed", "spread", "legacy")

#: The IMIX cycle: 7 x 64, 4 x 576 and 1 x 1518 bytes, interleaved so that large frames do not
#: bunch up.
IMIX_CYCLE = (64, 576, 64, 64, 576, 64, 1518, 64, 576, 64, 64, 576)

FCS_BYTES = 4
HEADER_BYTES = 14 + 20 + 20

LOCAL_IP, REMOTE_IP, OTHER_IP = 0x0a00_0002, 0x0a00_0107, 0x0a00_0209
LOCAL_PORT, REMOTE_PORT_BASE, LEGACY_PORT, TX_PORT = 5001, 40000, 39000, 38000
LOCAL_MAC, REMOTE_MAC = bytes.fromhex("020000000002"), bytes.fromhex("020000000001")
ISN = 0x1234_0000

LEGACY_BASE, LEGACY_BUFFER_BYTES = 0x8000_0000, 2048
USER_BASE, USER_STRIDE, USER_BUFFER_BYTES = 0x1_0000_0000, 0x10_0000, 16384


def _frame(src_ip, dst_ip, sport, dport, seq, payload_len, src_mac, dst_mac):
    """An Ethernet / IPv4 / TCP (ACK, no options) frame with correct checksums."""
    payload = bytes((seq + i) & 0xff for i in range(payload_len))
    total = 20 + 20 + payload_len
    ip = bytearray(struct.pack(">BBHHHBBHII", 0x45, 0, total, seq & 0xffff, 0x4000, 64, 6, 0,
                               src_ip, dst_ip))
    struct.pack_into(">H", ip, 10, ~ones_complement_sum(ip) & 0xffff)
    tcp = bytearray(struct.pack(">HHIIBBHHH", sport, dport, seq, 0, 5 << 4, 0x10, 0xffff, 0, 0))
    pseudo = struct.pack(">IIBBH", src_ip, dst_ip, 0, 6, 20 + payload_len)
    struct.pack_into(">H", tcp, 16, ~ones_complement_sum(pseudo + tcp + payload) & 0xffff)
    return dst_mac + src_mac + b"\x08\x00" + bytes(ip) + bytes(tcp) + payload


def _sizes(size, count):
    if size == "imix":
        count = -(-count // len(IMIX_CYCLE)) * len(IMIX_CYCLE)
        return [IMIX_CYCLE[n % len(IMIX_CYCLE)] for n in range(count)]
    return [int(size)] * count


def cell_frames(params, size, traffic, count):
    """The frames of one cell and what each must produce.

    Returns
    -------
    rx : list of bytes
    expected : list of EventType
        The terminal event of each RX frame.
    tx : list of bytes
    delegated : int
        How many connections (entries 0 to ``delegated - 1``) are delegated.
    """
    sizes = _sizes(size, count)
    delegated = params.n_entries if traffic == "spread" else 1
    seqs = {}
    rx, expected, tx = [], [], []
    for number, wire in enumerate(sizes):
        payload = wire - FCS_BYTES - HEADER_BYTES
        if traffic == "legacy" and number % 2:
            sport, kind = LEGACY_PORT, EventType.LEGACY
        else:
            entry = number % delegated if traffic == "spread" else 0
            sport, kind = REMOTE_PORT_BASE + entry, EventType.RX_PLACED
        seq = seqs.get(sport, ISN)
        seqs[sport] = seq + payload
        rx.append(_frame(REMOTE_IP, LOCAL_IP, sport, LOCAL_PORT, seq, payload,
                         REMOTE_MAC, LOCAL_MAC))
        expected.append(kind)
        tx.append(_frame(LOCAL_IP, OTHER_IP, LOCAL_PORT, TX_PORT, 0x5000_0000 + number * payload,
                         payload, LOCAL_MAC, REMOTE_MAC))
    return rx, expected, tx, delegated


def cell_script(params, rx, tx, delegated):
    """The harness script of a cell: delegate the connections, keep every buffer queue full,
    stream ``rx`` and ``tx`` at once (step 1), and wait until all of it is done."""
    script = HarnessScript()
    script.log_writes(False)
    script.timeout(2_000_000)
    for entry in range(delegated):
        script.command(Command(Opcode.DELEGATE, entry, local_ip=LOCAL_IP, remote_ip=REMOTE_IP,
                               local_port=LOCAL_PORT, remote_port=REMOTE_PORT_BASE + entry,
                               rcv_nxt=ISN, snd_nxt=0x1000_0000, rcv_wnd=0xffff))
    script.wait_cmd_idle()
    for entry in range(delegated):
        script.auto_user(entry, USER_BASE + entry * USER_STRIDE, USER_BUFFER_BYTES,
                         params.buffers_per_conn)
    script.auto_legacy(LEGACY_BASE, LEGACY_BUFFER_BYTES, params.legacy_ring_depth)
    script.wait_cmd_idle()
    script.step(1)
    for frame in rx:
        script.rx(frame)
    for frame in tx:
        script.tx(frame)
    script.wait_terminal(len(rx))
    script.wait_tx_out(len(tx))
    script.wait_cmd_idle()
    script.idle(64)
    return script
