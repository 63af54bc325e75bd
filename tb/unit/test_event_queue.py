"""EventQueue: events leave in push order, a job's first event only after the job's completion,
every event of a job with that completion's error bit, nothing lost under back-pressure.

Random stimulus is seeded from ``SEED`` (printed, so a failure replays with ``SEED=<n>``).
"""

import os
import random

import pytest
from amaranth.sim import Simulator

from tcpdct import layouts
from tcpdct.event_queue import EventQueue
from tcpdct.params import Params


DMA_ERROR_BIT = layouts.event_layout["dma_error"].offset
EVENT_BITS = layouts.event_layout.size


def _rng(salt):
    seed = int(os.environ.get("SEED", random.randrange(1 << 32)))
    print(f"SEED={seed}")
    return random.Random(f"{seed}-{salt}")


def random_jobs(rng, n_jobs):
    """Per job: (events as raw records, dma error). The engine's own dma_error bit is random
    so that the queue is seen to overwrite it."""
    return [([rng.getrandbits(EVENT_BITS) for _ in range(rng.choice([1, 1, 2, 3, 5]))],
             rng.random() < 0.25)
            for _ in range(n_jobs)]


def with_error(raw, error):
    return raw & ~(1 << DMA_ERROR_BIT) | int(error) << DMA_ERROR_BIT


def run_queue(jobs, rng, *, depth=32, completion_depth=None, push_idle=0.3, ready_prob=0.6,
              done_lead=(-20, 20), stall_output_until=0):
    """Runs the queue; returns (pushes, completions, outputs) as lists of cycles / records.

    ``done_lead`` bounds how many cycles before (negative) or after the push of a job's first
    event its completion is pulsed, always in job order and never more completions pending than
    the queue holds.
    """
    dut = EventQueue(Params(), depth=depth, completion_depth=completion_depth)
    completion_room = completion_depth or depth
    events = [(raw, first == 0, number)
              for number, (raws, _) in enumerate(jobs) for first, raw in enumerate(raws)]
    push_cycles = []          # per event
    done_cycles = []          # per job
    outputs = []              # (cycle, raw record)
    first_left = [0]          # jobs whose first event has left

    async def pusher(ctx):
        cycle = 0
        for raw, first, _ in events:
            while rng.random() < push_idle:
                await ctx.tick()
                cycle += 1
            ctx.set(dut.push.payload.as_value(), raw << 1 | first)
            ctx.set(dut.push.valid, 1)
            async for _, _, ready in ctx.tick().sample(dut.push.ready):
                cycle += 1
                if ready:
                    break
            push_cycles.append(cycle)
            ctx.set(dut.push.valid, 0)

    async def completer(ctx):
        cycle = 0
        first_pushes = [index for index, (_, first, _) in enumerate(events) if first]
        targets = [rng.randint(*done_lead) for _ in jobs]
        number = 0
        async for _ in ctx.tick():
            cycle += 1
            ctx.set(dut.done_valid, 0)
            if number == len(jobs):
                continue
            pending = number - first_left[0]
            pushed_first = len(push_cycles) > first_pushes[number]
            if pending >= completion_room:
                continue
            if targets[number] < 0:
                due = pushed_first or rng.random() < 1 / -targets[number]
            else:
                due = pushed_first and cycle >= push_cycles[first_pushes[number]] + targets[number]
            if due:
                ctx.set(dut.done_valid, 1)
                ctx.set(dut.done_error, jobs[number][1])
                done_cycles.append(cycle + 1)   # sampled by the queue at the next edge
                number += 1

    async def consumer(ctx):
        cycle = 0
        held = None
        ctx.set(dut.event.ready, 0)
        async for _, _, valid, ready, payload in ctx.tick().sample(
                dut.event.valid, dut.event.ready, dut.event.payload.as_value()):
            cycle += 1
            if held is not None:
                assert valid, f"cycle {cycle}: event.valid dropped before ready"
                assert payload == held, f"cycle {cycle}: event payload changed while stalled"
            held = payload if valid and not ready else None
            if valid and ready:
                outputs.append((cycle, payload))
                if events[len(outputs) - 1][1]:
                    first_left[0] += 1
            ctx.set(dut.event.ready, cycle >= stall_output_until and rng.random() < ready_prob)

    async def testbench(ctx):
        for _ in range(200 * len(events) + stall_output_until):
            await ctx.tick()
            if len(outputs) == len(events):
                break
        else:
            raise AssertionError(f"only {len(outputs)} of {len(events)} events left")
        await ctx.tick().repeat(20)   # long enough for a spurious extra event to show

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_process(pusher)
    sim.add_process(completer)
    sim.add_process(consumer)
    sim.add_testbench(testbench)
    sim.run()
    return events, push_cycles, done_cycles, outputs


def check(jobs, events, done_cycles, outputs):
    assert len(outputs) == len(events), f"{len(outputs)} events left, {len(events)} pushed"
    for index, ((cycle, record), (raw, first, number)) in enumerate(zip(outputs, events)):
        expected = with_error(raw, jobs[number][1])
        assert record == expected, \
            f"event {index} of job {number}: {record:#x}, expected {expected:#x}"
        assert cycle > done_cycles[number], \
            f"event {index} of job {number} left at {cycle}, before its job completed at " \
            f"{done_cycles[number]}"


@pytest.mark.parametrize("profile", [
    dict(),
    dict(done_lead=(-30, -1)),            # completions mostly before the events are pushed
    dict(done_lead=(0, 60), push_idle=0.0, ready_prob=1.0),
    dict(ready_prob=0.15, push_idle=0.0),
    dict(depth=4, completion_depth=3, ready_prob=0.4),
], ids=["mixed", "done_early", "done_late", "backpressure", "small"])
def test_random_order(profile):
    rng = _rng(f"event-queue-{sorted(profile.items())}")
    jobs = random_jobs(rng, 150)
    events, _, done_cycles, outputs = run_queue(jobs, rng, **profile)
    check(jobs, events, done_cycles, outputs)


def test_holds_until_completion():
    """With every completion withheld, nothing leaves, however long the consumer waits."""
    rng = _rng("event-queue-hold")
    jobs = random_jobs(rng, 10)
    events, _, done_cycles, outputs = run_queue(jobs, rng, ready_prob=1.0, done_lead=(400, 400),
                                                push_idle=0.0)
    check(jobs, events, done_cycles, outputs)
    first_out = outputs[0][0]
    assert first_out > 400, f"an event left at cycle {first_out}, before any completion"


def test_full_queue_back_pressures():
    """With the output stalled, the queue takes exactly ``depth`` events plus the one on the
    input register and the one on the output, then holds ``push.ready`` low; everything comes
    out once the output moves."""
    rng = _rng("event-queue-full")
    depth = 8
    jobs = [([rng.getrandbits(EVENT_BITS)], False) for _ in range(3 * depth)]
    events, push_cycles, done_cycles, outputs = run_queue(
        jobs, rng, depth=depth, push_idle=0.0, ready_prob=1.0, done_lead=(-1, -1),
        stall_output_until=300)
    check(jobs, events, done_cycles, outputs)
    taken_while_stalled = sum(cycle < 300 for cycle in push_cycles)
    assert taken_while_stalled == depth + 2, \
        f"{taken_while_stalled} events taken while the output was stalled"
