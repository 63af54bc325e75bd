"""Scan of the TCP options list: may a segment stay on the fast path, and its Timestamps values.

The rule (``tb/model/frame.py:_tcp_options``): walking from the first option, NOP advances one
byte, a well-formed 10-byte Timestamps option advances ten, EOL ends the list; anything else makes
the segment special. When Timestamps appears twice, the last one counts.

Why not a walker that steps one option per cycle: with a wide data path a short frame is one or
two beats, so a per-frame walk of up to 40 steps would cost input cycles on back-to-back frames.
Instead every byte position computes in parallel what an option starting there would be, and the
recurrence ``reach[j] = reach[j-1] & nop[j-1] | reach[j-10] & ts[j-10]`` marks where options
really start. Evaluated as written it is a chain 40 AND-OR levels deep, which was the core's
critical path; so it is pipelined, ten positions at a time. Ten is the most one stage can take:
``reach[j-10]`` then always comes from the stage before. Inside a stage the chain is flattened
into a sum of products over the stage's positions, a few LUT levels instead of ten. The first
ten positions are resolved with the per-position flags, the last ten combinationally after the
last register, so that the scan adds no more cycles to the parser than it must: every cycle of
the parser's pipeline is a frame more that the descriptor FIFO must keep a place for.
"""

from amaranth.hdl import Module, Const, Mux
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .checksum import network_order
from .logic import any_of, all_of
from .pipeline import register_stage
from .headers import (TCP_MAX_HEADER_BYTES, TCP_MIN_HEADER_BYTES, TCPOPT_EOL, TCPOPT_NOP,
                      TCPOPT_TIMESTAMP, TCPOPT_TIMESTAMP_LEN)


__all__ = ["TCP_MAX_OPTION_BYTES", "TcpOptionScan"]


TCP_MAX_OPTION_BYTES = TCP_MAX_HEADER_BYTES - TCP_MIN_HEADER_BYTES


class TcpOptionScan(wiring.Component):
    """Pipelined scan of up to 40 bytes of TCP options.

    A new options list may be presented every cycle; its results appear ``latency`` cycles
    later (the outputs are combinational from the last stage's registers). Nothing stalls.

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

    #: Positions resolved per stage.
    CHUNK = TCPOPT_TIMESTAMP_LEN
    #: Cycles from ``options`` and ``length`` to the results: one register per chunk of
    #: positions but the last.
    latency = -(-TCP_MAX_OPTION_BYTES // CHUNK) - 1

    def elaborate(self, platform):
        m = Module()
        n = TCP_MAX_OPTION_BYTES
        chunk = self.CHUNK

        # ---- flags: what an option starting at each position would be ----------------------
        kind = [self.options[8 * i:8 * (i + 1)] for i in range(n)]
        flags = {"options": self.options}
        for i in range(n):
            inside = self.length > i
            nop = inside & (kind[i] == TCPOPT_NOP)
            eol = inside & (kind[i] == TCPOPT_EOL)
            if i + TCPOPT_TIMESTAMP_LEN <= n:
                ts = ((kind[i] == TCPOPT_TIMESTAMP) & (kind[i + 1] == TCPOPT_TIMESTAMP_LEN)
                      & (self.length >= i + TCPOPT_TIMESTAMP_LEN))
            else:
                ts = Const(0)
            flags[f"nop{i}"] = nop
            flags[f"ts{i}"] = ts
            flags[f"other{i}"] = inside & ~nop & ~eol & ~ts

        def sources_of(stage, positions):
            # A source is where the walk may enter the positions: from the last position before
            # them over a NOP, or over a Timestamps option from ten back.
            source = {}
            for k in positions:
                if k == 0:
                    source[k] = Const(1)
                    continue
                entry = Const(0)
                if k == positions[0]:
                    entry = stage[f"reach{k - 1}"] & stage[f"nop{k - 1}"]
                if k >= TCPOPT_TIMESTAMP_LEN:
                    entry = entry | (stage[f"reach{k - TCPOPT_TIMESTAMP_LEN}"]
                                     & stage[f"ts{k - TCPOPT_TIMESTAMP_LEN}"])
                source[k] = entry
            return source

        def reach_of(stage, positions):
            source = sources_of(stage, positions)
            return {f"reach{j}": any_of(source[k] & all_of(stage[f"nop{p}"] for p in range(k, j))
                                      for k in positions if k <= j)
                    for j in positions}

        def bad_after(stage, positions):
            # Whether a walk entering the positions at k (over NOPs from there) reaches a bad
            # option among them: from the flags alone, so a stage ahead of the walk.
            return {f"bad_after{k}": any_of(stage[f"other{j}"]
                                            & all_of(stage[f"nop{p}"] for p in range(k, j))
                                            for j in positions if j >= k)
                    for k in positions}

        def fold_results(stage, positions):
            # The walk through the list is one path, and after a Timestamps option starting at
            # i it goes on at i + 10: among ten positions at most one starts a Timestamps option
            # that is reached, so an OR selects its values, and "the last one counts" only
            # concerns the positions folded before.
            starts = {i: stage[f"reach{i}"] & stage[f"ts{i}"] for i in positions
                      if i + TCPOPT_TIMESTAMP_LEN <= n}
            here = any_of(starts.values())
            tsval = any_of(Mux(s, network_order(stage["options"], i + 2, 4), 0)
                         for i, s in starts.items())
            tsecr = any_of(Mux(s, network_order(stage["options"], i + 6, 4), 0)
                         for i, s in starts.items())
            return {
                "bad": stage["bad"] | any_of(stage[f"reach{i}"] & stage[f"other{i}"]
                                           for i in positions),
                "ts_present": stage["ts_present"] | here,
                "tsval": Mux(here, tsval, stage["tsval"]),
                "tsecr": Mux(here, tsecr, stage["tsecr"]),
            }

        # ---- reach, ten positions per stage ------------------------------------------------
        # Each stage carries everything on (synthesis drops the registers nothing reads), with
        # the results so far: those of the positions whose reach the stage before resolved.
        # The last ten positions are resolved after the last register, where only whether
        # the walk reaches a bad option among them and a Timestamps option at their first
        # are needed: the first from where the walk enters them and ``bad_after``, worked out
        # a stage ahead, rather than from their reach (a chain through the ten positions, then
        # an OR over them, which was the 64x64 core's critical path into the descriptor FIFO).
        chunks = [range(base, min(base + chunk, n)) for base in range(0, n, chunk)]
        last = chunks[-1]
        stage = {**flags, "bad": Const(0), "ts_present": Const(0),
                 "tsval": Const(0, 32), "tsecr": Const(0, 32)}
        stage = register_stage(m, "flags", {**stage, **reach_of(stage, chunks[0])})
        stage = {**stage, **bad_after(stage, last)}
        for previous, positions in zip(chunks, chunks[1:-1]):
            stage = register_stage(m, f"reach{positions[0]}", {
                **stage, **fold_results(stage, previous), **reach_of(stage, positions)})
        stage = {**stage, **fold_results(stage, chunks[-2]), **reach_of(stage, last)}
        final = fold_results(stage, last)
        final["bad"] = stage["bad"] | any_of(entry & stage[f"bad_after{k}"]
                                             for k, entry in sources_of(stage, last).items())
        m.d.comb += [
            self.bad.eq(final["bad"]),
            self.ts_present.eq(final["ts_present"]),
            self.tsval.eq(final["tsval"]),
            self.tsecr.eq(final["tsecr"]),
        ]
        return m
