"""Golden model of the core: the Delegated Connection Table, its receive decisions and commands.

The model is the executable form of SPEC sections 2, 3, 5 and 6 as refined in
``docs/architecture.md``. It takes frames and commands one at a time, each to completion, which
is the replay contract of the architecture: for the same sequence of inputs the RTL must emit
the same events, make the same host-memory contents and count the same registers.

Not yet modelled, on purpose (later issues): the buffer-request timer and high-water mark
(R17–R19; a delegated in-sequence frame without room goes to legacy ``NO_BUFFER`` instead), and
the transmit engine's DCT updates (R31–R33; :meth:`Model.tx_frame` only counts the frame).
"""

from dataclasses import dataclass, field
from typing import NamedTuple

from tcpdct.params import Params
from tcpdct.records import (
    NO_CONNECTION, Opcode, CmdStatus, EventType, LegacyReason, DropReason, Command, Event,
)
from tcpdct.headers import TCP_SYN, TCP_FIN, TCP_PSH
from tcpdct import regmap

from .frame import Cls, parse, special_flags
from .hostmem import HostMemory, ADDRESS_SPACE


__all__ = ["Model", "ConnKey", "Entry", "UserBuffer", "LegacyBuffer", "Grant",
           "seq_add", "seq_gt"]


_SEQ_MOD = 1 << 32


def seq_add(a, b):
    """``a + b`` in 32-bit sequence space (R3)."""
    return (a + b) % _SEQ_MOD


def seq_gt(a, b):
    """``a > b`` in RFC 1982 serial arithmetic (R3)."""
    return 0 < (a - b) % _SEQ_MOD < 1 << 31


class ConnKey(NamedTuple):
    """A match key from the local host's point of view (R2)."""
    local_ip:    int
    remote_ip:   int
    local_port:  int
    remote_port: int


@dataclass
class UserBuffer:
    """A user buffer posted to a connection; ``filled`` bytes of it hold payload already."""
    address: int
    length:  int
    tag:     int
    filled:  int = 0

    @property
    def room(self):
        return self.length - self.filled


@dataclass(frozen=True)
class LegacyBuffer:
    """A driver buffer in the legacy ring, taken whole by one legacy frame."""
    address: int
    length:  int
    tag:     int


class Grant(NamedTuple):
    """A host-memory range the driver handed to the core; ``kind`` is ``"user"`` or ``"legacy"``."""
    address: int
    length:  int
    kind:    str
    tag:     int


@dataclass
class Entry:
    """One DCT entry: its match, state and buffer portions together (SPEC §2)."""
    valid:         bool = False
    key:           ConnKey = ConnKey(0, 0, 0, 0)
    rcv_nxt:       int = 0
    snd_nxt:       int = 0
    last_ack_sent: int = 0
    rcv_wnd:       int = 0
    sync_req:      bool = False
    buf_req:       bool = False
    queue:         list = field(default_factory=list)

    @property
    def room(self):
        """Bytes the posted user buffers can still take."""
        return sum(buffer.room for buffer in self.queue)


#: Registers that hold build parameters or constants rather than counts.
_CONSTANT_REGISTERS = {
    "ID":                lambda params: regmap.ID_VALUE,
    "VERSION":           lambda params: regmap.VERSION_VALUE,
    "DATA_WIDTH":        lambda params: params.data_width,
    "N_ENTRIES":         lambda params: params.n_entries,
    "BUFFERS_PER_CONN":  lambda params: params.buffers_per_conn,
    "LEGACY_RING_DEPTH": lambda params: params.legacy_ring_depth,
    "RX_BUFFER_BYTES":   lambda params: params.rx_buffer_bytes,
    "MAX_FRAME_BYTES":   lambda params: params.max_frame_bytes,
}

#: Counters kept 64 bits wide and read as a ``_LO``/``_HI`` register pair.
_WIDE_COUNTERS = ("BYTES_PLACED", "BYTES_LEGACY")

_OPCODES = {int(opcode) for opcode in Opcode}

_DROP_OF_CLASS = {
    Cls.MAC_ERROR: DropReason.MAC_ERROR,
    Cls.TRUNCATED: DropReason.TRUNCATED,
    Cls.OVERSIZE:  DropReason.OVERSIZE,
}


class Model:
    """Reference behaviour of the whole core, one frame or command at a time.

    Parameters
    ----------
    params : tcpdct.params.Params
        Build parameters; ``Params()`` when omitted.
    dma_error : callable, optional
        ``dma_error(address, data) -> bool`` is asked about every DMA write the model makes; when
        it answers true for any write of a frame, every event of that frame carries
        ``dma_error=1`` (R51). The write is still applied to :attr:`memory`. The default never
        errors, as the testbenches' host memory never does.

    Members
    -------
    params : tcpdct.params.Params
    memory : HostMemory
        Every DMA write the core would have made so far, applied.
    last_writes : list of (int, bytes)
        ``(address, data)`` of the writes made by the last call, in DMA order. A frame placed
        into several user buffers makes one write per buffer; a legacy frame one write.
    granted : list of Grant
        Every range the driver has posted (user and legacy buffers), in posting order, never
        removed: the ranges DMA writes may touch (R52).
    entries : list of Entry
        The DCT, ``params.n_entries`` entries.
    legacy_ring : list of LegacyBuffer
        Posted legacy buffers, head (next to be used) first.
    """

    def __init__(self, params=None, *, dma_error=None):
        if params is None:
            params = Params()
        if not isinstance(params, Params):
            raise TypeError(f"Parameters must be a Params, not {params!r}")
        self.params      = params
        self.memory      = HostMemory()
        self.last_writes = []
        self.granted     = []
        self.entries     = [Entry() for _ in range(params.n_entries)]
        self.legacy_ring = []
        self._dma_error  = dma_error
        self._counts     = {reg.name: 0 for reg in regmap.REGISTERS
                            if reg.name not in _CONSTANT_REGISTERS}
        for name in _WIDE_COUNTERS:
            del self._counts[f"{name}_LO"], self._counts[f"{name}_HI"]
            self._counts[name] = 0

    # Registers ---------------------------------------------------------------------------------

    @property
    def counters(self):
        """Every counter register by its :mod:`tcpdct.regmap` name, as the register reads.

        32-bit counters wrap at 2**32. ``BYTES_PLACED`` and ``BYTES_LEGACY`` are 64-bit counts
        and appear only as their register pair ``BYTES_PLACED_LO`` / ``BYTES_PLACED_HI`` (and
        likewise for ``BYTES_LEGACY``); use :meth:`counter64` for the whole value.
        """
        counters = {}
        for name, value in self._counts.items():
            if name in _WIDE_COUNTERS:
                value %= 1 << 64
                counters[f"{name}_LO"] = value & 0xffffffff
                counters[f"{name}_HI"] = value >> 32
            else:
                counters[name] = value & 0xffffffff
        return counters

    def counter64(self, name):
        """The 64-bit value of ``BYTES_PLACED`` or ``BYTES_LEGACY``."""
        if name not in _WIDE_COUNTERS:
            raise KeyError(f"64-bit counter must be one of {list(_WIDE_COUNTERS)}, not {name!r}")
        return self._counts[name] % (1 << 64)

    @property
    def registers(self):
        """Every register of :data:`tcpdct.regmap.REGISTERS` by name, as a read returns it."""
        values = {name: value(self.params) for name, value in _CONSTANT_REGISTERS.items()}
        values.update(self.counters)
        return {reg.name: values[reg.name] for reg in regmap.REGISTERS}

    def _count(self, events):
        counts = self._counts
        for event in events:
            if event.dma_error:
                counts["DMA_ERRORS"] += 1
            if event.type == EventType.RX_PLACED:
                counts["RX_FRAMES"] += 1
                counts["RX_PLACED"] += 1
                counts["BYTES_PLACED"] += event.length
            elif event.type == EventType.LEGACY:
                counts["RX_FRAMES"] += 1
                counts["RX_LEGACY"] += 1
                counts["BYTES_LEGACY"] += event.frame_len
                counts[f"LEGACY_{LegacyReason(event.reason).name}"] += 1
            elif event.type == EventType.DROP:
                counts["RX_FRAMES"] += 1
                counts["RX_DROPPED"] += 1
                counts[f"DROP_{DropReason(event.reason).name}"] += 1
            elif event.type == EventType.BUF_DONE:
                counts["BUF_DONES"] += 1
            elif event.type == EventType.CMD_DONE:
                counts["COMMANDS"] += 1
                if event.status != CmdStatus.OK:
                    counts["CMD_ERRORS"] += 1
            elif event.type == EventType.RESYNC:
                counts["RESYNCS"] += 1

    # DMA ---------------------------------------------------------------------------------------

    def _write(self, address, data):
        data = bytes(data)
        self.memory.write(address, data)
        self.last_writes.append((address, data))

    def _finish(self, events):
        """Mark a job's events with its DMA error status, count them and hand them out."""
        if self._dma_error is not None and any(self._dma_error(address, data)
                                               for address, data in self.last_writes):
            for event in events:
                event.dma_error = 1
        self._count(events)
        return events

    # Receive path ------------------------------------------------------------------------------

    def lookup(self, key):
        """Index of the valid entry holding ``key``, or ``None`` (R1: there is at most one)."""
        for index, entry in enumerate(self.entries):
            if entry.valid and entry.key == key:
                return index
        return None

    def rx_frame(self, frame, mac_error=False):
        """Receive one frame from the MAC; the events it causes, in emission order.

        Parameters
        ----------
        frame : bytes
            The whole frame as received, Ethernet header first, padding included, no FCS.
        mac_error : bool
            The MAC's error flag (``tuser`` on the last beat).
        """
        frame = bytes(frame)
        self.last_writes = []
        p = parse(frame, mac_error=mac_error, max_frame_bytes=self.params.max_frame_bytes)
        if p.cls in _DROP_OF_CLASS:
            events = [Event(EventType.DROP, NO_CONNECTION, reason=_DROP_OF_CLASS[p.cls],
                            frame_len=p.frame_len)]
        elif p.cls == Cls.NOT_TCP:
            events = self._legacy(frame, p, LegacyReason.NOT_TCP)
        elif p.cls == Cls.CHECKSUM:
            # A frame with a bad checksum is not looked up: its key may be corrupt (R11).
            events = self._legacy(frame, p, LegacyReason.CHECKSUM)
        else:
            index = self.lookup(ConnKey(p.local_ip, p.remote_ip, p.local_port, p.remote_port))
            if index is None:
                events = self._legacy(frame, p, LegacyReason.NO_MATCH)
            else:
                events = self._delegated(frame, p, index)
        return self._finish(events)

    def _delegated(self, frame, p, index):
        """The checks of "Decisions for a delegated connection", in their order (R13–R20)."""
        entry = self.entries[index]
        in_sequence = p.seq == entry.rcv_nxt
        # Whatever path in-sequence bytes take, rcv_nxt follows them (SPEC §3, rules 1, 2, R19).
        sequence_len = p.payload_len + bool(p.flags & TCP_SYN) + bool(p.flags & TCP_FIN)
        advanced = seq_add(entry.rcv_nxt, sequence_len) if in_sequence else entry.rcv_nxt

        if p.special or special_flags(p.flags):
            reason, sync_req, rcv_nxt = LegacyReason.SPECIAL, True, advanced
        elif entry.sync_req:
            reason, sync_req, rcv_nxt = LegacyReason.SYNC, True, advanced
        elif p.payload_len == 0:
            reason, sync_req, rcv_nxt = LegacyReason.NO_PAYLOAD, False, entry.rcv_nxt
        elif not in_sequence:
            reason, sync_req, rcv_nxt = LegacyReason.OUT_OF_SEQ, True, entry.rcv_nxt
        elif entry.room < p.payload_len:
            reason, sync_req, rcv_nxt = LegacyReason.NO_BUFFER, True, advanced
        else:
            return self._place(frame, p, index)

        events = self._legacy(frame, p, reason, index)
        # A legacy delivery that failed leaves the frame unreceived: the peer will resend it.
        if events[0].type == EventType.LEGACY:
            entry.sync_req = sync_req
            entry.rcv_nxt = rcv_nxt
        return events

    def _place(self, frame, p, index):
        entry = self.entries[index]
        payload = frame[p.payload_offset:p.payload_offset + p.payload_len]
        done = 0
        last = None
        for buffer in entry.queue:
            if done == len(payload):
                break
            size = min(buffer.room, len(payload) - done)
            self._write(buffer.address + buffer.filled, payload[done:done + size])
            buffer.filled += size
            done += size
            last = buffer
        assert done == len(payload), "placement chose a queue without room"
        entry.rcv_nxt = seq_add(entry.rcv_nxt, p.payload_len)

        events = [Event(EventType.RX_PLACED, index,
                        seq=p.seq, ack=p.ack, window=p.window, flags=p.flags,
                        length=p.payload_len, ts_present=p.ts_present,
                        tsval=p.tsval, tsecr=p.tsecr)]
        remaining = []
        for buffer in entry.queue:
            if buffer.room == 0 or (buffer is last and p.flags & TCP_PSH):
                events.append(Event(EventType.BUF_DONE, index, tag=buffer.tag,
                                    bytes=buffer.filled))
            else:
                remaining.append(buffer)
        entry.queue = remaining
        return events

    def _legacy(self, frame, p, reason, index=NO_CONNECTION):
        """Upload a frame whole into the next legacy buffer (R21), or drop it (R22)."""
        if not self.legacy_ring:
            return [Event(EventType.DROP, index, reason=DropReason.NO_LEGACY_BUFFER,
                          frame_len=p.frame_len)]
        buffer = self.legacy_ring[0]
        if len(frame) > buffer.length:
            return [Event(EventType.DROP, index, reason=DropReason.LEGACY_TOO_SMALL,
                          frame_len=p.frame_len)]
        self.legacy_ring.pop(0)
        self._write(buffer.address, frame)
        return [Event(EventType.LEGACY, index, tag=buffer.tag, frame_len=p.frame_len,
                      reason=reason, ip_csum_bad=p.ip_csum_bad, tcp_csum_bad=p.tcp_csum_bad)]

    # Transmit path -----------------------------------------------------------------------------

    def tx_frame(self, frame):
        """Transmit one frame from the host stack; the events it causes (none yet).

        The frame passes to the MAC unchanged (R30) and is counted in ``TX_FRAMES``. The DCT
        updates of R31–R33 belong to a later issue; they will go here, looking the frame up
        with key (src IP, dst IP, src port, dst port).
        """
        self.last_writes = []
        self._counts["TX_FRAMES"] += 1
        return []

    # Commands ----------------------------------------------------------------------------------

    def command(self, cmd):
        """Execute one command record; its events, ``CMD_DONE`` last (R40).

        Parameters
        ----------
        cmd : tcpdct.records.Command or int
            A command, or the 256-bit record as an integer; an integer may carry an opcode that
            is not an :class:`~tcpdct.records.Opcode` (answered with ``BAD_OPCODE``).
        """
        self.last_writes = []
        if isinstance(cmd, (bytes, bytearray)):
            cmd = int.from_bytes(cmd, "little")
        if isinstance(cmd, int):
            opcode, index = cmd & 0xff, (cmd >> 16) & 0xffff
            if opcode not in _OPCODES:
                return self._finish([self._done(opcode, index, CmdStatus.BAD_OPCODE)])
            cmd = Command.unpack(cmd)
        elif not isinstance(cmd, Command):
            raise TypeError(f"Command must be a Command or an integer, not {cmd!r}")

        index = cmd.index & 0xffff
        if cmd.opcode != Opcode.POST_LEGACY and index >= self.params.n_entries:
            return self._finish([self._done(cmd.opcode, index, CmdStatus.BAD_INDEX)])
        execute = {
            Opcode.DELEGATE:    self._delegate,
            Opcode.POST_BUFFER: self._post_buffer,
            Opcode.POST_LEGACY: self._post_legacy,
            Opcode.RESYNC:      self._resync,
            Opcode.RECLAIM:     self._reclaim,
            Opcode.QUERY:       self._query,
        }[cmd.opcode]
        events, status = execute(cmd, index)
        return self._finish(events + [self._done(cmd.opcode, index, status)])

    @staticmethod
    def _done(opcode, index, status):
        return Event(EventType.CMD_DONE, index, opcode=int(opcode), status=status)

    @staticmethod
    def _buffer_status(cmd):
        """ZERO_LENGTH and ADDRESS_WRAP, shared by both kinds of buffer post."""
        if cmd.length == 0:
            return CmdStatus.ZERO_LENGTH
        if cmd.address + cmd.length > ADDRESS_SPACE:
            return CmdStatus.ADDRESS_WRAP
        return CmdStatus.OK

    def _delegate(self, cmd, index):
        entry = self.entries[index]
        key = ConnKey(cmd.local_ip, cmd.remote_ip, cmd.local_port, cmd.remote_port)
        if entry.valid:
            return [], CmdStatus.IN_USE
        if self.lookup(key) is not None:
            return [], CmdStatus.DUPLICATE_KEY
        self.entries[index] = Entry(valid=True, key=key, rcv_nxt=cmd.rcv_nxt,
                                    snd_nxt=cmd.snd_nxt, last_ack_sent=cmd.rcv_nxt,
                                    rcv_wnd=cmd.rcv_wnd)
        return [], CmdStatus.OK

    def _post_buffer(self, cmd, index):
        entry = self.entries[index]
        if not entry.valid:
            return [], CmdStatus.NOT_DELEGATED
        status = self._buffer_status(cmd)
        if status != CmdStatus.OK:
            return [], status
        if len(entry.queue) >= self.params.buffers_per_conn:
            return [], CmdStatus.QUEUE_FULL
        entry.queue.append(UserBuffer(cmd.address, cmd.length, cmd.tag))
        self.granted.append(Grant(cmd.address, cmd.length, "user", cmd.tag))
        return [], CmdStatus.OK

    def _post_legacy(self, cmd, index):
        status = self._buffer_status(cmd)
        if status != CmdStatus.OK:
            return [], status
        if len(self.legacy_ring) >= self.params.legacy_ring_depth:
            return [], CmdStatus.QUEUE_FULL
        self.legacy_ring.append(LegacyBuffer(cmd.address, cmd.length, cmd.tag))
        self.granted.append(Grant(cmd.address, cmd.length, "legacy", cmd.tag))
        return [], CmdStatus.OK

    def _resync(self, cmd, index):
        entry = self.entries[index]
        if not entry.valid:
            return [], CmdStatus.NOT_DELEGATED
        entry.rcv_nxt = cmd.rcv_nxt
        entry.sync_req = False
        entry.buf_req = False
        return [], CmdStatus.OK

    def _state(self, index):
        entry = self.entries[index]
        return Event(EventType.STATE, index, valid=int(entry.valid),
                     sync_req=int(entry.sync_req), buf_req=int(entry.buf_req),
                     n_buffers=len(entry.queue), rcv_wnd=entry.rcv_wnd, rcv_nxt=entry.rcv_nxt,
                     snd_nxt=entry.snd_nxt, last_ack_sent=entry.last_ack_sent)

    def _reclaim(self, cmd, index):
        entry = self.entries[index]
        if not entry.valid:
            return [], CmdStatus.NOT_DELEGATED
        events = [self._state(index)]
        events += [Event(EventType.BUF_DONE, index, tag=buffer.tag, bytes=buffer.filled)
                   for buffer in entry.queue]
        self.entries[index] = Entry()
        return events, CmdStatus.OK

    def _query(self, cmd, index):
        if not self.entries[index].valid:
            return [], CmdStatus.NOT_DELEGATED
        return [self._state(index)], CmdStatus.OK
