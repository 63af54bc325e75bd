"""Golden model of the core: the Delegated Connection Table, its receive decisions and commands.

The model is the executable form of SPEC sections 2 to 6 as refined in ``docs/architecture.md``.
It takes received frames, transmitted frames and commands one at a time, each to completion,
which is the replay contract of the architecture: for the same sequence of inputs the RTL must
emit the same events, make the same host-memory contents and count the same registers.

The one input that is not a frame or a command is time: the model cannot count cycles, so the
buffer-request timer (R19) expires only when :meth:`Model.expire_buffer_request` says so. The
high-water mark it predicts itself, from the beats of the frames waiting behind a held frame.
"""

from dataclasses import dataclass, field
from typing import NamedTuple

from tcpdct.params import Params, RX_DESCRIPTOR_DEPTH
from tcpdct.records import (
    NO_CONNECTION, Opcode, CmdStatus, EventType, LegacyReason, DropReason, Command, Event,
)
from tcpdct.headers import TCP_SYN, TCP_FIN, TCP_PSH, TCP_ACK
from tcpdct import regmap

from .frame import Cls, parse, parse_tx, special_flags
from .hostmem import HostMemory, ADDRESS_SPACE


__all__ = ["Model", "ConnKey", "Entry", "UserBuffer", "LegacyBuffer", "Grant", "HeldFrame",
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


class HeldFrame(NamedTuple):
    """A received frame held at the head of the receive engine by a buffer request (R17).

    ``index`` is the connection it waits on and ``shortfall`` the bytes its posted user buffers
    lacked at its last decision (the ``bytes`` of its BUF_REQ, or less after a POST_BUFFER that
    did not make enough room).
    """
    frame:     bytes
    index:     int
    shortfall: int


class _Stored(NamedTuple):
    """A received frame in the receive packet buffer, waiting for the engine."""
    frame:     bytes
    mac_error: bool


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

#: Registers the driver writes: configuration rather than counts.
_RW_REGISTERS = tuple(reg.name for reg in regmap.REGISTERS if reg.access == "rw")

#: Counters kept 64 bits wide and read as a ``_LO``/``_HI`` register pair.
_WIDE_COUNTERS = ("BYTES_PLACED", "BYTES_LEGACY")

_OPCODES = {int(opcode) for opcode in Opcode}

#: The reasons a buffer request can end in legacy other than by a decision (R19).
_EXPIRY_REASONS = (LegacyReason.BUF_TIMEOUT, LegacyReason.HWM)

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
        errors, as the testbenches' host memory never does. The core answers per burst: every
        job with bytes in a burst whose response is an error reports it, and a burst may carry
        the first bytes of the next job as well (payloads placed one after the other share the
        host beat where they join). The two agree when the predicate fails whole buffers that
        share no host beat with another, as the testbenches' ``FaultyHostMemory`` ranges do, or
        whole 4 KiB pages: a burst lies inside one of either.

    Members
    -------
    params : tcpdct.params.Params
    memory : HostMemory
        Every DMA write the core would have made so far, applied.
    last_writes : list of (int, bytes)
        ``(address, data)`` of the writes made by the last call, in DMA order. A frame placed
        into several user buffers makes one write per buffer; a legacy frame one write. A call
        that decides several frames (one that ends a buffer request) lists the writes of all of
        them, in decision order.
    granted : list of Grant
        Every range the driver has posted (user and legacy buffers), in posting order, never
        removed: the ranges DMA writes may touch (R52).
    entries : list of Entry
        The DCT, ``params.n_entries`` entries.
    legacy_ring : list of LegacyBuffer
        Posted legacy buffers, head (next to be used) first.
    held : HeldFrame or None
        The received frame a buffer request holds at the head of the receive engine (R17).
    queued_frames : list of bytes
        Received frames waiting behind :attr:`held`, in arrival order (in the receive packet
        buffer or, past :data:`~tcpdct.params.RX_DESCRIPTOR_DEPTH` of them, at the MAC).
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
        self._held       = None
        self._waiting    = []
        self._config     = {name: regmap.reset_value(regmap.by_name(name), params)
                            for name in _RW_REGISTERS}
        self._counts     = {reg.name: 0 for reg in regmap.REGISTERS
                            if reg.name not in _CONSTANT_REGISTERS
                            and reg.name not in _RW_REGISTERS}
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
        values.update(self._config)
        values.update(self.counters)
        return {reg.name: values[reg.name] for reg in regmap.REGISTERS}

    def write_register(self, name, value):
        """Write a read-write register (``BUF_REQ_TIMEOUT`` or ``HWM_BYTES``); the events it causes.

        Lowering ``HWM_BYTES`` below what the receive packet buffer holds while a frame is held
        ends the buffer request at once (R19), so the write may return that frame's LEGACY
        event and the events of the frames queued behind it; otherwise it returns ``[]``.

        Raises
        ------
        KeyError
            If ``name`` is not a read-write register.
        ValueError
            If ``value`` does not fit in 32 bits.
        """
        if name not in _RW_REGISTERS:
            raise KeyError(f"Register must be one of the read-write registers "
                           f"{list(_RW_REGISTERS)}, not {name!r}")
        if not isinstance(value, int) or not 0 <= value < 1 << 32:
            raise ValueError(f"Register value must be a 32-bit unsigned integer, not {value!r}")
        self.last_writes = []
        self._config[name] = value
        return self._settle()

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
            elif event.type == EventType.BUF_REQ:
                counts["BUF_REQS"] += 1

    # DMA ---------------------------------------------------------------------------------------

    def _write(self, address, data):
        data = bytes(data)
        self.memory.write(address, data)
        self.last_writes.append((address, data))

    def _job(self, decide):
        """Run one job (a frame's decision, a command, a transmit update) and hand out its events.

        Every event of the job carries the DMA error status of the job's own writes (R51), not
        of the other jobs of the same call.
        """
        first_write = len(self.last_writes)
        events = decide()
        if self._dma_error is not None and any(
                self._dma_error(address, data) for address, data in self.last_writes[first_write:]):
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

    @property
    def held(self):
        """The :class:`HeldFrame` a buffer request holds, or ``None``."""
        return self._held

    @property
    def queued_frames(self):
        """Received frames waiting behind the held one, oldest first."""
        return [stored.frame for stored in self._waiting]

    def _stored_beats(self, length):
        """Beats a frame of ``length`` bytes takes in the receive packet buffer; the bytes past
        ``max_frame_bytes`` of an oversize frame are never stored."""
        width = self.params.data_bytes
        return min(-(-length // width), -(-self.params.max_frame_bytes // width))

    @property
    def rx_buffer_beats(self):
        """Beats of the receive packet buffer the held frame and the frames behind it take (0
        when no frame is held): what the high-water mark is compared with (R19).

        Only the first :data:`~tcpdct.params.RX_DESCRIPTOR_DEPTH` frames behind the held one
        are in the buffer; the parser leaves later ones waiting at the MAC.
        """
        if self._held is None:
            return 0
        stored = [self._held.frame] + self.queued_frames[:RX_DESCRIPTOR_DEPTH]
        return sum(self._stored_beats(len(frame)) for frame in stored)

    def rx_frame(self, frame, mac_error=False):
        """Receive one frame from the MAC; the events it causes, in emission order.

        While a frame is held (:attr:`held`), the frame waits behind it and the call returns
        ``[]``, unless the receive packet buffer reaches the high-water mark: then the held
        frame goes to legacy (``HWM``) and the waiting frames are decided, this one included,
        until one of them starts a new buffer request.

        Parameters
        ----------
        frame : bytes
            The whole frame as received, Ethernet header first, padding included, no FCS.
        mac_error : bool
            The MAC's error flag (``tuser`` on the last beat).
        """
        self.last_writes = []
        self._waiting.append(_Stored(bytes(frame), bool(mac_error)))
        return self._settle()

    def expire_buffer_request(self, reason=LegacyReason.BUF_TIMEOUT):
        """End the buffer request of the held frame as its timer (or the high-water mark) would.

        The held frame goes to legacy with ``reason``, SYNC_REQ is set and rcv_nxt advances past
        it (R19); then the frames queued behind it are decided in order, until one of them
        starts a new buffer request. Returns the events, in emission order.

        Parameters
        ----------
        reason : LegacyReason
            ``BUF_TIMEOUT`` (the ``BUF_REQ_TIMEOUT`` cycles have passed) or ``HWM``.

        Raises
        ------
        ValueError
            If ``reason`` is neither ``BUF_TIMEOUT`` nor ``HWM``.
        RuntimeError
            If no frame is held.
        """
        if reason not in _EXPIRY_REASONS:
            raise ValueError(f"Buffer request expiry reason must be one of "
                             f"{[r.name for r in _EXPIRY_REASONS]}, not {reason!r}")
        if self._held is None:
            raise RuntimeError("No frame is held by a buffer request")
        self.last_writes = []
        events = self._job(lambda: self._expire(LegacyReason(reason)))
        return events + self._settle()

    def _settle(self):
        """Decide waiting frames until one is held, and end a hold the high-water mark reached.

        The high-water mark is compared whenever a hold starts or a frame joins the queue, so a
        frame held with enough frames already stored behind it goes to legacy at once, as in
        the RTL, where the buffer fills while the engine waits.
        """
        events = []
        while True:
            if self._held is not None:
                if self.rx_buffer_beats * self.params.data_bytes < self._config["HWM_BYTES"]:
                    return events
                events += self._job(lambda: self._expire(LegacyReason.HWM))
            elif self._waiting:
                stored = self._waiting.pop(0)
                events += self._job(lambda: self._decide(stored.frame, stored.mac_error))
            else:
                return events

    def _redecide(self):
        """Decide the held frame again from scratch, after a command or a transmit update."""
        if self._held is None:
            return []
        frame = self._held.frame
        self._held = None
        return self._job(lambda: self._decide(frame)) + self._settle()

    def _decide(self, frame, mac_error=False):
        p = parse(frame, mac_error=mac_error, max_frame_bytes=self.params.max_frame_bytes)
        if p.cls in _DROP_OF_CLASS:
            return [Event(EventType.DROP, NO_CONNECTION, reason=_DROP_OF_CLASS[p.cls],
                          frame_len=p.frame_len)]
        if p.cls == Cls.NOT_TCP:
            return self._legacy(frame, p, LegacyReason.NOT_TCP)
        if p.cls == Cls.CHECKSUM:
            # A frame with a bad checksum is not looked up: its key may be corrupt (R11).
            return self._legacy(frame, p, LegacyReason.CHECKSUM)
        index = self.lookup(ConnKey(p.local_ip, p.remote_ip, p.local_port, p.remote_port))
        if index is None:
            return self._legacy(frame, p, LegacyReason.NO_MATCH)
        return self._delegated(frame, p, index)

    @staticmethod
    def _advanced(entry, p):
        """rcv_nxt once an in-sequence frame has taken whatever path (SPEC §3, rules 1, 2, R19)."""
        if p.seq != entry.rcv_nxt:
            return entry.rcv_nxt
        return seq_add(entry.rcv_nxt,
                       p.payload_len + bool(p.flags & TCP_SYN) + bool(p.flags & TCP_FIN))

    def _delegated(self, frame, p, index):
        """The checks of "Decisions for a delegated connection", in their order (R13–R20)."""
        entry = self.entries[index]
        advanced = self._advanced(entry, p)

        if p.special or special_flags(p.flags):
            reason, sync_req, rcv_nxt = LegacyReason.SPECIAL, True, advanced
        elif entry.sync_req:
            reason, sync_req, rcv_nxt = LegacyReason.SYNC, True, advanced
        elif p.payload_len == 0:
            reason, sync_req, rcv_nxt = LegacyReason.NO_PAYLOAD, False, entry.rcv_nxt
        elif p.seq != entry.rcv_nxt:
            reason, sync_req, rcv_nxt = LegacyReason.OUT_OF_SEQ, True, entry.rcv_nxt
        elif entry.room < p.payload_len:
            return self._hold(frame, p, index)
        else:
            entry.buf_req = False
            return self._place(frame, p, index)
        return self._legacy_of_connection(frame, p, index, reason, sync_req, rcv_nxt)

    def _legacy_of_connection(self, frame, p, index, reason, sync_req, rcv_nxt):
        entry = self.entries[index]
        events = self._legacy(frame, p, reason, index)
        # A legacy delivery that failed leaves the frame unreceived: the peer will resend it.
        # Either way the frame is decided, and with it any buffer request of the connection.
        if events[0].type == EventType.LEGACY:
            entry.sync_req = sync_req
            entry.rcv_nxt = rcv_nxt
        entry.buf_req = False
        return events

    def _hold(self, frame, p, index):
        """Step 5, no room: open a buffer request unless one is open, and hold the frame (R17)."""
        entry = self.entries[index]
        shortfall = p.payload_len - entry.room
        self._held = HeldFrame(frame, index, shortfall)
        if entry.buf_req:
            return []
        entry.buf_req = True
        return [Event(EventType.BUF_REQ, index, bytes=shortfall)]

    def _expire(self, reason):
        """The held frame to legacy with ``reason`` (R19): the stack owns the stream now."""
        frame, index, _ = self._held
        self._held = None
        p = parse(frame, max_frame_bytes=self.params.max_frame_bytes)
        return self._legacy_of_connection(frame, p, index, reason, True,
                                          self._advanced(self.entries[index], p))

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
        """Transmit one frame from the host stack; the events it causes, in emission order.

        The frame passes to the MAC unchanged (R30) and is counted in ``TX_FRAMES``. If it gives
        a transmit update (:func:`model.frame.parse_tx`) whose key (src IP, dst IP, src port,
        dst port) hits a valid entry, it is counted in ``TX_MATCHED`` and R31–R33 apply, which
        may emit a RESYNC. A held frame is then decided again, so its events may follow.
        """
        self.last_writes = []
        self._counts["TX_FRAMES"] += 1
        return self._job(lambda: self._tx_update(parse_tx(frame))) + self._redecide()

    def _tx_update(self, update):
        """R31–R33, in the order of ``docs/architecture.md``, "Transmit engine"."""
        if update is None:
            return []
        index = self.lookup(ConnKey(update.local_ip, update.remote_ip, update.local_port,
                                    update.remote_port))
        if index is None:
            return []
        self._counts["TX_MATCHED"] += 1
        entry = self.entries[index]
        ack = bool(update.flags & TCP_ACK)
        events = []
        if ack and seq_gt(update.ack, entry.rcv_nxt):
            entry.rcv_nxt = update.ack
        if entry.sync_req and ack and update.ack == entry.rcv_nxt:
            # The stack has taken every byte the hardware gave it: placement may resume.
            entry.sync_req = False
            entry.buf_req = False
            events.append(Event(EventType.RESYNC, index, rcv_nxt=entry.rcv_nxt))
        if ack:
            entry.last_ack_sent = update.ack
        entry.rcv_wnd = update.window
        end = seq_add(update.seq, update.payload_len + bool(update.flags & TCP_SYN)
                      + bool(update.flags & TCP_FIN))
        if seq_gt(end, entry.snd_nxt):
            entry.snd_nxt = end
        return events

    # Commands ----------------------------------------------------------------------------------

    def command(self, cmd):
        """Execute one command record; its events, ``CMD_DONE`` last among its own (R40).

        While a frame is held, the held frame is decided again once the command has taken
        effect, so the events of that frame (and of the frames it releases) follow ``CMD_DONE``.

        Parameters
        ----------
        cmd : tcpdct.records.Command or int
            A command, or the 256-bit record as an integer; an integer may carry an opcode that
            is not an :class:`~tcpdct.records.Opcode` (answered with ``BAD_OPCODE``).
        """
        self.last_writes = []
        if isinstance(cmd, (bytes, bytearray)):
            cmd = int.from_bytes(cmd, "little")
        if not isinstance(cmd, (int, Command)):
            raise TypeError(f"Command must be a Command or an integer, not {cmd!r}")
        return self._job(lambda: self._execute(cmd)) + self._redecide()

    def _execute(self, cmd):
        if isinstance(cmd, int):
            opcode, index = cmd & 0xff, (cmd >> 16) & 0xffff
            if opcode not in _OPCODES:
                return [self._done(opcode, index, CmdStatus.BAD_OPCODE)]
            cmd = Command.unpack(cmd)
        index = cmd.index & 0xffff
        if cmd.opcode != Opcode.POST_LEGACY and index >= self.params.n_entries:
            return [self._done(cmd.opcode, index, CmdStatus.BAD_INDEX)]
        execute = {
            Opcode.DELEGATE:    self._delegate,
            Opcode.POST_BUFFER: self._post_buffer,
            Opcode.POST_LEGACY: self._post_legacy,
            Opcode.RESYNC:      self._resync,
            Opcode.RECLAIM:     self._reclaim,
            Opcode.QUERY:       self._query,
        }[cmd.opcode]
        events, status = execute(cmd, index)
        return events + [self._done(cmd.opcode, index, status)]

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
