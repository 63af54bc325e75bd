"""RxParser + RxPacketBuffer against the reference parse (``tb/model/frame.py``).

Every case is ``descriptor == parse(frame)`` field by field, the frame's beats read back through
the packet buffer's read port equal to the frame, and ``buf_start`` continuing where the previous
frame ended. Frames are built with scapy; options the library would normalise are given as raw
bytes. Random stimulus is seeded from ``SEED`` (printed, so a failure replays with ``SEED=<n>``).
"""

import pytest
from amaranth.hdl import Module, Elaboratable
from amaranth.lib import wiring
from scapy.layers.inet import IP, TCP, UDP, IPOption, IPOption_Router_Alert
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Raw

from model.frame import parse, _tcp_options
from tcpdct.params import Params
from tcpdct.layouts import packet_buffer_depth, FrameClass
from tcpdct.rx_packet_buffer import RxPacketBuffer
from tcpdct.rx_parser import RxParser
from tcpdct.tcp_options import TcpOptionScan
from unit.simtools import (seeded_rng, run_simulation, stream_put, stream_get, idle, axis_beats,
                           key_ahead_monitor, key_next_monitor)


DESCRIPTOR_FIELDS = [
    "cls", "frame_len", "ip_csum_bad", "tcp_csum_bad", "local_ip", "remote_ip", "local_port",
    "remote_port", "seq", "ack", "window", "flags", "special", "payload_offset", "payload_len",
    "ts_present", "tsval", "tsecr",
]

NOP, EOL = b"\x01", b"\x00"


def ts_option(tsval, tsecr):
    return b"\x08\x0a" + tsval.to_bytes(4, "big") + tsecr.to_bytes(4, "big")


LINUX_TS = NOP + NOP + ts_option(0x11223344, 0xa5a5f00d)


def tcp_frame(payload=b"", *, options=b"", vlan=None, ip=None, tcp=None, pad_to=0):
    """An Ethernet/IPv4/TCP frame with raw TCP ``options`` (a multiple of 4 bytes), padded with
    0xa5 bytes (not zeros, so padding that leaks into a checksum is noticed) to ``pad_to``."""
    assert len(options) % 4 == 0
    packet = Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:02")
    if vlan is not None:
        packet = packet / Dot1Q(vlan=vlan)
    tcp_fields = dict(sport=40000, dport=5001, seq=0x89abcdef, ack=0x01234567, flags="PA",
                      window=0xfedc, dataofs=5 + len(options) // 4)
    tcp_fields.update(tcp or {})
    packet = (packet / IP(src="10.0.0.2", dst="10.0.0.1", **(ip or {}))
              / TCP(**tcp_fields) / Raw(options + payload))
    frame = bytes(packet)
    return frame + b"\xa5" * max(0, pad_to - len(frame))


def patched(frame, offset, value):
    return frame[:offset] + bytes([value]) + frame[offset + 1:]


def corner_frames(params):
    """``(name, frame, mac_error)`` for every classification path and option corner."""
    max_len = params.max_frame_bytes
    vlan_ts = tcp_frame(b"0123456789abcdef", options=LINUX_TS, vlan=7)
    plain = tcp_frame(b"hello, world")
    base_len = len(tcp_frame())
    cases = [
        ("plain", plain, False),
        ("vlan", tcp_frame(b"abc", vlan=100), False),
        ("vlan_ts_odd_payload", tcp_frame(b"x" * 33, options=LINUX_TS, vlan=4095), False),
        ("ts_linux", tcp_frame(b"payload!", options=LINUX_TS), False),
        ("ts_then_nops", tcp_frame(b"p", options=ts_option(1, 2) + NOP + NOP), False),
        ("ts_last_position", tcp_frame(b"q", options=NOP * 30 + ts_option(7, 8)), False),
        ("ts_twice", tcp_frame(b"r", options=ts_option(1, 2) + ts_option(3, 4) + NOP * 4), False),
        ("ts_then_mss", tcp_frame(b"s", options=LINUX_TS + b"\x02\x04\x05\xb4"), False),
        ("mss_sackok_ws", tcp_frame(options=b"\x02\x04\x05\xb4\x04\x02\x03\x03\x07\x00\x00\x00",
                                    tcp={"flags": "S"}), False),
        ("sack_perm_only", tcp_frame(options=b"\x04\x02\x01\x01"), False),
        ("eol_early", tcp_frame(b"t", options=NOP + EOL + b"\x02\x04\x05\xb4\x00\x00"), False),
        ("eol_first", tcp_frame(b"u", options=EOL + b"\xff\xff\xff"), False),
        ("ts_bad_length", tcp_frame(b"v", options=NOP + NOP + b"\x08\x08" + bytes(8)), False),
        ("ts_past_options", tcp_frame(b"w", options=NOP * 6 + ts_option(5, 6)[:6]), False),
        ("nop_40", tcp_frame(b"nop", options=NOP * 40), False),
        ("ip_options", tcp_frame(b"ipopt", ip={"options": [IPOption_Router_Alert()]}), False),
        ("largest_headers", tcp_frame(b"end", vlan=1, options=NOP * 28 + LINUX_TS,
                                      ip={"options": IPOption(NOP * 39 + EOL)}), False),
        ("bad_ip_checksum", tcp_frame(b"data", ip={"chksum": 0x1234}), False),
        ("bad_tcp_checksum", tcp_frame(b"data", options=LINUX_TS, tcp={"chksum": 0x1234}), False),
        ("both_checksums_bad", tcp_frame(b"data", ip={"chksum": 1}, tcp={"chksum": 2}), False),
        ("odd_payload", tcp_frame(b"y" * 33), False),
        ("padded_odd", tcp_frame(b"Z", pad_to=60), False),
        ("padded_empty", tcp_frame(pad_to=60), False),
        ("vlan_padded_odd", tcp_frame(b"Z", vlan=9, pad_to=64), False),
        ("zero_payload", tcp_frame(options=LINUX_TS), False),
        ("syn_fin_rst_urg", tcp_frame(b"f", tcp={"flags": "SFRU", "urgptr": 1}), False),
        ("first_fragment", tcp_frame(b"frag", ip={"flags": "MF"}, tcp={"chksum": 0x5555}), False),
        ("later_fragment", tcp_frame(b"frag", ip={"frag": 100}), False),
        ("later_fragment_bad_ip", tcp_frame(b"frag", ip={"frag": 100, "chksum": 3}), False),
        ("udp", bytes(Ether() / IP() / UDP() / Raw(b"udp")), False),
        ("udp_bad_ip_checksum", bytes(Ether() / IP(chksum=9) / UDP() / Raw(b"udp")), False),
        ("arp", bytes(Ether() / ARP()), False),
        ("ipv6", bytes(Ether() / IPv6() / TCP()), False),
        ("vlan_arp", bytes(Ether() / Dot1Q(vlan=3) / ARP()), False),
        ("q_in_q", bytes(Ether() / Dot1Q(vlan=1) / Dot1Q(vlan=2) / IP() / TCP()), False),
        ("ihl_4", patched(plain, 14, 0x44), False),
        ("version_6", patched(plain, 14, 0x65), False),
        ("total_length_below_ihl", tcp_frame(ip={"len": 16}), False),
        ("segment_below_20", tcp_frame(b"0123456789", ip={"len": 30}), False),
        ("doff_4", tcp_frame(b"abcd", tcp={"dataofs": 4}), False),
        ("doff_past_segment", tcp_frame(b"abcdefgh", tcp={"dataofs": 15}), False),
        ("total_length_past_frame", tcp_frame(b"short", ip={"len": 200}), False),
        ("empty", b"", False),
        ("runt_1", plain[:1], False),
        ("runt_13", plain[:13], False),
        ("mac_error", plain, True),
        ("mac_error_runt", plain[:5], True),
        ("max_size", tcp_frame(b"m" * (max_len - base_len)), False),
        ("oversize", tcp_frame(b"o" * (max_len + 1 - base_len)), False),
        ("oversize_long", tcp_frame(b"O" * (max_len + 300 - base_len)), False),
        ("oversize_mac_error", tcp_frame(b"E" * (max_len + 9 - base_len)), True),
        ("frame_len_saturates", tcp_frame(b"S" * (0x10000 + 5 - base_len)), False),
    ]
    for cut in (14, 17, 18, 20, 37, 38, 50, 57, 61, len(vlan_ts) - 1):
        cases.append((f"vlan_truncated_{cut}", vlan_ts[:cut], False))
    for cut in (33, 34, 40, 53):
        cases.append((f"truncated_{cut}", plain[:cut], False))
    return cases


def random_frame(rng, params):
    """A frame near the interesting paths: random headers and options, and sometimes a
    corrupted header byte, a cut, padding or a MAC error."""
    option_pool = [NOP, NOP + NOP + ts_option(rng.getrandbits(32), rng.getrandbits(32)),
                   ts_option(rng.getrandbits(32), 0), EOL, b"\x02\x04\x05\xb4", b"\x08\x0a"]
    options = b"".join(rng.choice(option_pool) for _ in range(rng.randrange(5)))[:40]
    options += NOP * (-len(options) % 4)
    ip = {}
    if rng.random() < 0.1:
        ip["options"] = IPOption(NOP * (4 * rng.randrange(1, 11) - 1) + EOL)
    if rng.random() < 0.1:
        ip["flags"] = "MF"
    payload = bytes(rng.getrandbits(8) for _ in range(rng.choice([0, 1, 2, 7, 64, 333, 420])))
    frame = tcp_frame(payload, options=options, ip=ip,
                      vlan=rng.randrange(4096) if rng.random() < 0.3 else None,
                      tcp={"flags": rng.getrandbits(8), "seq": rng.getrandbits(32)},
                      pad_to=rng.choice([0, 0, 60, 64]))
    if rng.random() < 0.3:
        offset = rng.randrange(min(len(frame), 90))
        frame = patched(frame, offset, rng.getrandbits(8))
    if rng.random() < 0.1:
        frame = frame[:rng.randrange(len(frame))]
    return frame, rng.random() < 0.05


class RxPath(Elaboratable):
    """The parser writing into the packet buffer, as the top level connects them."""

    def __init__(self, params, **parser_args):
        self.parser = RxParser(params, **parser_args)
        self.buffer = RxPacketBuffer(params)

    def elaborate(self, platform):
        m = Module()
        m.submodules.parser = self.parser
        m.submodules.buffer = self.buffer
        wiring.connect(m, self.parser.buffer, self.buffer.write)
        return m


def expected_descriptor(params, frame, mac_error):
    parsed = parse(frame, mac_error=mac_error, max_frame_bytes=params.max_frame_bytes)
    return {name: getattr(parsed, name) for name in DESCRIPTOR_FIELDS}


def got_descriptor(desc):
    got = {}
    for name in DESCRIPTOR_FIELDS:
        if name == "cls":
            got[name] = desc.cls.value
        elif name in ("local_ip", "remote_ip", "local_port", "remote_port"):
            got[name] = getattr(desc.key, name)
        else:
            got[name] = getattr(desc, name)
    return got


def stored_beats(params, frame):
    max_beats = -(-params.max_frame_bytes // params.data_bytes)
    return min(-(-len(frame) // params.data_bytes), max_beats)


def run_frames(params, cases, *, rng=None, idle_chance=0.0, stall_chance=0.0, empty_chance=0.0,
               descriptor_depth=8):
    """Send ``cases`` (``(name, frame, mac_error)``) through RxPath; check every descriptor and
    every stored beat, freeing each frame once it has been read back.

    Returns the number of cycles in which the MAC offered a beat and the parser refused it
    because the packet buffer was full, and because the descriptor FIFO was.
    """
    dut = RxPath(params, descriptor_depth=descriptor_depth)
    beat_bytes = params.data_bytes
    depth = packet_buffer_depth(params)
    refused = {"buffer_full": 0, "descriptors_full": 0}

    async def mac(ctx):
        for _, frame, mac_error in cases:
            for beat in axis_beats(frame, beat_bytes, user=mac_error):
                if rng and rng.random() < idle_chance:
                    await idle(ctx, rng.randrange(1, 4))
                if rng and rng.random() < empty_chance:
                    empty = {"data": rng.getrandbits(params.data_width), "keep": 0, "last": 0,
                             "user": 0}
                    await stream_put(ctx, dut.parser.rx, empty)
                await stream_put(ctx, dut.parser.rx, beat)

    async def engine(ctx):
        next_start = 0
        for number, (name, frame, mac_error) in enumerate(cases):
            if rng and rng.random() < stall_chance:
                await idle(ctx, rng.randrange(1, 40))
            if rng and number % 25 == 24:
                # Long enough for the MAC to fill any buffer the tests build.
                await idle(ctx, 400)
            desc = await stream_get(ctx, dut.parser.descriptor)
            assert got_descriptor(desc) == expected_descriptor(params, frame, mac_error), name
            beats = stored_beats(params, frame)
            assert (desc.buf_start, desc.stored_beats) == (next_start, beats), name
            stored = b""
            for i in range(beats):
                ctx.set(dut.buffer.read_addr, (desc.buf_start + i) % depth)
                await ctx.tick()
                stored += ctx.get(dut.buffer.read_data).to_bytes(beat_bytes, "little")
            kept = frame[:beats * beat_bytes]
            assert stored[:len(kept)] == kept, name
            ctx.set(dut.buffer.free_valid, 1)
            ctx.set(dut.buffer.free_beats, beats)
            await ctx.tick()
            ctx.set(dut.buffer.free_valid, 0)
            next_start = (next_start + beats) % depth
        assert ctx.get(dut.buffer.used_beats) == 0

    async def monitor(ctx):
        async for _, _, valid, ready, full in ctx.tick().sample(
                dut.parser.rx.valid, dut.parser.rx.ready, dut.buffer.write.full):
            if valid and not ready:
                refused["buffer_full" if full else "descriptors_full"] += 1

    announced = []

    # The key of a frame that turns out not to be TCP is 0 in its descriptor only.
    key_ahead = key_ahead_monitor(dut.parser.descriptor, dut.parser.key_ahead,
                                  dut.parser.key_ahead_valid, cycles=3, announced=announced,
                                  checked=lambda desc: desc.cls == FrameClass.TCP)

    announced_next = []
    key_next = key_next_monitor(dut.parser.descriptor, dut.parser.key_next,
                                dut.parser.key_next_valid, announced=announced_next,
                                checked=lambda desc: desc.cls == FrameClass.TCP)

    run_simulation(dut, mac, engine, monitors=[monitor, key_ahead, key_next])
    assert announced, "no descriptor reached an empty stream: key_ahead was never checked"
    assert announced_next, "no descriptor was behind another: key_next was never checked"
    return refused


@pytest.mark.parametrize("data_width", [64, 128, 512])
def test_corner_frames(data_width):
    params = Params(data_width=data_width)
    run_frames(params, corner_frames(params))


@pytest.mark.parametrize("data_width", [64, 512])
@pytest.mark.parametrize("descriptor_depth, limit", [(8, "descriptors_full"), (32, "buffer_full")])
def test_random_frames_with_idle_and_back_pressure(data_width, descriptor_depth, limit):
    # The smallest buffer the parameters allow; with a deep descriptor FIFO a slow engine lets
    # the buffer fill first, with the default depth the FIFO does.
    params = Params(data_width=data_width, max_frame_bytes=512, rx_buffer_bytes=2048)
    rng = seeded_rng(f"random-{data_width}-{descriptor_depth}")
    cases = [(f"random_{i}", *random_frame(rng, params)) for i in range(150)]
    refused = run_frames(params, cases, rng=rng, idle_chance=0.1, stall_chance=0.3,
                         empty_chance=0.05, descriptor_depth=descriptor_depth)
    # The back-pressure path under test was exercised, or the test proved less than it claims.
    assert refused[limit] > 0, refused


@pytest.mark.parametrize("data_width", [64, 512])
def test_back_to_back_full_rate(data_width):
    """Frames back to back, an engine that takes each descriptor at once and frees the frame:
    the MAC must never see ready low."""
    params = Params(data_width=data_width)
    rng = seeded_rng(f"rate-{data_width}")
    sizes = [60, 64, 65, 66, 120, 128, 200, 1514, 1522, 61]
    cases = []
    for i in range(60):
        size = rng.choice(sizes)
        # Below 66 bytes there is no room for Timestamps: a bare header, padded.
        frame = (tcp_frame(b"r" * (size - 66), options=LINUX_TS) if size >= 66
                 else tcp_frame(pad_to=size))
        cases.append((f"rate_{i}", frame, False))
    cases += [("oversize", tcp_frame(b"o" * 1600), False), ("tail", tcp_frame(), False)]
    dut = RxPath(params)
    beats = [beat for _, frame, mac_error in cases
             for beat in axis_beats(frame, params.data_bytes, user=mac_error)]
    cycles = []
    descriptors = []

    async def mac(ctx):
        for beat in beats:
            cycles.append(await stream_put(ctx, dut.parser.rx, beat))

    async def engine(ctx):
        ctx.set(dut.parser.descriptor.ready, 1)
        while len(descriptors) < len(cases):
            _, _, valid, desc = await ctx.tick().sample(dut.parser.descriptor.valid,
                                                        dut.parser.descriptor.payload)
            ctx.set(dut.buffer.free_valid, valid)
            if valid:
                descriptors.append(desc)
                ctx.set(dut.buffer.free_beats, desc.stored_beats)

    run_simulation(dut, mac, engine)
    assert len(beats) / sum(cycles) == 1.0
    for (name, frame, mac_error), desc in zip(cases, descriptors):
        assert got_descriptor(desc) == expected_descriptor(params, frame, mac_error), name


def test_option_scan_against_model():
    """The parallel option scan against the model's sequential walk, over option lists built
    from the kinds and lengths that matter (NOP, EOL, Timestamps and its broken forms)."""
    rng = seeded_rng("options")
    pieces = [NOP, EOL, b"\x08\x0a", b"\x08", b"\x02\x04\x05\xb4", b"\x08\x0b"]
    cases = []
    for _ in range(300):
        options = b""
        while len(options) < 40 and rng.random() < 0.85:
            options += rng.choice(pieces + [ts_option(rng.getrandbits(32), rng.getrandbits(32))])
        options = options[:40]
        length = rng.choice([len(options), rng.randrange(41)])
        cases.append((options.ljust(40, bytes([rng.getrandbits(8)])), length))
    dut = TcpOptionScan()

    async def testbench(ctx):
        # One list per cycle, as the parser presents them: the stages must not mix lists up.
        # After the tick that takes list n, the outputs are those of list n - (latency - 1).
        lag = dut.latency - 1
        for n, (options, length) in enumerate(cases + [(bytes(40), 0)] * lag):
            ctx.set(dut.options, int.from_bytes(options, "little"))
            ctx.set(dut.length, length)
            await ctx.tick()
            if n < lag:
                continue
            options, length = cases[n - lag]
            bad, ts = _tcp_options(options[:length])
            got = (ctx.get(dut.bad), ctx.get(dut.ts_present),
                   (ctx.get(dut.tsval), ctx.get(dut.tsecr)) if ctx.get(dut.ts_present) else None)
            assert got == (int(bad), int(ts is not None), ts), (options.hex(), length)

    run_simulation(dut, testbench)


@pytest.mark.parametrize("data_width", [64, 512])
def test_broken_packing_is_a_mac_error(data_width):
    """A hole in a middle beat's ``keep``, or a last beat whose bytes do not start at byte 0,
    breaks the stream's packing: the frame is dropped as a MAC error, and the next one is
    parsed as usual."""
    params = Params(data_width=data_width)
    full = (1 << params.data_bytes) - 1
    frame = tcp_frame(b"p" * 300, options=LINUX_TS)
    good = axis_beats(frame, params.data_bytes)
    hole = [dict(beat) for beat in good]
    hole[1]["keep"] = full & ~0b10
    shifted = [dict(beat) for beat in good]
    shifted[-1]["keep"] = (shifted[-1]["keep"] << 1) & full or 0b10
    dut = RxPath(params)
    descriptors = []

    async def mac(ctx):
        for beat in hole + good + shifted + good:
            await stream_put(ctx, dut.parser.rx, beat)

    async def engine(ctx):
        while len(descriptors) < 4:
            desc = await stream_get(ctx, dut.parser.descriptor)
            descriptors.append(got_descriptor(desc))
            ctx.set(dut.buffer.free_valid, 1)
            ctx.set(dut.buffer.free_beats, desc.stored_beats)
            await ctx.tick()
            ctx.set(dut.buffer.free_valid, 0)

    run_simulation(dut, mac, engine)
    assert descriptors[0]["cls"] == descriptors[2]["cls"] == FrameClass.MAC_ERROR.value
    assert descriptors[1] == descriptors[3] == expected_descriptor(params, frame, False)
