"""What a replay did: every frame accounted for, overall and per connection.

:class:`ReplaySummary` is the ``observer`` of :func:`schedule.execute`: it sees every step with
the events that step produced, and at the end (:meth:`ReplaySummary.finish`) takes the
connection streams from the host driver and the DUT-versus-model mismatches from the runner.
"""

from collections import Counter
from dataclasses import dataclass, field

from tcpdct.records import EventType, LegacyReason, DropReason
from model.frame import Cls, parse

from schedule import StepKind


__all__ = ["ReplaySummary", "ConnectionSummary", "AccountingError", "OTHER"]


#: The row for frames that belong to no TCP connection of the local host (ARP, other hosts).
OTHER = "other"


class AccountingError(AssertionError):
    """A frame went missing or was counted twice."""


@dataclass
class ConnectionSummary:
    """Counts for one TCP connection (or :data:`OTHER`).

    Members
    -------
    rx_frames, tx_frames : int
        Frames of the connection given to the receive and transmit ports.
    placed : int
        Received frames whose payload was placed into user buffers.
    legacy, dropped : Counter of str
        Received frames uploaded whole, or dropped, by reason name.
    bytes_placed : int
        Payload bytes placed into user buffers.
    legacy_payload_bytes : int
        TCP payload bytes of the frames that went through legacy buffers (retransmissions
        included).
    buf_reqs : int
        BUF_REQ events of the connection's frames (R17).
    resyncs : int
        RESYNC events the connection's transmitted ACKs caused (R32).
    placed_after_resync, bytes_placed_after_resync : int
        Frames and payload bytes placed after the connection's first RESYNC: placement resumed.
    delegated : bool
        Whether the host driver delegated the connection.
    stream_bytes, stream_bytes_via_placement, stream_bytes_via_legacy, duplicate_bytes : int
        Application bytes the host rebuilt, how many of them came first by placement and how
        many from legacy frames (the two add up to ``stream_bytes``), and payload bytes
        received more than once.
    """
    rx_frames:               int = 0
    tx_frames:               int = 0
    placed:                  int = 0
    legacy:                  Counter = field(default_factory=Counter)
    dropped:                 Counter = field(default_factory=Counter)
    bytes_placed:            int = 0
    legacy_payload_bytes:    int = 0
    buf_reqs:                int = 0
    resyncs:                 int = 0
    placed_after_resync:     int = 0
    bytes_placed_after_resync: int = 0
    delegated:               bool = False
    stream_bytes:            int = 0
    stream_bytes_via_placement: int = 0
    stream_bytes_via_legacy: int = 0
    duplicate_bytes:         int = 0

    @property
    def placed_fraction(self):
        """Share of the received TCP payload bytes that were placed rather than sent to legacy
        buffers (0 with no payload)."""
        return _fraction(self.bytes_placed, self.legacy_payload_bytes)

    def as_dict(self):
        result = dict(vars(self))
        result["legacy"] = dict(sorted(self.legacy.items()))
        result["dropped"] = dict(sorted(self.dropped.items()))
        result["placed_fraction"] = round(self.placed_fraction, 6)
        return result


def _fraction(placed, legacy):
    total = placed + legacy
    return placed / total if total else 0.0


class ReplaySummary:
    """Counts of a replay.

    Parameters
    ----------
    local_ip : int
        IPv4 address of the local host, to name connections from its point of view.
    max_frame_bytes : int
        ``Params.max_frame_bytes``, for parsing frames the same way the core does.

    Members
    -------
    rx_frames, tx_frames_in, tx_frames_out : int
    placed : int
    legacy, dropped : Counter of str
        By reason name.
    bytes_placed, legacy_payload_bytes : int
    placed_fraction : float
        ``bytes_placed / (bytes_placed + legacy_payload_bytes)``.
    commands : Counter of str
        Commands issued, by opcode name.
    buf_reqs, resyncs : int
        BUF_REQ and RESYNC events.
    mismatches : int
        Differences between the DUT and the golden model (0 with the model backend).
    legacy_content_errors : int
        Legacy buffers whose contents differ from the frame that was received.
    connections : dict of str to ConnectionSummary
        Per connection, named ``local_ip:port-remote_ip:port``, plus :data:`OTHER`.
    """

    def __init__(self, local_ip, max_frame_bytes):
        self.local_ip = local_ip
        self.max_frame_bytes = max_frame_bytes
        self.rx_frames = self.tx_frames_in = self.tx_frames_out = 0
        self.placed = 0
        self.legacy = Counter()
        self.dropped = Counter()
        self.bytes_placed = self.legacy_payload_bytes = 0
        self.commands = Counter()
        self.buf_reqs = self.resyncs = 0
        self.mismatches = 0
        self.legacy_content_errors = 0
        self.connections = {}
        self._legacy_frames_sent = []
        # Connection names by 4-tuple: every frame of a replay looks its row up.
        self._names = {}

    def _row(self, frame, received):
        p = parse(frame, max_frame_bytes=max(self.max_frame_bytes, len(frame)))
        if p.cls in (Cls.TCP, Cls.CHECKSUM):
            # parse() names the fields from the receiver's side; a sent frame's are swapped.
            key = ((p.local_ip, p.local_port, p.remote_ip, p.remote_port) if received else
                   (p.remote_ip, p.remote_port, p.local_ip, p.local_port))
            if key[0] == self.local_ip:
                name = self._names.get(key)
                if name is None:
                    name = self._names[key] = \
                        f"{_dotted(key[0])}:{key[1]}-{_dotted(key[2])}:{key[3]}"
                return self.connections.setdefault(name, ConnectionSummary()), p
        return self.connections.setdefault(OTHER, ConnectionSummary()), p

    def observe(self, step, events):
        """Count one executed step (the ``observer`` of :func:`schedule.execute`).

        ``events`` are the step's own: a command's up to its CMD_DONE, a TX frame's RESYNC, a
        received frame's BUF_REQ, terminal event and BUF_DONEs.
        """
        if step.kind is StepKind.COMMAND:
            self.commands[step.command.opcode.name] += 1
            return
        frame = step.frame.data
        row, p = self._row(frame, step.kind is StepKind.RX)
        if step.kind is StepKind.TX:
            self.tx_frames_in += 1
            row.tx_frames += 1
            resyncs = sum(event.type is EventType.RESYNC for event in events)
            self.resyncs += resyncs
            row.resyncs += resyncs
            return
        self.rx_frames += 1
        row.rx_frames += 1
        for event in events:
            if event.type is EventType.BUF_REQ:
                self.buf_reqs += 1
                row.buf_reqs += 1
            elif event.type is EventType.RX_PLACED:
                self.placed += 1
                row.placed += 1
                self.bytes_placed += event.length
                row.bytes_placed += event.length
                if row.resyncs:
                    row.placed_after_resync += 1
                    row.bytes_placed_after_resync += event.length
            elif event.type is EventType.LEGACY:
                reason = LegacyReason(event.reason).name
                self.legacy[reason] += 1
                row.legacy[reason] += 1
                if p.cls in (Cls.TCP, Cls.CHECKSUM):
                    self.legacy_payload_bytes += p.payload_len
                    row.legacy_payload_bytes += p.payload_len
                self._legacy_frames_sent.append(frame)
            elif event.type is EventType.DROP:
                reason = DropReason(event.reason).name
                self.dropped[reason] += 1
                row.dropped[reason] += 1

    def finish(self, driver, runner):
        """Take the results that only exist at the end: streams, TX output, mismatches."""
        self.tx_frames_out = runner.tx_frames_out
        self.mismatches = runner.mismatches
        self.legacy_content_errors = sum(
            sent != read for sent, read in zip(self._legacy_frames_sent, driver.legacy_frames))
        self.legacy_content_errors += abs(len(self._legacy_frames_sent)
                                          - len(driver.legacy_frames))
        for conn in driver.connections:
            row = self.connections.setdefault(conn.name, ConnectionSummary())
            row.delegated = conn.ever_delegated
            if conn.stream is not None:
                row.stream_bytes = len(conn.stream.data)
                row.stream_bytes_via_placement = conn.stream.new_bytes["placed"]
                row.stream_bytes_via_legacy = conn.stream.new_bytes["legacy"]
                row.duplicate_bytes = conn.stream.duplicate_bytes

    def check(self):
        """Raise :class:`AccountingError` unless every frame is accounted for exactly once."""
        problems = []
        terminal = self.placed + sum(self.legacy.values()) + sum(self.dropped.values())
        if self.rx_frames != terminal:
            problems.append(f"{self.rx_frames} frames received but {self.placed} placed + "
                            f"{sum(self.legacy.values())} legacy + "
                            f"{sum(self.dropped.values())} dropped")
        if self.tx_frames_in != self.tx_frames_out:
            problems.append(f"{self.tx_frames_in} frames sent to the transmit port but "
                            f"{self.tx_frames_out} came out")
        for name, row in self.connections.items():
            if row.rx_frames != row.placed + sum(row.legacy.values()) + sum(row.dropped.values()):
                problems.append(f"{name}: frames received and outcomes disagree")
        if problems:
            raise AccountingError("; ".join(problems))

    @property
    def ok(self):
        """Every frame accounted for, and no mismatch or corrupted legacy frame."""
        try:
            self.check()
        except AccountingError:
            return False
        return self.mismatches == 0 and self.legacy_content_errors == 0

    @property
    def placed_fraction(self):
        return _fraction(self.bytes_placed, self.legacy_payload_bytes)

    def as_dict(self):
        return {
            "rx_frames": self.rx_frames,
            "tx_frames_in": self.tx_frames_in,
            "tx_frames_out": self.tx_frames_out,
            "placed": self.placed,
            "legacy": dict(sorted(self.legacy.items())),
            "dropped": dict(sorted(self.dropped.items())),
            "bytes_placed": self.bytes_placed,
            "legacy_payload_bytes": self.legacy_payload_bytes,
            "placed_fraction": round(self.placed_fraction, 6),
            "commands": dict(sorted(self.commands.items())),
            "buf_reqs": self.buf_reqs,
            "resyncs": self.resyncs,
            "mismatches": self.mismatches,
            "legacy_content_errors": self.legacy_content_errors,
            "connections": {name: row.as_dict() for name, row in self.connections.items()},
        }

    def format_table(self):
        """A short human-readable report."""
        def reasons(counter):
            return ", ".join(f"{name} {count}" for name, count in sorted(counter.items())) or "-"
        lines = [
            f"rx frames {self.rx_frames}: placed {self.placed}, "
            f"legacy {sum(self.legacy.values())}, dropped {sum(self.dropped.values())}",
            f"  legacy by reason:  {reasons(self.legacy)}",
            f"  dropped by reason: {reasons(self.dropped)}",
            f"tx frames in {self.tx_frames_in}, out {self.tx_frames_out}",
            f"bytes placed {self.bytes_placed}, TCP payload bytes via legacy "
            f"{self.legacy_payload_bytes}: {100 * self.placed_fraction:.1f} % placed",
            f"commands: {reasons(self.commands)}",
            f"buffer requests {self.buf_reqs}, resyncs {self.resyncs}, "
            f"model mismatches {self.mismatches}, "
            f"legacy content errors {self.legacy_content_errors}",
            "",
            f"{'connection':<44} {'deleg':>5} {'rx':>5} {'tx':>5} {'placed':>6} {'legacy':>6} "
            f"{'drop':>5} {'B placed':>9} {'B legacy':>9} {'placed':>7} {'stream B':>9} "
            f"{'bufreq':>6} {'resync':>6} {'pl>rs':>5}",
        ]
        for name, row in self.connections.items():
            lines.append(
                f"{name:<44} {'yes' if row.delegated else 'no':>5} {row.rx_frames:>5} "
                f"{row.tx_frames:>5} {row.placed:>6} {sum(row.legacy.values()):>6} "
                f"{sum(row.dropped.values()):>5} {row.bytes_placed:>9} "
                f"{row.legacy_payload_bytes:>9} {100 * row.placed_fraction:>6.1f}% "
                f"{row.stream_bytes:>9} {row.buf_reqs:>6} {row.resyncs:>6} "
                f"{row.placed_after_resync:>5}")
        lines.append("(pl>rs: frames placed after the connection's first resync)")
        return "\n".join(lines)


def _dotted(ip):
    return ".".join(str(ip >> shift & 0xff) for shift in (24, 16, 8, 0))
