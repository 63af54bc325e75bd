"""Helpers for unit tests on Amaranth's simulator.

``stream_put`` / ``stream_get`` move one payload across a ``lib.stream`` interface. Called in a
loop they transfer one payload per cycle: ``valid`` (or ``ready``) is held from one call to the
next, never dropped between back-to-back transfers. Random idle cycles and back-pressure are the
caller's, via :func:`idle`, so that every test shows its own pause pattern.

Random stimulus takes its seed from ``SEED`` in the environment (:func:`seeded_rng` prints it),
so any failure replays.
"""

import os
import random

from amaranth.sim import Simulator


__all__ = ["seeded_rng", "run_simulation", "stream_put", "stream_get", "idle", "axis_beats",
           "key_ahead_monitor"]


def seeded_rng(salt=""):
    """A :class:`random.Random` seeded from ``SEED`` (or a fresh seed, printed) and ``salt``."""
    seed = int(os.environ.get("SEED", random.randrange(1 << 32)))
    print(f"SEED={seed}")
    return random.Random(f"{seed}-{salt}")


def run_simulation(dut, *testbenches, monitors=(), clock=True, max_cycles=100_000, vcd=None):
    """Simulate ``dut`` until every testbench returns.

    Parameters
    ----------
    dut : Elaboratable
        The design.
    *testbenches : async callables taking ``ctx``
        Run concurrently; the simulation ends when all have returned.
    monitors : iterable of async callables taking ``ctx``
        Run in the background (they may loop forever) and stop with the simulation.
    clock : bool
        Drive the ``sync`` domain with a 100 MHz clock; off for a combinational design.
    max_cycles : int
        Watchdog: a testbench still waiting after this many clock periods is a failure (a lost
        transfer would otherwise hang the test).
    vcd : str or None
        Write waves to this file; off by default.

    Raises
    ------
    AssertionError
        If a testbench had not returned when the watchdog expired.
    """
    sim = Simulator(dut)
    if clock:
        sim.add_clock(1e-8)
    finished = []

    def finishing(testbench):
        async def wrapped(ctx):
            await testbench(ctx)
            finished.append(testbench)
        return wrapped

    for testbench in testbenches:
        sim.add_testbench(finishing(testbench))
    for monitor in monitors:
        sim.add_testbench(monitor, background=True)
    if vcd is None:
        _run_with_watchdog(sim, max_cycles)
    else:
        with sim.write_vcd(vcd):
            _run_with_watchdog(sim, max_cycles)
    hung = [testbench.__name__ for testbench in testbenches if testbench not in finished]
    assert not hung, f"testbenches still waiting after {max_cycles} cycles: {hung}"


def _run_with_watchdog(sim, max_cycles):
    # Each clock period is two simulator steps (both edges); a design without a clock needs
    # fewer. Counting steps rather than running until a deadline ends the run as soon as the
    # testbenches are done.
    for _ in range(2 * max_cycles):
        if not sim.advance():
            return


async def stream_put(ctx, stream, payload):
    """Offer ``payload`` on ``stream`` (``valid`` high) until it is taken, then drop ``valid``.

    Returns the number of clock cycles the transfer took (1 if ``ready`` was already high).
    """
    ctx.set(stream.valid, 1)
    ctx.set(stream.payload, payload)
    cycles = 0
    while True:
        cycles += 1
        _, _, ready = await ctx.tick().sample(stream.ready)
        if ready:
            break
    ctx.set(stream.valid, 0)
    return cycles


async def stream_get(ctx, stream):
    """Raise ``ready`` on ``stream`` until a payload is transferred, then drop it; return the
    payload (a ``data.Const`` for a structured payload)."""
    ctx.set(stream.ready, 1)
    payload, = await ctx.tick().sample(stream.payload).until(stream.valid)
    ctx.set(stream.ready, 0)
    return payload


async def idle(ctx, cycles):
    """Let ``cycles`` clock cycles pass."""
    for _ in range(cycles):
        await ctx.tick()


def axis_beats(frame, data_bytes, *, user=0):
    """AXI4-Stream beats of ``frame`` (byte 0 in the low byte lane) as payload dicts with
    ``data``, ``keep``, ``last`` and ``user`` (``user`` set on the last beat only).

    An empty frame is one empty last beat.
    """
    frame = bytes(frame)
    beats = []
    for start in range(0, max(len(frame), 1), data_bytes):
        chunk = frame[start:start + data_bytes]
        last = start + data_bytes >= len(frame)
        beats.append({
            "data": int.from_bytes(chunk, "little"),
            "keep": (1 << len(chunk)) - 1,
            "last": int(last),
            "user": int(user) if last else 0,
        })
    return beats


def key_ahead_monitor(stream, key_ahead, key_ahead_valid, *, cycles, announced,
                      checked=lambda payload: True):
    """A monitor of a block's ``key_ahead`` announcement for ``stream``.

    While ``stream`` shows nothing, ``key_ahead_valid`` may say that ``key_ahead`` is the key of
    the next payload shown, at most ``cycles`` cycles after the first announcement; every key
    announced for it must equal its ``key`` (if ``checked(payload)``). Never while a payload is
    shown. The first announcement of each payload is appended to ``announced``, so that the
    caller can tell the check ran.
    """
    async def monitor(ctx):
        waiting = []
        async for _, _, valid, payload, ahead_valid, ahead in ctx.tick().sample(
                stream.valid, stream.payload, key_ahead_valid, key_ahead):
            if valid:
                assert not ahead_valid, "key_ahead_valid while a payload is shown"
                if checked(payload):
                    assert all(key == payload.key for key in waiting), \
                        f"announced {waiting}, shown {payload.key}"
                waiting = []
            elif ahead_valid:
                if not waiting:
                    announced.append(ahead)
                waiting.append(ahead)
            assert len(waiting) <= cycles, f"announced more than {cycles} cycles ahead"
    return monitor


def key_next_monitor(stream, key_next, key_next_valid, *, announced, checked=lambda payload: True):
    """A monitor of a block's ``key_next`` announcement for ``stream``.

    While ``stream`` shows a payload, ``key_next_valid`` may say that ``key_next`` is the key of
    the payload shown after it; every key announced for that payload must equal its ``key`` (if
    ``checked(payload)``). Never while no payload is shown. The first announcement for each
    payload is appended to ``announced``.
    """
    async def monitor(ctx):
        behind = []    # keys announced for the payload behind the one shown
        coming = None  # keys announced for the next payload shown, once the one before left
        async for _, _, valid, ready, payload, next_valid, key in ctx.tick().sample(
                stream.valid, stream.ready, stream.payload, key_next_valid, key_next):
            if valid and coming is not None:
                if checked(payload):
                    assert all(k == payload.key for k in coming), \
                        f"announced {coming} behind the head, shown {payload.key}"
                coming = None
            if next_valid:
                assert valid, "key_next_valid while no payload is shown"
                if not behind:
                    announced.append(key)
                behind.append(key)
            if valid and ready:
                coming, behind = behind, []
    return monitor
