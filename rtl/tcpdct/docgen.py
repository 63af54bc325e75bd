"""Write ``docs/interfaces.md`` from the tables the RTL, the model and the benches use.

The interface document is generated rather than written so that it cannot disagree with the
ports, record formats, enumerations and register map it describes; ``tb/unit/test_docs.py``
fails when the committed file differs from what this module produces.

Run ``python -m tcpdct.docgen`` (or ``make docs``) after changing any of those tables.
"""

import argparse
import inspect
import re
import sys
from pathlib import Path

from amaranth.hdl import Shape

from . import ports, records, regmap
from .params import Params


__all__ = ["BUS_MEANINGS", "ENUM_MEANINGS", "meaning", "render", "default_path", "main"]


#: One line per top-level bus, in the order of :func:`tcpdct.ports.top_ports`.
BUS_MEANINGS = {
    "s_axis_rx":  "Frames received from the MAC, byte 0 in `tdata[7:0]`; `tuser` on the last "
                  "beat flags a MAC error (the frame is dropped). Every beat but the last is full "
                  "or empty (`tkeep` 0), the last one's bytes start at byte 0; a frame that "
                  "breaks this is dropped as a MAC error.",
    "s_axis_tx":  "Frames the host stack transmits; the core watches them to keep connection "
                  "state in step (R31-R33).",
    "m_axis_tx":  "The same frames, unchanged and in order, to the MAC (R30).",
    "s_axis_cmd": "Commands from the driver, one record per beat (see Records). A command is "
                  "taken (`tready`) in the cycle after it is offered at the earliest: the core "
                  "decodes its opcode first, so `tdata` must hold until the handshake.",
    "m_axis_evt": "Events to the driver, one record per beat (see Records).",
    "m_axi":      "DMA: the write half of an AXI4 master that places payload and legacy frames "
                  "in host memory.",
    "s_axil":     "AXI4-Lite slave of the register map (see Registers).",
}

_ENUMS = [records.Opcode, records.CmdStatus, records.EventType, records.LegacyReason,
          records.DropReason]

#: Meanings of the enumeration members that records.py lists without a comment. Keyed by name,
#: because members of different IntEnums with the same value compare equal.
ENUM_MEANINGS = {
    records.CmdStatus: {"OK": "the command took effect"},
    records.Opcode: {
        "DELEGATE":    "hand an established connection to the core",
        "POST_BUFFER": "append a user buffer to a connection's queue",
        "POST_LEGACY": "append a legacy buffer to the ring; the index is not used",
        "RESYNC":      "set rcv_nxt, clear SYNC_REQ and BUF_REQ: the stack resynchronised",
        "RECLAIM":     "take a connection back: STATE, then BUF_DONE per queued buffer",
        "QUERY":       "report a connection's state in a STATE event",
    },
    records.EventType: {
        "RX_PLACED":   "payload of a frame placed in user buffers; header summary",
        "BUF_DONE":    "a user buffer completed and left its queue",
        "LEGACY":      "a frame written whole into a legacy buffer",
        "DROP":        "a frame dropped, counted and announced",
        "CMD_DONE":    "a command took effect, or failed with a status; its last event",
        "STATE":       "the contents of a DCT entry (RECLAIM, QUERY)",
        "BUF_REQ":     "a connection lacks room in its user buffers (R17)",
        "RESYNC":      "the stack caught up with rcv_nxt; placement resumes (R32)",
    },
}

_HEADER_MEANINGS = {
    "code":      "opcode (commands) or event type (events)",
    "dma_error": "events only: a DMA write of the job behind this event got an error response",
    "index":     f"connection index, or {records.NO_CONNECTION:#06x} for no connection",
}


def _member_comments(enum_cls):
    """The ``# comment`` after each member of an enumeration, which is where its meaning is."""
    comments = {}
    for line in inspect.getsource(enum_cls).splitlines():
        match = re.match(r"\s*(\w+)\s*=\s*\w+\s*(?:#\s*(.*))?$", line)
        if match:
            # Sphinx roles mean nothing in Markdown: keep the name, drop the role.
            comments[match.group(1)] = re.sub(r":\w+:`([^`]*)`", r"`\1`", match.group(2) or "")
    return comments


def meaning(member):
    """What an enumeration member means: its comment in records.py, or :data:`ENUM_MEANINGS`."""
    listed = ENUM_MEANINGS.get(type(member), {}).get(member.name)
    return listed or _member_comments(type(member)).get(member.name, "")


def _bus_of(port_name):
    for prefix in BUS_MEANINGS:
        if port_name.startswith(prefix + "_"):
            return prefix
    raise ValueError(f"Port {port_name!r} belongs to no bus listed in BUS_MEANINGS")


def _bits(offset, width):
    return f"{offset}" if width == 1 else f"{offset + width - 1}:{offset}"


def _ports_section(params):
    lines = [
        "## Ports",
        "",
        f"Widths are those of the default parameters ({_params_summary(params)}). Besides the "
        "buses below, the core has one clock domain: input `clk`, and input `rst`, synchronous "
        "and active high.",
        "",
    ]
    buses = {}
    for name, member in ports.top_ports(params).items():
        buses.setdefault(_bus_of(name), []).append((name, member))
    for prefix, members in buses.items():
        lines += [f"### `{prefix}`", "", BUS_MEANINGS[prefix], "",
                  "| port | direction | width |", "|---|---|---|"]
        for name, member in members:
            direction = "in" if member.flow.name == "In" else "out"
            lines.append(f"| `{name}` | {direction} | {Shape.cast(member.shape).width} |")
        lines.append("")
    return lines


def _params_summary(params):
    return ", ".join(f"{name} = {value}" for name, value in params.as_dict().items())


def _field_table(fields):
    lines = ["| field | bits | offset | width |", "|---|---|---|---|"]
    for name, offset, width in records.field_offsets(fields):
        lines.append(f"| `{name}` | {_bits(offset, width)} | {offset} | {width} |")
    return lines


def _records_section():
    lines = [
        "## Records",
        "",
        f"Commands and events are records of {records.RECORD_BITS} bits carried as one beat of "
        f"their stream, bit 0 of the record in `tdata[0]` (byte 0 in `tdata[7:0]`). Bits that no "
        "field names are reserved: zero when sent, ignored when received. The Python codec is "
        "`tcpdct.records.Command` / `Event` (`pack`, `unpack`, `to_bytes`).",
        "",
        "### Header (every record)",
        "",
        "| field | bits | offset | width | meaning |",
        "|---|---|---|---|---|",
    ]
    offset = 0
    for name, width in records.HEADER_FIELDS:
        if name is not None:
            lines.append(f"| `{name}` | {_bits(offset, width)} | {offset} | {width} | "
                         f"{_HEADER_MEANINGS[name]} |")
        offset += width
    lines.append("")
    for title, table, codes in (("Commands", records.COMMAND_FIELDS, "opcode"),
                                ("Events", records.EVENT_FIELDS, "event type")):
        lines += [f"### {title}", ""]
        for code, fields in table.items():
            summary = meaning(code)
            lines += [f"#### {code.name} ({codes} {int(code)})", "",
                      f"{summary[:1].upper()}{summary[1:]}.", ""]
            if records.field_offsets(fields):
                lines += _field_table(fields)
            else:
                lines.append("No body: header only.")
            lines.append("")
    return lines


def _enums_section():
    lines = ["## Enumerations", ""]
    for enum_cls in _ENUMS:
        lines += [f"### {enum_cls.__name__}", "", "| value | name | meaning |", "|---|---|---|"]
        for member in enum_cls:
            lines.append(f"| {int(member)} | `{member.name}` | {meaning(member)} |")
        lines.append("")
    return lines


def _registers_section():
    lines = [
        "## Registers",
        "",
        "32-bit registers on `s_axil`; offsets in bytes. A 64-bit counter is a `_LO`/`_HI` pair: "
        "reading `_LO` latches `_HI`. Counters wrap. An event, or a transmitted frame, that "
        "leaves the core in cycle t is counted at the end of cycle t + 1: a read whose AR "
        "handshake is in cycle t + 2 or later sees it.",
        "",
        "| offset | name | access | meaning |",
        "|---|---|---|---|",
    ]
    for reg in regmap.REGISTERS:
        lines.append(f"| {reg.offset:#05x} | `{reg.name}` | {reg.access} | {reg.doc} |")
    lines.append("")
    return lines


def render():
    """The text of ``docs/interfaces.md``.

    Returns
    -------
    str
    """
    lines = [
        "# Interfaces",
        "",
        "<!-- Generated by `python -m tcpdct.docgen` from rtl/tcpdct/ports.py, records.py and "
        "regmap.py. Do not edit: change the tables and regenerate (`make docs`). -->",
        "",
        "The ports, record formats, enumerations and register map of the `tcpdct` core.",
        "",
        *_ports_section(Params()),
        *_records_section(),
        *_enums_section(),
        *_registers_section(),
    ]
    return "\n".join(lines).rstrip("\n") + "\n"


def default_path():
    """``docs/interfaces.md`` of the source tree this package lives in."""
    return Path(__file__).resolve().parents[2] / "docs" / "interfaces.md"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tcpdct.docgen",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("-o", "--output", type=Path, default=default_path(),
                        help="file to write (default: %(default)s)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if the file differs from the tables")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text() if args.output.exists() else None
        if current != text:
            print(f"{args.output} is out of date: run `python -m tcpdct.docgen`", file=sys.stderr)
            return 1
        return 0
    args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
