"""DMA writer AXI channels: AW and W hold valid and every payload bit from a stall until ready;
and the W queue never refuses a beat.

AXI4 requires the first of a master (IHI 0022, A3.2.1): once ``awvalid``/``wvalid`` is high it
stays high until the handshake, and the address or data with it does not change. Jobs arrive
under the stream rules (assumed), the slave's ``awready``/``wready``, the B channel and the
packet-buffer data are free.

The second is what lets the writer's data stages run without stalls: each beat issued has a
place reserved in the W queue, so the count of places reserved is the queue's level plus the
beats in the data stage and the realigner, and is never more than the queue holds. A beat
written to a full queue would be lost without a trace; here it is proved that none is. The same
facts, with the queue's own (its level agrees with its pointers and flags), make the W channel's
rule inductive: its data is read from the queue's RAM at its read pointer.

The job slots' bookkeeping is asserted too: a job is held for later, or taken into the slot
beside the job register, only while the register holds a job. A free register with a job in the
other slot would load the queue's head over it, and that job would be lost.
"""

from amaranth.hdl import Assert

from tcpdct.dma_writer import DmaWriter
from tcpdct.params import Params

from .common import AxiChannel, StreamRulesHarness, signals_named
from .runner import Proof


__all__ = ["harness", "proofs"]


AW_PAYLOAD = ("addr", "len", "size", "burst", "id", "lock", "cache", "prot")
W_PAYLOAD = ("data", "strb", "last")


def _registers(fragment, names):
    found = signals_named(fragment, "|".join(names), domain="sync")
    if sorted(found) != sorted(names):
        raise RuntimeError(f"Expected registers {sorted(names)!r}, found {sorted(found)!r}")
    return found


def w_queue_invariants(m, fragment):
    """Assert the W queue's bookkeeping, in the writer's elaborated ``fragment``."""
    writer = _registers(fragment, ["d_beat", "e_beat", "w_reserved", "w_room"])
    queue_fragment = fragment.find_subfragment("w_queue")
    flags = _registers(queue_fragment, ["full", "empty"])
    fifo = _registers(queue_fragment.find_subfragment("fifo"), ["level", "produce", "consume"])
    depth = 1 << len(fifo["produce"])   # the queue's depth is a power of two
    level = fifo["level"]
    # ``valid`` and ``prime`` are the first two fields of a beat (``beat_layout``).
    d_valid = writer["d_beat"][0]
    e_valid, e_prime = writer["e_beat"][0], writer["e_beat"][1]
    reserved = writer["w_reserved"]
    m.d.comb += [
        Assert(level <= depth, "W queue: level beyond its depth"),
        Assert(((fifo["produce"] - fifo["consume"]) % depth) == level % depth,
               "W queue: level disagrees with its pointers"),
        Assert(flags["empty"] == (level == 0), "W queue: empty flag"),
        Assert(flags["full"] == (level == depth), "W queue: full flag"),
        Assert(reserved == level + d_valid + e_valid,
               "W queue: places reserved are not the beats in the queue and on their way"),
        Assert(reserved <= depth, "W queue: more places reserved than it has"),
        Assert(writer["w_room"] == (reserved < depth), "W queue: room flag"),
        Assert(~(e_valid & ~e_prime) | ~flags["full"], "W queue: a beat written while full"),
    ]


def job_slot_invariants(m, fragment):
    """Assert the job slots' bookkeeping, in the writer's elaborated ``fragment``."""
    writer = _registers(fragment, ["job_locked", "job_held", "pre_full"])
    m.d.comb += [
        Assert(~writer["job_held"] | writer["job_locked"],
               "Job slots: a job held for later in a free register"),
        Assert(~writer["pre_full"] | writer["job_locked"],
               "Job slots: a job in the other slot beside a free register"),
    ]


def address_phase_invariants(m, fragment):
    """Assert the AW generator's bookkeeping: ``aw_busy`` is ``aw_valid | aw_skip``, and the
    generator never offers a burst while it is still to step over a shared beat."""
    writer = _registers(fragment, ["aw_valid", "aw_skip", "aw_busy"])
    m.d.comb += [
        Assert(writer["aw_busy"] == (writer["aw_valid"] | writer["aw_skip"]),
               "AW generator: busy flag"),
        Assert(~(writer["aw_valid"] & writer["aw_skip"]),
               "AW generator: a burst offered before the shared beat is stepped over"),
    ]


def writer_invariants(m, fragment):
    w_queue_invariants(m, fragment)
    job_slot_invariants(m, fragment)
    address_phase_invariants(m, fragment)


def harness(writer_class=DmaWriter):
    """The AW/W harness, for :class:`DmaWriter` or a variant of it."""
    return StreamRulesHarness(
        lambda: writer_class(Params(), jobs_in_flight=2),
        outputs=lambda writer: {"aw": AxiChannel(writer, "axi_aw", AW_PAYLOAD),
                                "w":  AxiChannel(writer, "axi_w", W_PAYLOAD)},
        invariants=writer_invariants)


def proofs():
    return [
        Proof("dma_writer_axi", harness, "prove", 4, quick=True,
              description="AXI AW and W: valid and payload hold while stalled; the W queue never "
                          "refuses a beat; no job is lost between the job slots; the address "
                          "generator's busy flag"),
        Proof("dma_writer_cover", harness, "cover", 12,
              description="AW and W each stall and then move on"),
    ]
