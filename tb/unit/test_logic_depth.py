"""``sim/logic_depth.py`` on small netlists written by hand in Yosys' JSON form."""

import json

import pytest

import logic_depth


def _cell(kind, inputs, outputs):
    connections = {**inputs, **outputs}
    directions = {**{port: "input" for port in inputs}, **{port: "output" for port in outputs}}
    return {"type": kind, "connections": connections, "port_directions": directions}


def _ff(d, q, ce=None):
    inputs = {"DI": [d], "CLK": [2]}
    if ce is not None:
        inputs["CE"] = [ce]
    return _cell("TRELLIS_FF", inputs, {"Q": [q]})


def _lut(a, z, b="0"):
    return _cell("LUT4", {"A": [a], "B": [b], "C": ["0"], "D": ["0"]}, {"Z": [z]})


def _netlist(cells, ports=None, extra_modules=None):
    top = {"attributes": {"top": "00000000000000000000000000000001"},
           "ports": {"clk": {"direction": "input", "bits": [2]}, **(ports or {})},
           "cells": cells, "netnames": {}}
    return {"modules": {"top": top, **(extra_modules or {})}}


def _levels(netlist):
    return {(cell, port): value for _, cell, port, value in logic_depth.endpoint_levels(netlist)}


def test_luts_in_a_row_count_one_level_each():
    # engine.a (FF) -> LUT -> LUT -> LUT -> engine.b (FF); a port -> LUT -> engine.a
    netlist = _netlist({
        "engine.a_TRELLIS_FF_Q": _ff(d=20, q=10),
        "lut_1": _lut(10, 11), "lut_2": _lut(11, 12), "lut_3": _lut(12, 13),
        "engine.b_TRELLIS_FF_Q": _ff(d=13, q=14, ce=11),
        "lut_in": _lut(3, 20),
    }, ports={"valid": {"direction": "input", "bits": [3]}})
    levels = _levels(netlist)
    assert levels[("engine.b_TRELLIS_FF_Q", "DI")] == 3
    assert levels[("engine.b_TRELLIS_FF_Q", "CE")] == 1
    assert levels[("engine.a_TRELLIS_FF_Q", "DI")] == 1
    # The clock is no endpoint.
    assert ("engine.b_TRELLIS_FF_Q", "CLK") not in levels


def test_wide_multiplexers_and_carries():
    # Two LUTs joined by a PFUMX whose select comes through a LUT of its own; a two-cell carry.
    netlist = _netlist({
        "x_TRELLIS_FF_Q": _ff(d="0", q=10),
        "lut_a": _lut(10, 11), "lut_b": _lut(10, 12),
        "lut_sel": _lut(10, 13), "lut_sel_2": _lut(13, 14),
        "mux": _cell("PFUMX", {"ALUT": [11], "BLUT": [12], "C0": [14]}, {"Z": [15]}),
        "y_TRELLIS_FF_Q": _ff(d=15, q=16),
        "carry_0": _cell("CCU2C", {"A0": [10], "B0": ["0"], "C0": ["0"], "D0": ["0"],
                                   "A1": [10], "B1": ["0"], "C1": ["0"], "D1": ["0"],
                                   "CIN": ["0"]}, {"S0": [20], "S1": [21], "COUT": [22]}),
        "carry_1": _cell("CCU2C", {"A0": ["0"], "B0": ["0"], "C0": ["0"], "D0": ["0"],
                                   "A1": ["0"], "B1": ["0"], "C1": ["0"], "D1": ["0"],
                                   "CIN": [22]}, {"S0": [23], "S1": [24], "COUT": [25]}),
        "z_TRELLIS_FF_Q": _ff(d=23, q=26),
    })
    levels = _levels(netlist)
    # The data inputs' LUTs are level 1, the select's second LUT level 2, and the PFUMX a
    # level more than its select.
    assert levels[("y_TRELLIS_FF_Q", "DI")] == 3
    # The first cell's carry out is a level from its LUT inputs; the carry into the second adds
    # its share.
    assert levels[("z_TRELLIS_FF_Q", "DI")] == pytest.approx(1 + logic_depth.CARRY_LEVEL)


def test_lutram_read_is_a_level_and_its_write_an_endpoint():
    netlist = _netlist({
        "q_TRELLIS_FF_Q": _ff(d="0", q=10),
        "lut": _lut(10, 11),
        "ram": _cell("TRELLIS_DPR16X4", {"RAD": [11], "WAD": [11], "DI": [10], "WRE": [10],
                                         "WCK": [2]}, {"DO": [12]}),
        "r_TRELLIS_FF_Q": _ff(d=12, q=13),
    })
    levels = _levels(netlist)
    assert levels[("r_TRELLIS_FF_Q", "DI")] == 2
    assert levels[("ram", "WAD")] == 1
    assert ("ram", "WCK") not in levels


def test_kept_submodule_outputs_carry_their_levels():
    # Inside the submodule: a FF -> LUT -> LUT -> output port; its input port -> LUT -> FF.
    sub = {"ports": {"key": {"direction": "input", "bits": [5]},
                     "hit": {"direction": "output", "bits": [7]},
                     "clk": {"direction": "input", "bits": [6]}},
           "cells": {"s_TRELLIS_FF_Q": _ff(d=9, q=4),
                     "l1": _lut(4, 8), "l2": _lut(8, 7), "l3": _lut(5, 9)},
           "netnames": {}}
    netlist = _netlist({
        "cam": {"type": "top.cam", "connections": {"key": [10], "hit": [11], "clk": [2]}},
        "k_TRELLIS_FF_Q": _ff(d="0", q=10),
        "lut": _lut(11, 12),
        "engine.h_TRELLIS_FF_Q": _ff(d=12, q=13),
    }, extra_modules={"top.cam": sub})
    endpoints = logic_depth.endpoint_levels(netlist)
    by_cell = {(cell, port): (block, value) for block, cell, port, value in endpoints}
    assert by_cell[("engine.h_TRELLIS_FF_Q", "DI")] == ("engine", 3)
    assert by_cell[("s_TRELLIS_FF_Q", "DI")] == ("cam", 1)


def test_summary_counts_deep_endpoints_per_block():
    endpoints = [("engine", "a", "DI", 5.0), ("engine", "b", "CE", 4.5), ("parser", "c", "DI", 6.0),
                 ("parser", "d", "DI", 1.0), ("parser", "e", "DI", 2.0)]
    rows = logic_depth.summarise(endpoints, levels=5)
    assert [(row["block"], row["endpoints"], row["deep"], row["max_levels"]) for row in rows] == \
        [("engine", 2, 1, 5.0), ("parser", 3, 1, 6.0)]


def test_main_prints_and_writes(tmp_path, capsys):
    netlist = _netlist({"a_TRELLIS_FF_Q": _ff(d=11, q=10), "lut": _lut(10, 11)})
    path = tmp_path / "netlist.json"
    path.write_text(json.dumps(netlist))
    out = tmp_path / "depth.json"
    assert logic_depth.main([str(path), "--levels", "1", "--json", str(out)]) == 0
    assert "| (top) | 1 | 1 | 1 |" in capsys.readouterr().out
    assert json.loads(out.read_text())["blocks"][0]["deep"] == 1
