"""AXI4 write DMA master: copies stored frame bytes into host segments (R50-R52).

The writer takes jobs from the receive engine in decision order. For a ``WRITE`` job it reads the
frame from the receive packet buffer, realigns it to each segment's host address and writes it
with AXI4 INCR bursts; every job, whatever its kind, is reported done in order once all of its
write responses are back.

Why this shape:

* Realignment uses the previous source beat and a byte rotate by
  ``(src_offset - address) mod W/8``: each output beat is the rotate of two consecutive source
  beats, made as each lane's choice between the two beats each rotated on its own (the previous
  one kept rotated from its own step). A segment reads exactly the source beats that hold its
  bytes. When its first bytes sit
  at a higher lane in the source than in the host, its first read only "primes" the realigner;
  when its last output beat needs nothing of a further source beat, that beat is "flushed" in a
  step without a read, which shares its cycle with the next segment's priming read if it has one.
  So segments and jobs stream back to back at one read per cycle: a frame costs the writer its
  beats, not its beats plus two.
* Bursts end on every ``min(4 KiB, max_burst_beats * W/8)``-aligned boundary. Both AW and W derive
  the burst ends from the host address alone, so no burst-length FIFO is needed between them,
  every burst is at most ``max_burst_beats`` long and none crosses 4 KiB.
* Nothing after the read issue stalls. The realigned beats go into a W queue of four places, from
  whose LUT RAM the W channel reads them, and a read is issued only while the queue has a place
  for its beat that no earlier beat has reserved (a register). So the slave's ``wready`` reaches
  the queue's read side and the count of places, never the read issue or the sequencer, and the
  packet-buffer read port needs no enable. The data read is registered before it is realigned, a
  cycle that delays W (not AW, so not a frame's first write) and the write responses. Every read
  is of a beat holding bytes of the segment, but a flush step presents an address it does not
  use.
* The next segment (of the same job, or the first of the next job when the job register already
  holds it) is set up in the cycle of the current one's last read, or of its last burst's
  address if that is accepted later, so the read issue never waits for the sequencer. The job
  register takes a job from the queue as it catches it and holds the next one from the cycle
  after the last segment of the job it holds is set up: jobs of one read follow one per cycle.
  It is one of two slots: while it holds a job, the other takes the queue's next one, and the
  two swap as the register is done with its job, so that this late decision reaches a bit and
  a few small registers, not the enables of the slots' hundreds of bits or the job queue's
  ``ready``.
* A job whose first segment starts where the job before ended, inside a host beat (a
  connection's payloads, placed one after the other), shares that beat with it: the earlier
  job's last beat is held back and goes out completed by the later job's first bytes, in the
  earlier job's last burst, and the later job's bursts start a beat further on. Each host beat
  is then written once, and W needs no more beats than the frames have. If the earlier job's
  last beat is a flush, it joins the later job's first read in one step, whether that read
  primes or not, so placed payloads cost the read issue their source beats and nothing more.
  A job holds its last beat only when the next job is already in the job register as its last
  read leaves, so a held beat never waits for a job not yet known. The later job's done pulse
  reports an error response to that shared burst too.
* A frame is freed when its last beat has been read, in job order: a ``DISCARD`` (which reads
  nothing) waits for the previous job's last read, because freeing tells the parser it may
  overwrite everything up to the end of that frame.
* AW leaves through a skid buffer (:class:`~tcpdct.skid.SkidBuffer`): the slave's ``awready``
  reaches a register and the output multiplexer, not the AW generator's enables. It adds no
  cycle; under back-pressure it holds one burst more.
* Write responses (single ID, so in order) are matched against a FIFO of per-job burst counts, so
  a job's writes never wait for earlier jobs' responses. The FIFO's head is a register, so the
  count of responses is compared with a register, not with a LUT RAM's read. ``bready`` drops
  for the cycle in which a job is retired (and for each job without bursts), so a response of a
  later job is never counted for the job being retired. A FENCE (every command's job) that
  follows a job while it streams is taken at once and marked on that job's count, and is done the
  cycle after it; one that the job register has caught but not yet taken when the job ends (a job
  of few reads) is marked on the count as it is handed over.
"""

from amaranth.hdl import C, Cat, Module, Mux, Shape, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from . import layouts, ports
from .fifo import SyncFIFOFlagged, SyncFIFOHeadRegistered
from .logic import sum_equals
from .skid import SkidBuffer
from .layouts import JobKind


__all__ = ["DmaWriter", "jobs_held_max"]


_AXI_BURST_INCR = 0b01
_AXI_CACHE_BUFFERABLE_MODIFIABLE = 0b0011

#: Places in the W queue: a read issued in cycle t frees its place in t + 4 at the earliest.
_W_QUEUE_DEPTH = 4


def _rotate_lanes(value, lanes):
    """``value`` rotated down by ``lanes`` bytes (byte k of the result is byte ``k + lanes``,
    modulo the width), one stage of constant rotations per bit of ``lanes``."""
    for bit in range(len(lanes)):
        value = Mux(lanes[bit], value.rotate_right(8 << bit), value)
    return value


def jobs_held_max(jobs_in_flight):
    """The most jobs a :class:`DmaWriter` with ``jobs_in_flight`` takes whose done pulses are
    still to come. Each job in flight may carry a FENCE, and so may the job whose count waits for
    room among them; the job register holds one more job, and the other job slot one more again.
    """
    return 2 * (jobs_in_flight + 2)


class DmaWriter(wiring.Component):
    """AXI4 write master executing DMA jobs in order.

    Parameters
    ----------
    params : :class:`tcpdct.params.Params`
        Build parameters (data width, packet buffer size, segments per job, burst length).
    jobs_in_flight : int
        Jobs whose bursts are all issued but whose write responses are not all back, beyond which
        the writer stops taking jobs. A power of two is not required. A FENCE taken while a job
        streams rides on that job's count and is not counted.

    Attributes
    ----------
    jobs_held_max : int
        The most jobs the writer takes whose done pulses are still to come
        (:func:`jobs_held_max`).

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
        self.jobs_held_max = jobs_held_max(jobs_in_flight)
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
        # A segment of 65535 bytes at the worst alignment spans this many beats, in the host and
        # in the source alike; a job has at most that many bursts per segment.
        seg_beats_max = (data_bytes - 1 + 0xFFFF) // data_bytes + 1
        job_bursts_max = params.buffers_per_conn * seg_beats_max

        job_layout  = layouts.dma_job_layout(params)

        # -- Job slots ------------------------------------------------------------------------

        # The job register is one of two slots, ``cur``. While it holds a job, the other slot
        # takes the job queue's next one (``pre_full``), so that its successor is at hand when
        # the register is done with its job: the slots then swap roles (``cur`` flips) rather
        # than the register loading the queue's head. The decision that the register is done
        # with (the last segment set up, as the last read of the job before is issued) is late;
        # it now reaches one bit and the few registers of the take below, while the enables of
        # the slots' hundreds of bits, and the job queue's ``ready`` behind them, are a gate on
        # registers (``cur``, ``job_locked``, ``pre_full``). Loaded under that decision, the
        # job register and the queue's head register were the 64x64 core's critical path in
        # 39f6438, through a gate the placer put at the job queue.
        slots       = [Signal(job_layout, name=f"job_slot{number}") for number in range(2)]
        cur         = Signal()
        pre_full    = Signal()
        job         = Signal(job_layout)
        m.d.comb += job.eq(Mux(cur, slots[1], slots[0]))
        # The lane of each segment's last byte and the host beats it spans, worked out as a job
        # enters its slot: worked out behind the choice of the slot and the segment, their
        # adders were on the paths from that choice to the set-up's registers, the last strobe
        # among them (the 512x64 core's critical path, and the 64x64 core's on 649286b, seed 3).
        seg_beats_shape = range(seg_beats_max + 1)
        seg_beats_bits = Shape.cast(seg_beats_shape).width
        slot_lane_ends = [Signal(data.ArrayLayout(lane_bits, params.buffers_per_conn),
                                 name=f"job_slot{number}_lane_ends") for number in range(2)]
        slot_beats = [Signal(data.ArrayLayout(seg_beats_shape, params.buffers_per_conn),
                             name=f"job_slot{number}_beats") for number in range(2)]
        job_lane_ends = Mux(cur, slot_lane_ends[1].as_value(), slot_lane_ends[0].as_value())
        job_beats = Mux(cur, slot_beats[1].as_value(), slot_beats[0].as_value())

        # -- Sequencer: one job at a time, one segment at a time ------------------------------

        # ``seg_index`` is the job's segment to set up next; each segment set up (or skipped)
        # moves it on. ``seg_data`` has bit k set while segment ``seg_index + k`` is one of the
        # job's and has bytes to write. An index, not a shift of the job register's segments:
        # the shift's enable is the late decision of a set-up, and it reached every segment bit
        # of the register.
        n_segments  = params.buffers_per_conn
        seg_index   = Signal(range(n_segments))
        seg_data    = Signal(n_segments)
        src_offset  = Signal(16)   # frame byte that goes to the current segment's first byte
        # Set while the job's frame is still to be freed by the sequencer itself, rather than by
        # the data stage after the job's last read (a DISCARD, or a WRITE with nothing to write).
        free_pending = Signal()

        def next_segment():
            m.d.sync += [seg_data.eq(seg_data >> 1), seg_index.eq(seg_index + 1)]

        def segments_with_data(payload):
            return Cat((i < payload.n_segments) & (payload.segments[i].length != 0)
                       for i in range(n_segments))

        all_lanes   = C((1 << data_bytes) - 1, data_bytes)
        segment     = job.segments[seg_index]
        seg_lane0   = segment.address[:lane_bits]
        src_lane0   = src_offset[:lane_bits]
        seg_lane_end = Signal(lane_bits)
        m.d.comb += seg_lane_end.eq(job_lane_ends.word_select(seg_index, lane_bits))

        def beats_spanned(length, first_lane):
            # The beats that ``length`` bytes (at least 1) from lane ``first_lane`` span: one
            # adder whose small operand takes the constant.
            return (length + (first_lane + (data_bytes - 1))) >> lane_bits

        # Beats written (kept per slot, above) and source beats read, the same count from the
        # source's first lane.
        seg_beats   = Signal(seg_beats_shape)
        seg_reads   = Signal(seg_beats_shape)
        m.d.comb += [
            seg_beats.eq(job_beats.word_select(seg_index, seg_beats_bits)),
            seg_reads.eq(beats_spanned(segment.length, src_lane0)),
        ]
        seg_shift   = Signal(lane_bits)
        m.d.comb += seg_shift.eq(src_lane0 - seg_lane0)
        # Output beat n is the rotate of the source beats read n and n+1 (``prime``: the
        # segment's first bytes sit at a higher lane in the source than in the host, so the
        # first read only fills the realigner) or n-1 and n (the lanes taken from the read
        # before the first are never strobed). The last output beat needs no further read
        # (``flush``) when its last lane comes from the earlier of its two source beats, that is
        # when the lane plus the shift does not carry.
        seg_prime   = Signal()
        seg_flush   = Signal()
        end_plus_shift = Signal(lane_bits + 1)
        m.d.comb += [
            seg_prime.eq(src_lane0 >= seg_lane0),
            end_plus_shift.eq(seg_lane_end + seg_shift),
            seg_flush.eq(~end_plus_shift[lane_bits]),
        ]
        seg_read_start = Signal(self._addr_bits)
        m.d.comb += seg_read_start.eq(job.buf_start + (src_offset >> lane_bits))
        seg_first_strb = Signal(data_bytes)
        m.d.comb += seg_first_strb.eq(all_lanes << seg_lane0)
        seg_last_strb = Signal(data_bytes)
        m.d.comb += seg_last_strb.eq((C(2, data_bytes + 1) << seg_lane_end) - 1)

        # -- AW generator state ---------------------------------------------------------------

        aw_beat      = Signal(beat_bits)                   # next host beat to cover
        aw_left      = Signal(range(seg_beats_max + 1))    # beats of the segment not yet covered
        aw_span_left = Signal(range(burst_span + 1))       # beats from aw_beat to its span's end
        job_bursts   = Signal(range(job_bursts_max + 1))
        # The burst on offer: ``aw_left != 0`` kept as a register, so that the AW generator's
        # enable is a gate on registers (the compare in front of it, then the enable's fan-out,
        # was the 64x64 core's critical path).
        aw_valid     = Signal()
        # The AW channel leaves through a skid buffer, so that the slave's ``awready``, which
        # comes from outside the core, reaches a register rather than the enables of the
        # generator and, through the end of a segment, the sequencer and its job register.
        m.submodules.aw_skid = aw_skid = SkidBuffer(data.StructLayout({
            "addr": len(self.axi_awaddr), "len": len(self.axi_awlen)}))
        aw_ready     = aw_skid.sink.ready

        # -- Read issue / data stage state ----------------------------------------------------

        rd_addr      = Signal(self._addr_bits)             # next packet-buffer beat to read
        rd_left      = Signal(range(seg_beats_max + 1))    # reads left
        # ``rd_left != 0`` and ``rd_left == 1`` kept as registers: they start the set-up of the
        # next segment, whose enable reaches every register of the AW generator and the read
        # issue.
        rd_any       = Signal()
        rd_last      = Signal()
        rd_prime     = Signal()                            # next read only primes the realigner
        rd_flush     = Signal()                            # the segment ends with a flush step
        rd_phase     = Signal(range(burst_span))           # burst phase of the next output beat
        rd_first     = Signal()                            # next output beat is the segment's first
        rd_shift     = Signal(lane_bits)
        rd_first_strb = Signal(data_bytes)
        rd_last_strb = Signal(data_bytes)
        rd_free      = Signal()                            # segment ends the job's reads
        rd_free_beats = Signal(self._frame_beats_bits)
        rd_merge     = Signal()    # the segment's first output beat completes the held beat
        # The job register holds the next job, and it continues the current one inside its last
        # beat (below, "Jobs that continue the one before").
        continues_held = Signal()
        merge_next   = Signal()    # the next segment set up completes the held beat

        # A segment's flush, due once its last read is issued: its last output beat, made of the
        # realigner's previous beat alone.
        fl_valid     = Signal()
        fl_strb      = Signal(data_bytes)
        fl_merge     = Signal()
        fl_hold      = Signal()
        # A pending flush that does not join the next segment's first beat (one that is held,
        # and not itself completing a held beat, joins it in one step, ``joined`` below, even
        # when that one's first read does not prime): the next read waits unless it primes.
        fl_blocks    = Signal()

        # What the W channel needs of a beat, carried from the data stage (``d_beat``, the cycle
        # its read is presented) to the stage that holds its data (``e_beat``).
        beat_layout = data.StructLayout({
            "valid": 1,
            "prime": 1,              # fills ``rot_prev``, writes nothing
            "strb":  data_bytes,
            "last":  1,
            "shift": lane_bits,      # the rotation of the source beat read with it, if any
            "merge": 1,              # completes the held beat (``tail_*``): both go out as one
            "hold":  1,              # is held for the next segment's first beat to complete
            # Lanes whose byte comes from the previous source beat (``rot_prev``), the others'
            # from the one read with this beat.
            "from_prev": data_bytes,
        })
        d_beat       = Signal(beat_layout)
        d_free       = Signal()                            # last read of the job: free after it
        d_free_beats = Signal(self._frame_beats_bits)

        # The beat's data, registered straight from the packet buffer before the realignment
        # uses it: the block RAM's output (no output register) is slow enough that a rotate
        # after it was the 64x64 core's critical path.
        e_beat       = Signal(beat_layout)
        e_data       = Signal(params.data_width)
        # The previous source beat, already rotated by its own beat's shift: an output beat takes
        # each lane from it or from the source beat just read, rotated by the same shift
        # (within a segment the shift is the same), rather than rotating the two together. The
        # last beat of a segment (a flush) is then ``rot_prev`` itself, and one joined to the
        # next segment's first beat keeps its lanes of it, whatever the next one's shift.
        rot_prev     = Signal(params.data_width)

        # The W queue: output beats, realigned, on their way to the W channel, which reads them
        # from its LUT RAM (``wvalid`` is its ``r_rdy``, a register). Each beat that enters the
        # data stage has a place reserved in it (``w_reserved``) until it leaves, so that the data
        # stage and the realigner never stall: the read issue steps only while a place is free
        # (``w_room``, a register), and the slave's ``wready`` reaches the queue's read side and
        # the count, not the read issue, the sequencer and the job register behind them (its
        # chain through the two stages' stalls to the end of a segment, and so to the job take,
        # was the 64x64 core's critical path in 54467b3). A beat issued in cycle t is in the
        # queue in t + 3 and its place free in t + 4 when ``wready`` is high: four places keep a
        # read issued every cycle.
        w_layout = data.StructLayout({"data": params.data_width, "strb": data_bytes, "last": 1})
        m.submodules.w_queue = w_queue = SyncFIFOFlagged(width=w_layout.size,
                                                         depth=_W_QUEUE_DEPTH)
        w_beat       = data.View(w_layout, w_queue.w_data)
        w_reserved   = Signal(range(_W_QUEUE_DEPTH + 1))
        w_room       = Signal(init=1)                      # ``w_reserved < _W_QUEUE_DEPTH``

        # -- AW generator ---------------------------------------------------------------------

        # A burst runs to its span's end, or to the segment's end if that comes first (the last
        # burst). Every burst but the last ends on a span boundary, so the next one starts at
        # the following span, whole: the next address is an increment of the span number and
        # the length a choice between two registers, with no adder on the burst length. Whether
        # the burst on offer is the segment's last (``aw_left <= aw_span_left``) is a register
        # too, worked out as the registers it compares are loaded: it ends the segment's
        # address phase, and with it enables the set-up of the next segment. This comes before
        # the sequencer, whose set-up in the cycle the last burst is accepted must win.
        last_burst = Signal()
        aw_accept = aw_valid & aw_ready
        # A segment whose first beat completes the held one (``rd_merge``) has that beat written
        # by the burst before, which covers it already: its own bursts start a beat later. The
        # set-up loads the generator as for any segment and ``aw_skip``, and the generator steps
        # over the beat in the next cycle, from its registers, rather than the set-up adding
        # one to the segment's address on its way in (the set-up is the writer's longest path).
        aw_skip = Signal()
        # ``aw_valid | aw_skip`` kept as a register: the segment's address phase is not over.
        # While the generator steps over a beat, ``last_burst`` is low.
        aw_busy = Signal()
        # The segment's bursts are all accepted by the end of this cycle.
        aw_done = ~aw_busy | aw_ready & last_burst
        # A step over the shared beat and an accepted burst never coincide (``aw_valid`` is low
        # while ``aw_skip`` is high): the generator moves on for either, from values chosen by
        # registers, so that the set-up's late enable still meets a two-way choice.
        skipped_left = aw_left - 1
        skipped_span_left = Mux(aw_span_left == 1, burst_span, aw_span_left - 1)
        accepted_left = aw_left - aw_span_left
        with m.If(aw_skip | aw_accept):
            m.d.sync += [
                aw_skip.eq(0),
                aw_beat.eq(Mux(aw_skip, aw_beat + 1,
                               Cat(C(0, phase_bits), aw_beat[phase_bits:] + 1))),
                aw_left.eq(Mux(aw_skip, skipped_left, Mux(last_burst, 0, accepted_left))),
                aw_valid.eq(Mux(aw_skip, aw_left != 1, ~last_burst)),
                aw_busy.eq(Mux(aw_skip, aw_left != 1, ~last_burst)),
                aw_span_left.eq(Mux(aw_skip, skipped_span_left, burst_span)),
                last_burst.eq(Mux(aw_skip, skipped_left <= skipped_span_left,
                                  accepted_left <= burst_span)),
            ]
        with m.If(aw_accept):
            m.d.sync += job_bursts.eq(job_bursts + 1)

        # -- Read issue, data stage and W channel ---------------------------------------------

        # This comes before the sequencer, whose set-up of the next segment in the cycle of the
        # current one's last read must win over the read issue's own update of its registers.
        # The read port has no enable, and nothing after it stalls.
        m.d.comb += self.read_addr.eq(rd_addr)

        # A step of the read issue reads the segment's next source beat, or flushes the segment
        # before (no read), or both at once when the next read only primes or the flush joins
        # its beat (``fl_blocks``, below).
        read_step = rd_any & (~fl_blocks | rd_prime)
        is_last_read = rd_last
        # The segment's last read leaves the read issue in this cycle, and its last burst's
        # address has been accepted, before or in this cycle (``awvalid`` is ``aw_left != 0``):
        # a segment of one burst and one read costs one cycle.
        last_read_issued = Signal()
        m.d.comb += last_read_issued.eq(aw_done & is_last_read & read_step & w_room)
        # The job's last read leaves now, and the job after it, already in the register,
        # continues it inside its last beat: that beat is held (``d_beat.hold``, ``fl_hold``),
        # and the next segment set up, that job's first, completes it.
        hold_now = Signal()
        m.d.comb += hold_now.eq(read_step & is_last_read & rd_free & w_room & continues_held)

        # A beat enters the data stage (and takes a place in the W queue) in this cycle.
        d_enters = Signal()
        m.d.comb += d_enters.eq(w_room & (read_step | fl_valid))
        with m.If(~w_room):
            m.d.sync += [d_beat.valid.eq(0), d_free.eq(0)]
        with m.Else():
            ends_segment = is_last_read & ~rd_flush
            # A flush that joins the next segment's first beat, which a read that does not prime
            # makes: one beat, the flush's lanes from the previous source beat as the flush's
            # segment rotated it (``rot_prev``), the others from the read's.
            # Without it the flush takes a step of its own, with no read, and a connection's
            # payloads placed one after the other cost the read issue a cycle more whenever
            # one ends in a flush and the next does not start with a priming read.
            joined = fl_valid & ~fl_blocks & rd_any & ~rd_prime
            m.d.sync += [
                d_beat.valid.eq(read_step | fl_valid),
                d_free.eq(read_step & rd_free & is_last_read),
                d_free_beats.eq(rd_free_beats),
            ]
            # A read's beat is rotated by its segment's shift (a flush shares its step with the
            # next segment's priming read, whose beat it rotates), and takes from the previous
            # beat the lanes that the shift carries past the beat's end.
            joined_strb = Mux(joined, fl_strb, 0)
            m.d.sync += d_beat.shift.eq(rd_shift)
            with m.If(fl_valid & ~joined):
                m.d.sync += [
                    d_beat.prime.eq(0),
                    d_beat.strb.eq(fl_strb),
                    d_beat.last.eq(1),
                    d_beat.from_prev.eq(all_lanes),
                    d_beat.merge.eq(fl_merge),
                    d_beat.hold.eq(fl_hold),
                ]
            with m.Else():
                m.d.sync += [
                    d_beat.prime.eq(rd_prime),
                    d_beat.strb.eq(Mux(rd_first, rd_first_strb, all_lanes) &
                                   Mux(ends_segment, rd_last_strb, all_lanes) | joined_strb),
                    # A first beat that completes the held one ends the burst that covers both.
                    d_beat.last.eq(ends_segment | (rd_phase == burst_span - 1) |
                                   (rd_merge & rd_first)),
                    d_beat.from_prev.eq(Cat(rd_shift < data_bytes - lane
                                            for lane in range(data_bytes)) | joined_strb),
                    d_beat.merge.eq(rd_merge & rd_first & ~rd_prime & ~joined),
                    d_beat.hold.eq(continues_held & rd_free & ends_segment),
                ]
            with m.If(read_step):
                m.d.sync += [
                    rd_addr.eq(rd_addr + 1),
                    rd_left.eq(rd_left - 1),
                    rd_any.eq(~rd_last),
                    rd_last.eq(rd_left == 2),
                    rd_prime.eq(0),
                ]
                with m.If(~rd_prime):
                    m.d.sync += [
                        rd_first.eq(0),
                        rd_phase.eq(rd_phase + 1),
                    ]
            with m.If(read_step & is_last_read & rd_flush):
                # Nothing written yet after a last read that primes: the flush is also the
                # segment's first output beat.
                joins = continues_held & rd_free & ~(rd_merge & rd_first & rd_prime)
                m.d.sync += [
                    fl_valid.eq(1),
                    fl_blocks.eq(~joins),
                    fl_strb.eq(rd_last_strb & Mux(rd_first & rd_prime, rd_first_strb, all_lanes)),
                    fl_merge.eq(rd_merge & rd_first & rd_prime),
                    fl_hold.eq(continues_held & rd_free),
                ]
            with m.Else():
                m.d.sync += [fl_valid.eq(0), fl_blocks.eq(0)]

        # A beat's data is read once it leaves the data stage: its frame may be freed then. Any
        # beat may become ``rot_prev``: after a flush it is replaced by a priming read, or it
        # feeds only lanes that are not strobed.
        m.d.sync += [e_beat.eq(d_beat), e_data.eq(self.read_data)]
        m.d.sync += self.free_valid.eq(0)
        with m.If(d_beat.valid & d_free):
            m.d.sync += [
                self.free_valid.eq(1),
                self.free_beats.eq(d_free_beats),
            ]
        rot_e = Signal(params.data_width)
        m.d.comb += rot_e.eq(_rotate_lanes(e_data, e_beat.shift))
        with m.If(e_beat.valid):
            m.d.sync += rot_prev.eq(rot_e)
        # A beat held (the last of a segment that the next one continues inside the same host
        # beat) waits in ``tail_*`` instead of the W queue, and the next segment's first beat
        # takes its lanes from it: the two go out as one beat. The lanes of the two never
        # overlap, the one segment ending where the other starts.
        tail_data    = Signal(params.data_width)
        tail_strb    = Signal(data_bytes)
        realigned    = Signal(params.data_width)
        from_tail    = Signal(data_bytes)
        out_data     = Signal(params.data_width)
        out_strb     = Signal(data_bytes)
        m.d.comb += [
            realigned.eq(Cat(Mux(e_beat.from_prev[lane], rot_prev.word_select(lane, 8),
                                 rot_e.word_select(lane, 8)) for lane in range(data_bytes))),
            from_tail.eq(tail_strb & e_beat.merge.replicate(data_bytes)),
            out_data.eq(Cat(Mux(from_tail[lane], tail_data.word_select(lane, 8),
                                realigned.word_select(lane, 8)) for lane in range(data_bytes))),
            out_strb.eq(e_beat.strb | from_tail),
        ]
        writes_beat = e_beat.valid & ~e_beat.prime
        with m.If(writes_beat & e_beat.hold):
            m.d.sync += [tail_data.eq(out_data), tail_strb.eq(out_strb)]
        m.d.comb += [
            w_queue.w_en.eq(writes_beat & ~e_beat.hold),
            w_beat.data.eq(out_data),
            w_beat.strb.eq(out_strb),
            w_beat.last.eq(e_beat.last),
        ]
        w_head = data.View(w_layout, w_queue.r_data)
        m.d.comb += [
            self.axi_wvalid.eq(w_queue.r_rdy),
            self.axi_wdata.eq(w_head.data),
            self.axi_wstrb.eq(w_head.strb),
            self.axi_wlast.eq(w_head.last),
            w_queue.r_en.eq(self.axi_wready),
        ]
        # A place is freed as its beat leaves for the W channel, or, for a beat that only primes
        # the realigner or is held, as it leaves the realigner.
        w_freed = Signal(2)
        reserved_next = Signal(range(_W_QUEUE_DEPTH + 1))
        m.d.comb += [
            w_freed.eq((self.axi_wvalid & self.axi_wready) +
                       (e_beat.valid & (e_beat.prime | e_beat.hold))),
            reserved_next.eq(w_reserved + d_enters - w_freed),
        ]
        m.d.sync += [w_reserved.eq(reserved_next), w_room.eq(reserved_next < _W_QUEUE_DEPTH)]

        # -- Completion FIFO of per-job burst counts ------------------------------------------

        # An entry also says whether a FENCE came right after the job: a FENCE taken while a
        # job streams (``fence_after``) rides on that job's entry and is reported done the
        # cycle after it, so that it costs the sequencer no cycle of its own.
        # ``has_bursts`` is ``bursts != 0``, worked out as the entry is written rather than from
        # the head as it is retired. ``shares_last``: the job's last burst also writes the first
        # bytes of the next job, whose done pulse then reports that burst's error too.
        entry_layout = data.StructLayout({"bursts": len(job_bursts), "fence_after": 1,
                                          "has_bursts": 1, "shares_last": 1})
        # Its ``w_rdy`` is a register: it starts the take of the next job, and with it the set-up
        # of that job's first segment. Its head is a register too: the retirement (the head's
        # count against the responses, then the FIFO's read, level and flags) starts from it
        # rather than from the LUT RAM's read, and it was the writer's deepest logic.
        m.submodules.job_bursts_fifo = bursts_fifo = \
            SyncFIFOHeadRegistered(width=entry_layout.size, depth=self._jobs_in_flight)
        entry = data.View(entry_layout, bursts_fifo.w_data)
        fence_after = Signal()

        # The job register (the slot ``cur``) loads from the job queue's head in every cycle in
        # which it holds no job that is needed (``job_locked`` low), whether a job is taken or
        # not, so that the enable of its hundreds of bits is one register and not the job
        # queue's level. A job is needed from its take until its last segment with data is set
        # up (or, for a job with nothing to read, until it finishes in FINISH). While the
        # current job's last segment streams, the register holds the next job (``job_held``),
        # so that its first segment can be set up in the cycle the current job's last read is
        # issued.
        job_locked  = Signal()
        job_held    = Signal()             # holds a job taken from the queue, not yet started
        # ... a WRITE whose first segment has data: ``held_write & held_first``, kept as a
        # register of its own because it starts the set-up in the cycle of the last read.
        held_direct = Signal()
        held_write  = Signal()             # ... a WRITE
        held_first  = Signal()             # ... whose first segment has data
        held_fence  = Signal()             # ... a FENCE
        held_rest   = Signal(n_segments - 1)   # ... its later segments with data
        finishing   = Signal()             # FINISH ends the job this cycle
        releasing   = Signal()             # the job's last segment is set up this cycle
        head_taken  = Signal()             # the incoming job (below) starts at once, not held
        fence_rides = Signal()             # the held FENCE rides on the entry written now
        fence_taken = Signal()             # STREAM takes the held FENCE, riding on its job

        # Jobs that continue the one before. A connection's frames are placed one after the
        # other in its buffers, so a job's first segment often starts where the previous job's
        # last one ended, inside a host beat: written apart, that beat would go out twice, once
        # with the lanes of each job, and W would need more beats than the frames have (a
        # connection's 518-byte payloads, 9.07 W beats per 9-beat frame at 512 bits). Instead
        # the earlier job's last beat is held back and goes out completed by the later job's
        # first (``tail_*`` above). The address and length of each job's last segment with data
        # are kept as the job is taken from the queue (``offered_last``; ``offered_end_open``: a
        # WRITE whose end falls inside a beat), and those of the job before it too
        # (``before_last``). The job in the other slot continues the one before it when it
        # starts at the sum (``pre_continues``), and so does the job queue's head, which the
        # register takes when the other slot holds none (``head_continues``, against
        # ``offered_last``). That is tested bit by bit (:func:`.logic.sum_equals`) rather than
        # added up, from registers and as the register takes the job: the end added up as each
        # job was taken, behind the choice of its last segment, was the 64x64 core's critical
        # path, and the test worked out as the other slot takes its job was nine levels deep. A job holds its last beat only when the job after it is already in the job
        # register as its last read leaves (``hold_now``), so that the next segment set up is
        # surely the one that completes the beat, soon: nothing waits for a job not yet known.
        offered_last     = Signal(data.StructLayout({"address": 64, "length": 16}))
        offered_end_open = Signal()
        before_last      = Signal.like(offered_last)
        before_end_open  = Signal()
        pre_continues    = Signal()        # the other slot's job continues the one before it
        head_continues   = Signal()        # ... the job queue's head continues the one before
        held_continues = Signal()          # the job held continues the one before (above)
        tail_shared = Signal()             # the current job's last beat is held for the next
        with m.If(hold_now):
            m.d.sync += tail_shared.eq(1)
        setting_up = Signal()              # a segment is set up in this cycle
        m.d.sync += merge_next.eq((merge_next | hold_now) & ~setting_up)

        # What the sequencer needs to know of a job as it takes it, worked out as the job is
        # offered: for the other slot's job as that slot takes it (``pre_*``).
        def job_flags(payload):
            with_data = segments_with_data(payload)
            return {
                "direct":     (payload.kind == JobKind.WRITE) & with_data[0],
                "write":      payload.kind == JobKind.WRITE,
                "first":      with_data[0],
                "fence":      payload.kind == JobKind.FENCE,
                "rest":       with_data[1:],
                "src_offset": payload.src_offset,
            }
        offered_flags = job_flags(self.job.payload)
        offered_data = Cat(offered_flags["first"], offered_flags["rest"])
        # Each offered segment's last lane and host beats, which its slot keeps (above).
        offered = self.job.payload.segments
        offered_lane_ends = [(segment.address[:lane_bits] + segment.length[:lane_bits] - 1)
                             [:lane_bits] for segment in offered]
        offered_beats = Cat(beats_spanned(segment.length, segment.address[:lane_bits])
                            [:seg_beats_bits] for segment in offered)
        last_address  = Signal(64)
        last_length   = Signal(16)
        last_lane_end = Signal(lane_bits)
        for number in range(n_segments):
            with m.If(offered_data[number]):
                m.d.comb += [last_address.eq(offered[number].address),
                             last_length.eq(offered[number].length),
                             last_lane_end.eq(offered_lane_ends[number])]
        with m.If(self.job.valid & self.job.ready):
            m.d.sync += [
                before_last.eq(offered_last),
                before_end_open.eq(offered_end_open),
                offered_last.address.eq(last_address),
                offered_last.length.eq(last_length),
                offered_end_open.eq((self.job.payload.kind == JobKind.WRITE) & offered_data.any()
                                    & (last_lane_end != data_bytes - 1)),
            ]
        pre_flags = {name: Signal(len(value), name=f"pre_{name}")
                     for name, value in offered_flags.items()}
        # The job the register holds from the next cycle, when it takes one: the other slot's, or,
        # if that holds none, the queue's head, which the other slot (or a free register) takes
        # in this cycle.
        incoming = {name: Mux(pre_full, pre_flags[name], offered_flags[name])
                    for name in offered_flags}
        incoming_valid = pre_full | self.job.valid

        def set_up_segment(ends_reads, merge):
            # Set up ``job.segments[seg_index]``, which has data; the AW generator and the read
            # issue are idle, or become so in this cycle. ``merge``: its first beat completes
            # the held one (said by each caller from registers, where it knows whether the job
            # before has its last read now, rather than from ``hold_now``, later in the cycle).
            next_segment()
            span_left = burst_span - segment.address[lane_bits:lane_bits + phase_bits]
            # A segment that completes the held beat has its first beat written by the burst
            # before: the AW generator steps over it first (``aw_skip``).
            m.d.sync += [
                aw_beat.eq(segment.address[lane_bits:]),
                aw_left.eq(seg_beats),
                aw_valid.eq(~merge),       # a segment with data has a beat
                aw_skip.eq(merge & (seg_beats != 1)),
                aw_busy.eq(~merge | (seg_beats != 1)),
                aw_span_left.eq(span_left),
                last_burst.eq((seg_beats <= span_left) & ~merge),
                rd_addr.eq(seg_read_start),
                rd_left.eq(seg_reads),
                rd_any.eq(1),              # a segment with data has a source beat
                rd_last.eq(seg_reads == 1),
                rd_prime.eq(seg_prime),
                rd_flush.eq(seg_flush),
                rd_first.eq(1),
                rd_phase.eq(segment.address[lane_bits:lane_bits + phase_bits]),
                rd_shift.eq(seg_shift),
                rd_first_strb.eq(seg_first_strb),
                rd_last_strb.eq(seg_last_strb),
                rd_free.eq(ends_reads),
                rd_free_beats.eq(job.frame_beats),
                src_offset.eq(src_offset + segment.length),
                rd_merge.eq(merge),
            ]
            m.d.comb += setting_up.eq(1)
            with m.If(ends_reads):
                # The job's last reads are set up: nothing reads the job register after this
                # cycle, which catches the next job at once (below).
                m.d.sync += [free_pending.eq(0), job_locked.eq(0)]
                m.d.comb += releasing.eq(1)

        def finish_job(waiting_state, *, in_finish=False, chain=False):
            # Freeing lets the parser overwrite the frame, so a frame without reads is freed
            # only once the data stage holds no earlier job's beat. A job that ends in STREAM
            # (``chain``) had reads, and the data stage frees its frame.
            may_free = 1 if chain else ~free_pending | ~d_beat.valid
            # The job's last read leaves now (STREAM; ``hold_now`` there) and its last beat is
            # held for the job in the register.
            holds_now = rd_any & rd_free & continues_held if chain else C(0)
            with m.If(bursts_fifo.w_rdy & may_free):
                if in_finish:
                    # The register holds the job ended here, unless that job streamed (FINISH
                    # then only waited for room for its count) and the register holds the next.
                    m.d.comb += finishing.eq(~job_held)
                # A job ends in the cycle its last burst is accepted at the latest.
                m.d.comb += [
                    bursts_fifo.w_en.eq(1),
                    entry.bursts.eq(job_bursts + aw_accept),
                    entry.fence_after.eq(fence_after | fence_rides),
                    entry.has_bursts.eq((job_bursts != 0) | aw_accept),
                    entry.shares_last.eq(tail_shared | holds_now),
                ]
                # Cleared as the count is handed over, whether a job follows or not. Cleared as
                # the next job is taken, the enable went through the job queue to the receive
                # engine's ``job_pending`` and back: the 64x64 core's critical path. (A job that
                # ends at its last read and holds its last beat says so in ``holds_now``.)
                m.d.sync += [job_bursts.eq(0), fence_after.eq(0), tail_shared.eq(0)]
                with m.If(free_pending):
                    m.d.sync += [
                        self.free_valid.eq(1),
                        self.free_beats.eq(job.frame_beats),
                    ]
                # The address channel is done with the job's bursts (in STREAM by the condition
                # that ends the job; in FINISH it always is): said again with ``aw_done``, as in
                # SEGMENT, so that a stalled burst's address stays still by construction.
                with m.If(job_held & held_direct):
                    with m.If(aw_done):
                        take_and_set_up(merge_next | holds_now)
                # A FENCE held behind the job rides on the job's entry, as one taken while the
                # job streams does, and the register takes the queue's head at once: behind a
                # job too short to take the FENCE while it streams, the FENCE costs the cycle
                # of that take rather than a FINISH of its own as well.
                with m.Elif(job_held & held_fence & ~fence_after):
                    m.d.comb += fence_rides.eq(1)
                    accept_job()
                with m.Elif(job_held):
                    start_held()
                with m.Else():
                    accept_job()
            with m.Else():
                m.next = waiting_state

        def take_and_set_up(merge):
            # The job register holds the next job, a WRITE with data in its first segment: start
            # it and set that segment up at once, as the current job's last read is issued.
            ends_reads = ~held_rest.any()
            set_up_segment(ends_reads, merge)
            # Over what the set-up shifted and cleared of the finished job: these are now the
            # taken job's.
            m.d.sync += [
                seg_data.eq(held_rest),
                free_pending.eq(~ends_reads),
                job_locked.eq(~ends_reads),
                job_held.eq(0),
            ]
            m.next = "STREAM"

        def start_held():
            # The job register holds the next job, taken from the queue earlier, which is not a
            # WRITE with data in its first segment: start it.
            m.d.sync += [
                seg_data.eq(Cat(held_first, held_rest)),
                free_pending.eq(~held_fence),
                job_locked.eq(1),
                job_held.eq(0),
            ]
            with m.If(held_write):
                m.next = "SEGMENT"
            with m.Else():
                m.next = "FINISH"

        def accept_job():
            # The register is free, or done with its job, and takes the incoming job in this
            # cycle (below): the job starts at once. Loaded whether a job is offered or not, so
            # that these enables depend on the writer's state, not on the job queue's level:
            # that path, from the queue through the receive engine's side and back, was the
            # 64x64 core's critical path. Nothing reads these registers until a job is taken.
            m.d.comb += head_taken.eq(1)
            m.d.sync += [
                seg_data.eq(Cat(incoming["first"], incoming["rest"])),
                free_pending.eq(~incoming["fence"]),
            ]
            with m.If(incoming_valid):
                with m.If(incoming["write"]):
                    m.next = "SEGMENT"
                with m.Else():
                    m.next = "FINISH"
            with m.Else():
                m.next = "IDLE"

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
                with m.Elif(~aw_busy):
                    set_up_segment(~seg_data[1:].any(), merge_next)
                    m.next = "STREAM"

            with m.State("STREAM"):
                # The next segment is set up in the cycle the last read is issued: the read
                # issue is done with its registers by then, and a pending flush has its own.
                # The address channel is done with the segment's bursts by the end of the cycle
                # (``aw_done``: idle, or its last burst accepted now), so a stalled burst's
                # address stays still.
                with m.If(aw_done & ~rd_any | last_read_issued):
                    with m.If(seg_data[0]):
                        set_up_segment(~seg_data[1:].any(), merge_next)
                    with m.Elif(seg_data.any()):
                        m.next = "SEGMENT"
                    with m.Else():
                        finish_job("FINISH", chain=True)
                # A FENCE behind the job streaming its last segment is taken at once: it has no
                # frame and writes nothing, and its done pulse follows the job's. The job
                # register then takes the job after it (below), in time for the job's end.
                with m.Elif(job_held & held_fence & ~fence_after):
                    m.d.sync += fence_after.eq(1)
                    m.d.comb += fence_taken.eq(1)

            with m.State("FINISH"):
                finish_job("FINISH", in_finish=True)

        # The register is done with its job in this cycle: as its last segment is set up
        # (``releasing``), as FINISH ends it, or as the held FENCE is taken or rides on the job
        # that ends. The slots swap, and the register holds the other slot's job, or the queue's
        # head if that slot had none. A free register loads the queue's head instead (its slot
        # stays). Either way the register takes the incoming job: as ``job_held`` until it
        # starts, unless it starts in this cycle (``head_taken``: from IDLE or FINISH, or at the
        # end of a job with nothing held). Holding the next job as soon as the last segment is
        # set up lets a job of one segment start in the cycle after the job before it: jobs of
        # one read then follow one another every cycle.
        m.d.comb += continues_held.eq(job_held & held_continues)
        done_with = Signal()
        m.d.comb += done_with.eq(job_locked & (finishing | releasing | fence_rides | fence_taken))
        # Which slot loads the queue's head is decided by registers alone: the register while it
        # is free, the other slot while the register holds a job and the other slot none.
        other_loads = job_locked & ~pre_full
        m.d.comb += self.job.ready.eq(~job_locked | ~pre_full)
        for number, slot in enumerate(slots):
            with m.If(Mux(cur == number, ~job_locked, other_loads)):
                m.d.sync += [slot.eq(self.job.payload),
                             slot_lane_ends[number].eq(Cat(offered_lane_ends)),
                             slot_beats[number].eq(offered_beats)]
        with m.If(other_loads):
            m.d.sync += [pre_flags[name].eq(value) for name, value in offered_flags.items()]
        # While the other slot holds a job, nothing is taken from the queue, so ``before_last``
        # is the job before it until it leaves.
        pre_start = Mux(cur, slots[0].segments[0].address, slots[1].segments[0].address)
        m.d.comb += [
            pre_continues.eq(pre_flags["direct"] & before_end_open &
                             sum_equals(before_last.address, before_last.length, pre_start)),
            head_continues.eq(offered_flags["direct"] & offered_end_open &
                              sum_equals(offered_last.address, offered_last.length,
                                         self.job.payload.segments[0].address)),
        ]
        with m.If(done_with):
            m.d.sync += [cur.eq(~cur), pre_full.eq(0)]
        with m.Elif(other_loads):
            m.d.sync += pre_full.eq(self.job.valid)
        with m.If(~job_locked | done_with):
            m.d.sync += [
                seg_index.eq(0),
                src_offset.eq(incoming["src_offset"]),
                job_locked.eq(incoming_valid),
                job_held.eq(incoming_valid & ~head_taken),
                held_direct.eq(incoming["direct"]),
                held_continues.eq(Mux(pre_full, pre_continues, head_continues)),
                held_write.eq(incoming["write"]),
                held_first.eq(incoming["first"]),
                held_fence.eq(incoming["fence"]),
                held_rest.eq(incoming["rest"]),
            ]

        # -- AW channel ports (the generator's registers are above) ---------------------------

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
        # The address channel is driven from the AW generator's registers (through the
        # burst-length choice and the skid buffer's multiplexer), so a segment's first burst is
        # offered the cycle after the sequencer sets the segment up: a registered copy would
        # delay every frame's first write by a cycle. A stalled burst stays still: the skid
        # buffer holds it.
        m.d.comb += [
            aw_skid.sink.valid.eq(aw_valid),
            aw_skid.sink.payload.addr.eq(Cat(C(0, lane_bits), aw_beat)),
            aw_skid.sink.payload.len.eq(burst_beats - 1),
            self.axi_awvalid.eq(aw_skid.source.valid),
            self.axi_awaddr.eq(aw_skid.source.payload.addr),
            self.axi_awlen.eq(aw_skid.source.payload.len),
            aw_skid.source.ready.eq(self.axi_awready),
        ]

        # -- B channel: count responses against the oldest unfinished job ---------------------

        b_count = Signal.like(job_bursts)   # responses of the oldest unfinished job so far
        b_error = Signal()
        head = data.View(entry_layout, bursts_fifo.r_data)
        fence_due = Signal()                # the FENCE after the job retired last cycle is done
        head_has_bursts = head.has_bursts
        head_complete = ~head_has_bursts | (b_count == head.bursts)
        job_complete = bursts_fifo.r_rdy & head_complete & ~fence_due
        # A response may be counted only while it surely belongs to the oldest unfinished job:
        # not while that job (or one without bursts) is being retired, or a later job's
        # responses would be counted for it.
        m.d.comb += self.axi_bready.eq(~bursts_fifo.r_rdy | ~head_complete)
        b_arrives = self.axi_bvalid & self.axi_bready

        # A job whose first bytes went out in the last burst of the job before (``shares_last``
        # on that one) is done in error if that burst failed (``carried_error``), and passes it
        # on if its own last burst is that burst too (it has none of its own).
        b_last_error  = Signal()            # the last response counted was not OKAY
        carried_error = Signal()
        job_error = head_has_bursts & b_error | carried_error
        last_burst_error = Mux(head_has_bursts, b_last_error, carried_error)

        m.d.comb += bursts_fifo.r_en.eq(job_complete)
        m.d.sync += [
            fence_due.eq(job_complete & head.fence_after),
            self.done_valid.eq(job_complete | fence_due),
            self.done_error.eq(job_complete & job_error),
        ]
        with m.If(job_complete):
            m.d.sync += [
                b_count.eq(0),
                b_error.eq(0),
                carried_error.eq(head.shares_last & last_burst_error),
            ]
        with m.Elif(b_arrives):
            m.d.sync += [
                b_count.eq(b_count + 1),
                b_error.eq(b_error | (self.axi_bresp != 0)),
                b_last_error.eq(self.axi_bresp != 0),
            ]

        return m
