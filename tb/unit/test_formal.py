"""The quick formal proofs, and proof that each harness can fail.

``make formal`` runs every proof (``python -m formal.runner``); this file runs the ones marked
``quick`` so that ``make test`` keeps the formal checks alive, and for every harness a
deliberately broken variant of its block, built here by subclassing (never in the RTL), for which
the same harness must report a counterexample. A harness that passed a broken block would prove
nothing about the real one.
"""

from unittest import mock

import pytest
from amaranth.hdl import Cat, Module, Signal, Value

from tcpdct import rx_engine as rx_engine_rtl
from tcpdct.cmd_unit import CommandDecision
from tcpdct.dma_writer import DmaWriter
from tcpdct.event_queue import EventQueue
from tcpdct.match_cam import MatchCam
from tcpdct.rx_decision import FrameDecision
from tcpdct.rx_engine import RxEngine
from tcpdct.rx_parser import RxParser
from tcpdct.tx_path import TxPath


from formal import dma_writer, event_queue, rx_decision, rx_engine, rx_parser, tx_path
from formal.match_cam import MatchCamHarness
from formal.runner import Proof, all_proofs, run_proof, warm_up


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    path = tmp_path_factory.mktemp("formal")
    # The first YoWASP run on a machine compiles the tools; do it before anything is timed.
    warm_up(path)
    return path


def _check(proof, workdir, expected):
    result = run_proof(proof, workdir)
    log = result.log.read_text() if result.log.exists() else ""
    assert result.status == expected, \
        f"{proof.name}: {result.status} {result.detail}, expected {expected}\n{log[-3000:]}"
    return result


QUICK = [proof for proof in all_proofs() if proof.quick]


@pytest.mark.parametrize("proof", QUICK, ids=[proof.name for proof in QUICK])
def test_quick_proof_passes(proof, workdir):
    _check(proof, workdir, "PASS")


def test_rx_engine_sequencing_bounded(workdir):
    # make formal checks it deeper; one operation after another fits in 12 cycles.
    _check(Proof("rx_engine_short", rx_engine.RxEngineHarness, "bmc", 12), workdir, "PASS")


# -- Broken variants: each must give a counterexample -----------------------------------------

class CamIgnoringValid(MatchCam):
    """Compares keys of invalid entries too: an invalidated connection still hits."""

    def elaborate(self, platform):
        m = Module()
        keys = [Signal(self.key_bits, name=f"key_{entry}") for entry in range(self.n_entries)]
        valid = Signal(self.n_entries)
        m.d.comb += self.valid.eq(valid)
        with m.If(self.write_en):
            for entry in range(self.n_entries):
                with m.If(self.write_index == entry):
                    m.d.sync += [keys[entry].eq(self.lookup_key_0), valid[entry].eq(self.write_valid)]
        for port in range(self.n_lookup):
            lookup_key = Value.cast(getattr(self, f"lookup_key_{port}"))
            match = Cat(keys[entry] == lookup_key for entry in range(self.n_entries))
            index = Cat(Cat(0, *(match[entry] for entry in range(self.n_entries)
                                 if entry >> bit & 1)).any()
                        for bit in range(self.index_bits))
            m.d.sync += [getattr(self, f"lookup_hit_{port}").eq(match.any()),
                         getattr(self, f"lookup_index_{port}").eq(index)]
        return m


class QueueDroppingStalledEvent(EventQueue):
    """Withdraws its output event when the consumer stalls it."""

    def elaborate(self, platform):
        m = super().elaborate(platform)
        with m.If(~self.event.ready):
            m.d.sync += self.event.valid.eq(0)
        return m


class PathDroppingStalledBeat(TxPath):
    """Hides the head beat on every other cycle."""

    def elaborate(self, platform):
        m = super().elaborate(platform)
        blink = Signal()
        m.d.sync += blink.eq(~blink)
        with m.If(blink):
            m.d.comb += self.mac.valid.eq(0)
        return m


class ParserDroppingStalledDescriptor(RxParser):
    """Hides a stalled descriptor on every other cycle."""

    def elaborate(self, platform):
        m = super().elaborate(platform)
        blink = Signal()
        m.d.sync += blink.eq(~blink)
        with m.If(blink):
            m.d.comb += self.descriptor.valid.eq(0)
        return m


class WriterMovingStalledAddress(DmaWriter):
    """Loses a burst's address once it has been stalled for a cycle (presents address 0, as if
    it re-issued the burst elsewhere)."""

    def elaborate(self, platform):
        m = super().elaborate(platform)
        stalled = Signal()
        m.d.sync += stalled.eq(self.axi_awvalid & ~self.axi_awready)
        with m.If(stalled):
            m.d.comb += self.axi_awaddr.eq(0)
        return m


class EngineTakingCommandsWhileBusy(RxEngine):
    """Takes a command even while an operation runs: the command is lost (a lost update)."""

    def elaborate(self, platform):
        m = super().elaborate(platform)
        # Never together with another input, so that only "taken during an operation" can fail.
        m.d.comb += self.command.ready.eq(~self.descriptor.ready & ~self.tx_update.ready)
        return m


class EngineDroppingEveryUpdate(RxEngine):
    """Drops a transmit update in any cycle that takes nothing, whatever the CAM answered and
    even while a DELEGATE is in the front: an update of the key being delegated is lost."""

    def elaborate(self, platform):
        m = super().elaborate(platform)
        m.d.comb += self.tx_skip.eq(self.tx_update.valid & ~self.op_take)
        return m


class EngineWritingStateTwice(RxEngine):
    """Writes the state memory in every cycle of an emission, not once."""

    def elaborate(self, platform):
        m = super().elaborate(platform)
        with m.If(self.op_emit):
            m.d.comb += self.state_ram.write_ports[0].en.eq(1)
        return m


class PostingRoomNotAdded(CommandDecision):
    """Gives a posted buffer's own room as the room up to it, without the rooms ahead of it."""

    def elaborate(self, platform):
        m = super().elaborate(platform)
        for i in range(len(self.queue.slots)):
            with m.If(self.queue.count == i):
                m.d.comb += self.new_sums.through[i].eq(self.command.body.post_buffer.length)
        return m


class FrameLeavingRoomsAhead(FrameDecision):
    """Takes the payload off the rooms through the slots a frame leaves, even when a PSH
    completed the last slot it touched and the slots left start after it, untouched."""

    @staticmethod
    def _through_kept(fill, first, k):
        return fill.left[k]


class EngineWithWrongSums(RxEngine):
    """Keeps and forwards, beside each queue, sums that are not its rooms added up: every entry
    loaded is the one last written (property 6 holds), but a frame would decide from the wrong
    rooms."""

    def elaborate(self, platform):
        with mock.patch.object(rx_engine_rtl, "CommandDecision", PostingRoomNotAdded):
            return super().elaborate(platform)


class EngineNotForwarding(RxEngine):
    """Loads what the memories read even in the cycle the emitter writes the entry: an
    operation taken in the DECIDE of one on the same entry loads it as it was before."""

    @staticmethod
    def _as_read(forwarded, written, read):
        return read


class EngineNotForwardingEarlyReads(RxEngine):
    """Forwards only to an operation that read its entry in the emitter's first cycle: one
    that read it a cycle earlier, in the DECIDE of the operation before (straight to LOAD),
    loads it without that operation's write."""

    @staticmethod
    def _forwarded(after_write, read_ahead, writing):
        return after_write


# Each with the property that must catch it: failing for another reason would not show that the
# harness checks what it claims to.
BROKEN = [
    (Proof("broken_match_cam", lambda: MatchCamHarness(CamIgnoringValid), "bmc", 4),
     "hit on an entry not holding the key"),
    (Proof("broken_event_queue", lambda: event_queue.harness(QueueDroppingStalledEvent),
           "bmc", 6), "event: valid or payload changed while stalled"),
    (Proof("broken_tx_path", lambda: tx_path.harness(PathDroppingStalledBeat), "bmc", 6),
     "mac: valid or payload changed while stalled"),
    # Deep enough for a frame to cross the parser's seven stages and stall at the output.
    (Proof("broken_rx_parser", lambda: rx_parser.harness(ParserDroppingStalledDescriptor),
           "bmc", 12), "descriptor: valid or payload changed while stalled"),
    (Proof("broken_dma_writer", lambda: dma_writer.harness(WriterMovingStalledAddress),
           "bmc", 8), "aw: valid or payload changed while stalled"),
    (Proof("broken_rx_engine_busy",
           lambda: rx_engine.RxEngineHarness(EngineTakingCommandsWhileBusy), "bmc", 6),
     "input taken during an operation"),
    (Proof("broken_rx_engine_skip",
           lambda: rx_engine.RxEngineHarness(EngineDroppingEveryUpdate), "bmc", 8),
     "update dropped while the CAM is being written"),
    (Proof("broken_rx_engine_state",
           lambda: rx_engine.RxEngineHarness(EngineWritingStateTwice), "bmc", 8),
     "state memory written twice in one emission"),
    (Proof("broken_rx_engine_sums",
           lambda: rx_engine.RxEngineHarness(EngineWithWrongSums, entries=False, sums=True),
           "bmc", 10),
     "room sums loaded are not those of the queue loaded"),
    (Proof("broken_rx_decision_post",
           lambda: rx_decision.DecisionSumsHarness(command_class=PostingRoomNotAdded), "bmc", 1),
     "command: sums left are not those of the queue left"),
    (Proof("broken_rx_decision_psh",
           lambda: rx_decision.DecisionSumsHarness(frame_class=FrameLeavingRoomsAhead), "bmc", 1),
     "frame: sums left are not those of the queue left"),
    (Proof("broken_rx_engine_forwarding",
           lambda: rx_engine.RxEngineHarness(EngineNotForwarding), "bmc", 14),
     "loaded is not the entry as last written"),
    (Proof("broken_rx_engine_early_read",
           lambda: rx_engine.RxEngineHarness(EngineNotForwardingEarlyReads), "bmc", 14),
     "loaded is not the entry as last written"),
]


@pytest.mark.parametrize("proof, message", BROKEN, ids=[proof.name for proof, _ in BROKEN])
def test_broken_variant_fails(proof, message, workdir):
    result = _check(proof, workdir, "FAIL")
    assert message in result.detail, f"{proof.name} failed otherwise: {result.detail}"
    assert result.trace is not None and result.trace.exists(), \
        f"{proof.name}: no counterexample trace written"


def test_broken_match_cam_fails_induction_too(workdir):
    # The induction step alone must not hide a bug: the broken CAM also fails the `prove`
    # method in its base case, rather than coming back UNPROVEN.
    _check(Proof("broken_match_cam_prove", lambda: MatchCamHarness(CamIgnoringValid),
                 "prove", 2), workdir, "FAIL")
