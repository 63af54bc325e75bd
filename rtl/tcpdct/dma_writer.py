"""AXI4 write DMA master: copies stored frame bytes into host segments (R50-R52).

The writer takes jobs from the receive engine in decision order. For a ``WRITE`` job it reads the
frame from the receive packet buffer, realigns it to each segment's host address and writes it
with AXI4 INCR bursts; every job, whatever its kind, is reported done in order once all of its
write responses are back.

Why this shape:

* Realignment uses the previous source beat and a byte rotate by
  ``(src_offset - address) mod W/8``; output beat *n* of a segment is the rotate of source beats
  *q+n* and *q+n+1*, so one extra "priming" read per segment is all the alignment costs and a long
  segment streams one W beat per cycle.
* Bursts end on every ``min(4 KiB, max_burst_beats * W/8)``-aligned boundary. Both AW and W derive
  the burst ends from the host address alone, so no burst-length FIFO is needed between them,
  every burst is at most ``max_burst_beats`` long and none crosses 4 KiB.
* The packet-buffer read port has no enable: a stalled beat keeps its data by presenting its own
  address again until the beat moves on (so ``read_addr`` depends on ``axi_wready`` through
  logic, never the other way round). The data read is registered before it is realigned, a
  cycle that delays W (not AW, so not a frame's first write) and the write responses. Alignment may read the beat just before a frame and the beat
  just after its last needed byte; those bytes are never strobed.
* A frame is freed when its last beat has been read, in job order: a ``DISCARD`` (which reads
  nothing) waits for the previous job's last read, because freeing tells the parser it may
  overwrite everything up to the end of that frame.
* Write responses (single ID, so in order) are matched against a FIFO of per-job burst counts, so
  a job's writes never wait for earlier jobs' responses. ``bready`` drops for the cycle in which a
  job is retired (and for each job without bursts), so a response of a later job is never counted
  for the job being retired.
"""

from amaranth.hdl import C, Cat, Module, Mux, Shape, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from . import layouts, ports
from .layouts import JobKind


__all__ = ["DmaWriter"]


_AXI_BURST_INCR = 0b01
_AXI_CACHE_BUFFERABLE_MODIFIABLE = 0b0011


class DmaWriter(wiring.Component):
    """AXI4 write master executing DMA jobs in order.

    Parameters
    ----------
    params : :class:`tcpdct.params.Params`
        Build parameters (data width, packet buffer size, segments per job, burst length).
    jobs_in_flight : int
        Jobs whose bursts are all issued but whose write responses are not all back, beyond which
        the writer stops taking jobs. A power of two is not required.

    Members
    -------
    job : In(stream.Signature(layouts.dma_job_layout(params)))
        Jobs in decision order. ``WRITE`` copies frame bytes ``src_offset`` onwards into
        ``segments[0 .. n_segments-1]`` (any address alignment, any length; length 0 is skipped)
        then frees ``frame_beats``; ``DISCARD`` only frees; ``FENCE`` has no frame. The segment
        lengths must not add up to more than the frame holds after ``src_offset``.
    read_addr : Out(addr_bits)
        Packet-buffer address, ``(buf_start + k) mod depth`` for beat k of the frame.
    read_data : In(data_width)
        Packet-buffer data of the address presented on the previous cycle.
    free_valid : Out(1)
        Pulses once per ``WRITE``/``DISCARD`` job, in job order, after the last read of its frame.
    free_beats : Out(frame_beats bits)
        The freed job's ``frame_beats``, valid with ``free_valid``.
    axi_aw*, axi_w*, axi_b* :
        The AXI4 write channels, exactly ``ports.axi4_write_master("axi", data_width)``.
    done_valid : Out(1)
        Pulses once per job, in job order, when every write response of the job is back (a job
        without writes: once every earlier job is done). No back-pressure.
    done_error : Out(1)
        With ``done_valid``: some write response of the job was not OKAY.
    """

    def __init__(self, params, *, jobs_in_flight=16):
        if not isinstance(jobs_in_flight, int) or jobs_in_flight < 1:
            raise ValueError(f"Jobs in flight must be a positive integer, not {jobs_in_flight!r}")
        self._params = params
        self._jobs_in_flight = jobs_in_flight
        self._depth = layouts.packet_buffer_depth(params)
        self._addr_bits = (self._depth - 1).bit_length()
        job_layout = layouts.dma_job_layout(params)
        self._frame_beats_bits = Shape.cast(job_layout["frame_beats"].shape).width
        super().__init__({
            "job":        In(stream.Signature(job_layout)),
            "read_addr":  Out(self._addr_bits),
            "read_data":  In(params.data_width),
            "free_valid": Out(1),
            "free_beats": Out(self._frame_beats_bits),
            **ports.axi4_write_master("axi", params.data_width),
            "done_valid": Out(1),
            "done_error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()

        params      = self._params
        data_bytes  = params.data_bytes
        lane_bits   = (data_bytes - 1).bit_length()
        # Burst ends are aligned so that a burst is never longer than max_burst_beats and never
        # crosses 4 KiB; both limits are powers of two, so one aligned span satisfies both.
        burst_span  = min(4096 // data_bytes, params.max_burst_beats)
        phase_bits  = (burst_span - 1).bit_length()
        beat_bits   = 64 - lane_bits
        # A segment of 65535 bytes at the worst alignment spans this many beats, plus the priming
        # read; a job spans at most that per segment.
        seg_beats_max = (data_bytes - 1 + 0xFFFF) // data_bytes + 1
        job_bursts_max = params.buffers_per_conn * seg_beats_max

        job = Signal(layouts.dma_job_layout(params))

        # -- Sequencer: one job at a time, one segment at a time ------------------------------

        # The job register's segments are a shift register: ``job.segments[0]`` is always the
        # segment to set up next, and each segment set up (or skipped) shifts the rest down, so
        # that no multiplexer by segment number sits between the job register and the
        # segment's arithmetic. ``seg_data`` has bit k set while segment k (after the shifts)
        # is one of the job's and has bytes to write.
        n_segments  = params.buffers_per_conn
        seg_data    = Signal(n_segments)
        src_offset  = Signal(16)   # frame byte that goes to the current segment's first byte
        # Set while the job's frame is still to be freed by the sequencer itself, rather than by
        # the data stage after the job's last read (a DISCARD, or a WRITE with nothing to write).
        free_pending = Signal()

        def next_segment():
            m.d.sync += seg_data.eq(seg_data >> 1)
            for i in range(n_segments - 1):
                m.d.sync += job.segments[i].eq(job.segments[i + 1])

        segment     = job.segments[0]
        seg_lane0   = segment.address[:lane_bits]
        seg_lane_end = Signal(17)
        m.d.comb += seg_lane_end.eq(seg_lane0 + segment.length - 1)
        # Beats of the segment, and reads with the priming one: ``(lane_end >> lane_bits) + 1``
        # and ``+ 2``, each as one adder whose small operand takes the constant (a length of at
        # least 1 makes the two forms equal).
        seg_beats   = Signal(range(seg_beats_max + 1))
        seg_reads   = Signal(range(seg_beats_max + 2))
        m.d.comb += [
            seg_beats.eq((segment.length + (seg_lane0 + (data_bytes - 1))) >> lane_bits),
            seg_reads.eq((segment.length + (seg_lane0 + (2 * data_bytes - 1))) >> lane_bits),
        ]
        seg_shift   = Signal(lane_bits)
        m.d.comb += seg_shift.eq(src_offset[:lane_bits] - seg_lane0)
        # The first read is of source beat q, the one holding the bytes rotated into the low
        # lanes of output beat 0: the beat of ``src_offset``, or the one before it (whose bytes
        # are then never strobed) when the segment starts at a higher lane than the source.
        # Both candidates come from registers alone, so the segment's lane only chooses.
        read_base = Signal(self._addr_bits)
        read_before = Signal(self._addr_bits)
        m.d.comb += [
            read_base.eq(job.buf_start + (src_offset >> lane_bits)),
            read_before.eq(job.buf_start + (src_offset >> lane_bits) - 1),
        ]
        seg_read_start = Signal(self._addr_bits)
        m.d.comb += seg_read_start.eq(Mux(src_offset[:lane_bits] < seg_lane0,
                                          read_before, read_base))
        seg_first_strb = Signal(data_bytes)
        m.d.comb += seg_first_strb.eq(C((1 << data_bytes) - 1, data_bytes) << seg_lane0)
        seg_last_strb = Signal(data_bytes)
        m.d.comb += seg_last_strb.eq((C(2, data_bytes + 1) << seg_lane_end[:lane_bits]) - 1)

        # -- AW generator state ---------------------------------------------------------------

        aw_beat      = Signal(beat_bits)                   # next host beat to cover
        aw_left      = Signal(range(seg_beats_max + 1))    # beats of the segment not yet covered
        aw_span_left = Signal(range(burst_span + 1))       # beats from aw_beat to its span's end
        job_bursts   = Signal(range(job_bursts_max + 1))

        # -- Read issue / data stage state ----------------------------------------------------

        rd_addr      = Signal(self._addr_bits)             # next packet-buffer beat to read
        rd_left      = Signal(range(seg_beats_max + 2))    # reads left, priming read included
        rd_prime     = Signal()                            # next read only primes the realigner
        rd_phase     = Signal(range(burst_span))          # burst phase of the next output beat
        rd_first     = Signal()                            # next output beat is the segment's first
        rd_shift     = Signal(lane_bits)
        rd_first_strb = Signal(data_bytes)
        rd_last_strb = Signal(data_bytes)
        rd_free      = Signal()                            # segment ends the job's reads
        rd_free_beats = Signal(self._frame_beats_bits)

        # What the W channel needs of a beat, carried from the data stage (``d_beat``, the cycle
        # its read is presented) to the stage that holds its data (``e_beat``).
        beat_layout = data.StructLayout({
            "valid": 1,
            "prime": 1,              # the priming read: fills ``prev_data``, writes nothing
            "strb":  data_bytes,
            "last":  1,
            "shift": lane_bits,
        })
        d_beat       = Signal(beat_layout)
        d_addr       = Signal(self._addr_bits)
        d_free       = Signal()                            # last read of the job: free after it
        d_free_beats = Signal(self._frame_beats_bits)

        # The beat's data, registered straight from the packet buffer before the realignment
        # uses it: the block RAM's output (no output register) is slow enough that a rotate
        # after it was the 64x64 core's critical path.
        e_beat       = Signal(beat_layout)
        e_data       = Signal(params.data_width)
        prev_data    = Signal(params.data_width)

        # -- Completion FIFO of per-job burst counts ------------------------------------------

        m.submodules.job_bursts_fifo = bursts_fifo = \
            SyncFIFO(width=len(job_bursts), depth=self._jobs_in_flight)

        # The job register and ``src_offset`` load from the job queue's head in every cycle in
        # which the job they hold is no longer needed (``job_locked`` low), whether a job is
        # taken or not, so that the enable of their hundreds of bits is one register (or, in
        # FINISH, a gate on registers) and not the end of the read issue's handshake: when the
        # next job is taken in the cycle of the last read, the register already follows the
        # queue. A job is needed from its take until its last segment with data is set up (or,
        # for a job with nothing to read, until it finishes in FINISH).
        job_locked = Signal()
        finishing  = Signal()   # FINISH ends the job this cycle
        with m.If(~job_locked | finishing):
            m.d.sync += [job.eq(self.job.payload), src_offset.eq(self.job.payload.src_offset)]

        def finish_job(waiting_state, *, in_finish=False):
            # Freeing lets the parser overwrite the frame, so a frame without reads is freed
            # only once the data stage holds no earlier job's beat.
            with m.If(bursts_fifo.w_rdy & (~free_pending | ~d_beat.valid)):
                if in_finish:
                    m.d.comb += finishing.eq(1)
                m.d.comb += [
                    bursts_fifo.w_en.eq(1),
                    bursts_fifo.w_data.eq(job_bursts),
                ]
                # Cleared as the count is handed over, whether a job follows or not. Cleared as
                # the next job is taken, the enable went through the job queue to the receive
                # engine's ``job_pending`` and back: the 64x64 core's critical path.
                m.d.sync += job_bursts.eq(0)
                with m.If(free_pending):
                    m.d.sync += [
                        self.free_valid.eq(1),
                        self.free_beats.eq(job.frame_beats),
                    ]
                accept_job()
            with m.Else():
                m.next = waiting_state

        def accept_job():
            m.d.comb += self.job.ready.eq(1)
            # Loaded whether a job is offered or not, so that these enables depend on the
            # writer's state, not on the job queue's level: that path, from the queue through
            # the receive engine's side and back, was the 64x64 core's critical path. Nothing
            # reads these registers until a job is taken. (The job itself is loaded above.)
            offered = self.job.payload
            m.d.sync += [
                seg_data.eq(Cat((i < offered.n_segments) & (offered.segments[i].length != 0)
                                for i in range(n_segments))),
                free_pending.eq(offered.kind != JobKind.FENCE),
                job_locked.eq(self.job.valid),
            ]
            with m.If(self.job.valid):
                with m.If(offered.kind == JobKind.WRITE):
                    m.next = "SEGMENT"
                with m.Else():
                    m.next = "FINISH"
            with m.Else():
                m.next = "IDLE"

        m.d.sync += self.free_valid.eq(0)

        # The segment's last read leaves the read issue in this cycle (driven below).
        last_read_issued = Signal()

        with m.FSM(name="sequencer"):
            with m.State("IDLE"):
                accept_job()

            with m.State("SEGMENT"):
                with m.If(~seg_data.any()):
                    m.next = "FINISH"
                with m.Elif(~seg_data[0]):
                    next_segment()
                # The last segment's bursts are all accepted before STREAM comes back here, so
                # the address channel is always idle now; saying so keeps a stalled burst's
                # address still by construction (and lets the induction proof see it).
                with m.Elif(~self.axi_awvalid):
                    ends_reads = ~seg_data[1:].any()
                    next_segment()
                    m.d.sync += [
                        aw_beat.eq(segment.address[lane_bits:]),
                        aw_left.eq(seg_beats),
                        self.axi_awvalid.eq(1),   # a segment with data has a beat
                        aw_span_left.eq(burst_span -
                                        segment.address[lane_bits:lane_bits + phase_bits]),
                        rd_addr.eq(seg_read_start),
                        rd_left.eq(seg_reads),
                        rd_prime.eq(1),
                        rd_first.eq(1),
                        rd_phase.eq(segment.address[lane_bits:lane_bits + phase_bits]),
                        rd_shift.eq(seg_shift),
                        rd_first_strb.eq(seg_first_strb),
                        rd_last_strb.eq(seg_last_strb),
                        rd_free.eq(ends_reads),
                        rd_free_beats.eq(job.frame_beats),
                        src_offset.eq(src_offset + segment.length),
                    ]
                    with m.If(ends_reads):
                        # The job's last reads are set up: nothing reads the job register
                        # after this cycle.
                        m.d.sync += [free_pending.eq(0), job_locked.eq(0)]
                    m.next = "STREAM"

            with m.State("STREAM"):
                # The next segment is set up in the cycle after the last read is issued, not a
                # cycle later: the read issue is idle by then, so nothing it holds is overwritten.
                with m.If((aw_left == 0) & (rd_left == 0) | last_read_issued):
                    with m.If(seg_data.any()):
                        m.next = "SEGMENT"
                    with m.Else():
                        finish_job("FINISH")

            with m.State("FINISH"):
                finish_job("FINISH", in_finish=True)

        # -- AW channel -----------------------------------------------------------------------

        # A burst runs to its span's end, or to the segment's end if that comes first (the last
        # burst). Every burst but the last ends on a span boundary, so the next one starts at
        # the following span, whole: the next address is an increment of the span number and
        # the length one compare of two registers, with no adder on the burst length.
        last_burst = Signal()
        m.d.comb += last_burst.eq(aw_left <= aw_span_left)
        burst_beats = Signal(range(burst_span + 1))
        m.d.comb += burst_beats.eq(Mux(last_burst, aw_left, aw_span_left))

        m.d.comb += [
            self.axi_awid.eq(0),
            self.axi_awsize.eq(lane_bits),
            self.axi_awburst.eq(_AXI_BURST_INCR),
            self.axi_awlock.eq(0),
            self.axi_awcache.eq(_AXI_CACHE_BUFFERABLE_MODIFIABLE),
            self.axi_awprot.eq(0),
        ]
        # The address channel is driven straight from the AW generator's registers (through the
        # burst-length choice), so a segment's first burst is offered the cycle after the
        # sequencer sets the segment up: a registered copy would delay every frame's first write
        # by a cycle. It stays still while stalled because the registers move only when a burst
        # is accepted.
        # ``awvalid`` is ``aw_left != 0`` kept as a register, so that the AW generator's enable
        # is a gate on a register and the port: the compare in front of it, then the enable's
        # fan-out, was the 64x64 core's critical path.
        m.d.comb += [
            self.axi_awaddr.eq(Cat(C(0, lane_bits), aw_beat)),
            self.axi_awlen.eq(burst_beats - 1),
        ]
        with m.If(self.axi_awvalid & self.axi_awready):
            m.d.sync += [
                aw_beat.eq(Cat(C(0, phase_bits), aw_beat[phase_bits:] + 1)),
                aw_left.eq(Mux(last_burst, 0, aw_left - aw_span_left)),
                self.axi_awvalid.eq(~last_burst),
                aw_span_left.eq(burst_span),
                job_bursts.eq(job_bursts + 1),
            ]

        # -- Read issue, data stage and W channel ---------------------------------------------

        w_free  = ~self.axi_wvalid | self.axi_wready
        e_take  = e_beat.valid & (e_beat.prime | w_free)
        e_moves = ~e_beat.valid | e_take
        d_take  = d_beat.valid & e_moves
        d_moves = ~d_beat.valid | e_moves
        # The read port has no enable: a beat that stays in the data stage reads itself again.
        m.d.comb += self.read_addr.eq(Mux(d_moves, rd_addr, d_addr))
        m.d.comb += last_read_issued.eq((aw_left == 0) & (rd_left == 1) & d_moves)

        with m.If(d_moves):
            with m.If(rd_left != 0):
                is_last_beat = rd_left == 1
                strb = Mux(rd_first, rd_first_strb, C((1 << data_bytes) - 1, data_bytes)) & \
                       Mux(is_last_beat, rd_last_strb, C((1 << data_bytes) - 1, data_bytes))
                m.d.sync += [
                    d_beat.valid.eq(1),
                    d_addr.eq(rd_addr),
                    d_beat.prime.eq(rd_prime),
                    d_beat.strb.eq(strb),
                    d_beat.last.eq(is_last_beat | (rd_phase == burst_span - 1)),
                    d_beat.shift.eq(rd_shift),
                    d_free.eq(rd_free & is_last_beat),
                    d_free_beats.eq(rd_free_beats),
                    rd_addr.eq(rd_addr + 1),
                    rd_left.eq(rd_left - 1),
                    rd_prime.eq(0),
                ]
                with m.If(~rd_prime):
                    m.d.sync += [
                        rd_first.eq(0),
                        rd_phase.eq(rd_phase + 1),
                    ]
            with m.Else():
                m.d.sync += d_beat.valid.eq(0)

        # A beat's data is read once it leaves the data stage: its frame may be freed then.
        with m.If(e_moves):
            m.d.sync += [e_beat.eq(d_beat), e_data.eq(self.read_data)]
        with m.If(d_take & d_free):
            m.d.sync += [
                self.free_valid.eq(1),
                self.free_beats.eq(d_free_beats),
            ]
        with m.If(e_take):
            m.d.sync += prev_data.eq(e_data)
        with m.If(e_take & ~e_beat.prime):
            m.d.sync += [
                self.axi_wvalid.eq(1),
                self.axi_wdata.eq(Cat(prev_data, e_data)
                                  .bit_select(e_beat.shift * 8, params.data_width)),
                self.axi_wstrb.eq(e_beat.strb),
                self.axi_wlast.eq(e_beat.last),
            ]
        with m.Elif(self.axi_wready):
            m.d.sync += self.axi_wvalid.eq(0)

        # -- B channel: count responses against the oldest unfinished job ---------------------

        b_count = Signal.like(job_bursts)   # responses of the oldest unfinished job so far
        b_error = Signal()
        head_has_bursts = bursts_fifo.r_data != 0
        head_complete = ~head_has_bursts | (b_count == bursts_fifo.r_data)
        job_complete = bursts_fifo.r_rdy & head_complete
        # A response may be counted only while it surely belongs to the oldest unfinished job:
        # not while that job (or one without bursts) is being retired, or a later job's
        # responses would be counted for it.
        m.d.comb += self.axi_bready.eq(~bursts_fifo.r_rdy | ~head_complete)
        b_arrives = self.axi_bvalid & self.axi_bready

        m.d.comb += bursts_fifo.r_en.eq(job_complete)
        m.d.sync += [
            self.done_valid.eq(job_complete),
            self.done_error.eq(job_complete & head_has_bursts & b_error),
        ]
        with m.If(job_complete):
            m.d.sync += [
                b_count.eq(0),
                b_error.eq(0),
            ]
        with m.Elif(b_arrives):
            m.d.sync += [
                b_count.eq(b_count + 1),
                b_error.eq(b_error | (self.axi_bresp != 0)),
            ]

        return m
