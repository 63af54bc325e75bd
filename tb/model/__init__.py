"""Golden model of tcpdct: pure Python, no simulator or Amaranth imports."""

from .hostmem import HostMemory
from .frame import Parsed, parse
from .dct import Model, ConnKey, Entry, UserBuffer, LegacyBuffer, Grant, seq_add, seq_gt


__all__ = ["Model", "HostMemory", "ConnKey", "Entry", "UserBuffer", "LegacyBuffer", "Grant",
           "Parsed", "parse", "seq_add", "seq_gt"]
