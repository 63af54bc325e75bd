"""The cocotb backend of the replay: the RTL under Verilator, checked against the golden model.

:func:`run` builds the core and runs the cocotb test :mod:`replay_bench` in the simulator's
process, which replays the capture through the testbench (:class:`tb.TB`: every step's events
and host-memory writes are compared with the model's) and prints the summary itself.
"""

import json
import os
from pathlib import Path

from tcpdct.params import Params

from cocotb_build import run_cocotb, CocotbFailure


__all__ = ["REPLAY_PARAMS", "run"]


#: Build parameters of the replay: the defaults, which is what ``make verilog`` builds.
REPLAY_PARAMS = Params()


def _absolute(path):
    return None if path is None else str(Path(path).resolve())


def run(options, params=REPLAY_PARAMS):
    """Replay as the parsed ``replay.py`` command line says; the exit code."""
    request = {
        "pcap": _absolute(options.pcap), "local": options.local, "delegate": options.delegate,
        "json": _absolute(options.json), "dump": _absolute(options.dump),
    }
    env = {"TCPDCT_PARAMS": json.dumps(params.as_dict()),
           "TCPDCT_REPLAY": json.dumps(request),
           # cocotbext-axi still calls cocotb 1.x APIs that cocotb 2 deprecates; the warnings
           # would bury the summary and are not ours to fix.
           "PYTHONWARNINGS": "ignore::DeprecationWarning"}
    if os.environ.get("TCPDCT_SEED"):
        env["TCPDCT_SEED"] = os.environ["TCPDCT_SEED"]
    try:
        run_cocotb("replay_bench", params, waves=options.waves, extra_env=env)
    except CocotbFailure as failure:
        print(f"error: {failure}")
        return 1
    return 0
