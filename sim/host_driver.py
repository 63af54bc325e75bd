"""A deterministic model of the host driver and stack that sit behind the core during a replay.

The driver decides every command from what it has posted and what the core has reported, never
from timing, so a replay issues the same commands on every backend that emits the model's
events. It plays the host's part of the SPEC:

* keeps the legacy ring topped up: once fewer than half of ``legacy_ring_depth`` buffers remain
  posted, it posts until the ring is full again;
* delegates each TCP connection of the local host once its three-way handshake is complete
  (passive open: the peer's ACK of our SYN-ACK has arrived; active open: we have sent the ACK of
  the peer's SYN-ACK), with ``rcv_nxt`` the next byte it expects from the peer, ``snd_nxt`` and
  ``rcv_wnd`` from the last frame it sent;
* fills each delegated connection's buffer queue with user buffers of :data:`USER_BUFFER_BYTES`
  (in a per-connection arena) when it delegates it, and afterwards posts a user buffer only
  when the core asks for one: a BUF_REQ is answered at once with as many buffers as its
  shortfall needs, or, when the queue has no free slot, left to time out (R17–R19);
* reclaims a connection once it is closed (both FINs seen and ours acknowledged, or a RST) and,
  at the end of a replay, every connection still delegated;
* rebuilds each connection's application byte stream as a host stack would: from the bytes the
  core placed (RX_PLACED says how many, in order, into the posted buffers; BUF_DONE confirms a
  buffer's fill) and from the TCP payload of the frames it received through legacy buffers,
  in sequence order, with retransmitted bytes counted once.
"""

from collections import deque
from dataclasses import dataclass, field

from tcpdct.params import Params
from tcpdct.records import Command, Opcode, CmdStatus
from tcpdct import regmap
from tcpdct.headers import TCP_SYN, TCP_ACK, TCP_FIN, TCP_RST
from model.frame import Cls, parse


__all__ = ["HostDriver", "Connection", "StreamReassembly", "DriverError",
           "USER_BUFFER_BYTES", "USER_ARENA_BASE", "USER_ARENA_STRIDE", "LEGACY_BASE",
           "LEGACY_BUFFER_BYTES"]


#: Size of each user buffer the driver posts.
USER_BUFFER_BYTES = 8192
#: Host address of entry 0's arena; above 4 GiB so that the upper address bits are exercised.
USER_ARENA_BASE = 0x1_0000_0000
#: Distance between the arenas of consecutive entries.
USER_ARENA_STRIDE = 0x10_0000
#: Host address of the first legacy buffer.
LEGACY_BASE = 0x8000_0000
#: Size of each legacy buffer; a whole frame of up to ``max_frame_bytes`` must fit.
LEGACY_BUFFER_BYTES = 2048

_SEQ_MOD = 1 << 32


class DriverError(RuntimeError):
    """The core reported something a correct core cannot report to this driver."""


class StreamReassembly:
    """One direction of a TCP connection's byte stream, rebuilt in sequence order.

    Parameters
    ----------
    isn : int
        The sender's initial sequence number; the stream starts at ``isn + 1``.

    Members
    -------
    data : bytearray
        The in-order bytes received so far.
    duplicate_bytes : int
        Bytes that arrived again after they were already in :attr:`data` or held out of order.
    new_bytes : dict of str to int
        Bytes of :attr:`data` by the ``source`` that brought them first (``"placed"`` or
        ``"legacy"``), counted when they join :attr:`data`, so that bytes held out of order
        count for the path they came by.
    """

    def __init__(self, isn):
        self.start = (isn + 1) % _SEQ_MOD
        self.data = bytearray()
        self.duplicate_bytes = 0
        self.new_bytes = {"placed": 0, "legacy": 0}
        self._out_of_order = {}

    @property
    def rcv_nxt(self):
        """The sequence number of the next byte expected."""
        return (self.start + len(self.data)) % _SEQ_MOD

    def _offset(self, seq):
        offset = (seq - self.start) % _SEQ_MOD
        return offset - _SEQ_MOD if offset >= 1 << 31 else offset

    def add(self, seq, payload, source):
        """Take ``payload`` that starts at sequence number ``seq`` and came by ``source``; the
        number of bytes :attr:`data` grew by (held out-of-order bytes it released included)."""
        offset, payload = self._offset(seq), bytes(payload)
        if offset < 0:
            self.duplicate_bytes += min(len(payload), -offset)
            payload, offset = payload[-offset:], 0
        if not payload:
            return 0
        if offset > len(self.data):
            held, _ = self._out_of_order.get(offset, (b"", None))
            self.duplicate_bytes += min(len(held), len(payload))
            if len(payload) > len(held):
                self._out_of_order[offset] = (payload, source)
            return 0
        before = len(self.data)
        self._append(offset, payload, source)
        while True:
            ready = [offset for offset in self._out_of_order if offset <= len(self.data)]
            if not ready:
                break
            for offset in sorted(ready):
                self._append(offset, *self._out_of_order.pop(offset))
        return len(self.data) - before

    def _append(self, offset, payload, source):
        overlap = len(self.data) - offset
        self.duplicate_bytes += min(overlap, len(payload))
        self.data += payload[overlap:]
        self.new_bytes[source] += max(0, len(payload) - overlap)


@dataclass
class _UserBuffer:
    address: int
    length:  int
    tag:     int
    slot:    int
    filled:  int = 0


@dataclass
class Connection:
    """What the host stack knows of one TCP connection of the local host.

    Members
    -------
    key : tuple of int
        ``(local_ip, remote_ip, local_port, remote_port)``, as a DELEGATE carries it.
    state : str
        ``"SYN_RECEIVED_PEER"`` (peer's SYN seen), ``"SYN_RCVD"`` (our SYN-ACK sent),
        ``"SYN_SENT"``, ``"SYN_ACK_RECEIVED"`` (peer's SYN-ACK seen, our ACK not yet sent),
        ``"ESTABLISHED"`` or ``"CLOSED"``.
    index : int or None
        The DCT entry while delegated.
    ever_delegated : bool
    stream : StreamReassembly or None
        The peer's byte stream, once the peer's ISN is known.
    bytes_placed : int
        Payload bytes the core placed into this connection's user buffers.
    bytes_legacy : int
        Payload bytes that reached the stream through legacy buffers (new bytes only: the
        stream's ``new_bytes["legacy"]``).
    """
    key:            tuple
    state:          str
    local_isn:      int = None
    snd_nxt:        int = None
    rcv_wnd:        int = 0
    index:          int = None
    ever_delegated: bool = False
    stream:         StreamReassembly = None
    fin_received:   bool = False
    fin_sent_seq:   int = None
    fin_acked:      bool = False
    reclaim_wanted: bool = False
    bytes_placed:   int = 0
    buffers:        deque = field(default_factory=deque)
    free_slots:     list = None
    preposted:      bool = False

    @property
    def bytes_legacy(self):
        return 0 if self.stream is None else self.stream.new_bytes["legacy"]

    @property
    def name(self):
        local_ip, remote_ip, local_port, remote_port = self.key
        return f"{_dotted(local_ip)}:{local_port}-{_dotted(remote_ip)}:{remote_port}"


def _dotted(ip):
    return ".".join(str(ip >> shift & 0xff) for shift in (24, 16, 8, 0))


def _seq_gt(a, b):
    return 0 < (a - b) % _SEQ_MOD < 1 << 31


class HostDriver:
    """The host driver and stack of a replay.

    Parameters
    ----------
    params : tcpdct.params.Params
        Build parameters of the core (entries, queue depths, largest frame).
    local_ip : int
        IPv4 address of the local host.
    delegate : bool
        Delegate connections at the end of their handshake; when false every frame takes the
        legacy path and the driver only posts legacy buffers.

    Members
    -------
    connections : list of Connection
        Every connection seen, in order of first appearance.
    legacy_frames : list of bytes
        The frames read back from legacy buffers, in order of their LEGACY events.
    buf_req_events, resync_events : int
        BUF_REQ and RESYNC events seen.
    buffer_request_open : bool
        A frame is held by a buffer request (R17): a BUF_REQ came and no frame has been decided
        since.
    commands_issued : dict of str to int
        Commands issued, by opcode name.

    Raises
    ------
    ValueError
        If ``max_frame_bytes`` does not fit in a legacy buffer.
    """

    def __init__(self, params, local_ip, *, delegate=True):
        if not isinstance(params, Params):
            raise TypeError(f"Parameters must be a Params, not {params!r}")
        if params.max_frame_bytes > LEGACY_BUFFER_BYTES:
            raise ValueError(f"Frames of up to {params.max_frame_bytes!r} bytes do not fit in "
                             f"legacy buffers of {LEGACY_BUFFER_BYTES} bytes")
        self.params = params
        self.local_ip = local_ip
        self.delegate = delegate
        self.connections = []
        self.legacy_frames = []
        self.buf_req_events = 0
        self.resync_events = 0
        self.commands_issued = {}
        self._by_key = {}
        self._by_index = {}
        self._free_indices = list(range(params.n_entries))
        self._legacy_ring = deque()
        self._free_legacy_slots = list(range(params.legacy_ring_depth))
        self._legacy_refilling = True
        self._next_tag = 0
        self._pending = None
        self._closing = False
        # (connection, bytes still lacking) of the open buffer request, or None.
        self._request = None

    # Decisions ---------------------------------------------------------------------------------

    def next_command(self):
        """The next command to issue now, or ``None`` when the driver has nothing to say.

        Called again after each command has completed (:meth:`on_events` has seen its
        CMD_DONE), so each decision sees the effect of the previous one.
        """
        if self._pending is not None:
            raise DriverError(f"Command {self._pending[0]!r} never completed")
        command = (self._reclaim_command() or self._buffer_request_command()
                   or self._delegate_command() or self._legacy_command()
                   or self._prepost_command())
        if command is not None:
            name = command.opcode.name
            self.commands_issued[name] = self.commands_issued.get(name, 0) + 1
        return command

    def _issue(self, command, effect):
        self._pending = (command, effect)
        return command

    def _tag(self):
        self._next_tag = (self._next_tag + 1) % _SEQ_MOD
        return self._next_tag

    def _reclaim_command(self):
        for conn in self.connections:
            if conn.index is not None and (conn.reclaim_wanted or self._closing):
                return self._issue(Command(Opcode.RECLAIM, conn.index),
                                   lambda conn=conn: self._forget(conn))
        return None

    def _delegate_command(self):
        if not self.delegate or self._closing:
            return None
        for conn in self.connections:
            if (conn.state == "ESTABLISHED" and not conn.ever_delegated
                    and conn.stream is not None and conn.snd_nxt is not None
                    and self._free_indices):
                index = self._free_indices[0]
                local_ip, remote_ip, local_port, remote_port = conn.key
                command = Command(Opcode.DELEGATE, index, local_ip=local_ip, remote_ip=remote_ip,
                                  local_port=local_port, remote_port=remote_port,
                                  rcv_nxt=conn.stream.rcv_nxt, snd_nxt=conn.snd_nxt,
                                  rcv_wnd=conn.rcv_wnd)
                return self._issue(command, lambda conn=conn, index=index:
                                   self._delegated(conn, index))
        return None

    def _legacy_command(self):
        depth = self.params.legacy_ring_depth
        if len(self._legacy_ring) < depth // 2:
            self._legacy_refilling = True
        if not self._legacy_refilling or len(self._legacy_ring) == depth:
            self._legacy_refilling = False
            return None
        slot = self._free_legacy_slots[0]
        address, tag = LEGACY_BASE + slot * LEGACY_BUFFER_BYTES, self._tag()
        def posted():
            self._free_legacy_slots.remove(slot)
            self._legacy_ring.append((tag, address, slot))
        return self._issue(Command(Opcode.POST_LEGACY, address=address,
                                   length=LEGACY_BUFFER_BYTES, tag=tag), posted)

    def _post_user_buffer(self, conn, posted=None):
        slot = conn.free_slots[0]
        address = USER_ARENA_BASE + conn.index * USER_ARENA_STRIDE + slot * USER_BUFFER_BYTES
        buffer = _UserBuffer(address, USER_BUFFER_BYTES, self._tag(), slot)
        def effect():
            conn.free_slots.remove(buffer.slot)
            conn.buffers.append(buffer)
            if posted is not None:
                posted(buffer)
        return self._issue(Command(Opcode.POST_BUFFER, conn.index, address=buffer.address,
                                   length=buffer.length, tag=buffer.tag), effect)

    def _prepost_command(self):
        """Fill the queue of a newly delegated connection; later posts answer BUF_REQs only."""
        if self._closing:
            return None
        for conn in sorted(self._by_index.values(), key=lambda conn: conn.index):
            if conn.preposted or conn.reclaim_wanted:
                continue
            if len(conn.buffers) >= self.params.buffers_per_conn:
                conn.preposted = True
                continue
            return self._post_user_buffer(conn)
        return None

    def _buffer_request_command(self):
        """A POST_BUFFER towards the open buffer request's shortfall, while a slot is free."""
        if self._request is None:
            return None
        conn, lacking = self._request
        if lacking <= 0 or not conn.free_slots:
            return None
        def posted(buffer):
            self._request = (conn, lacking - buffer.length)
        return self._post_user_buffer(conn, posted)

    @property
    def buffer_request_open(self):
        return self._request is not None

    def rx_batch_limit(self):
        """How many received frames may be streamed back to back before the driver looks again.

        One while a handshake is waiting for the peer's ACK (so the connection is delegated
        before its first data arrives); otherwise as many as the posted legacy buffers can take,
        and few enough that frames of the largest size waiting behind a held one stay below the
        high-water mark (``HWM_BYTES`` at its reset value): a held frame is then released only
        by the driver's answer or its timer, never by the batch's own size (R19).
        """
        if any(conn.state == "SYN_RCVD" for conn in self.connections):
            return 1
        width = self.params.data_bytes
        stored_bytes = -(-self.params.max_frame_bytes // width) * width
        hwm = regmap.reset_value(regmap.by_name("HWM_BYTES"), self.params)
        return max(1, min(len(self._legacy_ring), (hwm - 1) // stored_bytes))

    def close_all(self):
        """From now on, reclaim every delegated connection and post nothing more."""
        self._closing = True

    # Effects of completed commands -------------------------------------------------------------

    def _delegated(self, conn, index):
        self._free_indices.remove(index)
        conn.index = index
        conn.ever_delegated = True
        conn.free_slots = list(range(self.params.buffers_per_conn))
        self._by_index[index] = conn

    def _forget(self, conn):
        if conn.buffers:
            raise DriverError(f"RECLAIM of entry {conn.index} did not return buffers "
                              f"{[buffer.tag for buffer in conn.buffers]}")
        del self._by_index[conn.index]
        self._free_indices.append(conn.index)
        self._free_indices.sort()
        conn.index = None
        conn.reclaim_wanted = False

    # Events ------------------------------------------------------------------------------------

    def on_events(self, events, memory):
        """Act on events from the core, in stream order.

        Parameters
        ----------
        events : list of tcpdct.records.Event
        memory
            Host memory (``read(address, length) -> bytes``) to read placed data and legacy
            frames from.

        Raises
        ------
        DriverError
            If an event contradicts what the driver posted (an unknown tag, a buffer completed
            out of order or with a fill other than the bytes placed into it) or a command
            failed.
        """
        for event in events:
            handler = getattr(self, f"_on_{event.type.name.lower()}", None)
            if handler is not None:
                handler(event, memory)

    def _on_cmd_done(self, event, memory):
        if self._pending is None:
            raise DriverError(f"{event!r} for no command")
        command, effect = self._pending
        self._pending = None
        if event.opcode != command.opcode or event.status != CmdStatus.OK:
            raise DriverError(f"{command!r} ended with {event!r}")
        effect()

    def _on_rx_placed(self, event, memory):
        conn = self._by_index.get(event.index)
        if conn is None:
            raise DriverError(f"{event!r} for an entry the driver did not delegate")
        data = bytearray()
        for buffer in conn.buffers:
            if len(data) == event.length:
                break
            size = min(buffer.length - buffer.filled, event.length - len(data))
            data += memory.read(buffer.address + buffer.filled, size)
            buffer.filled += size
        if len(data) != event.length:
            raise DriverError(f"{event!r} placed more than the posted buffers hold")
        conn.bytes_placed += event.length
        conn.stream.add(event.seq, data, "placed")
        self._request = None
        self._peer_ack(conn, event.flags, event.ack)

    def _on_buf_done(self, event, memory):
        conn = self._by_index.get(event.index)
        if conn is None or not conn.buffers or conn.buffers[0].tag != event.tag:
            raise DriverError(f"{event!r} is not the head of the entry's buffer queue")
        buffer = conn.buffers.popleft()
        if event.bytes != buffer.filled:
            raise DriverError(f"{event!r}: {buffer.filled} bytes were placed into that buffer")
        conn.free_slots.append(buffer.slot)
        conn.free_slots.sort()

    def _on_legacy(self, event, memory):
        if not self._legacy_ring or self._legacy_ring[0][0] != event.tag:
            raise DriverError(f"{event!r} is not the head of the legacy ring")
        _, address, slot = self._legacy_ring.popleft()
        self._free_legacy_slots.append(slot)
        self._free_legacy_slots.sort()
        frame = memory.read(address, event.frame_len)
        self.legacy_frames.append(frame)
        self._request = None
        self._stack_rx(frame)

    def _on_drop(self, event, memory):
        self._request = None

    def _on_buf_req(self, event, memory):
        self.buf_req_events += 1
        conn = self._by_index.get(event.index)
        if conn is None or self._request is not None:
            raise DriverError(f"{event!r} for an entry the driver did not delegate, or while "
                              f"another request is open")
        self._request = (conn, event.bytes)

    def _on_resync(self, event, memory):
        self.resync_events += 1

    # The host stack ----------------------------------------------------------------------------

    def _connection(self, key, *, new_state=None):
        conn = self._by_key.get(key)
        if new_state is not None and (conn is None or conn.state == "CLOSED"):
            conn = Connection(key, new_state)
            self._by_key[key] = conn
            self.connections.append(conn)
        return conn

    def _stack_rx(self, frame):
        """A frame the stack received through a legacy buffer."""
        p = parse(frame, max_frame_bytes=self.params.max_frame_bytes)
        # A frame with a bad checksum is discarded by the stack, as it would be by any host.
        if p.cls != Cls.TCP or p.local_ip != self.local_ip:
            return
        key = (p.local_ip, p.remote_ip, p.local_port, p.remote_port)
        syn, ack = p.flags & TCP_SYN, p.flags & TCP_ACK
        if syn and not ack:
            conn = self._connection(key, new_state="SYN_RECEIVED_PEER")
            if conn.stream is None:
                conn.stream = StreamReassembly(p.seq)
            return
        conn = self._connection(key)
        if conn is None:
            return
        if syn and conn.state == "SYN_SENT" and p.ack == (conn.local_isn + 1) % _SEQ_MOD:
            conn.stream = StreamReassembly(p.seq)
            conn.state = "SYN_ACK_RECEIVED"
            return
        if conn.stream is None:
            return
        if p.flags & TCP_RST:
            self._closed(conn)
            return
        payload = frame[p.payload_offset:p.payload_offset + p.payload_len]
        conn.stream.add(p.seq, payload, "legacy")
        if p.flags & TCP_FIN and (p.seq + p.payload_len) % _SEQ_MOD == conn.stream.rcv_nxt:
            conn.fin_received = True
        if ack:
            if conn.state == "SYN_RCVD" and p.ack == (conn.local_isn + 1) % _SEQ_MOD:
                conn.state = "ESTABLISHED"
            self._peer_ack(conn, p.flags, p.ack)

    def _peer_ack(self, conn, flags, ack):
        if (flags & TCP_ACK and conn.fin_sent_seq is not None
                and not _seq_gt((conn.fin_sent_seq + 1) % _SEQ_MOD, ack)):
            conn.fin_acked = True
        if conn.fin_received and conn.fin_acked:
            self._closed(conn)

    def _closed(self, conn):
        conn.state = "CLOSED"
        if conn.index is not None:
            conn.reclaim_wanted = True

    def on_tx(self, frame):
        """A frame the local stack is about to send."""
        p = parse(frame, max_frame_bytes=max(self.params.max_frame_bytes, len(frame)))
        if p.cls != Cls.TCP or p.remote_ip != self.local_ip:
            return
        # parse() takes the receiver's point of view: for a frame we send, its "remote" fields
        # are our own.
        key = (p.remote_ip, p.local_ip, p.remote_port, p.local_port)
        syn, ack = p.flags & TCP_SYN, p.flags & TCP_ACK
        if syn and not ack:
            conn = self._connection(key, new_state="SYN_SENT")
            conn.local_isn = p.seq
        else:
            conn = self._connection(key)
            if conn is None:
                return
            if syn and conn.state == "SYN_RECEIVED_PEER":
                conn.local_isn = p.seq
                conn.state = "SYN_RCVD"
            elif ack and conn.state == "SYN_ACK_RECEIVED":
                conn.state = "ESTABLISHED"
        end = (p.seq + p.payload_len + bool(syn) + bool(p.flags & TCP_FIN)) % _SEQ_MOD
        if conn.snd_nxt is None or _seq_gt(end, conn.snd_nxt):
            conn.snd_nxt = end
        conn.rcv_wnd = p.window
        if p.flags & TCP_FIN and conn.fin_sent_seq is None:
            conn.fin_sent_seq = (p.seq + p.payload_len) % _SEQ_MOD
        if p.flags & TCP_RST:
            self._closed(conn)
        elif conn.fin_received and conn.fin_acked:
            self._closed(conn)
