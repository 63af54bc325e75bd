"""Amaranth layouts of the records and of the internal interfaces between blocks.

Command and event layouts are derived from the tables in :mod:`tcpdct.records`, so the RTL, the
codec and the docs cannot disagree about a bit.
"""

from amaranth.hdl import unsigned
from amaranth.lib import data, enum

from . import records


__all__ = [
    "ConnKey", "command_layout", "event_layout", "FrameClass", "rx_descriptor_layout",
    "segment_layout", "JobKind", "dma_job_layout", "queued_event_layout", "tx_update_layout",
]


def _body_layout(fields):
    members = {}
    for number, (name, width) in enumerate(fields):
        members[name if name is not None else f"_reserved{number}"] = unsigned(width)
    return data.StructLayout(members)


def _record_layout(table):
    header = _body_layout(records.HEADER_FIELDS)
    body = data.UnionLayout({code.name.lower(): _body_layout(fields)
                             for code, fields in table.items() if fields})
    layout = data.StructLayout({**header.members, "body": body})
    pad = records.RECORD_BITS - layout.size
    assert pad >= 0
    return data.StructLayout({**layout.members, "_pad": unsigned(pad)})


#: A command record (``records.COMMAND_FIELDS``); ``cmd.body.post_buffer.address`` etc.
command_layout = _record_layout(records.COMMAND_FIELDS)

#: An event record (``records.EVENT_FIELDS``); ``evt.body.rx_placed.seq`` etc.
event_layout = _record_layout(records.EVENT_FIELDS)


class ConnKey(data.Struct):
    """The 96-bit key of the match portion, from the local host's point of view (R2)."""
    local_ip:    32
    remote_ip:   32
    local_port:  16
    remote_port: 16


class FrameClass(enum.Enum, shape=3):
    """What the receive parser concluded about a frame before any DCT lookup (R10, R11)."""
    TCP       = 0  # well-formed IPv4/TCP with good checksums: look it up
    NOT_TCP   = 1  # legacy, reason NOT_TCP
    CHECKSUM  = 2  # legacy, reason CHECKSUM
    MAC_ERROR = 3  # drop
    TRUNCATED = 4  # drop
    OVERSIZE  = 5  # drop


def rx_descriptor_layout(params):
    """One received frame as the parser hands it to the receive engine.

    The frame's bytes wait in the receive packet buffer, starting at beat ``buf_start``.
    """
    return data.StructLayout({
        "cls":            FrameClass,
        "frame_len":      16,      # bytes received, saturating
        "buf_start":      _buffer_addr_bits(params),
        "stored_beats":   _frame_beats_bits(params),  # beats kept in the packet buffer
        "ip_csum_bad":    1,
        "tcp_csum_bad":   1,
        "key":            ConnKey,
        "seq":            32,
        "ack":            32,
        "window":         16,
        "flags":          8,
        "special":        1,       # fragment, IPv4 options or a TCP option other than NOP/EOL/TS
        "payload_offset": 8,       # bytes from the start of the frame
        "payload_len":    16,
        "ts_present":     1,
        "tsval":          32,
        "tsecr":          32,
    })


def _buffer_addr_bits(params):
    return (params.rx_buffer_bytes // params.data_bytes - 1).bit_length()


def _frame_beats_bits(params):
    return (-(-params.max_frame_bytes // params.data_bytes)).bit_length()


def packet_buffer_depth(params):
    """Beats in the receive packet buffer."""
    return params.rx_buffer_bytes // params.data_bytes


#: One contiguous piece of a DMA job: ``length`` bytes to host address ``address``.
segment_layout = data.StructLayout({"address": 64, "length": 16})


class JobKind(enum.Enum, shape=2):
    FENCE   = 0  # no frame: orders a command's events behind earlier writes
    WRITE   = 1  # write bytes of a stored frame to the segments, then free the frame
    DISCARD = 2  # free a stored frame without writing it


def dma_job_layout(params):
    """What the receive engine asks of the DMA writer for one frame or command.

    A WRITE job copies frame bytes ``src_offset`` onwards, in order, into ``segments[0]``,
    ``segments[1]`` ... ``segments[n_segments - 1]``.
    """
    return data.StructLayout({
        "kind":        JobKind,
        "buf_start":   _buffer_addr_bits(params),
        "frame_beats": _frame_beats_bits(params),
        "src_offset":  16,
        "n_segments":  (params.buffers_per_conn).bit_length(),
        "segments":    data.ArrayLayout(segment_layout, params.buffers_per_conn),
    })


#: An event waiting for the writes before it. ``first`` marks the first event of a job: it may
#: leave only once the DMA writer has reported that job complete (R50).
queued_event_layout = data.StructLayout({"first": 1, "event": event_layout})


#: What the transmit engine reports of a TCP frame the host stack sent (R31–R33), for the
#: receive engine's sequencer to apply to the entry with ``key``.
tx_update_layout = data.StructLayout({
    "key":         ConnKey,
    "seq":         32,
    "ack":         32,
    "window":      16,
    "flags":       8,
    "payload_len": 16,
})
