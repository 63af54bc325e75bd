"""RxPacketBuffer against a Python ring: random frame writes, reads and in-order frees.

Every cycle checks the head address, whether the ring is full and ``used_beats`` the writer
and the engine see, and the beat the read port returns one cycle after its address; a written
beat is stored at the end of the next cycle. The ring is small so that the run wraps around it
many times. Random stimulus is seeded from ``SEED`` (printed).
"""

import pytest

from tcpdct.layouts import packet_buffer_depth
from tcpdct.params import Params
from tcpdct.rx_packet_buffer import RxPacketBuffer
from unit.simtools import seeded_rng, run_simulation


class RingModel:
    """The packet buffer as a list of beats, a head, and the frames written but not freed. A beat
    written in one cycle is stored and counted at the end of the next (``land``)."""

    def __init__(self, depth):
        self.depth = depth
        self.beats = [0] * depth
        self.head = 0
        self.used = 0            # beats stored and not freed
        self.in_flight = None    # (address, beat) written in the cycle before

    def write(self, beat):
        assert self.used + (self.in_flight is not None) < self.depth, \
            "the stimulus wrote into a full ring"
        written = (self.head, beat)
        self.head = (self.head + 1) % self.depth
        return written

    def land(self, written):
        """End of a cycle: the beat written in the cycle before is stored; ``written`` (or
        ``None``) is now on its way."""
        if self.in_flight is not None:
            address, beat = self.in_flight
            self.beats[address] = beat
            self.used += 1
        self.in_flight = written

    def free(self, beats):
        assert beats <= self.used, "the stimulus freed beats never stored"
        self.used -= beats


@pytest.mark.parametrize("data_width", [64, 512])
def test_random_against_ring(data_width):
    params = Params(data_width=data_width, max_frame_bytes=64 * data_width // 64 + 64,
                    rx_buffer_bytes=64 * data_width // 8)
    depth = packet_buffer_depth(params)
    max_beats = -(-params.max_frame_bytes // params.data_bytes)
    rng = seeded_rng(f"packet-buffer-{data_width}")
    dut = RxPacketBuffer(params)
    model = RingModel(depth)

    async def testbench(ctx):
        frames_stored = []       # sizes of complete frames not yet freed, oldest first
        writing = 0              # beats of the frame being written so far
        frame_size = rng.randrange(1, max_beats + 1)
        written = 0
        refused = 0
        cycle = 0
        while written < 6 * depth:
            cycle += 1
            # Stretches without frees fill the ring.
            free_rate = 0.3 if cycle // 120 % 2 else 0.0
            assert ctx.get(dut.write.addr) == model.head
            # Full when the stored beats and the one on its way may leave no beat free.
            assert ctx.get(dut.write.full) == (model.used >= depth - 1)
            assert ctx.get(dut.used_beats) == model.used

            wants = rng.random() < 0.7
            write = wants and not ctx.get(dut.write.full)
            refused += wants and not write
            beat = rng.getrandbits(data_width)
            # Only frames whose beats are all stored are freed.
            free = bool(frames_stored) and frames_stored[0] <= model.used and rng.random() < free_rate
            read_addr = rng.randrange(depth)
            ctx.set(dut.write.en, write)
            ctx.set(dut.write.data, beat)
            ctx.set(dut.free_valid, free)
            ctx.set(dut.free_beats, frames_stored[0] if free else rng.randrange(max_beats + 1))
            ctx.set(dut.read_addr, read_addr)
            expected_read = model.beats[read_addr]
            await ctx.tick()
            assert ctx.get(dut.read_data) == expected_read

            model.land(model.write(beat) if write else None)
            if free:
                model.free(frames_stored.pop(0))
            if write:
                written += 1
                writing += 1
                if writing == frame_size:
                    frames_stored.append(frame_size)
                    writing, frame_size = 0, rng.randrange(1, max_beats + 1)
        assert refused, "the ring never filled: full was not exercised"

    run_simulation(dut, testbench)


def test_full_ring_holds_until_freed():
    """Written beat after beat, the ring takes exactly ``depth`` beats and the contents survive;
    one free of a frame gives its beats back and the head has wrapped to the start."""
    params = Params(data_width=64, max_frame_bytes=64, rx_buffer_bytes=256)
    depth = packet_buffer_depth(params)
    dut = RxPacketBuffer(params)

    async def testbench(ctx):
        for i in range(depth):
            assert not ctx.get(dut.write.full), f"refused beat {i} of {depth}"
            ctx.set(dut.write.en, 1)
            ctx.set(dut.write.data, 0x1000 + i)
            await ctx.tick()
        ctx.set(dut.write.en, 0)
        assert ctx.get(dut.write.full)
        await ctx.tick()                       # the last beat is stored
        assert ctx.get(dut.write.full)
        assert ctx.get(dut.used_beats) == depth
        assert ctx.get(dut.write.addr) == 0
        for i in range(depth):
            ctx.set(dut.read_addr, i)
            await ctx.tick()
            assert ctx.get(dut.read_data) == 0x1000 + i
        ctx.set(dut.free_valid, 1)
        ctx.set(dut.free_beats, 8)
        await ctx.tick()
        ctx.set(dut.free_valid, 0)
        assert not ctx.get(dut.write.full)
        assert ctx.get(dut.used_beats) == depth - 8

    run_simulation(dut, testbench)


def test_last_free_beat_is_refused_after_a_pause():
    """With one beat free and no beat on its way, the ring refuses it (the flag does not wait for
    this cycle's write); freeing gives the room back."""
    params = Params(data_width=64, max_frame_bytes=64, rx_buffer_bytes=256)
    depth = packet_buffer_depth(params)
    dut = RxPacketBuffer(params)

    async def testbench(ctx):
        for i in range(depth - 1):
            ctx.set(dut.write.en, 1)
            await ctx.tick()
        ctx.set(dut.write.en, 0)
        await ctx.tick()
        assert ctx.get(dut.used_beats) == depth - 1
        assert ctx.get(dut.write.full)
        ctx.set(dut.free_valid, 1)
        ctx.set(dut.free_beats, 1)
        await ctx.tick()
        ctx.set(dut.free_valid, 0)
        assert not ctx.get(dut.write.full)

    run_simulation(dut, testbench)
