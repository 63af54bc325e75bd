"""pytest entry of the system testbench: build the core for one data width and run
``test_system`` on it under Verilator.

``TCPDCT_SEED`` chooses the random seed of the run (random otherwise, and printed in the cocotb
log); ``TCPDCT_TESTCASE`` (cocotb test names without their parameters, comma-separated) runs
only those; ``WAVES=1`` records waves.
"""

import json
import os
import re

from tcpdct.params import Params

from cocotb_build import run_cocotb


#: Small enough to build quickly, large enough that index checks and queue limits are reached by
#: the tests in a few commands.
SYSTEM_PARAMS = dict(n_entries=8, buffers_per_conn=4, legacy_ring_depth=16)


def _test_filter():
    """A cocotb test filter for the names in ``TCPDCT_TESTCASE``, or ``None`` to run them all.

    A name selects every parametrization of the test (``test_x/pauses=none``, ...), so it is a
    filter rather than cocotb's exact list of names.
    """
    text = os.environ.get("TCPDCT_TESTCASE", "")
    names = [re.escape(name.strip()) for name in text.split(",") if name.strip()]
    # cocotb matches the full name, ``module.test/parameters``.
    return rf"\.({'|'.join(names)})(/|$)" if names else None


def run_system(data_width, test_module="test_system"):
    """Run the cocotb tests of ``test_module`` on the core built with :data:`SYSTEM_PARAMS`; every
    module run this way shares one Verilator build per data width."""
    params = Params(data_width=data_width, **SYSTEM_PARAMS)
    env = {"TCPDCT_PARAMS": json.dumps(params.as_dict())}
    if os.environ.get("TCPDCT_SEED"):
        env["TCPDCT_SEED"] = os.environ["TCPDCT_SEED"]
    test_filter = _test_filter()
    if test_filter:
        env["COCOTB_TEST_FILTER"] = test_filter
    run_cocotb(test_module, params, extra_env=env)


def test_system_64():
    run_system(64)
