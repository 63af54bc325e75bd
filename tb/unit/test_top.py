"""The real core converts to one Verilog file with the documented ports, and lints clean."""

import json
import re
import subprocess

import pytest

from tcpdct import cli, ports
from tcpdct.params import Params
from tcpdct.top import TcpDct

from cocotb_build import REPO_ROOT
from toolchain import verilator_env


CONFIGS = [Params(), Params(data_width=128, n_entries=8, buffers_per_conn=2)]


@pytest.mark.parametrize("params", CONFIGS, ids=lambda p: f"w{p.data_width}-n{p.n_entries}")
def test_verilog_ports_params_and_lint(params, tmp_path):
    verilog, params_json = cli.write_verilog(TcpDct(params), params, tmp_path / "tcpdct.v")
    text = verilog.read_text()

    header = re.search(r"module tcpdct\((.*?)\);", text, re.S)
    assert header, "no module named tcpdct"
    found = {name.strip() for name in header.group(1).split(",")}
    expected = set(ports.top_ports(params)) | {"clk", "rst"}
    assert found == expected

    written = json.loads(params_json.read_text())
    assert written["params"] == params.as_dict()

    lint = subprocess.run(
        ["verilator", "--lint-only", "-Wall", "--top-module", "tcpdct",
         str(REPO_ROOT / "rtl" / "tcpdct" / "lint.vlt"), str(verilog)],
        env=verilator_env(), capture_output=True, text=True)
    assert lint.returncode == 0, lint.stderr[-4000:]


def test_rejects_anything_but_params():
    with pytest.raises(TypeError, match="tcpdct.params.Params"):
        TcpDct({"data_width": 64})
