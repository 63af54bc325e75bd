"""CI's waveform check: one full system scenario with waves on, then every handshake of the top
level checked in the dump by ``sim/wavecheck.py``.

The scenario is ``test_system``'s ``test_random_traffic`` with random pauses on every channel, so
that the stall rules are exercised on every port. The dump is VCD whatever the machine can do, so
that the check needs nothing but Python. ``TCPDCT_SEED`` chooses the seed (a fixed one otherwise,
so that the utilisation table of ``docs/verification.md`` can be reproduced).
"""

import json
import os
from pathlib import Path

from tcpdct.params import Params

from cocotb_build import CocotbFailure, run_cocotb
from test_system_runner import SYSTEM_PARAMS
from wavecheck import check_dump, edge_samples, port_ids


SCENARIO = "test_random_traffic/pauses=random"
SEED = 0x7ace



def run_scenario():
    """``(dump, failure)``: the wave file of the scenario, and its CocotbFailure if it failed."""
    params = Params(data_width=64, **SYSTEM_PARAMS)
    env = {"TCPDCT_PARAMS": json.dumps(params.as_dict()),
           "TCPDCT_SEED": os.environ.get("TCPDCT_SEED") or hex(SEED)}
    try:
        results = run_cocotb("test_system", params, testcase=[SCENARIO], waves=True,
                             wave_format="vcd", extra_env=env)
    except CocotbFailure as failure:
        # The message is the only place a failed run names its waves.
        dump = str(failure).rsplit("waves: ", 1)[1].strip()
        assert dump.endswith("dump.vcd"), failure
        return dump, failure
    return str(results.parent / "dump.vcd"), None


def drop_valid_once(dump, channel, target):
    """Copy ``dump`` to ``target`` with ``channel``'s valid low on the second edge of its first
    stall of two cycles or more, and high again in that edge's time step; the time of that edge.

    Taking a stalled edge away, not a transfer, leaves every other rule as it was.
    """
    stalled_at = dropped_at = None
    for time, (reset, valid, ready) in edge_samples(dump, ["rst", channel.valid,
                                                           channel.ready]):
        if reset == b"0" and valid == b"1" and ready == b"0":
            if stalled_at is not None:
                dropped_at = time
                break
            stalled_at = time
        else:
            stalled_at = None
    assert dropped_at is not None, f"{channel.name} never stalled for two cycles in {dump}"
    ident = port_ids(dump)[channel.valid]
    data = Path(dump).read_bytes()
    stall_step = data.index(b"\n#%d\n" % stalled_at) + 1
    # The new step goes after everything of the stall's step; in the edge's own step the
    # restored value comes first, so that a change of the core's in that step still wins.
    after_stall = data.index(b"\n#", stall_step) + 1
    edge_step = data.index(b"\n#%d\n" % dropped_at, after_stall) + len(b"\n#%d\n" % dropped_at)
    target.write_bytes(data[:after_stall] + b"#%d\n0%s\n" % (stalled_at + 1, ident)
                       + data[after_stall:edge_step] + b"1%s\n" % ident + data[edge_step:])
    return dropped_at


# One test, not two: pytest-xdist could give two tests to two workers, which would then run the
# same simulation into the same folder at once.
def test_random_traffic_waves(tmp_path):
    dump, failure = run_scenario()
    report = check_dump(dump)
    print(f"\n{report.summary()}")
    if failure is not None:
        # The scoreboard's verdict comes first; the wave check says whether a handshake broke.
        raise CocotbFailure(f"{failure}\nwave check of {dump}:\n{report.summary()}")
    assert report.ok, report.summary()
    assert report.cycles > 1000, report.summary()
    # Random traffic drives every port, registers included (it writes the settings).
    idle = {name for name, channel in report.channels.items() if channel.transfers == 0}
    assert not idle, report.summary()
    stalled = {name for name, channel in report.channels.items() if channel.cycles_stalled}
    # The random pauses must have stalled the core's outputs, or the stall rules proved nothing.
    outputs = {"m_axis_evt", "m_axis_tx", "m_axi.AW", "m_axi.W"}
    assert outputs <= stalled, report.summary()

    # The same check fails on the same dump once the core drops valid for one cycle of a stall.
    channel = report.channels["m_axi.AW"].channel
    broken = tmp_path / "dropped_awvalid.vcd"
    dropped_at = drop_valid_once(dump, channel, broken)
    found = [(v.channel, v.side, v.rule, v.signal, v.time) for v in check_dump(broken).violations]
    assert found == [("m_axi.AW", "DUT", "valid-dropped", "m_axi_awvalid", dropped_at)]
