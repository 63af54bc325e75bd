"""Match CAM: a hit names the one valid entry holding the key; a miss means none holds it (R1, R2).

The harness keeps what the CAM should hold, as its documentation defines it: each accepted key
write stores the key and sets the valid bit, an invalidation clears it, and a key write while
``write_busy`` is high is ignored. The properties are formulated for an arbitrary entry ``e``
(a free constant) rather than for every entry, so they stay two comparisons whatever
``n_entries`` is:

* if entry ``e`` was valid with the looked-up key, the lookup hits and returns ``e``;
* if the lookup hits and returns ``e``, entry ``e`` was valid with the looked-up key.

Since ``e`` is any entry, the first gives "a miss means no valid entry holds the key" and the
second "a hit returns a valid entry holding the key"; uniqueness is the assumption. R1 (no key
twice among valid entries; the command unit enforces it) is assumed of the stored state in every
cycle, which rules out exactly the write sequences that would break it. The CAM's ``valid``
must equal the harness's valid bits, and ``write_busy`` must fall within ``write_cycles``.

The CAM stores keys in tables that take many cycles to rewrite, so the proof is bounded: deep
enough for two whole key writes into one group of entries, with lookups all along. It is run on
a CAM with 8-bit keys in 2-bit nibbles (four tables of four words, an 11-cycle rewrite): with
96-bit keys and 4-bit nibbles the solver needed more than ten minutes for 17 cycles, a tenth of
the depth. Nothing but the number of tables and of their words depends on either width; the
unit tests (``tb/unit/test_match_cam.py``) check the full-width CAM against a model, near-miss
keys included.
"""

from amaranth.asserts import AnyConst
from amaranth.hdl import Array, Assert, Assume, Cover, Elaboratable, Mux, Signal, Value, unsigned

from tcpdct.match_cam import MatchCam, write_cycles

from .common import drive_inputs, elaborate, harness_module, past
from .runner import Proof


__all__ = ["MatchCamHarness", "proofs"]


N_ENTRIES = 4
N_LOOKUP = 2
KEY_BITS = 8
NIBBLE_BITS = 2
#: Two key writes, each followed by its table rewrite, then a lookup.
DEPTH = 2 * (write_cycles(NIBBLE_BITS) + 1) + 2


class MatchCamHarness(Elaboratable):
    """Properties of one :class:`MatchCam` (or of a variant with the same ports).

    Parameters
    ----------
    cam_class : type
        The CAM to check; a test passes a deliberately broken subclass.
    n_entries, n_lookup : int
        Its constructor arguments.
    """

    def __init__(self, cam_class=MatchCam, n_entries=N_ENTRIES, n_lookup=N_LOOKUP):
        self.cam_class = cam_class
        self.n_entries = n_entries
        self.n_lookup = n_lookup

    def elaborate(self, platform):
        m, started = harness_module()
        cam = self.cam_class(self.n_entries, self.n_lookup, key_shape=unsigned(KEY_BITS),
                             nibble=NIBBLE_BITS)
        m.submodules.cam = elaborate(cam)
        drive_inputs(m, cam)

        keys = [Signal(KEY_BITS, name=f"stored_key_{entry}")
                for entry in range(self.n_entries)]
        valid = Signal(self.n_entries, name="stored_valid")
        with m.If(cam.write_en & (cam.write_index < self.n_entries)):
            with m.If(~cam.write_valid):
                m.d.sync += valid.bit_select(cam.write_index, 1).eq(0)
            with m.Elif(~cam.write_busy):
                m.d.sync += [valid.bit_select(cam.write_index, 1).eq(1),
                             Array(keys)[cam.write_index].eq(Value.cast(cam.lookup_key_0))]
        m.d.comb += Assert(cam.valid == valid, "valid bits differ from the writes")

        busy_for = Signal(range(cam.write_cycles + 2))
        m.d.sync += busy_for.eq(Mux(cam.write_busy, busy_for + 1, 0))
        m.d.comb += Assert(busy_for <= cam.write_cycles, "write_busy high for too long")

        for i in range(self.n_entries):
            for j in range(i + 1, self.n_entries):
                m.d.comb += Assume(~(valid[i] & valid[j] & (keys[i] == keys[j])),
                                   f"R1: entries {i} and {j} hold the same key")

        entry = AnyConst(cam.index_bits)
        m.d.comb += Assume(entry < self.n_entries)
        entry_key = Array(keys)[entry]
        entry_valid = valid.bit_select(entry, 1)

        for port in range(self.n_lookup):
            lookup_key = Value.cast(getattr(cam, f"lookup_key_{port}"))
            hit = getattr(cam, f"lookup_hit_{port}")
            index = getattr(cam, f"lookup_index_{port}")
            holds_key = Signal(name=f"entry_holds_key_{port}")
            m.d.comb += holds_key.eq(entry_valid & (entry_key == lookup_key))
            held_key = past(m, holds_key, f"entry_holds_key_{port}")

            m.d.comb += [
                Assert(~started | ~held_key | (hit & (index == entry)),
                       f"port {port}: a valid entry holding the key was missed"),
                Assert(~started | ~(hit & (index == entry)) | held_key,
                       f"port {port}: hit on an entry not holding the key"),
                Cover(started & hit & (index == self.n_entries - 1)),
                # A key that was written and then invalidated must miss.
                Cover(started & ~hit & past(m, entry_key == lookup_key, f"key_equal_{port}")
                      & (entry == 0)),
            ]
        # A key written over another in the same entry, once its rewrite is done, hits.
        rewritten = Signal()
        with m.If(cam.write_en & cam.write_valid & ~cam.write_busy & (cam.write_index == 0)
                  & valid[0]):
            m.d.sync += rewritten.eq(1)
        m.d.comb += Cover(rewritten & ~cam.write_busy & cam.lookup_hit_0 & (entry == 0))
        return m


def proofs():
    return [
        Proof("match_cam", MatchCamHarness, "bmc", DEPTH, quick=True,
              description="hit returns the unique valid entry with the key; miss: none has it"),
        # One lookup port: with two, 8 entries took the solver more than ten minutes.
        Proof("match_cam_8", lambda: MatchCamHarness(n_entries=8, n_lookup=1), "bmc", DEPTH,
              description="the same with 8 entries (two groups of table words), one port",
              timeout=1800),
        Proof("match_cam_cover", MatchCamHarness, "cover", DEPTH, quick=True,
              description="a hit on the last entry, a miss on a stored invalid key, and a hit "
                          "on a key written over another happen"),
    ]
