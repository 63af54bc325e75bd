"""pytest entry of :mod:`test_rx_rate`: the receive port's rate at 64 bits."""

import json

from tcpdct.params import Params

from cocotb_build import run_cocotb
from test_system_runner import SYSTEM_PARAMS


def test_rx_rate_64():
    params = Params(data_width=64, **SYSTEM_PARAMS)
    run_cocotb("test_rx_rate", params, extra_env={"TCPDCT_PARAMS": json.dumps(params.as_dict())})
