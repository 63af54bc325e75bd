"""The whole core: ports from :mod:`.ports`, blocks as in ``docs/architecture.md``."""

from amaranth.hdl import Module, Const
from amaranth.lib import stream, wiring

from .fifo import SyncFIFOHeadRegistered
from .params import Params, RX_DESCRIPTOR_DEPTH
from .ports import top_ports, axi4_write_master, axil_slave
from .layouts import dma_job_layout
from .match_cam import MatchCam
from .rx_parser import RxParser
from .rx_packet_buffer import RxPacketBuffer
from .rx_engine import RxEngine
from .dma_writer import DmaWriter, jobs_held_max
from .event_queue import EventQueue
from .csr import Csr
from .tx_path import TxPath
from .tx_engine import TxEngine


__all__ = ["TcpDct"]


#: Jobs the receive engine may decide ahead of the DMA writer. Deciding is cheaper than moving a
#: frame, so a few jobs of slack let the engine absorb bursts of short frames.
JOB_QUEUE_DEPTH = 4
#: Jobs whose writes are all issued but whose responses are outstanding.
DMA_JOBS_IN_FLIGHT = 16
#: Events waiting for their jobs' writes.
EVENT_QUEUE_DEPTH = 32
#: Completions arrive without back-pressure. The engine may hand a job over before its first
#: event is queued, so every job the job queue and the DMA writer can hold may complete ahead of
#: its events: the completion FIFO is sized for all of them, and for the event queue's input
#: register.
EVENT_COMPLETION_DEPTH = EVENT_QUEUE_DEPTH + 1 + JOB_QUEUE_DEPTH + jobs_held_max(DMA_JOBS_IN_FLIGHT)


class TcpDct(wiring.Component):
    """TCP receive offload around a Delegated Connection Table.

    Parameters
    ----------
    params : :class:`tcpdct.params.Params`
        Build parameters; ``Params()`` if omitted.

    Ports are listed in ``docs/interfaces.md``; clock ``clk``, synchronous active-high ``rst``.
    """

    #: Submodules written as Verilog modules with ``keep_hierarchy`` (:func:`tcpdct.cli.write_verilog`).
    #: The match CAM's lookup key comes through the receive engine's choice of operation; with
    #: the hierarchy flattened, Yosys' ABC9 merges that multiplexer into every entry's compare,
    #: which tripled the CAM (about 400 LUT4 per entry instead of 66; 64x256 did not fit the
    #: LFE5U-85F) and put the multiplexer on the CAM's critical path
    #: (``docs/performance.md``, "The CAM kept whole").
    kept_hierarchy = ("match_cam",)

    def __init__(self, params=None):
        if params is None:
            params = Params()
        if not isinstance(params, Params):
            self._MustUse__silence = True  # never elaborated: no "unused" warning for it
            raise TypeError(f"Parameters must be a tcpdct.params.Params, not {params!r}")
        self.params = params
        super().__init__(top_ports(params))

    def _flat(self, prefix):
        return lambda name: getattr(self, f"{prefix}_{name}")

    def elaborate(self, platform):
        p = self.params
        m = Module()

        # One lookup port: the receive engine's sequencer looks keys up for frames, commands
        # and transmit updates alike.
        m.submodules.match_cam     = cam     = MatchCam(p.n_entries, n_lookup=1)
        m.submodules.rx_parser     = parser  = RxParser(p, descriptor_depth=RX_DESCRIPTOR_DEPTH)
        m.submodules.packet_buffer = pbuf    = RxPacketBuffer(p)
        m.submodules.rx_engine     = engine  = RxEngine(p)
        m.submodules.dma_writer    = dma     = DmaWriter(p, jobs_in_flight=DMA_JOBS_IN_FLIGHT)
        m.submodules.event_queue   = events  = EventQueue(
            p, depth=EVENT_QUEUE_DEPTH, completion_depth=EVENT_COMPLETION_DEPTH)
        m.submodules.csr           = csr     = Csr(p)
        m.submodules.tx_path       = tx      = TxPath(p)
        m.submodules.tx_engine     = tx_eng  = TxEngine(p)
        # A job reaches the DMA writer the cycle after the engine hands it over (Amaranth's
        # buffered FIFO would add a cycle to every frame's first write). The head is a register
        # all the same: the writer loads its job register from it under the handshake of its
        # last read, and with the LUT RAM's read there that path ran out to the RAM and back
        # (the 64x64 core's critical path). The flags are registers too: the engine's end of an
        # operation and the writer's take of a job start from them.
        m.submodules.job_queue     = jobs    = SyncFIFOHeadRegistered(
            width=dma_job_layout(p).size, depth=JOB_QUEUE_DEPTH)

        # Receive port.
        rx = self._flat("s_axis_rx")
        m.d.comb += [
            parser.rx.payload.data.eq(rx("tdata")),
            parser.rx.payload.keep.eq(rx("tkeep")),
            parser.rx.payload.last.eq(rx("tlast")),
            parser.rx.payload.user.eq(rx("tuser")),
            parser.rx.valid.eq(rx("tvalid")),
            rx("tready").eq(parser.rx.ready),
        ]
        self._connect_packet_buffer(m, parser, pbuf, dma)

        # Receive engine, with the match CAM's first lookup port.
        wiring.connect(m, parser.descriptor, engine.descriptor)
        m.d.comb += [engine.frame_key_ahead.eq(parser.key_ahead),
                     engine.frame_key_ahead_valid.eq(parser.key_ahead_valid),
                     engine.frame_key_next.eq(parser.key_next),
                     engine.frame_key_next_valid.eq(parser.key_next_valid)]
        engine.connect_match_cam(m, cam)

        cmd = self._flat("s_axis_cmd")
        m.d.comb += [
            engine.command.payload.eq(cmd("tdata")),
            engine.command.valid.eq(cmd("tvalid")),
            cmd("tready").eq(engine.command.ready),
        ]

        # Jobs to the DMA writer.
        m.d.comb += [
            jobs.w_data.eq(engine.job.payload),
            jobs.w_en.eq(engine.job.valid),
            engine.job.ready.eq(jobs.w_rdy),
            dma.job.payload.eq(jobs.r_data),
            dma.job.valid.eq(jobs.r_rdy),
            jobs.r_en.eq(dma.job.ready),
        ]
        self._connect_flat(m, axi4_write_master("", p.data_width), "m_axi", dma, "axi")

        # Events leave once the writes they announce are complete (R50).
        wiring.connect(m, engine.event, events.push)
        m.d.comb += [events.done_valid.eq(dma.done_valid), events.done_error.eq(dma.done_error)]
        evt = self._flat("m_axis_evt")
        m.d.comb += [
            evt("tdata").eq(events.event.payload),
            evt("tkeep").eq(Const(-1, len(evt("tkeep")))),
            evt("tlast").eq(1),
            evt("tvalid").eq(events.event.valid),
            events.event.ready.eq(evt("tready")),
        ]

        # Transmit path.
        host, mac = self._flat("s_axis_tx"), self._flat("m_axis_tx")
        m.d.comb += [
            tx.host.payload.data.eq(host("tdata")),
            tx.host.payload.keep.eq(host("tkeep")),
            tx.host.payload.last.eq(host("tlast")),
            tx.host.valid.eq(host("tvalid")),
            host("tready").eq(tx.host.ready),
            mac("tdata").eq(tx.mac.payload.data),
            mac("tkeep").eq(tx.mac.payload.keep),
            mac("tlast").eq(tx.mac.payload.last),
            mac("tvalid").eq(tx.mac.valid),
            tx.mac.ready.eq(mac("tready")),
        ]

        # The transmit engine watches what the host sends and updates the DCT through the
        # receive engine's sequencer.
        m.d.comb += [
            tx_eng.beat.eq(tx.host.payload),
            tx_eng.beat_valid.eq(tx.host.valid & tx.host.ready),
            tx.hold.eq(tx_eng.busy),
        ]
        wiring.connect(m, tx_eng.update, engine.tx_update)
        m.d.comb += [engine.tx_key_ahead.eq(tx_eng.key_ahead),
                     engine.tx_key_ahead_valid.eq(tx_eng.key_ahead_valid)]

        # Registers: settings of the receive engine, and counts of what leaves the core.
        m.d.comb += [
            csr.event.eq(events.event.payload),
            csr.event_fire.eq(events.event.valid & events.event.ready),
            csr.tx_frame.eq(tx.frame_sent),
            csr.tx_matched.eq(engine.tx_matched),
            engine.buf_req_timeout.eq(csr.buf_req_timeout),
            engine.high_water.eq(pbuf.used_beats * p.data_bytes >= csr.hwm_bytes),
        ]
        self._connect_flat(m, axil_slave(""), "s_axil", csr, "axil")
        return m

    def _connect_flat(self, m, members, prefix, block, block_prefix):
        """Wire a flat bus of a block to the top-level port of the same shape."""
        for name, member in members.items():
            port, inner = getattr(self, f"{prefix}{name}"), getattr(block, f"{block_prefix}{name}")
            if member.flow == wiring.In:
                m.d.comb += inner.eq(port)
            else:
                m.d.comb += port.eq(inner)

    @staticmethod
    def _connect_packet_buffer(m, parser, pbuf, dma):
        """The parser fills the packet buffer; the DMA writer reads and frees it."""
        wiring.connect(m, parser.buffer, pbuf.write)
        m.d.comb += [
            pbuf.read_addr.eq(dma.read_addr),
            dma.read_data.eq(pbuf.read_data),
            pbuf.free_valid.eq(dma.free_valid),
            pbuf.free_beats.eq(dma.free_beats),
        ]
