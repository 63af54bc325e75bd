"""The transmit engine's parse of what the host stack sends, against the model's ``parse_tx``,
and R31–R33 (:class:`TxDecision`) against the model's arithmetic."""

import dataclasses
import struct

import pytest
from scapy.layers.inet import IP, IPOption_NOP, UDP
from scapy.layers.l2 import ARP, Dot1Q, Ether

from model.frame import parse_tx
from tcpdct.params import Params
from tcpdct.tx_engine import TxEngine, TxDecision

from unit.simtools import seeded_rng, run_simulation, axis_beats, key_ahead_monitor
from unit.test_rx_parser import tcp_frame, LINUX_TS


def _update_fields(update):
    return dict(local_ip=update.key.local_ip, remote_ip=update.key.remote_ip,
                local_port=update.key.local_port, remote_port=update.key.remote_port,
                seq=update.seq, ack=update.ack, window=update.window, flags=update.flags,
                payload_len=update.payload_len)


def transmitted_frames():
    """``(name, frame)`` for every path of the transmit parse."""
    plain = tcp_frame(b"d" * 100, options=LINUX_TS)
    truncated_ip = bytearray(plain)
    struct.pack_into("!H", truncated_ip, 16, len(plain))     # total length past the frame
    short_ip = bytearray(plain)
    struct.pack_into("!H", short_ip, 16, 16)                 # total length < IHL * 4
    doff_small = bytearray(plain)
    doff_small[14 + 20 + 12] = 0x40                          # data offset 4
    doff_large = bytearray(tcp_frame(b"", options=LINUX_TS))
    doff_large[14 + 20 + 12] = 0xf0                          # data offset past the segment
    return [
        ("plain", plain),
        ("syn", tcp_frame(tcp={"flags": "S"})),
        ("fin_ack", tcp_frame(b"x", tcp={"flags": "FA"})),
        ("vlan", tcp_frame(b"v" * 30, options=LINUX_TS, vlan=5)),
        ("ip_options", tcp_frame(b"o" * 9, ip={"options": [IPOption_NOP()] * 40})),
        ("padded", tcp_frame(b"", pad_to=60)),
        ("jumbo_header", tcp_frame(b"j", options=LINUX_TS * 3 + b"\x01" * 4,
                                   ip={"options": [IPOption_NOP()] * 40})),
        ("more_fragments", tcp_frame(b"m" * 40, ip={"flags": "MF"})),
        ("fragment_offset", tcp_frame(b"f" * 40, ip={"frag": 3})),
        ("truncated_ip", bytes(truncated_ip)),
        ("short_total_length", bytes(short_ip)),
        ("doff_small", bytes(doff_small)),
        ("doff_large", bytes(doff_large)),
        ("udp", bytes(Ether() / IP(src="10.0.0.2", dst="10.0.0.1") / UDP() / (b"u" * 30))),
        ("arp", bytes(Ether() / ARP())),
        ("vlan_arp", bytes(Ether() / Dot1Q(vlan=3) / ARP())),
        ("runt", plain[:10]),
        ("vlan_runt", bytes(tcp_frame(vlan=9))[:16]),
    ]


@pytest.mark.parametrize("data_width", [64, 512])
@pytest.mark.parametrize("take_rate", [0.05, 0.7])
def test_updates_equal_parse_tx(data_width, take_rate):
    """Every frame, back to back, gives exactly the update ``parse_tx`` gives, in order. Taken
    slowly, the updates fill the FIFO so that ``busy`` has to hold frames back; taken quickly,
    the FIFO empties often and short frames' updates reach it in consecutive cycles, each
    announced ahead only into an empty FIFO."""
    params = Params(data_width=data_width)
    # Short segments of distinct connections, back to back: each announced key must be its own.
    connections = [("port", tcp_frame(tcp={"sport": 2000 + i})) for i in range(24)]
    cases = transmitted_frames() * 3 + connections
    rng = seeded_rng(f"tx-{data_width}-{take_rate}")
    expected = [dataclasses.asdict(update) for _, frame in cases
                if (update := parse_tx(frame)) is not None]
    assert len(expected) > 10
    dut = TxEngine(params)
    got = []
    stalled = [0]

    async def host(ctx):
        for _, frame in cases:
            for beat in axis_beats(frame, params.data_bytes):
                # The transmit path takes a beat only when the engine is not busy.
                while ctx.get(dut.busy):
                    stalled[0] += 1
                    await ctx.tick()
                ctx.set(dut.beat, {"data": beat["data"], "keep": beat["keep"],
                                   "last": beat["last"]})
                ctx.set(dut.beat_valid, 1)
                await ctx.tick()
                ctx.set(dut.beat_valid, 0)

    async def sequencer(ctx):
        while len(got) < len(expected):
            ready = rng.random() < take_rate
            ctx.set(dut.update.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(dut.update.valid, dut.update.payload)
            if valid and ready:
                got.append(_update_fields(payload))
        ctx.set(dut.update.ready, 0)

    announced = []

    key_ahead = key_ahead_monitor(dut.update, dut.key_ahead, dut.key_ahead_valid, cycles=2,
                                  announced=announced)

    run_simulation(dut, host, sequencer, monitors=[key_ahead], max_cycles=50_000)
    assert got == expected
    if take_rate < 0.5:
        assert stalled[0] > 0, "the update FIFO never filled: busy was not exercised"
    assert announced, "no update reached an empty FIFO: key_ahead was never checked"


SEQ_CASES = [
    # (rcv_nxt, sync_req, snd_nxt, last_ack_sent, flags, seq, ack, payload_len)
    (1000, 0, 500, 900, 0x10, 500, 1500, 0),            # R31: ack ahead
    (1000, 0, 500, 900, 0x10, 500, 800, 10),            # ack behind: only R33
    (1000, 0, 500, 900, 0x00, 500, 1500, 10),           # no ACK flag: no R31, no last_ack_sent
    (1000, 1, 500, 900, 0x10, 500, 1000, 0),            # R32: resync at rcv_nxt
    (1000, 1, 500, 900, 0x10, 500, 1200, 0),            # R31 then R32
    (1000, 1, 500, 900, 0x10, 500, 999, 0),             # behind: stays in SYNC_REQ
    (0xffff_fff0, 0, 0xffff_fff0, 0, 0x12, 0xffff_fff0, 0x10, 0),  # SYN, wrap
    (5, 0, 0xffff_fffe, 0, 0x11, 0xffff_fffe, 5, 7),    # FIN, snd_nxt wraps forward
    (5, 0, 100, 0, 0x10, 40, 5, 20),                    # snd_nxt never moves back
]


def test_tx_decision_against_model():
    from model.dct import Model
    from model.frame import TxUpdate
    from tcpdct.records import Command, Opcode

    dut = TxDecision()
    results = []

    async def bench(ctx):
        for rcv_nxt, sync_req, snd_nxt, last_ack, flags, seq, ack, length in SEQ_CASES:
            ctx.set(dut.state, {"rcv_nxt": rcv_nxt, "snd_nxt": snd_nxt,
                                "last_ack_sent": last_ack, "rcv_wnd": 7, "sync_req": sync_req,
                                "buf_req": sync_req})
            ctx.set(dut.update, {"key": {"local_ip": 1, "remote_ip": 2, "local_port": 3,
                                         "remote_port": 4},
                                 "seq": seq, "ack": ack, "window": 0x4321, "flags": flags,
                                 "payload_len": length})
            await ctx.delay(1e-9)
            new = ctx.get(dut.new_state)
            results.append((new.rcv_nxt, new.sync_req, new.buf_req, new.snd_nxt,
                            new.last_ack_sent, new.rcv_wnd, ctx.get(dut.resync)))

    run_simulation(dut, bench, clock=False)
    for case, got in zip(SEQ_CASES, results):
        rcv_nxt, sync_req, snd_nxt, last_ack, flags, seq, ack, length = case
        model = Model(Params(n_entries=1))
        model.command(Command(Opcode.DELEGATE, 0, local_ip=1, remote_ip=2, local_port=3,
                              remote_port=4))
        entry = model.entries[0]
        entry.rcv_nxt, entry.sync_req, entry.buf_req = rcv_nxt, bool(sync_req), bool(sync_req)
        entry.snd_nxt, entry.last_ack_sent, entry.rcv_wnd = snd_nxt, last_ack, 7
        events = model._tx_update(TxUpdate(1, 2, 3, 4, seq, ack, 0x4321, flags, length))
        expected = (entry.rcv_nxt, int(entry.sync_req), int(entry.buf_req), entry.snd_nxt,
                    entry.last_ack_sent, entry.rcv_wnd, int(bool(events)))
        assert got == expected, case
