"""The AXI4-Lite register map: one table read by the register block, the model, tests and docs.

All registers are 32 bits. Counters wrap. A 64-bit counter is two registers, ``_LO`` then
``_HI``; reading ``_LO`` latches ``_HI`` so that the pair is read consistently.

Counters count events as they leave on the event stream (so that a counter never runs ahead of
what the host has been told) and, for the transmit path, frames as they leave on ``m_axis_tx``.
"""

from dataclasses import dataclass

from .records import LegacyReason, DropReason


__all__ = ["Register", "REGISTERS", "ID_VALUE", "VERSION_VALUE", "by_name", "reset_value",
           "LEGACY_REASON_BASE", "DROP_REASON_BASE", "BUF_REQ_TIMEOUT_DEFAULT"]


ID_VALUE      = 0x54444354  # "TDCT"
VERSION_VALUE = 0x00000100  # 0.1.0


@dataclass(frozen=True)
class Register:
    name:   str
    offset: int
    access: str   # "ro" or "rw"
    doc:    str


#: Cycles a frame may wait for a user buffer: 0.64 ms at 156.25 MHz, far longer than a driver
#: needs to answer BUF_REQ, far shorter than a TCP retransmission timeout.
BUF_REQ_TIMEOUT_DEFAULT = 100_000

LEGACY_REASON_BASE = 0x180
DROP_REASON_BASE   = 0x1c0


def _build():
    regs = [
        Register("ID",                0x000, "ro", 'Constant 0x54444354, "TDCT".'),
        Register("VERSION",           0x004, "ro", "Register map version, 0x00MMmmpp."),
        Register("DATA_WIDTH",        0x008, "ro", "Build parameter data_width (bits)."),
        Register("N_ENTRIES",         0x00c, "ro", "Build parameter n_entries."),
        Register("BUFFERS_PER_CONN",  0x010, "ro", "Build parameter buffers_per_conn."),
        Register("LEGACY_RING_DEPTH", 0x014, "ro", "Build parameter legacy_ring_depth."),
        Register("RX_BUFFER_BYTES",   0x018, "ro", "Build parameter rx_buffer_bytes."),
        Register("MAX_FRAME_BYTES",   0x01c, "ro", "Build parameter max_frame_bytes."),
        Register("BUF_REQ_TIMEOUT",   0x040, "rw", "Cycles a frame may wait for a user buffer "
                 "after BUF_REQ before it goes to legacy (BUF_TIMEOUT). Reset: 100000."),
        Register("HWM_BYTES",         0x044, "rw", "High-water mark of the receive packet "
                 "buffer while a frame waits for a user buffer (HWM). Reset: 3/4 of "
                 "rx_buffer_bytes."),
        Register("RX_FRAMES",         0x100, "ro", "Received frames (RX_PLACED + LEGACY + DROP events)."),
        Register("RX_PLACED",         0x104, "ro", "RX_PLACED events."),
        Register("RX_LEGACY",         0x108, "ro", "LEGACY events."),
        Register("RX_DROPPED",        0x10c, "ro", "DROP events."),
        Register("BYTES_PLACED_LO",   0x110, "ro", "Payload bytes announced by RX_PLACED, low word."),
        Register("BYTES_PLACED_HI",   0x114, "ro", "High word, latched when _LO is read."),
        Register("BYTES_LEGACY_LO",   0x118, "ro", "Frame bytes announced by LEGACY, low word."),
        Register("BYTES_LEGACY_HI",   0x11c, "ro", "High word, latched when _LO is read."),
        Register("TX_FRAMES",         0x120, "ro", "Frames sent on m_axis_tx."),
        Register("RESYNCS",           0x124, "ro", "RESYNC events."),
        Register("CMD_ERRORS",        0x128, "ro", "CMD_DONE events with a status other than OK."),
        Register("DMA_ERRORS",        0x12c, "ro", "Events sent with dma_error set."),
        Register("BUF_DONES",         0x130, "ro", "BUF_DONE events."),
        Register("COMMANDS",          0x134, "ro", "CMD_DONE events."),
        Register("TX_MATCHED",        0x138, "ro", "Transmitted frames whose key hit the DCT."),
        Register("BUF_REQS",          0x13c, "ro", "BUF_REQ events."),
    ]
    regs += [Register(f"LEGACY_{reason.name}", LEGACY_REASON_BASE + 4 * reason, "ro",
                      f"LEGACY events with reason {reason.name}.") for reason in LegacyReason]
    regs += [Register(f"DROP_{reason.name}", DROP_REASON_BASE + 4 * reason, "ro",
                      f"DROP events with reason {reason.name}.") for reason in DropReason]
    return regs


REGISTERS = _build()


def reset_value(register, params):
    """The value of a read-write register after reset."""
    if register.name == "BUF_REQ_TIMEOUT":
        return BUF_REQ_TIMEOUT_DEFAULT
    if register.name == "HWM_BYTES":
        return params.rx_buffer_bytes * 3 // 4
    raise ValueError(f"{register.name!r} is not a read-write register")


def by_name(name):
    for reg in REGISTERS:
        if reg.name == name:
            return reg
    raise KeyError(f"No register named {name!r}")
