"""Host memory as the golden model and the testbenches see it: a sparse 64-bit byte store."""


__all__ = ["HostMemory", "PAGE_BYTES", "ADDRESS_SPACE"]


#: Pages are the AXI 4 KiB boundary, so that a burst never spans two of them either.
PAGE_BYTES = 4096

#: Host addresses are 64-bit (R52 and the DMA section of ``docs/architecture.md``).
ADDRESS_SPACE = 1 << 64


class HostMemory:
    """Sparse byte-addressed memory covering the whole 64-bit address space.

    Only pages that have been written take room, so buffers may sit anywhere, including at the
    very top of the address space. Bytes never written read as zero.

    Members
    -------
    pages : dict of int to bytearray
        Written pages, keyed by page number (address // :data:`PAGE_BYTES`).
    """

    def __init__(self):
        self.pages = {}

    @staticmethod
    def _check_range(address, length):
        if not isinstance(address, int) or not 0 <= address < ADDRESS_SPACE:
            raise ValueError(f"Address must be an integer in the 64-bit address space, "
                             f"not {address!r}")
        if length < 0 or address + length > ADDRESS_SPACE:
            raise ValueError(f"Range of {length!r} bytes at {address:#x} leaves the 64-bit "
                             f"address space")

    def _chunks(self, address, length):
        """``(page number, offset in page, offset in range, size)`` pieces of a range."""
        done = 0
        while done < length:
            page, offset = divmod(address + done, PAGE_BYTES)
            size = min(PAGE_BYTES - offset, length - done)
            yield page, offset, done, size
            done += size

    def write(self, address, data):
        """Store ``data`` from ``address`` on.

        Raises
        ------
        ValueError
            If the range does not lie inside the 64-bit address space.
        """
        data = bytes(data)
        self._check_range(address, len(data))
        for page, offset, start, size in self._chunks(address, len(data)):
            store = self.pages.setdefault(page, bytearray(PAGE_BYTES))
            store[offset:offset + size] = data[start:start + size]

    def read(self, address, length):
        """``length`` bytes from ``address`` on; bytes never written are zero.

        Raises
        ------
        ValueError
            If the range does not lie inside the 64-bit address space.
        """
        self._check_range(address, length)
        result = bytearray(length)
        for page, offset, start, size in self._chunks(address, length):
            store = self.pages.get(page)
            if store is not None:
                result[start:start + size] = store[offset:offset + size]
        return bytes(result)

    def __eq__(self, other):
        """Equal when every byte reads the same; pages written with zeros equal unwritten ones."""
        if not isinstance(other, HostMemory):
            return NotImplemented
        for page in self.pages.keys() | other.pages.keys():
            mine = self.pages.get(page)
            theirs = other.pages.get(page)
            if (mine if mine is not None else bytes(PAGE_BYTES)) != \
                    (theirs if theirs is not None else bytes(PAGE_BYTES)):
                return False
        return True

    __hash__ = None

    def differences(self, other, limit=16):
        """Addresses (at most ``limit``, ascending) at which two memories differ, for reports."""
        found = []
        for page in sorted(self.pages.keys() | other.pages.keys()):
            mine = self.pages.get(page) or bytes(PAGE_BYTES)
            theirs = other.pages.get(page) or bytes(PAGE_BYTES)
            if mine == theirs:
                continue
            for offset in range(PAGE_BYTES):
                if mine[offset] != theirs[offset]:
                    found.append(page * PAGE_BYTES + offset)
                    if len(found) == limit:
                        return found
        return found
