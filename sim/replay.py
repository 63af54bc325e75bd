"""Replay a packet capture through the core: ``make sim``'s front end.

The capture is split into the frames the local host received (to the receive port) and the
frames it sent (to the transmit port), in capture order; a model host driver
(:mod:`host_driver`) posts buffers and delegates connections as a real one would; the order of
effects is :mod:`schedule`'s. The result is a :class:`summary.ReplaySummary`.

Backends:

``model``
    The golden model alone (:class:`schedule.ModelRunner`).
``cocotb``
    The RTL under cocotb and Verilator, checked against the model step by step
    (:mod:`replay_cocotb`). The default.
``fast``
    The RTL under Verilator driven by the compiled harness, the schedule recorded on the model
    first, compared step by step afterwards (:mod:`replay_fast`).

Usage::

    python sim/replay.py [--pcap FILE] [--local IP] [--delegate auto|none] [--json FILE]
                         [--dump DIR] [--waves] [--backend model|cocotb|fast]
"""

import argparse
import asyncio
import importlib.util
import ipaddress
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from tcpdct.params import Params

from schedule import CaptureError, ModelRunner, read_pcap, choose_local_ip, capture_steps, execute
from host_driver import HostDriver, DriverError
from summary import ReplaySummary, AccountingError


__all__ = ["DEFAULT_PCAP", "DEFAULT_SENT", "ReplayResult", "run_replay", "replay", "dump_streams",
           "report", "write_json", "main"]


CAPTURES = Path(__file__).resolve().parent / "captures"
#: The bundled capture: one Linux TCP connection carrying :data:`DEFAULT_SENT`.
DEFAULT_PCAP = CAPTURES / "tcp_stream.pcap"
#: The bytes the sender of the bundled capture wrote into its socket.
DEFAULT_SENT = CAPTURES / "tcp_stream.sent.bin"


@dataclass
class ReplayResult:
    """Everything a replay produced.

    Members
    -------
    summary : summary.ReplaySummary
    driver : host_driver.HostDriver
        Holds the rebuilt streams (``driver.connections[i].stream.data``).
    runner : schedule.Runner
    local_ip : int
    """
    summary:  ReplaySummary
    driver:   HostDriver
    runner:   object
    local_ip: int


async def run_replay(runner, *, pcap=DEFAULT_PCAP, local=None, delegate=True, observer=None):
    """Replay ``pcap`` on ``runner``; await this inside a cocotb test for the RTL.

    Parameters
    ----------
    runner : schedule.Runner
    pcap : path
    local : int or str, optional
        IPv4 address of the local host; by default the one receiving the most TCP payload.
    delegate : bool
        Delegate connections at the end of their handshake.
    observer : callable, optional
        ``observer(step, events)`` is called after the summary has counted each step (see
        :func:`schedule.execute`).

    Returns
    -------
    ReplayResult

    Raises
    ------
    schedule.CaptureError
        If the capture cannot be replayed.
    host_driver.DriverError
        If the core reported something impossible for the commands it was given.
    """
    frames = read_pcap(pcap)
    local_ip = choose_local_ip(frames) if local is None else int(ipaddress.IPv4Address(local))
    steps = capture_steps(frames, local_ip)
    driver = HostDriver(runner.params, local_ip, delegate=delegate)
    summary = ReplaySummary(local_ip, runner.params.max_frame_bytes)
    def observe(step, events):
        summary.observe(step, events)
        if observer is not None:
            observer(step, events)

    await execute(steps, runner, driver, observe)
    summary.finish(driver, runner)
    return ReplayResult(summary, driver, runner, local_ip)


def replay(pcap=DEFAULT_PCAP, *, local=None, delegate=True, params=None):
    """Replay ``pcap`` on the golden model; see :func:`run_replay`."""
    return asyncio.run(run_replay(ModelRunner(params or Params()), pcap=pcap, local=local,
                                  delegate=delegate))


def dump_streams(result, directory):
    """Write each delegated connection's received application stream into ``directory``.

    Files are named ``<local ip>_<local port>-<remote ip>_<remote port>.bin`` (with ``.2``,
    ``.3``... before ``.bin`` when a 4-tuple is reused). Returns the paths written.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for conn in result.driver.connections:
        if not conn.ever_delegated or conn.stream is None:
            continue
        stem = conn.name.replace(":", "_")
        path = directory / f"{stem}.bin"
        copy = 1
        while path in written:
            copy += 1
            path = directory / f"{stem}.{copy}.bin"
        path.write_bytes(conn.stream.data)
        written.append(path)
    return written


def _cocotb_available():
    return importlib.util.find_spec("replay_cocotb") is not None


def _parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="replay.py", description="Replay a packet capture through tcpdct.")
    parser.add_argument("--pcap", type=Path, default=DEFAULT_PCAP,
                        help="classic pcap, Ethernet link type (default: the bundled capture)")
    parser.add_argument("--local", help="IPv4 address of the local host (default: the one "
                                        "receiving the most TCP payload)")
    parser.add_argument("--delegate", choices=("auto", "none"), default="auto",
                        help="auto: delegate each connection when its handshake completes")
    parser.add_argument("--json", type=Path, help="write the summary as JSON to this file")
    parser.add_argument("--dump", type=Path, help="write each delegated connection's received "
                                                  "byte stream into this directory")
    parser.add_argument("--waves", action="store_true", help="record waves (cocotb backend)")
    parser.add_argument("--backend", choices=("model", "cocotb", "fast"),
                        default="cocotb" if _cocotb_available() else "model",
                        help="what executes the schedule (default: cocotb when available)")
    options = parser.parse_args(argv)
    if options.local is not None:
        try:
            ipaddress.IPv4Address(options.local)
        except ValueError:
            parser.error(f"--local must be an IPv4 address, not {options.local!r}")
    return options


def report(result, options, backend):
    """Print the summary, write ``--json`` and ``--dump``; the exit code of the replay."""
    summary = result.summary
    print(f"replay of {options.pcap} on {backend}, local host "
          f"{ipaddress.IPv4Address(result.local_ip)}")
    print(summary.format_table())
    if options.json is not None:
        write_json(options.json, options, backend, result.runner.params,
                   local=str(ipaddress.IPv4Address(result.local_ip)), **summary.as_dict())
    if options.dump is not None:
        for path in dump_streams(result, options.dump):
            print(f"wrote {path}")
    try:
        summary.check()
    except AccountingError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if not summary.ok:
        print("error: the DUT disagreed with the model or corrupted a legacy frame",
              file=sys.stderr)
        return 1
    return 0


def write_json(path, options, backend, params, **fields):
    """The ``--json`` report: what was replayed, how, and ``fields``."""
    document = {"pcap": str(options.pcap), "backend": backend, "delegate": options.delegate,
                "params": params.as_dict(), **fields}
    Path(path).write_text(json.dumps(document, indent=2) + "\n")


def main(argv=None):
    options = _parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if options.backend == "cocotb":
            if not _cocotb_available():
                print("error: the cocotb backend is not available (no replay_cocotb module); "
                      "use --backend model", file=sys.stderr)
                return 2
            import replay_cocotb
            # The RTL runs in the simulator's own process, which reports by itself.
            return replay_cocotb.run(options)
        if options.backend == "fast":
            if options.waves:
                print("note: --waves has no effect with the fast backend", file=sys.stderr)
            import replay_fast
            return replay_fast.run(options)
        if options.waves:
            print("note: --waves has no effect with the model backend", file=sys.stderr)
        result = replay(options.pcap, local=options.local, delegate=options.delegate == "auto")
    except (CaptureError, DriverError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return report(result, options, "model")


if __name__ == "__main__":
    sys.exit(main())
