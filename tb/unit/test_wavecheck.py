"""Tests of sim/wavecheck.py on small VCD files written here, cycle by cycle.

The dumps mimic Verilator's: the clock rises in the same time step in which the registers and the
testbench's drivers take their next values, so a checker that sampled after the step instead of
before it would see every transfer one cycle early and fail these tests.
"""

import json

import pytest

from tcpdct.params import Params
from tcpdct.ports import top_ports

import wavecheck
from wavecheck import WaveFormatError, check_dump, main, top_channels


PORTS = {name: member.shape for name, member in top_ports(Params()).items()}
RESET_CYCLES = 2


def _ident(number):
    chars = [chr(33 + number % 94)]
    while number >= 94:
        number = number // 94 - 1
        chars.append(chr(33 + number % 94))
    return "".join(chars)


def write_vcd(path, cycles, *, change_on="rise", scope="tcpdct", leave_out=()):
    """Write a dump of the top level in which edge ``k`` after reset samples ``cycles[k]``.

    ``cycles`` is a list of ``{port: value}``; a port not given is 0 (``"x"`` for unknown).
    ``change_on="rise"`` changes every value in the time step of the rising clock edge, as
    Verilator does; ``"fall"`` on the falling edge, as a testbench driving on falling edges would.
    """
    widths = {"clk": 1, "rst": 1, **{name: getattr(shape, "width", shape)
                                     for name, shape in PORTS.items()}}
    names = [name for name in widths if name not in leave_out]
    ids = {name: _ident(number) for number, name in enumerate(names)}
    frames = [{"rst": 1}] * RESET_CYCLES + [{"rst": 0, **cycle} for cycle in cycles]

    def values(frame):
        return {name: frame.get(name, 0) for name in names if name != "clk"}

    def dump(name, value):
        if widths[name] == 1:
            return f"{value}{ids[name]}"
        bits = value * widths[name] if value == "x" else f"{value:0{widths[name]}b}"
        return f"b{bits} {ids[name]}"

    lines = ["$timescale 1ns $end", f"$scope module {scope} $end"]
    lines += [f"$var wire {widths[name]} {ids[name]} {name} $end" for name in names]
    lines += ["$upscope $end", "$enddefinitions $end", "#0", dump("clk", 0)]
    current = values(frames[0])
    lines += [dump(name, value) for name, value in current.items()]
    for number in range(len(frames)):
        following = values(frames[number + 1]) if number + 1 < len(frames) else current
        changes = [dump(name, value) for name, value in following.items()
                   if current[name] != value]
        current = following
        lines += [f"#{10 * number + 5}", dump("clk", 1)]
        if change_on == "rise":
            lines += changes
        lines += [f"#{10 * number + 10}", dump("clk", 0)]
        if change_on == "fall":
            lines += changes
    path.write_text("\n".join(lines) + "\n")
    return path


def check(tmp_path, cycles, **options):
    return check_dump(write_vcd(tmp_path / "dump.vcd", cycles, **options))


def rules(report):
    return [(v.channel, v.side, v.rule, v.signal) for v in report.violations]


def axis(port, valid, ready, data=0, last=0):
    return {f"{port}_tvalid": valid, f"{port}_tready": ready, f"{port}_tdata": data,
            f"{port}_tlast": last}


def aw(address, beats, valid=1, ready=1, size=3):
    return {"m_axi_awvalid": valid, "m_axi_awready": ready, "m_axi_awaddr": address,
            "m_axi_awlen": beats - 1, "m_axi_awsize": size, "m_axi_awburst": 1}


def w(last, valid=1, ready=1, data=0):
    return {"m_axi_wvalid": valid, "m_axi_wready": ready, "m_axi_wlast": last,
            "m_axi_wdata": data, "m_axi_wstrb": 0xff}


def b(valid=1, ready=1):
    return {"m_axi_bvalid": valid, "m_axi_bready": ready}


def merge(*parts):
    merged = {}
    for part in parts:
        merged.update(part)
    return merged


def test_channels_of_the_top_level():
    channels = {channel.name: channel for channel in top_channels()}
    assert list(channels) == ["s_axis_rx", "s_axis_tx", "m_axis_tx", "s_axis_cmd", "m_axis_evt",
                              "m_axi.AW", "m_axi.W", "m_axi.B",
                              "s_axil.AW", "s_axil.W", "s_axil.B", "s_axil.AR", "s_axil.R"]
    assert channels["s_axis_rx"].payload == ("s_axis_rx_tdata", "s_axis_rx_tkeep",
                                             "s_axis_rx_tlast", "s_axis_rx_tuser")
    assert channels["m_axi.W"].payload == ("m_axi_wdata", "m_axi_wstrb", "m_axi_wlast")
    assert "m_axi_awlen" in channels["m_axi.AW"].payload
    assert [name for name, channel in channels.items() if channel.dut_drives] == \
        ["m_axis_tx", "m_axis_evt", "m_axi.AW", "m_axi.W", "s_axil.B", "s_axil.R"]


@pytest.mark.parametrize("change_on", ["rise", "fall"])
def test_clean_handshakes_are_counted(tmp_path, change_on):
    cycles = [
        axis("s_axis_rx", 1, 0, data=5),             # stalled
        axis("s_axis_rx", 1, 0, data=5),             # stalled
        axis("s_axis_rx", 1, 1, data=5),             # transfer
        axis("s_axis_rx", 1, 1, data=6, last=1),     # transfer, new payload at once
        axis("s_axis_rx", 0, 1, data=7),             # idle; payload may change freely
        axis("s_axis_rx", 0, 0, data=8),
        merge(axis("s_axis_rx", 1, 1, data=9), axis("m_axis_evt", 1, 1)),
        {},
    ]
    report = check(tmp_path, cycles, change_on=change_on)
    assert report.ok, report.summary()
    assert report.cycles == len(cycles)
    assert report.edges == len(cycles) + RESET_CYCLES
    rx = report.channels["s_axis_rx"]
    assert (rx.transfers, rx.cycles_valid, rx.cycles_stalled) == (3, 5, 2)
    assert rx.utilisation == pytest.approx(3 / len(cycles))
    assert report.channels["m_axis_evt"].transfers == 1
    assert report.channels["m_axis_tx"].transfers == 0


def test_valid_dropped_before_ready(tmp_path):
    cycles = [
        axis("s_axis_rx", 1, 0), axis("s_axis_rx", 0, 0),        # the testbench gives up
        axis("m_axis_evt", 1, 0), axis("m_axis_evt", 0, 1),      # the core gives up
        axis("m_axis_tx", 1, 0), axis("m_axis_tx", 1, 1),        # held to the transfer: fine
    ]
    report = check(tmp_path, cycles)
    assert rules(report) == [
        ("s_axis_rx", "testbench", "valid-dropped", "s_axis_rx_tvalid"),
        ("m_axis_evt", "DUT", "valid-dropped", "m_axis_evt_tvalid"),
    ]
    first = report.violations[0]
    assert (first.time, first.cycle) == (10 * (RESET_CYCLES + 1) + 5, RESET_CYCLES + 1)
    assert report.violation_count == 2 and not report.ok


def test_payload_changed_while_stalled(tmp_path):
    cycles = [
        axis("m_axis_tx", 1, 0, data=0x11),
        axis("m_axis_tx", 1, 0, data=0x11),
        axis("m_axis_tx", 1, 1, data=0x12, last=1),   # changed under a stall, then taken
        axis("s_axis_cmd", 1, 0, last=0),
        axis("s_axis_cmd", 1, 1, last=1),
    ]
    report = check(tmp_path, cycles)
    assert rules(report) == [
        ("m_axis_tx", "DUT", "payload-changed", "m_axis_tx_tdata"),
        ("m_axis_tx", "DUT", "payload-changed", "m_axis_tx_tlast"),
        ("s_axis_cmd", "testbench", "payload-changed", "s_axis_cmd_tlast"),
    ]
    assert "from 0x11 to 0x12 while stalled" in report.violations[0].message


def test_unknown_valid_out_of_reset(tmp_path):
    report = check(tmp_path, [{"m_axis_evt_tvalid": "x"}, {}])
    assert rules(report) == [("m_axis_evt", "DUT", "unknown", "m_axis_evt_tvalid")]


def test_rules_are_off_during_reset(tmp_path):
    # Dropping valid while in reset is what reset is for; a stall just before reset is forgiven.
    cycles = [axis("s_axis_rx", 1, 0), {"rst": 1}, axis("s_axis_rx", 0, 0), {}]
    report = check(tmp_path, cycles)
    assert report.ok, report.summary()
    assert report.cycles == 3


def test_clean_axi_bursts(tmp_path):
    cycles = [
        merge(aw(0x1000, 2, ready=0), w(0, ready=0)),
        merge(aw(0x1000, 2), w(0)),
        w(1),
        merge(b(ready=0), w(1, data=3)),            # data of the next burst before its address
        merge(b(), aw(0x2000, 1)),
        b(),
    ]
    report = check(tmp_path, cycles)
    assert report.ok, report.summary()
    assert [report.channels[name].transfers for name in ("m_axi.AW", "m_axi.W", "m_axi.B")] \
        == [2, 3, 2]


def test_wlast_on_the_wrong_beat(tmp_path):
    cycles = [merge(aw(0x100, 4), w(0)), w(0), w(1), {}, merge(aw(0x200, 1), w(0)), w(1)]
    report = check(tmp_path, cycles)
    assert rules(report) == [("m_axi.W", "DUT", "wlast", "m_axi_wlast"),
                             ("m_axi.W", "DUT", "wlast", "m_axi_wlast")]
    assert "beat 3 of a 4-beat burst" in report.violations[0].message
    assert "beat 1 of a 1-beat burst" in report.violations[1].message


def test_wlast_before_the_address_is_checked_when_it_comes(tmp_path):
    report = check(tmp_path, [w(0), w(1), aw(0x100, 3)])
    assert rules(report) == [("m_axi.AW", "DUT", "wlast", "m_axi_wlast")]


def test_burst_across_4k(tmp_path):
    cycles = [merge(aw(0x0ff0, 3), w(0)), w(0), w(1),      # 0xff0..0x1007: crosses
              merge(aw(0x1fe0, 4), w(0)), w(0), w(0), w(1)]  # 0x1fe0..0x1fff: ends on it
    report = check(tmp_path, cycles)
    assert rules(report) == [("m_axi.AW", "DUT", "4k-crossing", "m_axi_awaddr")]
    assert "0xff0..0x1007" in report.violations[0].message


def test_write_response_before_the_last_beat(tmp_path):
    cycles = [merge(aw(0x100, 2), w(0)), merge(w(1), b(ready=0)), b(), b()]
    report = check(tmp_path, cycles)
    # The response in the cycle of the last beat is early; so is a second one for one burst.
    assert rules(report) == [("m_axi.B", "testbench", "early-response", "m_axi_bvalid")] * 2


def test_axi_lite_read_response_before_its_address(tmp_path):
    cycles = [{"s_axil_arvalid": 1, "s_axil_arready": 1},
              {"s_axil_rvalid": 1, "s_axil_rready": 1},
              {"s_axil_rvalid": 1, "s_axil_rready": 1}]     # a second response to one read
    report = check(tmp_path, cycles)
    assert rules(report) == [("s_axil.R", "DUT", "early-response", "s_axil_rvalid")]


def test_many_violations_are_counted_but_few_kept(tmp_path):
    cycles = [axis("s_axis_rx", 1, 0), axis("s_axis_rx", 0, 0)] * 20
    report = check(tmp_path, cycles)
    assert report.violation_count == 20
    assert len(report.violations) == wavecheck.MAX_KEPT


def test_scope_and_missing_ports(tmp_path):
    assert check(tmp_path, [axis("s_axis_rx", 1, 1)], scope="TOP").ok
    with pytest.raises(WaveFormatError, match="m_axi_bready"):
        check(tmp_path, [], leave_out=("m_axi_bready",))


def test_cli(tmp_path, capsys):
    clean = write_vcd(tmp_path / "clean.vcd", [axis("s_axis_rx", 1, 1)])
    broken = write_vcd(tmp_path / "broken.vcd", [axis("m_axis_evt", 1, 0), {}])
    report_path = tmp_path / "report.json"
    assert main([str(clean), "--json", str(report_path)]) == 0
    assert "no handshake violation" in capsys.readouterr().out
    assert json.loads(report_path.read_text())["channels"]["s_axis_rx"]["transfers"] == 1
    assert main([str(broken)]) == 1
    out = capsys.readouterr().out
    assert "m_axis_evt: valid-dropped by the DUT" in out and "| m_axis_evt | DUT |" in out
    assert main([str(tmp_path / "absent.vcd")]) == 2


def test_fst_without_a_converter_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(wavecheck.shutil, "which", lambda name: None)
    (tmp_path / "dump.fst").write_bytes(b"\0")
    with pytest.raises(WaveFormatError, match="WAVE_FORMAT=vcd"):
        check_dump(tmp_path / "dump.fst")


def test_indented_value_changes_are_refused(tmp_path):
    dump = write_vcd(tmp_path / "dump.vcd", [axis("s_axis_rx", 1, 1)])
    lines = dump.read_text().splitlines()
    lines[-2] = "  " + lines[-2]
    dump.write_text("\n".join(lines) + "\n")
    with pytest.raises(WaveFormatError, match="one unindented change per line"):
        check_dump(dump)
