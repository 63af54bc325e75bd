"""Match CAM: a hit names the one valid entry holding the key; a miss means none holds it (R1, R2).

Formulated for an arbitrary entry ``e`` (a free constant) instead of against a reference model
of every entry, so the properties stay two comparisons whatever ``n_entries`` is:

* if entry ``e`` was valid with the looked-up key, the lookup hits and returns ``e``;
* if the lookup hits and returns ``e``, entry ``e`` was valid with the looked-up key.

Since ``e`` is any entry, the first gives "a miss means no valid entry holds the key" and the
second "a hit returns a valid entry holding the key"; uniqueness is the assumption. R1 (no key
twice among valid entries; the command unit enforces it) is assumed of the stored state in every
cycle, which rules out exactly the write sequences that would break it.

The stored keys are not on any port, so the harness reads them by name (``key_<k>``) from the
elaborated CAM (:func:`.common.signals_named`).
"""

from amaranth.asserts import AnyConst
from amaranth.hdl import Array, Assert, Assume, Cover, Elaboratable, Signal

from tcpdct.match_cam import MatchCam

from .common import drive_inputs, elaborate, harness_module, past, signals_named
from .runner import Proof


__all__ = ["MatchCamHarness", "proofs"]


N_ENTRIES = 4
N_LOOKUP = 2


class MatchCamHarness(Elaboratable):
    """Properties of one :class:`MatchCam` (or of a variant with the same ports and key names).

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
        cam = self.cam_class(self.n_entries, self.n_lookup)
        fragment = elaborate(cam)
        m.submodules.cam = fragment
        drive_inputs(m, cam)

        stored = signals_named(fragment, r"key_\d+")
        if len(stored) != self.n_entries:
            raise RuntimeError(f"Expected {self.n_entries} stored keys named key_<k> in "
                               f"{self.cam_class.__name__}, found {sorted(stored)!r}")
        keys = [stored[f"key_{entry}"] for entry in range(self.n_entries)]
        valid = cam.valid

        for i in range(self.n_entries):
            for j in range(i + 1, self.n_entries):
                m.d.comb += Assume(~(valid[i] & valid[j] & (keys[i] == keys[j])),
                                   f"R1: entries {i} and {j} hold the same key")

        entry = AnyConst(cam.index_bits)
        m.d.comb += Assume(entry < self.n_entries)
        entry_key = Array(keys)[entry]
        entry_valid = valid.bit_select(entry, 1)

        for port in range(self.n_lookup):
            lookup_key = getattr(cam, f"lookup_key_{port}").as_value()
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
        return m


def proofs():
    return [
        Proof("match_cam", MatchCamHarness, "prove", 2, quick=True,
              description="hit returns the unique valid entry with the key; miss: none has it"),
        # 16 entries take the solver more than ten minutes (120 pairs of 96-bit keys in R1).
        Proof("match_cam_8", lambda: MatchCamHarness(n_entries=8), "prove", 2,
              description="the same with 8 entries"),
        Proof("match_cam_cover", MatchCamHarness, "cover", 6, quick=True,
              description="a hit on the last entry and a miss on a stored invalid key happen"),
    ]
