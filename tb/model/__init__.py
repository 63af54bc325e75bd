"""Golden model of tcpdct: pure Python, no simulator or Amaranth imports."""

from .hostmem import HostMemory
from .frame import Parsed, parse, TxUpdate, parse_tx
from .dct import (Model, ConnKey, Entry, UserBuffer, LegacyBuffer, Grant, HeldFrame,
                  seq_add, seq_gt)


__all__ = ["Model", "HostMemory", "ConnKey", "Entry", "UserBuffer", "LegacyBuffer", "Grant",
           "HeldFrame", "Parsed", "parse", "TxUpdate", "parse_tx", "seq_add", "seq_gt"]
