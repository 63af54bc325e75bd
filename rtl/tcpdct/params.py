"""Build parameters of the core, validated once and shared by the RTL, the model and the docs."""

from dataclasses import dataclass, asdict


__all__ = ["Params", "RX_DESCRIPTOR_DEPTH"]


#: Frames the receive parser keeps ready for the receive engine. While the engine holds a frame
#: for a user buffer (R17), at most this many complete frames wait behind it in the receive
#: packet buffer; later ones wait at the MAC. The model needs it to predict the high-water mark.
RX_DESCRIPTOR_DEPTH = 8


def _power_of_two(value):
    return value > 0 and value & (value - 1) == 0


@dataclass(frozen=True)
class Params:
    """Build parameters.

    Parameters
    ----------
    data_width : int
        Width in bits of every data path (receive, transmit and DMA). 64 to 512, a power of two.
    n_entries : int
        Number of Delegated Connection Table entries.
    buffers_per_conn : int
        Depth of each entry's queue of posted user buffers.
    legacy_ring_depth : int
        Number of legacy buffers the driver may have posted at once.
    rx_buffer_bytes : int
        Size of the receive packet buffer, which holds frames from the MAC until their checksums
        are known and their placement decided.
    max_frame_bytes : int
        Longest frame accepted; longer frames are dropped (reason ``OVERSIZE``).
    max_burst_beats : int
        Longest AXI4 write burst the DMA master issues.

    Raises
    ------
    ValueError
        If a parameter is out of range.
    """

    data_width: int = 64
    n_entries: int = 64
    buffers_per_conn: int = 4
    legacy_ring_depth: int = 16
    rx_buffer_bytes: int = 16384
    max_frame_bytes: int = 1522
    max_burst_beats: int = 64

    def __post_init__(self):
        if self.data_width not in (64, 128, 256, 512):
            raise ValueError(f"Data width must be 64, 128, 256 or 512, not {self.data_width!r}")
        if not 1 <= self.n_entries <= 4096:
            raise ValueError(f"Number of entries must be between 1 and 4096, not {self.n_entries!r}")
        if not 1 <= self.buffers_per_conn <= 8:
            raise ValueError(f"Buffers per connection must be between 1 and 8, "
                             f"not {self.buffers_per_conn!r}")
        if not (_power_of_two(self.legacy_ring_depth) and self.legacy_ring_depth <= 1024):
            raise ValueError(f"Legacy ring depth must be a power of two up to 1024, "
                             f"not {self.legacy_ring_depth!r}")
        if not 64 <= self.max_frame_bytes <= 16383:
            raise ValueError(f"Maximum frame size must be between 64 and 16383 bytes, "
                             f"not {self.max_frame_bytes!r}")
        if not (_power_of_two(self.rx_buffer_bytes)
                and self.rx_buffer_bytes >= 2 * (self.max_frame_bytes + self.data_bytes)):
            raise ValueError(f"Receive buffer must be a power of two holding two maximum-size "
                             f"frames, not {self.rx_buffer_bytes!r}")
        if not (_power_of_two(self.max_burst_beats) and 1 <= self.max_burst_beats <= 256):
            raise ValueError(f"Maximum burst must be a power of two up to 256 beats, "
                             f"not {self.max_burst_beats!r}")

    @property
    def data_bytes(self):
        return self.data_width // 8

    @property
    def index_bits(self):
        return max(1, (self.n_entries - 1).bit_length())

    def as_dict(self):
        return asdict(self)
