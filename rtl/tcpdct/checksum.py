"""Ones'-complement (RFC 1071) arithmetic shared by the receive and transmit parsers.

Checksums are accumulated as plain binary sums in an accumulator wide enough never to overflow,
and folded to 16 bits once at the end: a fold per word would put an end-around-carry adder in
every lane of a wide data path.
"""

from amaranth.hdl import Value, Cat


__all__ = ["ones_complement_fold", "network_order"]


def ones_complement_fold(value, max_value=None):
    """Fold a binary sum of 16-bit words into its 16-bit ones'-complement sum.

    Parameters
    ----------
    value : value-like
        The binary sum.
    max_value : int or None
        The largest value ``value`` can take; bounds the number of folds. By default, the
        largest value its width allows.

    Returns
    -------
    Value
        16 bits, equal to what ``tb/model/frame.py:ones_complement_sum`` returns for the same
        words (0 only if every word was 0).
    """
    value = Value.cast(value)
    if max_value is None:
        max_value = (1 << len(value)) - 1
    while max_value > 0xffff:
        value = value[:16] + value[16:]
        # The largest lo + hi over all v <= max_value: either at the largest hi with the lo it
        # allows, or one below it with lo = 0xffff.
        high = max_value >> 16
        max_value = max(high + (max_value & 0xffff), high - 1 + 0xffff)
    return value[:16]


def network_order(octets, offset, size):
    """Big-endian field of ``size`` bytes at byte ``offset`` of ``octets``, a value holding
    bytes in wire order with byte 0 in bits [7:0] (the stream convention)."""
    return Cat(*(octets[8 * (offset + i):8 * (offset + i + 1)] for i in reversed(range(size))))
