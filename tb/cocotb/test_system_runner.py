"""pytest entry of the system testbench: build the core for one data width and run
``test_system`` on it under Verilator.

``TCPDCT_SEED`` chooses the random seed of the run (random otherwise, and printed in the cocotb
log); ``TCPDCT_TESTCASE`` (cocotb test names, comma-separated) runs one test; ``WAVES=1`` records waves.
"""

import json
import os

from tcpdct.params import Params

from cocotb_build import run_cocotb


#: Small enough to build quickly, large enough that index checks and queue limits are reached by
#: the tests in a few commands.
SYSTEM_PARAMS = dict(n_entries=8, buffers_per_conn=4, legacy_ring_depth=16)


def _testcases():
    text = os.environ.get("TCPDCT_TESTCASE", "")
    return [name.strip() for name in text.split(",") if name.strip()] or None


def run_system(data_width):
    params = Params(data_width=data_width, **SYSTEM_PARAMS)
    env = {"TCPDCT_PARAMS": json.dumps(params.as_dict())}
    if os.environ.get("TCPDCT_SEED"):
        env["TCPDCT_SEED"] = os.environ["TCPDCT_SEED"]
    run_cocotb("test_system", params, testcase=_testcases(),
               extra_env=env)


def test_system_64():
    run_system(64)
