"""The script of the compiled harness (:mod:`fast_harness`), written a directive at a time.

The directives are listed in :mod:`fast_harness`'s docstring. This module has no other part of
the harness in it, so that what writes scripts (the bench's traffic, :mod:`traffic`) can be used
to build the harness as well.
"""

from pathlib import Path

from tcpdct.records import RECORD_BYTES, Command


__all__ = ["HarnessScript"]


class HarnessScript:
    """A harness script being written; see this module's docstring for the directives.

    Members
    -------
    lines : list of str
    """

    def __init__(self):
        self.lines = []

    @property
    def characters(self):
        """How long the directives held are, as text."""
        return sum(map(len, self.lines)) + len(self.lines)

    def rx(self, frame, mac_error=False):
        self.lines.append(f"RX {int(bool(mac_error))} {bytes(frame).hex()}")

    def tx(self, frame):
        self.lines.append(f"TX {bytes(frame).hex()}")

    def command(self, command):
        record = command.to_bytes() if isinstance(command, Command) else bytes(command)
        if len(record) != RECORD_BYTES:
            raise ValueError(f"A command record is {RECORD_BYTES} bytes, not {len(record)!r}")
        self.lines.append(f"CMD {record.hex()}")

    def step(self, number):
        self.lines.append(f"STEP {int(number)}")

    def wait_terminal(self, count):
        self.lines.append(f"WAIT_TERMINAL {int(count)}")

    def wait_events(self, count):
        self.lines.append(f"WAIT_EVENTS {int(count)}")

    def wait_cmd_done(self, count):
        self.lines.append(f"WAIT_CMD_DONE {int(count)}")

    def wait_cmd_idle(self):
        self.lines.append("WAIT_CMD_IDLE")

    def wait_tx_out(self, count):
        self.lines.append(f"WAIT_TX_OUT {int(count)}")

    def wait_rx_idle(self):
        self.lines.append("WAIT_RX_IDLE")

    def idle(self, cycles):
        self.lines.append(f"IDLE {int(cycles)}")

    def auto_legacy(self, base, length, count):
        self.lines.append(f"AUTO_LEGACY {base:x} {int(length)} {int(count)}")

    def auto_user(self, index, base, length, count):
        self.lines.append(f"AUTO_USER {int(index)} {base:x} {int(length)} {int(count)}")

    def stall(self, channel, percent, seed=1):
        self.lines.append(f"STALL {channel} {int(percent)} {int(seed)}")

    def timeout(self, cycles):
        self.lines.append(f"TIMEOUT {int(cycles)}")

    def log_writes(self, enabled):
        self.lines.append(f"LOG_WRITES {int(bool(enabled))}")

    def settle(self, always):
        self.lines.append(f"SETTLE {int(bool(always))}")

    def write(self, path):
        Path(path).write_text("\n".join(self.lines) + "\n")
