"""Hostile input for the receive parser: headers that lie, truncated at every byte, garbage.

The RTL parser (with the packet buffer behind it, :class:`unit.test_rx_parser.RxPath`) runs in
Amaranth's simulator and its descriptor must equal ``tb/model/frame.py:parse`` field by field
for every frame; the frame's bytes must come back from the packet buffer, and nothing may hang
(the watchdog of :func:`unit.simtools.run_simulation`). Two kinds of tests:

- every header byte: a frame with the largest headers the parser reads (802.1Q, IPv4 options,
  TCP options) cut after each of its header bytes, and lengths, IHL and data offsets swept;
- property-based (hypothesis, ``HOSTILE_EXAMPLES`` examples, 25 by default): frames built from a valid segment and mangled by a random list
  of mutations — IPv4 total length larger and smaller than the frame (with the header checksum
  recomputed, so that the lie is what the parser must notice), bad checksums, IHL < 5, TCP data
  offset < 5 or past the segment, garbage EtherTypes, VLAN in VLAN, random protocol and fragment
  fields, runts, oversize frames, padding, random bytes anywhere in the headers, MAC errors.
  Each example is 10 to 30 frames back to back through one simulation, so that a frame that
  confuses the parser also shows in the next one. hypothesis prints the shrunk failing example.
"""

import os

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from model.frame import ones_complement_sum
from tcpdct.params import Params
from unit.test_rx_parser import tcp_frame, ts_option, run_frames, NOP, EOL

from scapy.layers.inet import IPOption


PARAMS_64 = Params(data_width=64)
PARAMS_512 = Params(data_width=512, max_frame_bytes=600, rx_buffer_bytes=2048)


def _ip_offset(frame):
    return 18 if frame[12:14] == b"\x81\x00" else 14


def _fix_ip_checksum(frame):
    """The frame with its IPv4 header checksum recomputed over IHL·4 bytes, when they are there,
    so that a header that lies about its lengths still passes the checksum."""
    ip = _ip_offset(frame)
    ihl = frame[ip] & 0xf if len(frame) > ip else 0
    if ihl < 5 or len(frame) < ip + 4 * ihl:
        return frame
    frame = bytearray(frame)
    frame[ip + 10:ip + 12] = b"\0\0"
    frame[ip + 10:ip + 12] = (0xffff - ones_complement_sum(frame[ip:ip + 4 * ihl])).to_bytes(2, "big")
    return bytes(frame)


def _patch(frame, offset, data):
    if offset >= len(frame):
        return frame
    return frame[:offset] + bytes(data)[:len(frame) - offset] + frame[offset + len(data):]


def largest_headers_frame(payload=b"0123456789"):
    """802.1Q, 40 bytes of IPv4 options, 40 of TCP options with Timestamps last: every header
    byte the parser reads."""
    return tcp_frame(payload, vlan=5, options=NOP * 28 + NOP + NOP + ts_option(7, 9),
                     ip={"options": IPOption(NOP * 39 + EOL)})


@pytest.mark.parametrize("params", [PARAMS_64, PARAMS_512], ids=["64", "512"])
def test_truncated_at_every_header_byte(params):
    """Cut after each header byte (and a few payload bytes) of a frame with the largest
    headers, and of a plain one: TRUNCATED or NOT_TCP at exactly the byte the model says."""
    cases = []
    for name, frame in (("largest", largest_headers_frame()),
                        ("plain", tcp_frame(b"abcdef", options=NOP + NOP + ts_option(1, 2)))):
        for cut in range(len(frame)):
            cases.append((f"{name}_cut_{cut}", frame[:cut], False))
    run_frames(params, cases)


def test_lying_lengths_swept():
    """Every IPv4 total length around the frame's, every IHL and every TCP data offset, with
    the header checksum made right each time."""
    frame = tcp_frame(b"x" * 40, options=NOP + NOP + ts_option(3, 4))
    ip = 14
    total = int.from_bytes(frame[ip + 2:ip + 4], "big")
    cases = []
    for length in list(range(0, 45)) + list(range(total - 30, total + 30)) + [0xffff]:
        cases.append((f"total_length_{length}",
                      _fix_ip_checksum(_patch(frame, ip + 2, length.to_bytes(2, "big"))), False))
    for ihl in range(16):
        cases.append((f"ihl_{ihl}", _fix_ip_checksum(_patch(frame, ip, [0x40 | ihl])), False))
    for doff in range(16):
        cases.append((f"doff_{doff}", _fix_ip_checksum(_patch(frame, ip + 32, [doff << 4])),
                      False))
    run_frames(PARAMS_64, cases)


# Property-based ------------------------------------------------------------------------------

_MUTATIONS = ("total_length", "ihl", "version", "doff", "ethertype", "vlan_in_vlan", "protocol",
              "fragment", "ip_checksum", "tcp_checksum", "truncate", "runt", "oversize", "pad",
              "byte", "mac_error")


@st.composite
def hostile_frames(draw, max_frame_bytes):
    options = draw(st.lists(st.sampled_from([NOP, EOL, NOP + NOP + ts_option(5, 6),
                                             ts_option(1, 2), b"\x02\x04\x05\xb4", b"\x08\x0a",
                                             b"\x03\x03\x07"]), max_size=6))
    options = b"".join(options)[:40]
    options += NOP * (-len(options) % 4)
    ip = {}
    if draw(st.booleans()) and draw(st.booleans()):
        ip["options"] = IPOption(NOP * (4 * draw(st.integers(1, 10)) - 1) + EOL)
    payload = draw(st.binary(max_size=200))
    frame = tcp_frame(payload, options=options, ip=ip,
                      vlan=draw(st.one_of(st.none(), st.integers(0, 4095))),
                      tcp={"flags": draw(st.integers(0, 255))})
    mac_error = False
    ip_at = _ip_offset(frame)
    for mutation in draw(st.lists(st.sampled_from(_MUTATIONS), min_size=1, max_size=3)):
        fix = draw(st.booleans())
        if mutation == "total_length":
            frame = _patch(frame, ip_at + 2, draw(st.integers(0, 0xffff)).to_bytes(2, "big"))
        elif mutation == "ihl":
            frame = _patch(frame, ip_at, [0x40 | draw(st.integers(0, 15))])
        elif mutation == "version":
            frame = _patch(frame, ip_at, [draw(st.integers(0, 15)) << 4 | 5])
        elif mutation == "doff":
            tcp_at = ip_at + 4 * (frame[ip_at] & 0xf if len(frame) > ip_at else 5)
            frame = _patch(frame, tcp_at + 12, [draw(st.integers(0, 15)) << 4])
        elif mutation == "ethertype":
            frame = _patch(frame, 12, draw(st.integers(0, 0xffff)).to_bytes(2, "big"))
        elif mutation == "vlan_in_vlan":
            frame = frame[:12] + b"\x81\x00\x00\x07" + frame[12:]
        elif mutation == "protocol":
            frame = _patch(frame, ip_at + 9, [draw(st.integers(0, 255))])
        elif mutation == "fragment":
            frame = _patch(frame, ip_at + 6, draw(st.integers(0, 0xffff)).to_bytes(2, "big"))
        elif mutation == "ip_checksum":
            frame = _patch(frame, ip_at + 10, draw(st.binary(min_size=2, max_size=2)))
            fix = False
        elif mutation == "tcp_checksum":
            if len(frame) > ip_at:
                frame = _patch(frame, ip_at + 4 * (frame[ip_at] & 0xf) + 16,
                               draw(st.binary(min_size=2, max_size=2)))
        elif mutation == "truncate":
            frame = frame[:draw(st.integers(0, len(frame)))]
        elif mutation == "runt":
            frame = draw(st.binary(max_size=17))
        elif mutation == "oversize":
            frame = frame + bytes(max(0, max_frame_bytes + draw(st.integers(-2, 40))
                                      - len(frame)))
        elif mutation == "pad":
            frame = frame + draw(st.binary(min_size=1, max_size=30))
        elif mutation == "byte":
            if frame:
                offset = draw(st.integers(0, min(len(frame), 100) - 1))
                frame = _patch(frame, offset, [draw(st.integers(0, 255))])
        elif mutation == "mac_error":
            mac_error = True
        if fix:
            frame = _fix_ip_checksum(frame)
    return frame, mac_error


#: Examples per property test; ``HOSTILE_EXAMPLES`` raises it for a longer search.
EXAMPLES = int(os.environ.get("HOSTILE_EXAMPLES", "25"))


# Building a simulation costs more than running a frame through it: few examples of many frames.
@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(hostile_frames(PARAMS_64.max_frame_bytes), min_size=10, max_size=30))
def test_hostile_frames_match_model(frames):
    run_frames(PARAMS_64, [(f"frame_{number}", frame, mac_error)
                           for number, (frame, mac_error) in enumerate(frames)])


@settings(max_examples=max(1, EXAMPLES // 3), deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(hostile_frames(PARAMS_512.max_frame_bytes), min_size=10, max_size=30))
def test_hostile_frames_match_model_512(frames):
    run_frames(PARAMS_512, [(f"frame_{number}", frame, mac_error)
                            for number, (frame, mac_error) in enumerate(frames)])
