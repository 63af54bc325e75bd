"""The Verilog writer of ``tcpdct-verilog``: files, parameters, and Verilog that Verilator runs.

These tests exercise the writing mechanism with a stand-in for the core that has the core's
ports, so that they do not depend on the state of the RTL; converting the real
:class:`tcpdct.top.TcpDct` is tested with the top level itself.
"""

import dataclasses
import json
import subprocess
import sys
import types

import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from tcpdct import cli, ports
from tcpdct.params import Params

from cocotb_build import REPO_ROOT
from toolchain import verilator_env


class StandInTop(wiring.Component):
    """The core's ports, and logic in the shapes that matter to the writer: a register with a
    reset value, and a process that assigns a constant to part of a signal."""

    def __init__(self, params):
        self.params = params
        super().__init__(ports.top_ports(params))

    def elaborate(self, platform):
        m = Module()
        m.d.sync += self.m_axis_evt_tvalid.eq(self.s_axis_cmd_tvalid)
        m.d.comb += self.s_axis_cmd_tready.eq(1)
        # Record code 5 in the low byte, the rest of the header from the command.
        m.d.comb += self.m_axis_evt_tdata[0:8].eq(5)
        with m.If(self.s_axis_cmd_tvalid):
            m.d.comb += self.m_axis_evt_tdata[16:32].eq(self.s_axis_cmd_tdata[16:32])
        return m


class ConstantPart(wiring.Component):
    """Bits 7:4 of ``x`` are a constant, bits 3:0 come from a process: Yosys writes the
    constant as an ``always @*`` block that reads nothing."""
    a:  In(4)
    en: In(1)
    x:  Out(8)

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.x[4:8].eq(0xA)
        with m.If(self.en):
            m.d.comb += self.x[0:4].eq(self.a)
        return m


@pytest.fixture
def stand_in_top(monkeypatch):
    """``tcpdct.top`` replaced by a module whose ``TcpDct`` is :class:`StandInTop`."""
    module = types.ModuleType("tcpdct.top")
    module.TcpDct = StandInTop
    monkeypatch.setitem(sys.modules, "tcpdct.top", module)


def test_main_writes_verilog_and_build_record(stand_in_top, tmp_path, capsys):
    output = tmp_path / "out" / "core.v"
    assert cli.main(["-o", str(output), "--data-width", "128", "--n-entries", "8",
                     "--legacy-ring-depth", "32"]) == 0
    params = Params(data_width=128, n_entries=8, legacy_ring_depth=32)

    verilog = output.read_text()
    assert "module tcpdct(" in verilog
    assert "input [127:0] s_axis_rx_tdata;" in verilog
    assert "output [255:0] m_axis_evt_tdata;" in verilog
    assert "input clk;" in verilog and "input rst;" in verilog

    record = json.loads((tmp_path / "out" / "core.json").read_text())
    assert record["module"] == "tcpdct"
    assert record["verilog"] == "core.v"
    assert record["params"] == params.as_dict()
    assert record["tools"]["amaranth"].startswith("0.5")
    assert str(output) in capsys.readouterr().out
    assert not list(output.parent.glob("*.partial"))


def test_every_parameter_has_an_option():
    text = cli._parser().format_help()
    for field in dataclasses.fields(Params):
        assert "--" + field.name.replace("_", "-") in text


def test_defaults_are_those_of_params(stand_in_top, tmp_path):
    cli.main(["-o", str(tmp_path / "tcpdct.v")])
    assert json.loads((tmp_path / "tcpdct.json").read_text())["params"] == Params().as_dict()


def test_invalid_parameter_is_refused_with_the_reason(stand_in_top, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        cli.main(["-o", str(tmp_path / "tcpdct.v"), "--data-width", "96"])
    assert exit.value.code == 2
    assert "Data width must be 64, 128, 256 or 512, not 96" in capsys.readouterr().err
    assert not (tmp_path / "tcpdct.v").exists()


def _lint(path, top):
    return subprocess.run(
        ["verilator", "--lint-only", "-Wall", "--top-module", top,
         str(REPO_ROOT / "rtl" / "tcpdct" / "lint.vlt"), str(path)],
        env=verilator_env(), capture_output=True, text=True)


def test_constant_processes_run_at_time_zero(tmp_path):
    from amaranth.back import verilog
    raw = verilog.convert(ConstantPart(), name="constant_part")
    assert "ALWNEVER" in _lint(_write(tmp_path / "raw.v", raw), "constant_part").stderr

    fixed, _ = cli.write_verilog(ConstantPart(), Params(), tmp_path / "fixed.v",
                                 name="constant_part")
    result = _lint(fixed, "constant_part")
    assert result.returncode == 0, result.stderr


def test_stand_in_top_passes_lint(tmp_path):
    verilog_path, _ = cli.write_verilog(StandInTop(Params()), Params(), tmp_path / "tcpdct.v")
    result = _lint(verilog_path, "tcpdct")
    assert result.returncode == 0, result.stderr


def _write(path, text):
    path.write_text(text)
    return path


class KeptPart(wiring.Component):
    """A submodule to keep as a hierarchy, under a top that names it."""
    a: In(4)
    x: Out(4)
    kept_hierarchy = ("inner",)

    def elaborate(self, platform):
        m = Module()
        m.submodules.inner = inner = ConstantPart()
        m.d.comb += [inner.a.eq(self.a), inner.en.eq(1), self.x.eq(inner.x[:4])]
        return m


def test_kept_hierarchy_is_marked_and_passes_lint(tmp_path):
    verilog_path, _ = cli.write_verilog(KeptPart(), Params(), tmp_path / "kept.v",
                                        name="kept_part")
    text = verilog_path.read_text()
    assert '(* keep_hierarchy = "yes" *)\nmodule \\kept_part.inner (' in text
    assert text.count("keep_hierarchy") == 1
    result = _lint(verilog_path, "kept_part")
    assert result.returncode == 0, result.stderr


def test_kept_hierarchy_of_no_module_is_refused(tmp_path):
    part = KeptPart()
    part.kept_hierarchy = ("outer",)
    with pytest.raises(ValueError, match="kept_part.outer"):
        cli.write_verilog(part, Params(), tmp_path / "kept.v", name="kept_part")
