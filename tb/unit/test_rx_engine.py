"""RxEngine (receive engine, command unit, state and buffer RAMs) with the match CAM, against the
golden model.

Every case is ``rtl_run(operations) == reference(operations)``: the same frames and commands go
to the RTL and to :class:`model.Model`, and for each operation the job kind, the host writes the
job describes, the packet-buffer range it frees and the events (``first`` on exactly the first
one) must be equal. A WRITE job is turned into writes the way the DMA writer executes it:
``frame[src_offset:]`` poured into ``segments[:n_segments]`` in order; the model's
``last_writes`` are the reference. DCT state is compared through QUERY and RECLAIM events.

Frames are built with scapy and described by the reference parse (``model.frame.parse``), so the
parser is not under test here. Random stimulus is seeded from ``SEED`` (printed, so a failure
replays with ``SEED=<n>``).
"""

import ipaddress
from typing import NamedTuple

import pytest
from amaranth.hdl import Elaboratable, Module
from scapy.layers.inet import IP, TCP, UDP, IPOption_Router_Alert
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Raw

from model import Model, parse
from tcpdct.layouts import (JobKind, command_layout, rx_descriptor_layout,
                            packet_buffer_depth)
from tcpdct.match_cam import MatchCam
from tcpdct.params import Params
from tcpdct.records import (NO_CONNECTION, Command, Event, EventType, Opcode, CmdStatus,
                            LegacyReason, DropReason)
from tcpdct.rx_engine import RxEngine
from unit.simtools import seeded_rng, run_simulation, stream_put, idle


SMALL = Params(n_entries=4, buffers_per_conn=4, legacy_ring_depth=4)

TOP_OF_MEMORY = 1 << 64


# Harness -----------------------------------------------------------------------------------------

class EngineWithCam(Elaboratable):
    """The receive engine with the match CAM's lookup port 0 and write port, as ``tcpdct.top``
    wires them."""

    def __init__(self, params):
        self.engine = RxEngine(params)
        self.cam = MatchCam(params.n_entries, n_lookup=1)

    def elaborate(self, platform):
        m = Module()
        m.submodules.rx_engine = engine = self.engine
        m.submodules.match_cam = cam = self.cam
        m.d.comb += [
            cam.lookup_key_0.eq(engine.cam_key),
            engine.cam_hit.eq(cam.lookup_hit_0),
            engine.cam_index.eq(cam.lookup_index_0),
            engine.cam_valid.eq(cam.valid),
            cam.write_en.eq(engine.cam_write_en),
            cam.write_index.eq(engine.cam_write_index),
            cam.write_key.eq(engine.cam_write_key),
            cam.write_valid.eq(engine.cam_write_valid),
        ]
        return m


class Rx(NamedTuple):
    """A received frame as an operation; commands are :class:`Command` records or raw ints."""
    frame: bytes
    mac_error: bool = False


class Outcome(NamedTuple):
    """What one operation did, in terms both sides can produce."""
    kind: JobKind
    writes: list        # (host address, bytes) in DMA order
    frees: tuple        # (buf_start, frame_beats) of a frame's job; None for a command
    events: list


def descriptors(params, frames):
    """The descriptor of each frame, as the parser would hand it over; ``buf_start`` advances
    like the packet buffer's write pointer."""
    depth = packet_buffer_depth(params)
    max_beats = -(-params.max_frame_bytes // params.data_bytes)
    buf_start = 0
    result = []
    for rx in frames:
        p = parse(rx.frame, mac_error=rx.mac_error, max_frame_bytes=params.max_frame_bytes)
        beats = min(max(1, -(-len(rx.frame) // params.data_bytes)), max_beats)
        result.append({
            "cls": p.cls, "frame_len": p.frame_len, "buf_start": buf_start,
            "stored_beats": beats, "ip_csum_bad": p.ip_csum_bad, "tcp_csum_bad": p.tcp_csum_bad,
            "key": {"local_ip": p.local_ip, "remote_ip": p.remote_ip,
                    "local_port": p.local_port, "remote_port": p.remote_port},
            "seq": p.seq, "ack": p.ack, "window": p.window, "flags": p.flags,
            "special": p.special, "payload_offset": p.payload_offset,
            "payload_len": p.payload_len, "ts_present": p.ts_present, "tsval": p.tsval,
            "tsecr": p.tsecr,
        })
        buf_start = (buf_start + beats) % depth
    return result


def command_word(command):
    return command if isinstance(command, int) else command.pack()


def describe(op):
    if isinstance(op, Rx):
        p = parse(op.frame, mac_error=op.mac_error)
        return (f"frame len={len(op.frame)} cls={p.cls} seq={p.seq:#x} flags={p.flags:#x} "
                f"payload={p.payload_len} port={p.remote_port}")
    return repr(op) if not isinstance(op, int) else f"raw command {op:#x}"


def reference(params, ops):
    """Outcomes of ``ops`` on the golden model, and the model afterwards."""
    model = Model(params)
    frame_descriptors = iter(descriptors(params, [op for op in ops if isinstance(op, Rx)]))
    outcomes = []
    for op in ops:
        if isinstance(op, Rx):
            events = model.rx_frame(op.frame, mac_error=op.mac_error)
            desc = next(frame_descriptors)
            kind = JobKind.DISCARD if events[0].type == EventType.DROP else JobKind.WRITE
            frees = (desc["buf_start"], desc["stored_beats"])
        else:
            events = model.command(op)
            kind, frees = JobKind.FENCE, None
        outcomes.append(Outcome(kind, list(model.last_writes), frees, events))
    return outcomes, model


def job_outcome(job, rx, events):
    """An RTL job as the writes the DMA writer would make of it."""
    kind = JobKind(job.kind)
    if kind == JobKind.FENCE:
        return Outcome(kind, [], None, events)
    writes = []
    if kind == JobKind.WRITE:
        offset = job.src_offset
        for number in range(job.n_segments):
            segment = job.segments[number]
            writes.append((segment.address, rx.frame[offset:offset + segment.length]))
            offset += segment.length
    return Outcome(kind, writes, (job.buf_start, job.frame_beats), events)


def rtl_run(params, ops, *, rng=None, concurrent=False, idle_prob=0.3, ready_prob=0.5):
    """Run ``ops`` through the engine; the operations in the order the engine took them, and
    their outcomes.

    Without ``rng`` every input is offered back to back and every output always ready. With it,
    inputs pause and outputs are back-pressured at random. ``concurrent`` offers frames and
    commands on their two streams independently, so that the engine's arbitration decides the
    order; the order is then read back from the jobs (a FENCE is the next command, any other
    job the next frame).
    """
    dut = EngineWithCam(params)
    engine = dut.engine
    frames = [op for op in ops if isinstance(op, Rx)]
    commands = [op for op in ops if not isinstance(op, Rx)]
    frame_descriptors = descriptors(params, frames)
    descriptor_layout = rx_descriptor_layout(params)
    jobs, events = [], []

    async def pause(ctx):
        while rng is not None and rng.random() < idle_prob:
            await idle(ctx, rng.randint(1, 4))

    async def put_frame(ctx, number):
        await pause(ctx)
        await stream_put(ctx, engine.descriptor,
                         descriptor_layout.const(frame_descriptors[number]))

    async def put_command(ctx, command):
        await pause(ctx)
        await stream_put(ctx, engine.command, command_layout.from_bits(command_word(command)))

    async def drive_in_order(ctx):
        frame_number = 0
        for op in ops:
            if isinstance(op, Rx):
                await put_frame(ctx, frame_number)
                frame_number += 1
            else:
                await put_command(ctx, op)

    async def drive_frames(ctx):
        for number in range(len(frames)):
            await put_frame(ctx, number)

    async def drive_commands(ctx):
        for command in commands:
            await put_command(ctx, command)

    def collector(stream, received, what):
        async def monitor(ctx):
            held = None
            while True:
                ready = rng is None or rng.random() < ready_prob
                ctx.set(stream.ready, ready)
                _, _, valid, payload = await ctx.tick().sample(stream.valid, stream.payload)
                if held is not None:
                    # R60: an offered payload stays offered, unchanged, until it is taken.
                    assert valid and payload.as_bits() == held, \
                        f"{what} withdrawn or changed before its transfer"
                held = None
                if valid and ready:
                    received.append(payload)
                elif valid:
                    held = payload.as_bits()
        return monitor

    async def until_drained(ctx):
        while len(jobs) < len(ops):
            await ctx.tick()
        # The last operation's events are pending from its decision until the last one leaves.
        while ctx.get(engine.event.valid):
            await ctx.tick()
        await idle(ctx, 4)
        assert not ctx.get(engine.job.valid) and not ctx.get(engine.event.valid)

    drivers = (drive_frames, drive_commands) if concurrent else (drive_in_order,)
    run_simulation(dut, *drivers, until_drained,
                   monitors=[collector(engine.job, jobs, "job"),
                             collector(engine.event, events, "event")],
                   max_cycles=1000 + 60 * len(ops))

    assert len(jobs) == len(ops), f"{len(ops)} operations gave {len(jobs)} jobs"
    groups = []
    for payload in events:
        if payload.first:
            groups.append([])
        assert groups, "the first event the engine sent is not marked first"
        groups[-1].append(Event.unpack(payload.event.as_bits()))
    assert len(groups) == len(ops), f"{len(ops)} operations gave {len(groups)} event groups"

    taken, outcomes = [], []
    frame_iter, command_iter = iter(frames), iter(commands)
    for job, group in zip(jobs, groups):
        if JobKind(job.kind) == JobKind.FENCE:
            taken.append(next(command_iter))
            outcomes.append(job_outcome(job, None, group))
        else:
            rx = next(frame_iter)
            taken.append(rx)
            outcomes.append(job_outcome(job, rx, group))
    return taken, outcomes


def check(params, ops, **kwargs):
    """``rtl_run == reference``, operation by operation; the reference outcomes and model."""
    taken, got = rtl_run(params, ops, **kwargs)
    expected, model = reference(params, taken)
    for number, (op, rtl, ref) in enumerate(zip(taken, got, expected)):
        assert rtl == ref, (f"operation {number}: {describe(op)}\n"
                            f"  rtl:   {rtl}\n  model: {ref}")
    return expected, model


# Stimulus ----------------------------------------------------------------------------------------

class Conn(NamedTuple):
    """A connection from the local host's point of view."""
    remote_ip: str
    remote_port: int
    local_ip: str = "10.0.0.1"
    local_port: int = 5001


CONNS = [Conn("10.0.0.2", 40000), Conn("10.0.0.3", 40000), Conn("10.0.0.2", 40001),
         Conn("192.168.7.9", 443, "10.0.0.7", 8080), Conn("10.0.0.2", 40000, local_port=5002)]
STRANGER = Conn("172.16.1.1", 1234)

NOP = b"\x01"
MSS = b"\x02\x04\x05\xb4"


def ts_option(tsval, tsecr):
    return b"\x08\x0a" + tsval.to_bytes(4, "big") + tsecr.to_bytes(4, "big")


LINUX_TS = NOP + NOP + ts_option(0x0badcafe, 0x12345678)


def ip_int(address):
    return int(ipaddress.IPv4Address(address))


def segment(conn, seq, payload=b"", *, flags="A", options=LINUX_TS, ack=0x2468ace0,
            window=0x7210, vlan=None, ip=None, tcp=None):
    """Bytes of a TCP segment of ``conn`` as received (remote to local)."""
    packet = Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:02")
    if vlan is not None:
        packet = packet / Dot1Q(vlan=vlan)
    fields = dict(sport=conn.remote_port, dport=conn.local_port, seq=seq, ack=ack, flags=flags,
                  window=window, dataofs=5 + len(options) // 4)
    fields.update(tcp or {})
    packet = (packet / IP(src=conn.remote_ip, dst=conn.local_ip, **(ip or {}))
              / TCP(**fields) / Raw(options + payload))
    return bytes(packet)


def rx(conn, seq, payload=b"", **kwargs):
    return Rx(segment(conn, seq, payload, **kwargs))


def delegate(index, conn, rcv_nxt, snd_nxt=0x51000000, rcv_wnd=0xfff0):
    return Command(Opcode.DELEGATE, index, local_ip=ip_int(conn.local_ip),
                   remote_ip=ip_int(conn.remote_ip), local_port=conn.local_port,
                   remote_port=conn.remote_port, rcv_nxt=rcv_nxt, snd_nxt=snd_nxt,
                   rcv_wnd=rcv_wnd)


def post(index, address, length, tag):
    return Command(Opcode.POST_BUFFER, index, address=address, length=length, tag=tag)


def post_legacy(address, length, tag, index=NO_CONNECTION):
    return Command(Opcode.POST_LEGACY, index, address=address, length=length, tag=tag)


def legacy_slot(number, length=2048):
    """A legacy buffer well away from the user buffers of the directed tests."""
    return post_legacy(0x7f00_0000_0000 + number * 0x1000, length, 0x1e000 + number)


def resync(index, rcv_nxt):
    return Command(Opcode.RESYNC, index, rcv_nxt=rcv_nxt)


def reclaim(index):
    return Command(Opcode.RECLAIM, index)


def query(index):
    return Command(Opcode.QUERY, index)


def pattern(length, seed=0):
    return bytes((seed + 7 * i) & 0xff for i in range(length))


def types(outcome):
    return [event.type for event in outcome.events]


def state_of(outcome):
    """The STATE event of a QUERY or RECLAIM outcome."""
    assert outcome.events[0].type == EventType.STATE, outcome
    return outcome.events[0]


# Placement ---------------------------------------------------------------------------------------

def test_place_in_one_buffer():
    conn = CONNS[0]
    ops = [delegate(0, conn, 1000), post(0, 0x1_0000_0003, 4096, 0xa0),
           rx(conn, 1000, pattern(100)), query(0),
           rx(conn, 1100, pattern(50, 1), flags="PA"), query(0)]
    ref, _ = check(SMALL, ops)
    assert types(ref[2]) == [EventType.RX_PLACED]
    assert ref[2].writes == [(0x1_0000_0003, pattern(100))]
    assert (state_of(ref[3]).rcv_nxt, state_of(ref[3]).n_buffers) == (1100, 1)
    assert types(ref[4]) == [EventType.RX_PLACED, EventType.BUF_DONE]
    assert (ref[4].events[1].tag, ref[4].events[1].bytes) == (0xa0, 150)
    assert (state_of(ref[5]).rcv_nxt, state_of(ref[5]).n_buffers) == (1150, 0)


@pytest.mark.parametrize("params", [SMALL, Params()], ids=["small", "default"])
@pytest.mark.parametrize("n_buffers", [2, 3, 4])
def test_place_spanning_buffers(params, n_buffers):
    """A frame spread over ``n_buffers`` buffers completes the full ones; the partly filled
    last one stays until a PSH frame lands in it."""
    conn = CONNS[1]
    sizes = [37, 64, 5, 300][:n_buffers]
    addresses = [0x2_0000_0001, 0x2_0000_1ffd, 0xffff_fffe, TOP_OF_MEMORY - 300][:n_buffers]
    payload_len = sum(sizes) - 2
    ops = [delegate(2, conn, 0x10000)]
    ops += [post(2, address, size, 0xb0 + n) for n, (address, size)
            in enumerate(zip(addresses, sizes))]
    ops += [rx(conn, 0x10000, pattern(payload_len)), query(2),
            rx(conn, 0x10000 + payload_len, b"z", flags="PA"), query(2)]
    ref, _ = check(params, ops)
    spanning = ref[1 + n_buffers]
    assert len(spanning.writes) == n_buffers
    assert types(spanning) == [EventType.RX_PLACED] + [EventType.BUF_DONE] * (n_buffers - 1)
    assert state_of(ref[2 + n_buffers]).n_buffers == 1
    assert [(event.tag, event.bytes) for event in ref[3 + n_buffers].events[1:]] == \
        [(0xb0 + n_buffers - 1, sizes[-1] - 1)]
    assert state_of(ref[4 + n_buffers]).n_buffers == 0


def test_complete_and_compact_queue():
    """Completed buffers leave the head of the queue; posts refill it behind the rest."""
    conn = CONNS[2]
    base = 0x3_0000_0000
    ops = [delegate(1, conn, 7)]
    ops += [post(1, base + n * 0x1000, 100 * (n + 1), n + 1) for n in range(4)]
    ops += [post(1, base + 0x8000, 10, 99),                     # QUEUE_FULL
            rx(conn, 7, pattern(300)),                          # fills 1 and 2 exactly
            query(1),
            post(1, base + 0x4000, 500, 5), post(1, base + 0x5000, 600, 6),
            post(1, base + 0x9000, 10, 98),                     # QUEUE_FULL again
            rx(conn, 307, pattern(350, 3)),                     # fills 3, 50 bytes into 4
            rx(conn, 657, pattern(10, 5), flags="PA"),          # completes 4 partly filled
            rx(conn, 667, pattern(800, 9), flags="PA"),         # fills 5, 300 into 6 (PSH)
            query(1),
            post(1, base + 0x6000, 1, 7),
            rx(conn, 1467, b"!"),                               # a 1-byte buffer fills whole
            query(1)]
    ref, _ = check(SMALL, ops)
    statuses = [op.events[-1].status for op in ref if op.kind == JobKind.FENCE
                and op.events[-1].opcode == Opcode.POST_BUFFER]
    assert statuses == [CmdStatus.OK] * 4 + [CmdStatus.QUEUE_FULL] + [CmdStatus.OK] * 2 + \
        [CmdStatus.QUEUE_FULL, CmdStatus.OK]
    done = [(event.tag, event.bytes) for op in ref for event in op.events
            if event.type == EventType.BUF_DONE]
    assert done == [(1, 100), (2, 200), (3, 300), (4, 60), (5, 500), (6, 300), (7, 1)]
    assert state_of(ref[14]).n_buffers == 0
    assert state_of(ref[17]).n_buffers == 0


def test_resync_resumes_placement():
    conn = CONNS[0]
    ops = [delegate(3, conn, 500), post(3, 0x4000_0000, 1000, 1),
           rx(conn, 900, pattern(20)),                 # OUT_OF_SEQ: SYNC_REQ
           rx(conn, 500, pattern(20)),                 # SYNC, in sequence: advances
           query(3), resync(3, 520), query(3),
           rx(conn, 520, pattern(30), flags="PA"), query(3)]
    for number in range(2):
        ops.insert(0, legacy_slot(number))
    ref, _ = check(SMALL, ops)
    assert [e.reason for op in ref for e in op.events if e.type == EventType.LEGACY] == \
        [LegacyReason.OUT_OF_SEQ, LegacyReason.SYNC]
    assert (state_of(ref[6]).sync_req, state_of(ref[6]).rcv_nxt) == (1, 520)
    assert (state_of(ref[8]).sync_req, state_of(ref[8]).rcv_nxt) == (0, 520)
    assert types(ref[9]) == [EventType.RX_PLACED, EventType.BUF_DONE]
    assert state_of(ref[10]).rcv_nxt == 550


# Legacy, drops and rcv_nxt tracking --------------------------------------------------------------

def legacy_reason_ops():
    """Every legacy reason the model reaches, each frame with a fresh legacy buffer; SPECIAL
    frames in sequence, one after the other, each advancing rcv_nxt."""
    conn, tight = CONNS[0], CONNS[3]
    plain = segment(conn, 5000, b"data")
    frames = [
        Rx(bytes(Ether() / ARP())),                                         # NOT_TCP
        Rx(bytes(Ether() / IP(src=conn.remote_ip, dst=conn.local_ip) / UDP() / Raw(b"u"))),
        Rx(bytes(Ether() / Dot1Q(vlan=1) / Dot1Q(vlan=2) / IP() / TCP())),
        Rx(plain[:14] + bytes([0x65]) + plain[15:]),                         # version 6
        rx(conn, 5000, b"frag", ip={"frag": 100}),                          # later fragment
        rx(STRANGER, 5000, b"nobody"),                                       # NO_MATCH
        rx(conn, 5000, b"bad tcp", tcp={"chksum": 0x1234}),                  # CHECKSUM
        rx(conn, 5000, b"bad ip", ip={"chksum": 0x4321}, vlan=12),
        rx(conn, 5000),                                                      # NO_PAYLOAD
        rx(conn, 6000, b"ahead"),                                            # OUT_OF_SEQ
        rx(conn, 4000, b"behind"),                                           # SYNC, no advance
        rx(conn, 5000, b"0123456789"),                                       # SYNC, +10
        rx(conn, 5010, flags="S"),                                           # SPECIAL +1
        rx(conn, 5011, b"fin", flags="FA"),                                  # +4
        rx(conn, 5015, b"rst", flags="R"),                                   # +3
        rx(conn, 5018, b"urgent", flags="UA", tcp={"urgptr": 2}),            # +6
        rx(conn, 5024, b"first frag", ip={"flags": "MF"}),                   # +10
        rx(conn, 5034, b"opts", ip={"options": [IPOption_Router_Alert()]}),  # +4
        rx(conn, 5038, b"mss", options=MSS),                                 # +3
        rx(conn, 5041, b"both", flags="SF"),                                 # +4 + 2
        rx(conn, 9999, b"out of seq", flags="F"),                            # no advance
        rx(tight, 77, pattern(40)),                                          # NO_BUFFER +40
        rx(tight, 117, pattern(11), vlan=5),                                 # SYNC +11
    ]
    ops = [delegate(1, conn, 5000), post(1, 0x5_0000_0000, 65536, 1),
           delegate(2, tight, 77), post(2, 0x6_0000_0000, 39, 2)]
    for number, frame in enumerate(frames):
        ops += [legacy_slot(number), frame]
        if number in (11, 19, 20):
            ops.append(query(1))
    ops += [query(2), query(1)]
    return ops


@pytest.mark.parametrize("params", [SMALL, Params()], ids=["small", "default"])
def test_every_legacy_reason(params):
    ref, _ = check(params, legacy_reason_ops())
    reasons = {event.reason for op in ref for event in op.events if event.type == EventType.LEGACY}
    # BUF_TIMEOUT and HWM belong to the buffer-request issue, which neither side implements yet.
    assert reasons == set(LegacyReason) - {LegacyReason.BUF_TIMEOUT, LegacyReason.HWM}
    legacy = [op for op in ref if op.events[0].type == EventType.LEGACY]
    assert all(op.kind == JobKind.WRITE for op in legacy)
    assert all(len(op.writes) == 1 for op in legacy)
    states = [state_of(op) for op in ref if op.events[0].type == EventType.STATE]
    assert [(s.index, s.rcv_nxt, s.sync_req) for s in states] == [
        (1, 5010, 1), (1, 5047, 1), (1, 5047, 1), (2, 128, 1), (1, 5047, 1)]
    checksum = [op.events[0] for op in ref if op.events[0].type == EventType.LEGACY
                and op.events[0].reason == LegacyReason.CHECKSUM]
    assert [(e.index, e.ip_csum_bad, e.tcp_csum_bad) for e in checksum] == \
        [(NO_CONNECTION, 0, 1), (NO_CONNECTION, 1, 0)]


def test_drops_and_failed_legacy_delivery():
    """Invalid frames are dropped; a legacy upload with no buffer, or too small a buffer, is a
    DROP that leaves the connection exactly as it was, and the small buffer at the ring's head."""
    conn = CONNS[0]
    good = segment(conn, 100, pattern(60))
    ops = [delegate(0, conn, 100),
           Rx(good, mac_error=True),                                   # MAC_ERROR
           Rx(good[:-5]),                                              # TRUNCATED (IPv4 length)
           Rx(good[:10]), Rx(b""),                                     # runts
           rx(conn, 100, pattern(1600)),                               # OVERSIZE
           Rx(bytes(Ether() / ARP())),                                 # NO_LEGACY_BUFFER
           rx(conn, 100, b"syn", flags="S"),                           # SPECIAL would advance
           rx(conn, 300, b"x"),                                        # OUT_OF_SEQ would sync
           rx(conn, 100, b"no user buffer"),                           # NO_BUFFER would advance
           query(0),
           post_legacy(0x9000_0000, 60, 0x60),
           rx(conn, 100, b"fin and more than sixty bytes in all", flags="FA"),
           rx(conn, 100, b"z" * 30),                                   # too small as well
           query(0),
           Rx(bytes(Ether() / ARP())),                                 # 42 bytes: takes it
           Rx(bytes(Ether() / ARP())),
           post_legacy(0x9000_1000, 1518, 0x61),
           rx(conn, 100, b"fin", flags="FA"),
           query(0)]
    # A legacy buffer exactly as long as the frame takes it; one byte shorter does not.
    exact = segment(conn, 104, pattern(77))
    ops += [post_legacy(0x9000_2000, len(exact), 0x62), Rx(exact),
            post_legacy(0x9000_3000, len(exact) - 1, 0x63), Rx(exact)]
    ref, _ = check(SMALL, ops)
    drops = [(e.index, e.reason) for op in ref for e in op.events if e.type == EventType.DROP]
    nc = NO_CONNECTION
    assert drops == [
        (nc, DropReason.MAC_ERROR), (nc, DropReason.TRUNCATED), (nc, DropReason.TRUNCATED),
        (nc, DropReason.TRUNCATED), (nc, DropReason.OVERSIZE), (nc, DropReason.NO_LEGACY_BUFFER),
        (0, DropReason.NO_LEGACY_BUFFER), (0, DropReason.NO_LEGACY_BUFFER),
        (0, DropReason.NO_LEGACY_BUFFER), (0, DropReason.LEGACY_TOO_SMALL),
        (0, DropReason.LEGACY_TOO_SMALL), (nc, DropReason.NO_LEGACY_BUFFER),
        (0, DropReason.LEGACY_TOO_SMALL)]
    assert [(e.type, e.tag) for e in ref[21].events] == [(EventType.LEGACY, 0x62)]
    assert [e.type for e in ref[23].events] == [EventType.DROP]
    for number in (10, 14):
        assert (state_of(ref[number]).rcv_nxt, state_of(ref[number]).sync_req) == (100, 0)
    assert ref[15].events[0].tag == 0x60
    assert (state_of(ref[19]).rcv_nxt, state_of(ref[19]).sync_req) == (104, 1)


def test_rcv_nxt_serial_wrap():
    """rcv_nxt counts modulo 2**32, on the place path and on every advancing legacy path."""
    conn = CONNS[4]
    start = (1 << 32) - 6
    ops = [delegate(0, conn, start), post(0, 0xa_0000_0000, 4096, 1),
           legacy_slot(0), legacy_slot(1), legacy_slot(2), legacy_slot(3),
           rx(conn, start, pattern(10)), query(0),                          # -> 4
           rx(conn, 4, pattern(3), flags="PA"), query(0),                   # -> 7
           resync(0, (1 << 32) - 1),
           rx(conn, (1 << 32) - 1, flags="FA"), query(0),                   # SPECIAL -> 0
           rx(conn, 0, pattern(5)),                                         # SYNC -> 5
           rx(conn, (1 << 32) - 3, pattern(9)), query(0),                   # SYNC, behind
           resync(0, (1 << 32) - 2),
           post(0, 0xb_0000_0000, 4, 2),
           rx(conn, (1 << 32) - 2, pattern(7)), query(0)]                   # NO_BUFFER -> 5
    ref, _ = check(SMALL, ops)
    assert [state_of(ref[n]).rcv_nxt for n in (7, 9, 12, 15, 19)] == [4, 7, 0, 5, 5]
    assert types(ref[8]) == [EventType.RX_PLACED, EventType.BUF_DONE]
    assert ref[18].events[0].reason == LegacyReason.NO_BUFFER


# Commands ----------------------------------------------------------------------------------------

ODD = Params(data_width=128, n_entries=5, buffers_per_conn=3, legacy_ring_depth=2,
             max_frame_bytes=600, rx_buffer_bytes=2048)


@pytest.mark.parametrize("params", [SMALL, ODD], ids=["small", "odd"])
def test_every_command_status(params):
    """Each status in the order of the checks; a failed command changes nothing (R41)."""
    conn, other = CONNS[0], CONNS[1]
    bad_index = params.n_entries
    top = TOP_OF_MEMORY
    S = CmdStatus
    cases = [
        (0, S.BAD_OPCODE), (7 | 2 << 16, S.BAD_OPCODE), (0xff | 0xffff << 16, S.BAD_OPCODE),
        (delegate(bad_index, conn, 1), S.BAD_INDEX), (delegate(0xffff, conn, 1), S.BAD_INDEX),
        (post(bad_index, 0x1000, 10, 1), S.BAD_INDEX), (resync(0x8000, 1), S.BAD_INDEX),
        (reclaim(bad_index), S.BAD_INDEX), (query((1 << params.index_bits) - 1 | 1 << 12),
                                             S.BAD_INDEX),
        (query(0), S.NOT_DELEGATED), (resync(1, 5), S.NOT_DELEGATED),
        (reclaim(1), S.NOT_DELEGATED), (post(0, 0x1000, 10, 1), S.NOT_DELEGATED),
        (delegate(0, conn, 1000), S.OK), (delegate(0, other, 1), S.IN_USE),
        (delegate(1, conn, 1), S.DUPLICATE_KEY),
        (delegate(1, other, 2000, snd_nxt=0xfedcba98, rcv_wnd=0x1234), S.OK),
        (post(0, 0x1000, 0, 1), S.ZERO_LENGTH), (post_legacy(0x1000, 0, 2), S.ZERO_LENGTH),
        (post(0, top - 100, 101, 1), S.ADDRESS_WRAP), (post_legacy(top - 1, 2, 2), S.ADDRESS_WRAP),
        (post(0, top - 0xffffffff + 1, 0xffffffff, 1), S.ADDRESS_WRAP),
        (post_legacy(top - 1, 0xffffffff, 2), S.ADDRESS_WRAP),
        # A wrapping, empty post to a free entry is NOT_DELEGATED: that check comes first.
        (post(2, top - 1, 0, 1), S.NOT_DELEGATED),
        (post(0, top - 100, 100, 0x100), S.OK),                     # ends exactly at 2**64
        (post(0, 0, 0xffffffff, 0x101), S.OK),
    ]
    cases += [(post(0, 0x20 * n, n, 0x102 + n), S.OK)
              for n in range(1, params.buffers_per_conn - 1)]
    cases += [(post(0, 0x1000, 3, 0x1ff), S.QUEUE_FULL),
              (post_legacy(top - 2048, 2048, 0x200, index=bad_index), S.OK)]  # any index
    cases += [(post_legacy(0x7000 + 0x100 * n, 64, 0x201 + n), S.OK)
              for n in range(params.legacy_ring_depth - 1)]
    cases += [(post_legacy(0xa000, 64, 0x2ff), S.QUEUE_FULL),
              (post(0, top - 10, 0, 1), S.ZERO_LENGTH),                 # ahead of QUEUE_FULL
              (post_legacy(top - 10, 11, 1), S.ADDRESS_WRAP),           # ahead of QUEUE_FULL
              (resync(0, 0xdeadbeef), S.OK),
              (query(0), S.OK), (query(1), S.OK), (query(2), S.NOT_DELEGATED)]
    ref, _ = check(params, [op for op, _ in cases])
    done = [outcome.events[-1] for outcome in ref]
    assert all(event.type == EventType.CMD_DONE for event in done)
    assert [event.status for event in done] == [status for _, status in cases]
    assert {status for _, status in cases} == set(CmdStatus)
    assert [(e.index, e.opcode) for e in done[:3]] == [(0, 0), (2, 7), (0xffff, 0xff)]
    state0, state1 = state_of(ref[-3]), state_of(ref[-2])
    assert (state0.rcv_nxt, state0.n_buffers, state0.last_ack_sent) == \
        (0xdeadbeef, params.buffers_per_conn, 1000)
    assert (state1.rcv_nxt, state1.snd_nxt, state1.rcv_wnd, state1.last_ack_sent) == \
        (2000, 0xfedcba98, 0x1234, 2000)


def test_reclaim_and_reuse():
    """RECLAIM returns the state and every buffer with its filled bytes; the key then misses,
    and DELEGATE reuses the index (with a new key) and the key (at another index)."""
    conn, other = CONNS[0], CONNS[3]
    ops = [legacy_slot(0), legacy_slot(1), legacy_slot(2),
           delegate(2, conn, 40), post(2, 0xc_0000_0000, 16, 1), post(2, 0xc_0000_1000, 16, 2),
           post(2, 0xc_0000_2000, 100, 3), post(2, 0xc_0000_3000, 100, 4),
           rx(conn, 40, pattern(20)),                   # completes 1, 4 bytes into 2
           rx(conn, 60, pattern(5)),                    # 9 bytes into 2
           rx(conn, 999, b"oops"),                      # OUT_OF_SEQ: sync_req in the STATE
           reclaim(2),
           rx(conn, 65, pattern(5)),                    # NO_MATCH now
           query(2), reclaim(2), post(2, 0x1000, 10, 9),
           delegate(2, other, 0x1234), query(2), rx(other, 0x1234, pattern(8), flags="PA"),
           delegate(0, conn, 65), post(0, 0xd_0000_0000, 64, 5),
           rx(conn, 65, pattern(5), flags="PA"), reclaim(0), reclaim(2)]
    ref, _ = check(SMALL, ops)
    assert types(ref[11]) == [EventType.STATE] + [EventType.BUF_DONE] * 3 + [EventType.CMD_DONE]
    state = state_of(ref[11])
    assert (state.valid, state.sync_req, state.n_buffers, state.rcv_nxt) == (1, 1, 3, 65)
    assert [(e.tag, e.bytes) for e in ref[11].events[1:4]] == [(2, 9), (3, 0), (4, 0)]
    assert ref[12].events[0].reason == LegacyReason.NO_MATCH
    assert [op.events[-1].status for op in ref[13:16]] == [CmdStatus.NOT_DELEGATED] * 3
    assert ref[16].events[-1].status == CmdStatus.OK
    assert (state_of(ref[17]).rcv_nxt, state_of(ref[17]).n_buffers) == (0x1234, 0)
    assert ref[18].events[0].type == EventType.LEGACY       # no buffer posted after reuse
    assert types(ref[21]) == [EventType.RX_PLACED, EventType.BUF_DONE]
    assert types(ref[22]) == [EventType.STATE, EventType.CMD_DONE]
    assert state_of(ref[23]).sync_req == 1


# Random ------------------------------------------------------------------------------------------

def random_frame(params, rng, conn, seq):
    """A random received frame of ``conn``, mostly a well-formed Linux-style data segment."""
    # Room for payload behind the largest headers drawn below (802.1Q tag, 12 option bytes).
    payload_room = params.max_frame_bytes - 14 - 4 - 20 - 20 - 12
    size = rng.choice([0, rng.randint(1, 64), rng.randint(1, 600), rng.randint(1, payload_room)])
    payload = rng.randbytes(size)
    kwargs = {"flags": rng.choice(["A", "PA", "PA", "A", "A"])}
    roll = rng.random()
    if roll < 0.06:
        kwargs["flags"] = rng.choice(["S", "SA", "FA", "R", "UA", "PFA"])
    elif roll < 0.09:
        kwargs["options"] = rng.choice([b"", MSS, NOP * 4 + ts_option(1, 2) + NOP * 2])
    elif roll < 0.11:
        kwargs["vlan"] = rng.randint(0, 4095)
    elif roll < 0.13:
        kwargs["ip"] = {"flags": "MF"}
    elif roll < 0.15:
        kwargs["tcp"] = {"chksum": rng.randint(0, 0xffff)}
    frame = segment(conn, seq, payload, **kwargs)
    roll = rng.random()
    if roll < 0.02:
        return Rx(frame, mac_error=True)
    if roll < 0.04:
        return Rx(frame[:rng.randint(0, len(frame) - 1)])
    if roll < 0.05:
        # Ethernet padding, which the IPv4 length excludes, or enough of it to be oversize.
        return Rx(frame + rng.randbytes(rng.choice(
            [rng.randint(1, 20), params.max_frame_bytes - len(frame) + rng.randint(1, 40)])))
    if roll < 0.07:
        return Rx(bytes(Ether() / IP(dst=conn.local_ip) / UDP() / Raw(payload[:100])))
    return Rx(frame)


def random_ops(params, rng, count):
    """Frames and commands over one more connection than there are entries. A planning model
    picks the targets the host stack would: seq numbers mostly in sequence, buffers posted
    mostly to delegated connections, the legacy ring mostly kept stocked, a RESYNC soon after a
    connection needs one. Bad commands and bad frames are mixed in."""
    planner = Model(params)
    conns = [Conn(f"10.1.0.{n + 2}", 30000 + n) for n in range(params.n_entries + 1)]
    keys = [(ip_int(c.local_ip), ip_int(c.remote_ip), c.local_port, c.remote_port) for c in conns]
    ops = []

    def emit(op):
        ops.append(op)
        if isinstance(op, Rx):
            planner.rx_frame(op.frame, mac_error=op.mac_error)
        else:
            planner.command(op)

    def random_buffer(kind):
        if kind == "legacy":
            length = rng.choice([rng.randint(60, 1600), params.max_frame_bytes])
        else:
            length = rng.choice([rng.randint(1, 64), rng.randint(64, 1500),
                                 rng.randint(1, 1 << 16)])
        roll = rng.random()
        if roll < 0.02:
            length = 0
        if roll < 0.05:
            return min(TOP_OF_MEMORY - 1,
                       TOP_OF_MEMORY - length + rng.choice([0, 0, 1, 1000])), length
        return rng.randrange(TOP_OF_MEMORY - length), length

    def delegated():
        return [index for index, entry in enumerate(planner.entries) if entry.valid]

    for index in range(params.n_entries - 1):
        emit(delegate(index, conns[index], rng.getrandbits(32)))

    tag = 0
    while len(ops) < count:
        tag += 1
        valid = delegated()
        index = rng.choice(valid) if valid and rng.random() < 0.85 else \
            rng.randrange(params.n_entries)
        roll = rng.random()
        if len(planner.legacy_ring) < 2 and rng.random() < 0.7 or roll < 0.08:
            emit(post_legacy(*random_buffer("legacy"), tag))
        elif roll < 0.60:
            conn = rng.choice(conns)
            if valid and rng.random() < 0.8:
                conn = conns[keys.index(planner.entries[rng.choice(valid)].key)]
            found = planner.lookup(keys[conns.index(conn)])
            rcv_nxt = planner.entries[found].rcv_nxt if found is not None else rng.getrandbits(32)
            seq = rcv_nxt if rng.random() < 0.85 else \
                (rcv_nxt + rng.randint(-3000, 3000)) % (1 << 32)
            emit(random_frame(params, rng, conn, seq))
        elif roll < 0.80:
            emit(post(index if rng.random() < 0.97 else params.n_entries,
                      *random_buffer("user"), tag))
        elif roll < 0.86:
            rcv_nxt = planner.entries[index].rcv_nxt if rng.random() < 0.8 else \
                rng.getrandbits(32)
            emit(resync(index, rcv_nxt))
        elif roll < 0.91:
            emit(query(index))
        elif roll < 0.94:
            emit(reclaim(index))
        elif roll < 0.99:
            emit(delegate(rng.randrange(params.n_entries), rng.choice(conns), rng.choice(
                [rng.getrandbits(32), (1 << 32) - rng.randint(1, 2000)])))
        else:
            emit(rng.choice([0, 8, 0x7f]) | index << 16)
        for index in delegated():
            if planner.entries[index].sync_req and rng.random() < 0.3:
                emit(resync(index, planner.entries[index].rcv_nxt))
    return ops


@pytest.mark.parametrize("params, count", [(SMALL, 500), (ODD, 200)], ids=["small", "odd"])
def test_random_in_order(params, count):
    rng = seeded_rng(f"rx_engine_in_order_{params.n_entries}")
    ops = random_ops(params, rng, count)
    ref, _ = check(params, ops, rng=rng)
    kinds = {e.type for op in ref for e in op.events}
    assert {EventType.RX_PLACED, EventType.BUF_DONE, EventType.LEGACY, EventType.DROP,
            EventType.STATE} <= kinds


def test_random_concurrent_streams():
    """Frames and commands offered at once: whatever order the engine picks, each operation's
    outcome is the model's for that order."""
    rng = seeded_rng("rx_engine_concurrent")
    ops = random_ops(SMALL, rng, 300)
    check(SMALL, ops, rng=rng, concurrent=True, idle_prob=0.2, ready_prob=0.6)


def test_frames_and_commands_alternate():
    """With both streams always offering, the engine takes a frame and a command in turn, so a
    flood of frames cannot starve the driver's commands (nor the reverse)."""
    conn = CONNS[0]
    frames = [rx(conn, seq, pattern(10, seq)) for seq in (100, 100, 100, 110, 120, 130)]
    commands = [delegate(0, conn, 100), post(0, 0xe_0000_0000, 25, 1), post_legacy(0x1000, 100, 2),
                query(0), post(0, 0xe_0000_1000, 100, 3), reclaim(0)]
    ops = [op for pair in zip(frames, commands) for op in pair]
    taken, _ = rtl_run(SMALL, ops, concurrent=True)
    assert [isinstance(op, Rx) for op in taken] == [True, False] * 6
    ref, _ = check(SMALL, ops, concurrent=True)
    assert [op.events[0].type for op in ref[::2]] == [
        EventType.DROP, EventType.DROP, EventType.RX_PLACED, EventType.RX_PLACED,
        EventType.LEGACY, EventType.DROP]
