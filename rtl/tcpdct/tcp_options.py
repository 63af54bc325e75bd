"""Scan of the TCP options list: may a segment stay on the fast path, and its Timestamps values.

The rule (``tb/model/frame.py:_tcp_options``): walking from the first option, NOP advances one
byte, a well-formed 10-byte Timestamps option advances ten, EOL ends the list; anything else makes
the segment special. When Timestamps appears twice, the last one counts.

Why not a walker that steps one option per cycle: with a wide data path a short frame is one or
two beats, so a per-frame walk of up to 40 steps would cost input cycles on back-to-back frames.
Instead every byte position computes in parallel what an option starting there would be, and a
single chain ``reach[j] = reach[j-1] & nop[j-1] | reach[j-10] & ts[j-10]`` marks where options
really start. The chain is 40 two-input AND-OR levels deep; a pipeline register can be placed
inside it if timing needs one, without changing the result.
"""

from amaranth.hdl import Module, Signal, Const, Mux
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .checksum import network_order
from .headers import (TCP_MAX_HEADER_BYTES, TCP_MIN_HEADER_BYTES, TCPOPT_EOL, TCPOPT_NOP,
                      TCPOPT_TIMESTAMP, TCPOPT_TIMESTAMP_LEN)


__all__ = ["TCP_MAX_OPTION_BYTES", "TcpOptionScan"]


TCP_MAX_OPTION_BYTES = TCP_MAX_HEADER_BYTES - TCP_MIN_HEADER_BYTES


class TcpOptionScan(wiring.Component):
    """Combinational scan of up to 40 bytes of TCP options.

    Members
    -------
    options : In(320)
        The option bytes in wire order, byte 0 in bits [7:0]. Bytes at or beyond ``length`` are
        ignored.
    length : In(range(41))
        Bytes of options: ``data_offset * 4 - 20``.
    bad : Out(1)
        An option other than NOP, EOL and well-formed Timestamps was reached.
    ts_present : Out(1)
        A well-formed Timestamps option was reached (before any bad option).
    tsval, tsecr : Out(32)
        The values of the last Timestamps option reached; 0 if none.
    """

    options:    In(8 * TCP_MAX_OPTION_BYTES)
    length:     In(range(TCP_MAX_OPTION_BYTES + 1))
    bad:        Out(1)
    ts_present: Out(1)
    tsval:      Out(32)
    tsecr:      Out(32)

    def elaborate(self, platform):
        m = Module()
        n = TCP_MAX_OPTION_BYTES
        kind = [self.options[8 * i:8 * (i + 1)] for i in range(n)]

        nop, eol, ts = [], [], []
        for i in range(n):
            inside = self.length > i
            nop.append(inside & (kind[i] == TCPOPT_NOP))
            eol.append(inside & (kind[i] == TCPOPT_EOL))
            if i + TCPOPT_TIMESTAMP_LEN <= n:
                ts.append((kind[i] == TCPOPT_TIMESTAMP) & (kind[i + 1] == TCPOPT_TIMESTAMP_LEN)
                          & (self.length >= i + TCPOPT_TIMESTAMP_LEN))
            else:
                ts.append(Const(0))

        # Signals, not shared expressions: the simulator would inline a shared expression tree
        # at every use and the chain would grow exponentially.
        reach = [Signal(name=f"reach{j}") for j in range(n)]
        m.d.comb += reach[0].eq(1)
        for j in range(1, n):
            step = reach[j - 1] & nop[j - 1]
            if j >= TCPOPT_TIMESTAMP_LEN:
                step |= reach[j - TCPOPT_TIMESTAMP_LEN] & ts[j - TCPOPT_TIMESTAMP_LEN]
            m.d.comb += reach[j].eq(step)

        bad = Const(0)
        ts_present = Const(0)
        tsval, tsecr = Const(0, 32), Const(0, 32)
        for i in range(n):
            starts_ts = reach[i] & ts[i]
            bad = bad | (reach[i] & (self.length > i) & ~nop[i] & ~eol[i] & ~ts[i])
            ts_present = ts_present | starts_ts
            if i + TCPOPT_TIMESTAMP_LEN <= n:
                tsval = Mux(starts_ts, network_order(self.options, i + 2, 4), tsval)
                tsecr = Mux(starts_ts, network_order(self.options, i + 6, 4), tsecr)
        m.d.comb += [
            self.bad.eq(bad),
            self.ts_present.eq(ts_present),
            self.tsval.eq(tsval),
            self.tsecr.eq(tsecr),
        ]
        return m
