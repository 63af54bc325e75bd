"""cocotb test behind ``make sim``: replay a capture through the RTL (see :mod:`replay_cocotb`).

The testbench checks every step against the golden model and stops at the first disagreement;
the summary then records one mismatch and the test fails.
"""

import argparse
import json
import os
import time
from pathlib import Path

import cocotb
from cocotb.triggers import RisingEdge

from tb import TB, ScoreboardError, CLOCK_NS
from replay import run_replay, report, write_json


class DutRunner:
    """The testbench as a :class:`schedule.Runner`."""

    name = "cocotb"

    def __init__(self, tb):
        self.tb = tb
        self.params = tb.params
        self.memory = tb.host_memory
        self.mismatches = 0
        self.tx_frames_out = 0

    async def command(self, cmd):
        return await self.tb.command(cmd)

    async def rx(self, frames):
        return await self.tb.rx(frames)

    async def tx(self, frame):
        events = await self.tb.tx(frame)
        self.tx_frames_out += 1
        return events

    async def expire_buffer_request(self, reason):
        # Waits out the default BUF_REQ_TIMEOUT in simulated cycles: slow, but the driver asks
        # for it only when a connection's buffer queue has no free slot (buffers_per_conn 1).
        return await self.tb.expire_buffer_request(reason)


async def _count_cycles(dut, counter):
    while True:
        await RisingEdge(dut.clk)
        counter[0] += 1


@cocotb.test()
async def replay(dut):
    request = json.loads(os.environ["TCPDCT_REPLAY"])
    options = argparse.Namespace(**request)
    tb = TB(dut)
    tb.set_pauses("none")
    await tb.reset()
    cycles = [0]
    cocotb.start_soon(_count_cycles(dut, cycles))
    runner = DutRunner(tb)

    started = time.monotonic()
    try:
        result = await run_replay(runner, pcap=options.pcap, local=options.local,
                                  delegate=options.delegate == "auto")
    except ScoreboardError as error:
        if options.json:
            write_json(options.json, options, "cocotb", tb.params, mismatches=1,
                       error=str(error))
        raise
    wall = time.monotonic() - started

    exit_code = report(result, options, "cocotb")
    rate = cycles[0] / wall if wall else 0.0
    print(f"simulated {cycles[0]} cycles of {CLOCK_NS} ns in {wall:.1f} s: "
          f"{rate:,.0f} cycles/s")
    if options.json:
        path = Path(options.json)
        document = json.loads(path.read_text())
        document["simulation"] = {"cycles": cycles[0], "wall_seconds": round(wall, 3),
                                  "cycles_per_second": round(rate)}
        path.write_text(json.dumps(document, indent=2) + "\n")
    assert exit_code == 0, "the replay's summary does not check out (see above)"
