"""Logic levels in front of every register of a synthesised ECP5 netlist, counted per block.

``make synth`` gives Fmax, which is the worst path alone, and the number of endpoints that miss
the target (``failing_endpoints``), which says that a large part of the design misses it but not
where. Routing makes most of each path's delay and depends on the placement; the levels of logic
in front of a register are the part the RTL decides. This counts them for every endpoint (a
flip-flop's data, clock enable and set/reset, a block RAM's inputs, a LUT RAM's write side) of
the netlist that ``make synth`` writes (``build/synth/<config>/netlist.json``) and tells how many
have at least ``--levels`` levels, per block (the first part of the cell's name, the Amaranth
submodule it came from).

Counting: a LUT4 or a LUT RAM's asynchronous read is a level. A PFUMX or L6MUX21 joins LUTs of
one slice into a wider function: the level of its select input counts one more, its data inputs
none. A CCU2C is a level from its LUT inputs, and its carry adds 1/16 of a level per cell (a
32-bit adder's chain, 16 cells, about one LUT's delay on an ECP5). Flip-flop and block RAM outputs,
and the design's input ports, are level 0. A submodule that Yosys kept (the match CAM, with
``keep_hierarchy``) is counted on its own, its inputs at level 0, and its outputs start the top's
paths at the levels they have inside it.

On an ECP5 at speed grade 8, a level placed and routed costs about 1–1.5 ns (a LUT and the net
to the next, ``docs/performance.md``, "Critical paths"), so at 156.25 MHz (6.4 ns, less the
clock-to-output of the first register) about four levels fit.

Run::

    python sim/logic_depth.py build/synth/64x64/netlist.json [--levels 5] [--json FILE]
"""

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path


__all__ = ["cell_levels", "endpoint_levels", "block_of", "summarise", "main"]


#: The carry chain's share of a level per CCU2C cell (two bits).
CARRY_LEVEL = 1 / 16

#: Inputs of sequential cells that end a path: everything but the clocks.
_CLOCK_PORTS = {"CLK", "CLKA", "CLKB", "WCK"}

#: LUT RAM inputs that the write takes at the clock edge (the read address is combinational).
_LUTRAM_WRITE_PORTS = {"DI", "WAD", "WRE"}


def _bits(connection):
    """The net numbers of a connection (constants, given as strings, are left out)."""
    return [bit for bit in connection if isinstance(bit, int)]


def _is_submodule(netlist, kind):
    """Whether a cell of type ``kind`` is a module of the design that Yosys kept, rather than a
    primitive (whose module in the netlist is a black box)."""
    module = netlist["modules"].get(kind)
    return module is not None and not module.get("attributes", {}).get("blackbox")


def _top_module(netlist):
    for name, module in netlist["modules"].items():
        if module.get("attributes", {}).get("top"):
            return name
    raise ValueError("The netlist names no top module (attribute 'top')")


def cell_levels(netlist, module_name, _cache=None):
    """The levels of every net of ``module_name``, and those of its output ports.

    Returns
    -------
    (dict, dict, list)
        ``{net: level}`` for every net driven inside the module or by its inputs;
        ``{output port bit index: level}`` in port order, as ``{port: [levels]}``; and the
        endpoints, as ``[(cell name, port, level)]``.
    """
    cache = {} if _cache is None else _cache
    if module_name in cache:
        return cache[module_name]
    module = netlist["modules"][module_name]
    cells = module["cells"]

    # Who drives each net, and with what rule.
    level = {}
    for port in module.get("ports", {}).values():
        if port["direction"] == "input":
            for bit in _bits(port["bits"]):
                level[bit] = 0.0
    driver = {}
    endpoints = []
    for name, cell in cells.items():
        kind = cell["type"]
        directions = cell.get("port_directions", {})
        conns = cell["connections"]
        if _is_submodule(netlist, kind):
            # A kept submodule: its outputs start here at the levels they have inside it.
            _, out_levels, _ = cell_levels(netlist, kind, cache)
            for port, bits in conns.items():
                for index, bit in enumerate(bits):
                    if isinstance(bit, int) and port in out_levels:
                        level[bit] = out_levels[port][index]
            continue
        if kind == "TRELLIS_FF" or kind == "DP16KD":
            for port, bits in conns.items():
                if directions.get(port) == "output":
                    for bit in _bits(bits):
                        level[bit] = 0.0
                elif port not in _CLOCK_PORTS:
                    endpoints.extend((name, port, bit) for bit in _bits(bits))
            continue
        if kind == "TRELLIS_DPR16X4":
            for port, bits in conns.items():
                if port in _LUTRAM_WRITE_PORTS:
                    endpoints.extend((name, port, bit) for bit in _bits(bits))
                elif port == "DO":
                    for bit in _bits(bits):
                        driver[bit] = (kind, conns)
            continue
        for port, bits in conns.items():
            if directions.get(port) == "output":
                for bit in _bits(bits):
                    driver[bit] = (kind, conns, port)

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 100_000))

    def of(bit):
        if bit in level:
            return level[bit]
        level[bit] = 0.0  # breaks a combinational loop, which a synthesised netlist has not
        rule = driver.get(bit)
        if rule is None:
            return 0.0
        kind, conns = rule[0], rule[1]

        def most(*ports, extra=0.0):
            values = [of(b) for port in ports for b in _bits(conns.get(port, []))]
            return (max(values) if values else 0.0) + extra

        if kind == "LUT4":
            value = most("A", "B", "C", "D", extra=1)
        elif kind == "PFUMX":
            value = max(most("ALUT", "BLUT"), most("C0", extra=1))
        elif kind == "L6MUX21":
            value = max(most("D0", "D1"), most("SD", extra=1))
        elif kind == "CCU2C":
            value = max(most("A0", "B0", "C0", "D0", "A1", "B1", "C1", "D1", extra=1),
                        most("CIN", extra=CARRY_LEVEL))
        elif kind == "TRELLIS_DPR16X4":
            value = most("RAD", extra=1)
        else:
            inputs = [port for port in conns if port not in rule[2:]]
            value = most(*inputs, extra=1)
        level[bit] = value
        return value

    resolved = [(name, port, of(bit)) for name, port, bit in endpoints]
    out_levels = {}
    for port_name, port in module.get("ports", {}).items():
        if port["direction"] == "output":
            out_levels[port_name] = [of(bit) if isinstance(bit, int) else 0.0
                                     for bit in port["bits"]]
    cache[module_name] = (level, out_levels, resolved)
    return cache[module_name]


def block_of(cell_name, module_name=None):
    """The block a cell belongs to: its name's first part (Yosys names a flattened cell after
    the submodule path of its signal), or the module it is in, for a kept submodule."""
    name = cell_name.lstrip("\\")
    if module_name is not None:
        return module_name.split(".")[-1]
    return name.split(".", 1)[0] if "." in name else "(top)"


def endpoint_levels(netlist):
    """``[(block, cell, port, level)]`` for every endpoint of the netlist's top module and of
    the submodules it keeps."""
    top = _top_module(netlist)
    cache = {}
    cell_levels(netlist, top, cache)
    result = []
    for module_name, (_, _, endpoints) in cache.items():
        inner = None if module_name == top else module_name
        result.extend((block_of(cell, inner), cell, port, value)
                      for cell, port, value in endpoints)
    return result


def summarise(endpoints, levels):
    """Per block: endpoints, those with at least ``levels`` levels, and the most levels."""
    blocks = defaultdict(list)
    for block, _, _, value in endpoints:
        blocks[block].append(value)
    rows = []
    for block, values in blocks.items():
        rows.append({"block": block, "endpoints": len(values),
                     "deep": sum(value >= levels for value in values),
                     "max_levels": round(max(values), 2),
                     "histogram": dict(sorted(Counter(int(value) for value in values).items()))})
    rows.sort(key=lambda row: (-row["deep"], row["block"]))
    return rows


def _table(rows, levels):
    lines = [f"| block | endpoints | with ≥ {levels} levels | most levels |",
             "|---|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['block']} | {row['endpoints']} | {row['deep']} | "
                     f"{row['max_levels']:g} |")
    total = sum(row["endpoints"] for row in rows)
    deep = sum(row["deep"] for row in rows)
    lines.append(f"| all | {total} | {deep} | "
                 f"{max((row['max_levels'] for row in rows), default=0):g} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("netlist", type=Path, help="Yosys JSON netlist (synth_ecp5 output)")
    parser.add_argument("--levels", type=int, default=5,
                        help="count the endpoints with at least this many levels (default: 5)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    netlist = json.loads(args.netlist.read_text())
    rows = summarise(endpoint_levels(netlist), args.levels)
    print(_table(rows, args.levels))
    if args.json:
        args.json.write_text(json.dumps({"netlist": str(args.netlist), "levels": args.levels,
                                         "carry_level": CARRY_LEVEL, "blocks": rows},
                                        indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
