"""Generate, build and run the core under cocotb and Verilator, once per configuration.

The pytest wrappers of the cocotb benches and the replay runner all go through
:func:`run_cocotb`. Each configuration (parameters, design, waves or not) is generated and
verilated once into ``sim/build/<hash>/``; a build is redone only when the RTL sources change.
pytest-xdist workers share those folders, so every build holds an exclusive ``fcntl`` lock on
its folder while tests that use it hold a shared one.
"""

import contextlib
import fcntl
import hashlib
import json
import os
import sys
from pathlib import Path
from xml.etree import ElementTree

from cocotb_tools.runner import get_runner

import tcpdct
from tcpdct.cli import MODULE_NAME, build_top, write_verilog
from tcpdct.params import Params

from toolchain import fst_available, make_overrides, setup_verilator


__all__ = ["REPO_ROOT", "BUILD_ROOT", "CocotbFailure", "sources_digest", "config_key",
           "generate_verilog", "run_cocotb", "WAVE_FORMATS"]


REPO_ROOT  = Path(__file__).resolve().parents[1]
BUILD_ROOT = REPO_ROOT / "sim" / "build"

#: What the cocotb process must be able to import: the RTL package, the testbenches and their
#: shared helpers, and the simulation runners.
PYTHON_PATH = [REPO_ROOT / "rtl", REPO_ROOT / "tb", REPO_ROOT / "tb" / "cocotb", REPO_ROOT / "sim"]

_TIMESCALE = ("1ns", "1ps")

#: Verilator options that keep the top level's signals, the ports, reachable by VPI.
_PORTS_PUBLIC = ["--public-depth", "1"]


class CocotbFailure(AssertionError):
    """A cocotb run that failed: a test failed, or the simulator ended without results."""


def sources_digest():
    """A digest of the content of every RTL source file, so that a build follows any edit."""
    digest = hashlib.sha256()
    package = Path(tcpdct.__file__).resolve().parent
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _design_name(design):
    return f"{design.__module__}.{design.__qualname__}"


def _module_name(design):
    return MODULE_NAME if design is build_top else design.__name__.lower()


def config_key(params, design=None, *, waves=False, wave_format=None):
    """The name of the build folder of a configuration.

    Parameters
    ----------
    params : Params
    design : callable, optional
        What :func:`generate_verilog` builds; the core when not given.
    waves : bool
        Whether the simulation model records waves; that needs a build of its own.
    wave_format : {None, "fst", "vcd"}
        The format of the waves, as for :func:`run_cocotb`; each format has a build of its own.

    Returns
    -------
    str
    """
    if not isinstance(params, Params):
        raise TypeError(f"Parameters must be a Params, not {params!r}")
    identity = {"params": params.as_dict(), "design": _design_name(design or build_top)}
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    return f"{key}-{_wave_format(wave_format)}" if waves else key


WAVE_FORMATS = ("fst", "vcd")


def _wave_format(requested=None):
    if requested is not None and requested not in WAVE_FORMATS:
        raise ValueError(f"Wave format must be one of {WAVE_FORMATS!r} or None, "
                         f"not {requested!r}")
    # VCD is always possible; FST only where its writer builds, else VCD whatever was asked.
    if requested == "vcd":
        return "vcd"
    return "fst" if fst_available() else "vcd"


@contextlib.contextmanager
def _lock(directory, exclusive):
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield handle
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _generate_unlocked(params, directory, design, name):
    verilog_path = directory / f"{name}.v"
    stamp = directory / f"{name}.v.sources"
    digest = sources_digest() + " " + _design_name(design)
    if verilog_path.exists() and stamp.exists() and stamp.read_text() == digest:
        return verilog_path, False
    write_verilog(design(params), params, verilog_path, name=name)
    stamp.write_text(digest)
    return verilog_path, True


def generate_verilog(params, directory=None, *, design=None, name=None):
    """Write the Verilog of a configuration, unless it is already there and up to date.

    The file is regenerated when the content of any RTL source changed since it was written.
    Safe to call from several processes at once.

    Parameters
    ----------
    params : Params
    directory : path-like, optional
        Where to write ``<name>.v`` and ``<name>.json``; by default
        ``sim/build/<config_key(params, design)>``.
    design : callable, optional
        ``design(params)`` returns the component to convert; :class:`tcpdct.top.TcpDct` when not
        given. Lets a bench run a single block under cocotb.
    name : str, optional
        Verilog module name; ``tcpdct`` for the core, else the name of ``design`` in lower case.

    Returns
    -------
    Path
        The Verilog file.
    """
    design = design or build_top
    name = name or _module_name(design)
    if directory is None:
        directory = BUILD_ROOT / config_key(params, design)
    directory = Path(directory)
    with _lock(directory, exclusive=True):
        return _generate_unlocked(params, directory, design, name)[0]


def _verilator_runner():
    """cocotb's Verilator runner, with only the top level's signals public and
    :func:`toolchain.make_overrides` on its make command.

    The runner marks every signal of the design public (``--public-flat-rw``), so that VPI
    could reach any of them; Verilator then keeps every one in the model, which tripled the C++
    to compile (``make test`` compiles six builds of the core) and slows the simulation
    (docs/verification.md, "Time of ``make test``"). The testbenches drive and watch the ports only, which ``--public-depth 1``
    keeps public; waves are traced from the design whatever is public.
    """
    runner = get_runner("verilator")
    overrides = make_overrides()
    build_command = runner._build_command

    def build_command_as_needed():
        # The runner verilates, then compiles the model with one make command, the last.
        *verilate, compile_model = build_command()
        verilate = [[part for arg in command
                     for part in (_PORTS_PUBLIC if arg == "--public-flat-rw" else [arg])]
                    for command in verilate]
        return [*verilate, [*compile_model, *overrides]]
    runner._build_command = build_command_as_needed
    return runner


def _truthy(text):
    return text.strip().lower() in ("1", "yes", "true", "on")


@contextlib.contextmanager
def _patched_environ(values):
    """Set environment variables for the duration of a run.

    The cocotb runner builds the simulator's environment from ``os.environ`` *after*
    ``extra_env``, so the variables a caller chose would lose against the inherited ones; setting
    them here makes them win.
    """
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def _python_path():
    """Put :data:`PYTHON_PATH` first on ``sys.path``, which the runner passes on as PYTHONPATH."""
    saved = list(sys.path)
    sys.path[:0] = [str(path) for path in PYTHON_PATH]
    try:
        yield
    finally:
        sys.path[:] = saved


def _failures(results_xml):
    """``(tests run, names of failed tests)`` from cocotb's JUnit results file."""
    root = ElementTree.parse(results_xml).getroot()
    total, failed = 0, []
    for case in root.iter("testcase"):
        total += 1
        if case.find("failure") is not None or case.find("error") is not None:
            failed.append(case.get("name"))
    return total, failed


def _run_label(test_module, testcase, extra_env):
    label = test_module
    if testcase:
        label += "." + (testcase if isinstance(testcase, str) else "+".join(testcase))
    if extra_env:
        env_text = json.dumps(dict(extra_env), sort_keys=True).encode()
        label += "." + hashlib.sha256(env_text).hexdigest()[:8]
    if len(label) > 120:
        # A long list of test cases would exceed the file name limit.
        label = f"{test_module}.{hashlib.sha256(label.encode()).hexdigest()[:16]}"
    return label.replace("/", "_")


def run_cocotb(test_module, params, *, testcase=None, waves=False, extra_env=None, test_dir=None,
               design=None, seed=None, wave_format=None):
    """Build a configuration if needed and run cocotb tests on it.

    Parameters
    ----------
    test_module : str
        Python module holding the cocotb tests, importable from ``rtl``, ``tb``, ``tb/cocotb``
        or ``sim`` (for ``tb/cocotb/test_rx.py``, ``"test_rx"``).
    params : Params
        Build parameters of the design.
    testcase : str or list of str, optional
        Run only these cocotb tests; all of the module when not given.
    waves : bool
        Record waves, into ``dump.fst`` in the test folder. Also on when the environment has
        ``WAVES=1``. Waves are never written in the working tree. Where Verilator cannot build
        its FST writer (no LZ4 development files, Debian package ``liblz4-dev``), the waves are
        VCD, ``dump.vcd``, and a warning says so.
    extra_env : mapping, optional
        Environment variables for the simulator process; they win over inherited ones.
    test_dir : path-like, optional
        Where the simulator runs and writes its results and waves; by default a folder per
        test module, test case and ``extra_env`` inside the build folder.
    design : callable, optional
        ``design(params)`` returns the component to simulate; the core when not given.
    seed : int, optional
        cocotb random seed; by default cocotb picks one, or takes ``COCOTB_RANDOM_SEED``.
    wave_format : {None, "fst", "vcd"}
        ``"vcd"`` records ``dump.vcd`` even where FST could be written, for tools that only read
        VCD (``sim/wavecheck.py``); ``"fst"`` prefers FST as described for ``waves``. When not
        given, the environment's ``WAVE_FORMAT`` chooses, and FST is preferred without it.

    Returns
    -------
    Path
        The JUnit results file.

    Raises
    ------
    CocotbFailure
        If any cocotb test failed or the simulation ended abnormally; the message names the
        failed tests, the results file and, with waves, the wave file.
    ToolchainError
        If no usable Verilator is installed.
    """
    waves = waves or _truthy(os.environ.get("WAVES", ""))
    wave_format = wave_format or os.environ.get("WAVE_FORMAT", "").strip().lower() or None
    design = design or build_top
    name = _module_name(design)
    setup_verilator()
    build_dir = BUILD_ROOT / config_key(params, design, waves=waves, wave_format=wave_format)
    test_dir = (Path(test_dir) if test_dir is not None
                else build_dir / "runs" / _run_label(test_module, testcase, extra_env))
    test_dir.mkdir(parents=True, exist_ok=True)
    results_xml = test_dir / "results.xml"
    requested_format, wave_format = wave_format, _wave_format(wave_format)
    wave_file = test_dir / f"dump.{wave_format}"
    if waves and wave_format != "fst" and requested_format != "vcd":
        print("warning: Verilator's FST writer needs the LZ4 development files (Debian: "
              "liblz4-dev); recording VCD instead", file=sys.stderr)
    for stale in (results_xml, wave_file):
        stale.unlink(missing_ok=True)

    runner = _verilator_runner()
    # cocotb's runner reads WAVES from the environment and would override the choice made here.
    env = {"WAVES": "1" if waves else "0",
           **{key: str(value) for key, value in (extra_env or {}).items()}}
    built_stamp = build_dir / "model.stamp"
    wanted = (f"{sources_digest()} {_design_name(design)} waves={int(waves)} "
              f"public={' '.join(_PORTS_PUBLIC)}")
    sim_exit = None
    with _patched_environ(env), _python_path():
        while True:
            # Tests hold a shared lock, so that workers simulate one build side by side; a
            # rebuild waits for them to finish, and they for it.
            with _lock(build_dir, exclusive=False):
                if built_stamp.exists() and built_stamp.read_text() == wanted:
                    try:
                        runner.test(
                            test_module=test_module,
                            hdl_toplevel=name,
                            hdl_toplevel_lang="verilog",
                            testcase=testcase,
                            seed=seed,
                            build_dir=build_dir,
                            test_dir=test_dir,
                            results_xml=str(results_xml),
                            test_args=["--trace-file", str(wave_file)] if waves else [],
                            waves=waves,
                            timescale=_TIMESCALE,
                        )
                    except SystemExit as exit:
                        # Under pytest the runner exits on failures; the results file says which.
                        sim_exit = exit.code
                    break
            with _lock(build_dir, exclusive=True):
                if not built_stamp.exists() or built_stamp.read_text() != wanted:
                    built_stamp.unlink(missing_ok=True)
                    verilog_path, _ = _generate_unlocked(params, build_dir, design, name)
                    runner.build(
                        sources=[verilog_path],
                        hdl_toplevel=name,
                        build_dir=build_dir,
                        build_args=["-Wno-fatal",
                                    *(["--trace-fst"] if waves and wave_format == "fst" else [])],
                        timescale=_TIMESCALE,
                        waves=waves,
                    )
                    built_stamp.write_text(wanted)

    where = f"results: {results_xml}" + (f"; waves: {wave_file}" if waves else "")
    if not results_xml.exists():
        message = (f"cocotb run of {test_module} ended without results (simulator exit code "
                   f"{sim_exit}); {where}")
        print(message, file=sys.stderr)
        raise CocotbFailure(message)
    total, failed = _failures(results_xml)
    if failed or total == 0 or sim_exit:
        message = (f"{len(failed)} of {total} cocotb tests of {test_module} failed"
                   f"{': ' + ', '.join(failed) if failed else ''}"
                   f"{f' (simulator exit code {sim_exit})' if sim_exit else ''}; {where}")
        print(message, file=sys.stderr)
        raise CocotbFailure(message)
    return results_xml
