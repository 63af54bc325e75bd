"""The cocotb runner helper, on a small stand-in design so that it is tested apart from the core.

This file is also the cocotb test module: the simulator imports it and runs the ``@cocotb.test``
functions below, which pytest does not collect.
"""

import os
import sys
from pathlib import Path

import cocotb
import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, Timer

import cocotb_build
from cocotb_build import CocotbFailure, config_key, generate_verilog, run_cocotb
from tcpdct.params import Params


class Probe(wiring.Component):
    """A counter, and a signal whose upper half is a constant assigned beside a process."""
    en:    In(1)
    a:     In(4)
    count: Out(8)
    x:     Out(8)

    def elaborate(self, platform):
        m = Module()
        with m.If(self.en):
            m.d.sync += self.count.eq(self.count + 1)
        m.d.comb += self.x[4:8].eq(0xA)
        with m.If(self.en):
            m.d.comb += self.x[0:4].eq(self.a)
        return m


def probe(params):
    return Probe()


PARAMS = Params(n_entries=2)


@cocotb.test()
async def counts_and_sees_constants(dut):
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    dut.en.value = 0
    dut.a.value = 3
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    dut.en.value = 1
    await ClockCycles(dut.clk, 5)
    await Timer(1, unit="ns")
    assert int(dut.count.value) == 5
    # 0xA in the upper half comes from an `always @*` block that reads nothing.
    assert int(dut.x.value) == 0xA3


@cocotb.test()
async def sees_its_environment(dut):
    assert os.environ["TCPDCT_PROBE"] == "42"
    for folder in ("rtl", "tb", "sim"):
        assert str(cocotb_build.REPO_ROOT / folder) in sys.path


@cocotb.test()
async def fails_on_purpose(dut):
    await Timer(1, unit="ns")
    assert int(dut.count.value) == 99


def test_config_key_follows_parameters_and_design():
    assert config_key(PARAMS, probe) == config_key(Params(n_entries=2), probe)
    assert config_key(PARAMS, probe) != config_key(Params(n_entries=3), probe)
    assert config_key(PARAMS, probe) != config_key(PARAMS)
    assert config_key(PARAMS, probe, waves=True).startswith(config_key(PARAMS, probe) + "-")


def test_generate_verilog_is_cached_until_the_sources_change(tmp_path):
    path = generate_verilog(PARAMS, tmp_path, design=probe)
    assert path == tmp_path / "probe.v" and "module probe(" in path.read_text()
    first = path.stat().st_mtime_ns
    assert generate_verilog(PARAMS, tmp_path, design=probe).stat().st_mtime_ns == first
    # The stamp records what the file was generated from; a different one forces a rewrite.
    (tmp_path / "probe.v.sources").write_text("older sources")
    path.write_text("stale")
    assert "module probe(" in generate_verilog(PARAMS, tmp_path, design=probe).read_text()


def test_passing_run_returns_its_results():
    results = run_cocotb("test_cocotb_build", PARAMS, design=probe,
                         testcase=["counts_and_sees_constants", "sees_its_environment"],
                         extra_env={"TCPDCT_PROBE": 42})
    text = results.read_text()
    assert "counts_and_sees_constants" in text and "sees_its_environment" in text
    assert cocotb_build.BUILD_ROOT in results.parents


def test_failing_run_raises_and_names_the_test():
    with pytest.raises(CocotbFailure, match=r"1 of 1 cocotb tests .* failed: fails_on_purpose"):
        run_cocotb("test_cocotb_build", PARAMS, design=probe, testcase="fails_on_purpose")


def test_failing_run_with_waves_says_where_they_are(capsys):
    with pytest.raises(CocotbFailure) as failure:
        run_cocotb("test_cocotb_build", PARAMS, design=probe, testcase="fails_on_purpose",
                   waves=True)
    wave_file = failure.value.args[0].rsplit("waves: ", 1)[1]
    assert wave_file.endswith(("dump.fst", "dump.vcd"))
    assert os.path.getsize(wave_file) > 0
    assert cocotb_build.BUILD_ROOT in Path(wave_file).parents
    assert f"waves: {wave_file}" in capsys.readouterr().err
