"""Command and event records: the one definition of both formats, and their codec.

Commands and events are fixed-size records of :data:`RECORD_BITS` bits carried as a single beat
on their own AXI4-Stream (byte 0 of the record in ``tdata[7:0]``). Every record starts with the
same 32-bit header::

    bits  7:0   code       opcode (commands) or event type (events)
    bit   8     dma_error  events only: a write of the job behind this event got an error response
    bits 31:16  index      connection index, or NO_CONNECTION

and its body, which depends on the code, follows from bit 32, fields packed from the LSB in the
order listed in :data:`COMMAND_FIELDS` / :data:`EVENT_FIELDS`. The RTL derives its
``data.Struct`` layouts from these tables (:mod:`tcpdct.layouts`), the golden model and the
testbenches use :class:`Command` and :class:`Event` below, and ``docs/interfaces.md`` is written
from the same tables. This module is pure Python so that host software can import it alone.
"""

from enum import IntEnum


__all__ = [
    "RECORD_BITS", "RECORD_BYTES", "NO_CONNECTION", "HEADER_FIELDS",
    "Opcode", "CmdStatus", "EventType", "LegacyReason", "DropReason",
    "COMMAND_FIELDS", "EVENT_FIELDS", "Command", "Event",
]


RECORD_BITS  = 256
RECORD_BYTES = RECORD_BITS // 8

#: Index carried by events that belong to no connection (frames of non-delegated traffic).
NO_CONNECTION = 0xFFFF


class Opcode(IntEnum):
    DELEGATE    = 1
    POST_BUFFER = 2
    POST_LEGACY = 3
    RESYNC      = 4
    RECLAIM     = 5
    QUERY       = 6


class CmdStatus(IntEnum):
    OK            = 0
    BAD_OPCODE    = 1  # opcode not in :class:`Opcode`
    BAD_INDEX     = 2  # index >= number of entries
    IN_USE        = 3  # DELEGATE of an entry that is already valid
    DUPLICATE_KEY = 4  # DELEGATE of a key another valid entry holds
    NOT_DELEGATED = 5  # POST_BUFFER, RESYNC, RECLAIM or QUERY of a free entry
    QUEUE_FULL    = 6  # POST_BUFFER to a full queue, POST_LEGACY to a full ring
    ZERO_LENGTH   = 7  # POST_BUFFER or POST_LEGACY of length 0
    ADDRESS_WRAP  = 8  # address + length beyond 2**64


class EventType(IntEnum):
    RX_PLACED = 1
    BUF_DONE  = 2
    LEGACY    = 3
    DROP      = 4
    CMD_DONE  = 5
    STATE     = 6
    BUF_REQ   = 7
    RESYNC    = 8


class LegacyReason(IntEnum):
    NOT_TCP     = 0  # not IPv4/TCP, or an IPv4/TCP header that contradicts itself
    NO_MATCH    = 1  # IPv4/TCP, but no delegated connection has its key
    CHECKSUM    = 2  # IPv4 header or TCP checksum wrong
    SPECIAL     = 3  # SYN/FIN/RST/URG, fragment, IPv4 options, TCP option other than TS
    SYNC        = 4  # connection waits for the stack to resynchronise
    NO_PAYLOAD  = 5  # pure ACK or window update
    OUT_OF_SEQ  = 6  # seq != rcv_nxt
    # 7 is not used: it was the interim reason for a frame without room before the buffer
    # request existed.
    BUF_TIMEOUT = 8  # buffer request timed out
    HWM         = 9  # receive packet buffer reached its high-water mark during a request


class DropReason(IntEnum):
    MAC_ERROR        = 0  # tuser set on the last beat
    TRUNCATED        = 1  # fewer bytes than the headers claim
    OVERSIZE         = 2  # longer than the max_frame_bytes parameter
    NO_LEGACY_BUFFER = 3  # legacy upload with no legacy buffer posted
    LEGACY_TOO_SMALL = 4  # legacy upload of a frame longer than the next legacy buffer


#: Fields common to every record; ``None`` names reserved bits (zero when sent, ignored).
HEADER_FIELDS = [("code", 8), ("dma_error", 1), (None, 7), ("index", 16)]

_BUFFER = [("address", 64), ("length", 32), ("tag", 32)]

COMMAND_FIELDS = {
    Opcode.DELEGATE: [
        ("local_ip", 32), ("remote_ip", 32), ("local_port", 16), ("remote_port", 16),
        ("rcv_nxt", 32), ("snd_nxt", 32), ("rcv_wnd", 16),
    ],
    Opcode.POST_BUFFER: _BUFFER,
    Opcode.POST_LEGACY: _BUFFER,
    Opcode.RESYNC:      [("rcv_nxt", 32)],
    Opcode.RECLAIM:     [],
    Opcode.QUERY:       [],
}

EVENT_FIELDS = {
    EventType.RX_PLACED: [
        ("seq", 32), ("ack", 32), ("window", 16), ("flags", 8), ("ts_present", 1), (None, 7),
        ("length", 16), ("tsval", 32), ("tsecr", 32),
    ],
    EventType.BUF_DONE: [("tag", 32), ("bytes", 32)],
    EventType.LEGACY: [
        ("tag", 32), ("frame_len", 16), ("reason", 4), ("ip_csum_bad", 1), ("tcp_csum_bad", 1),
    ],
    EventType.DROP: [("reason", 4), (None, 12), ("frame_len", 16)],
    EventType.CMD_DONE: [("opcode", 8), ("status", 8)],
    EventType.STATE: [
        ("valid", 1), ("sync_req", 1), ("buf_req", 1), (None, 5), ("n_buffers", 8),
        ("rcv_wnd", 16), ("rcv_nxt", 32), ("snd_nxt", 32), ("last_ack_sent", 32),
    ],
    EventType.BUF_REQ: [("bytes", 16)],
    EventType.RESYNC:  [("rcv_nxt", 32)],
}


def _offsets(fields, start):
    offset = start
    for name, width in fields:
        if name is not None:
            yield name, offset, width
        offset += width
    assert offset <= RECORD_BITS, "record body does not fit"


_HEADER_BITS = sum(width for _, width in HEADER_FIELDS)
_HEADER = {name: (offset, width) for name, offset, width in _offsets(HEADER_FIELDS, 0)}


class _Record:
    """A record: a code, a connection index and the fields its code defines.

    Records compare equal when all of their fields are equal, so that scoreboards can compare
    what the hardware sent with what the model expects directly.
    """

    _codes: type
    _fields: dict

    def __init__(self, code, index=NO_CONNECTION, *, dma_error=0, **fields):
        self.code = self._codes(code)
        self.index = index
        self.dma_error = dma_error
        layout = {name: width for name, _, width in _offsets(self._fields[self.code], 0)}
        unknown = set(fields) - set(layout)
        if unknown:
            raise TypeError(f"{self.code.name} has no field(s) {sorted(unknown)!r}")
        self.fields = {name: fields.get(name, 0) for name in layout}
        for name, width in layout.items():
            if not 0 <= self.fields[name] < 1 << width:
                raise ValueError(f"{self.code.name}.{name} must fit in {width} bits, "
                                 f"not {self.fields[name]!r}")

    def __getattr__(self, name):
        try:
            return self.__dict__["fields"][name]
        except KeyError:
            raise AttributeError(name) from None

    def _key(self):
        return (self.code, self.index, self.dma_error, tuple(sorted(self.fields.items())))

    def __eq__(self, other):
        return type(other) is type(self) and self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    def __repr__(self):
        fields = "".join(f", {name}={value:#x}" if value > 9 else f", {name}={value}"
                         for name, value in self.fields.items())
        index = "-" if self.index == NO_CONNECTION else self.index
        error = ", dma_error=1" if self.dma_error else ""
        return f"{type(self).__name__}.{self.code.name}(index={index}{error}{fields})"

    def pack(self):
        """The record as an integer, bit 0 first on the wire."""
        word = self.code | self.dma_error << _HEADER["dma_error"][0] | self.index << _HEADER["index"][0]
        for name, offset, _ in _offsets(self._fields[self.code], _HEADER_BITS):
            word |= self.fields[name] << offset
        return word

    def to_bytes(self):
        """The record as the bytes of its stream beat, byte 0 first."""
        return self.pack().to_bytes(RECORD_BYTES, "little")

    @classmethod
    def unpack(cls, word):
        """Decode an integer or the bytes of one beat.

        Raises
        ------
        ValueError
            If the code is not one of this record's codes.
        """
        if isinstance(word, (bytes, bytearray)):
            word = int.from_bytes(word, "little")
        code = word & 0xff
        if code not in cls._fields:
            raise ValueError(f"{cls.__name__} code must be one of {list(cls._codes)}, not {code!r}")
        def field(offset, width):
            return (word >> offset) & ((1 << width) - 1)
        fields = {name: field(offset, width)
                  for name, offset, width in _offsets(cls._fields[code], _HEADER_BITS)}
        return cls(code, field(*_HEADER["index"]), dma_error=field(*_HEADER["dma_error"]), **fields)


class Command(_Record):
    """A command record; ``code`` is an :class:`Opcode`."""
    _codes  = Opcode
    _fields = COMMAND_FIELDS

    @property
    def opcode(self):
        return self.code


class Event(_Record):
    """An event record; ``code`` is an :class:`EventType`."""
    _codes  = EventType
    _fields = EVENT_FIELDS

    @property
    def type(self):
        return self.code


def field_offsets(fields):
    """``(name, bit offset, width)`` of each body field, offsets counted from bit 0 of the record."""
    return list(_offsets(fields, _HEADER_BITS))
