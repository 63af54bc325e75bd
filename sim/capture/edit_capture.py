"""Make reordered and lossy captures from a real one by editing the frames the local host received.

A real capture has neither reordering nor loss (``make_capture.sh`` records a clean veth link),
so the replay's out-of-sequence and resync paths (R16, R31–R33) need edited ones:

``--swap N``
    Swap the local host's received data segments N and N+1 (counted from 0 among the segments
    that carry payload to the local host): a reordering by one position. The two must be
    adjacent frames in the capture, so that no ACK of the local host sits between them and the
    capture's ACKs stay true.
``--retransmit-late N``
    Remove received data segment N and put it back right after the third frame the local host
    sent after it: a loss repaired by the retransmission that three duplicate ACKs trigger.

Every ACK the local host sent is then made what its stack could have said after the frames it
had received by then in the edited order: a cumulative ACK never beyond the first hole
(``clamp_acks``), with its TCP checksum fixed. In the edited capture, then, the stack sends
duplicate ACKs while a segment is missing, as a real receiver does; swaps of adjacent frames
change no ACK.

Usage (from the repository root)::

    PYTHONPATH=rtl:tb:sim python sim/capture/edit_capture.py [--swap N]... \\
        [--retransmit-late N]... [--local IP] INPUT.pcap OUTPUT.pcap

The committed captures were made with :data:`RECIPES` (``--recipe NAME``), which the unit tests
apply again and compare with the committed files.
"""

import argparse
import ipaddress
import sys
from pathlib import Path

from model.frame import Cls, parse, ones_complement_sum
from tcpdct.headers import TCP_SYN, TCP_ACK, TCP_FIN

from schedule import CapturedFrame, read_pcap, write_pcap, choose_local_ip


__all__ = ["RECIPES", "EditError", "data_segments", "swap", "retransmit_late", "clamp_acks",
           "edit", "main"]


CAPTURES = Path(__file__).resolve().parent.parent / "captures"

#: The edits of the committed captures, applied to ``tcp_stream.pcap``.
RECIPES = {
    "tcp_stream_reordered": {"swap": [7, 26, 45, 95, 109, 146], "retransmit_late": []},
    "tcp_stream_retransmitted": {"swap": [], "retransmit_late": [20, 70, 120, 160]},
}

#: Duplicate ACKs after which a sender retransmits (RFC 5681, fast retransmit).
DUP_ACKS = 3

_SEQ_MOD = 1 << 32


class EditError(ValueError):
    """An edit that does not fit the capture; the message says why."""


def _frame_len_limit(frame):
    return max(1522, len(frame.data))


def _parsed(frame):
    return parse(frame.data, max_frame_bytes=_frame_len_limit(frame))


def _received_by(frame, local_ip):
    p = _parsed(frame)
    return p.cls == Cls.TCP and p.local_ip == local_ip


def _sent_by(frame, local_ip):
    p = _parsed(frame)
    # parse() names fields from the receiver's side: a frame the local host sent has it remote.
    return p.cls == Cls.TCP and p.remote_ip == local_ip


def data_segments(frames, local_ip):
    """Positions in ``frames`` of the TCP segments with payload that ``local_ip`` received."""
    return [position for position, frame in enumerate(frames)
            if _received_by(frame, local_ip) and _parsed(frame).payload_len]


def swap(frames, local_ip, n):
    """``frames`` with received data segments ``n`` and ``n + 1`` swapped.

    Raises
    ------
    EditError
        If there are not that many segments, or another frame lies between the two.
    """
    positions = data_segments(frames, local_ip)
    if not 0 <= n < len(positions) - 1:
        raise EditError(f"Segment to swap must be in 0..{len(positions) - 2}, not {n!r}")
    a, b = positions[n], positions[n + 1]
    if b != a + 1:
        raise EditError(f"Data segments {n} and {n + 1} are frames {a + 1} and {b + 1}: a frame "
                        f"lies between them, so swapping them would falsify its ACK")
    edited = list(frames)
    edited[a], edited[b] = edited[b], edited[a]
    return edited


def retransmit_late(frames, local_ip, n):
    """``frames`` with received data segment ``n`` moved after the :data:`DUP_ACKS`-th frame the
    local host sent after it.

    Raises
    ------
    EditError
        If there is no such segment, or the local host sends too few frames after it.
    """
    positions = data_segments(frames, local_ip)
    if not 0 <= n < len(positions):
        raise EditError(f"Segment to retransmit must be in 0..{len(positions) - 1}, not {n!r}")
    edited = list(frames)
    lost = edited.pop(positions[n])
    sent = [position for position in range(positions[n], len(edited))
            if _sent_by(edited[position], local_ip)]
    if len(sent) < DUP_ACKS:
        raise EditError(f"Only {len(sent)} frame(s) are sent after data segment {n}; "
                        f"{DUP_ACKS} are needed before its retransmission")
    edited.insert(sent[DUP_ACKS - 1] + 1, lost)
    return edited


def _offset(seq, start):
    offset = (seq - start) % _SEQ_MOD
    return offset - _SEQ_MOD if offset >= 1 << 31 else offset


def _with_ack(frame, ack):
    """``frame`` (IPv4 + TCP, untagged or 802.1Q) with a new ACK number and TCP checksum."""
    data = bytearray(frame.data)
    ip = 18 if data[12:14] == b"\x81\x00" else 14
    ihl = (data[ip] & 0xf) * 4
    total = int.from_bytes(data[ip + 2:ip + 4], "big")
    tcp = ip + ihl
    data[tcp + 8:tcp + 12] = ack.to_bytes(4, "big")
    data[tcp + 16:tcp + 18] = b"\0\0"
    length = total - ihl
    pseudo = bytes(data[ip + 12:ip + 20]) + bytes([0, 6]) + length.to_bytes(2, "big")
    checksum = ~ones_complement_sum(bytes(data[tcp:tcp + length]),
                                    ones_complement_sum(pseudo)) & 0xffff
    data[tcp + 16:tcp + 18] = checksum.to_bytes(2, "big")
    return CapturedFrame(frame.number, bytes(data), frame.wire_len)


def clamp_acks(frames, local_ip):
    """``frames`` with every ACK the local host sent lowered to the first hole of what it had
    received by then (payload, SYN and FIN), where the ACK was beyond it.

    Returns
    -------
    (list of CapturedFrame, int)
        The frames and how many ACKs were changed.
    """
    # Per connection (local port, remote ip, remote port): the peer's stream start and the
    # received ranges as offsets from it.
    received = {}
    edited, changed = [], 0
    for frame in frames:
        p = _parsed(frame)
        if _received_by(frame, local_ip):
            key = (p.local_port, p.remote_ip, p.remote_port)
            if p.flags & TCP_SYN:
                received[key] = ((p.seq + 1) % _SEQ_MOD, [])
            elif key in received:
                start, ranges = received[key]
                first = _offset(p.seq, start)
                length = p.payload_len + bool(p.flags & TCP_FIN)
                if length:
                    ranges.append((first, first + length))
            edited.append(frame)
            continue
        if _sent_by(frame, local_ip) and p.flags & TCP_ACK:
            key = (p.remote_port, p.local_ip, p.local_port)
            if key in received:
                start, ranges = received[key]
                contiguous = 0
                for first, end in sorted(ranges):
                    if first > contiguous:
                        break
                    contiguous = max(contiguous, end)
                if _offset(p.ack, start) > contiguous:
                    frame = _with_ack(frame, (start + contiguous) % _SEQ_MOD)
                    changed += 1
        edited.append(frame)
    return edited, changed


def edit(frames, local_ip, *, swaps=(), late=()):
    """Apply ``swaps`` then ``late`` retransmissions (each by the segment numbers of the
    original capture, applied from the last backwards so that earlier numbers stay valid), then
    :func:`clamp_acks`. Returns ``(frames, acks_changed)``."""
    edited = list(frames)
    for n in sorted(swaps, reverse=True):
        edited = swap(edited, local_ip, n)
    for n in sorted(late, reverse=True):
        edited = retransmit_late(edited, local_ip, n)
    return clamp_acks(edited, local_ip)


def _parse_args(argv):
    parser = argparse.ArgumentParser(prog="edit_capture.py", description=__doc__.split("\n")[0])
    parser.add_argument("--swap", type=int, action="append", default=[], metavar="N",
                        help="swap received data segments N and N+1")
    parser.add_argument("--retransmit-late", type=int, action="append", default=[],
                        metavar="N", help=f"move received data segment N after the "
                                          f"{DUP_ACKS}rd frame the local host sends after it")
    parser.add_argument("--recipe", choices=sorted(RECIPES),
                        help="the edits of a committed capture (adds to --swap and "
                             "--retransmit-late)")
    parser.add_argument("--local", help="IPv4 address of the local host (default: the one "
                                        "receiving the most TCP payload)")
    parser.add_argument("input", type=Path)
    parser.add_argument("output", type=Path)
    return parser.parse_args(argv)


def main(argv=None):
    options = _parse_args(sys.argv[1:] if argv is None else argv)
    frames = read_pcap(options.input)
    local_ip = (choose_local_ip(frames) if options.local is None
                else int(ipaddress.IPv4Address(options.local)))
    swaps, late = list(options.swap), list(options.retransmit_late)
    if options.recipe:
        swaps += RECIPES[options.recipe]["swap"]
        late += RECIPES[options.recipe]["retransmit_late"]
    try:
        edited, changed = edit(frames, local_ip, swaps=swaps, late=late)
    except EditError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    write_pcap(options.output, edited)
    print(f"wrote {options.output}: {len(edited)} frames, {len(swaps)} swap(s), {len(late)} late "
          f"retransmission(s), {changed} ACK(s) lowered to the first hole")
    return 0


if __name__ == "__main__":
    sys.exit(main())
