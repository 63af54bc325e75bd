"""pytest entry of the system testbench: build the core for one data width and run
``test_system`` on it under Verilator, at 64 bits (10G class) and at 512 bits (100G class).

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

def _test_filter(names=None):
    """A cocotb test filter for ``names``, else the names in ``TCPDCT_TESTCASE``, or ``None`` to
    run them all.

    A name selects every parametrization of the test (``test_x/pauses=none``, ...), so it is a
    filter rather than cocotb's exact list of names.
    """
    if names is None:
        names = os.environ.get("TCPDCT_TESTCASE", "").split(",")
    names = [re.escape(name.strip()) for name in names if name.strip()]
    # cocotb matches the full name, ``module.test/parameters``.
    return rf"\.({'|'.join(names)})(/|$)" if names else None


def run_system(data_width, test_module="test_system", testcases=None):
    """Run the cocotb tests of ``test_module`` on the core built with :data:`SYSTEM_PARAMS`; every
    module run this way shares one Verilator build per data width.

    Parameters
    ----------
    data_width : int
    test_module : str
    testcases : list of str, optional
        Names of the cocotb tests to run (every parametrization of each); when not given,
        ``TCPDCT_TESTCASE`` chooses, and without it every test of the module runs.
    """
    params = Params(data_width=data_width, **SYSTEM_PARAMS)
    env = {"TCPDCT_PARAMS": json.dumps(params.as_dict())}
    if os.environ.get("TCPDCT_SEED"):
        env["TCPDCT_SEED"] = os.environ["TCPDCT_SEED"]
    test_filter = _test_filter(testcases)
    if test_filter:
        env["COCOTB_TEST_FILTER"] = test_filter
    run_cocotb(test_module, params, extra_env=env)


# The two ends of the width range run every test; 128 and 256 bits get a smoke test in
# ``test_widths_runner.py``.
def test_system_64():
    run_system(64)


def test_system_512():
    run_system(512)
