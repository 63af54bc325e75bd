"""SkidBuffer on random traffic: every beat the source hands over leaves once, in order; a beat
offered while the buffer is empty leaves in the same cycle; a stalled output holds; and
``sink.ready`` is a register, untouched by the cycle's ``source.ready``. Random stimulus is
seeded from ``SEED`` (printed)."""

from collections import deque

from tcpdct.skid import SkidBuffer
from unit.simtools import seeded_rng, run_simulation


def test_beats_in_order_none_lost_ready_registered():
    rng = seeded_rng("skid")
    dut = SkidBuffer(8)
    sent = deque()
    received = []
    seen = {"caught": 0, "passed": 0}

    async def testbench(ctx):
        offer = None                 # the source's beat, held while it is not taken
        stalled = None               # the output beat of the last cycle, if it was not taken
        next_value = 0
        for cycle in range(6000):
            # Phases of a sink that is mostly ready and one that mostly is not.
            ready_rate = (0.9, 0.3)[cycle // 200 % 2]
            if offer is None and rng.random() < 0.7:
                offer = next_value
                next_value = (next_value + 1) % 256
            sink_ready = ctx.get(dut.sink.ready)
            ctx.set(dut.sink.valid, offer is not None)
            ctx.set(dut.sink.payload, offer if offer is not None else rng.getrandbits(8))
            ctx.set(dut.source.ready, 0)
            assert ctx.get(dut.sink.ready) == sink_ready
            source_ready = rng.random() < ready_rate
            ctx.set(dut.source.ready, source_ready)
            assert ctx.get(dut.sink.ready) == sink_ready, "sink.ready follows source.ready"

            valid = ctx.get(dut.source.valid)
            payload = ctx.get(dut.source.payload)
            if stalled is not None:
                assert valid and payload == stalled, "a stalled beat moved"
            if offer is not None and sink_ready:
                # Buffer empty: the offered beat is on the output now.
                assert valid and payload == offer
                seen["passed"] += source_ready
                seen["caught"] += not source_ready
                sent.append(offer)
                offer = None
            if valid and source_ready:
                received.append(payload)
            stalled = payload if valid and not source_ready else None
            await ctx.tick()

    run_simulation(dut, testbench)
    assert received == list(sent)[:len(received)]
    assert len(sent) - len(received) <= 1
    assert seen["caught"] > 100 and seen["passed"] > 100, seen
