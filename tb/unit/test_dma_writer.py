"""DmaWriter against a Python reference of where every frame byte lands.

Random WRITE/DISCARD/FENCE jobs run through the writer, with frames stored in a simulated
receive packet buffer and an AXI4 slave model (``axi_model``) that stalls AW/W at random, delays
responses, answers SLVERR to some bursts and checks the protocol. Afterwards the host memory must
equal the reference byte for byte (bytes outside the segments never written, nothing written
twice), each done pulse must follow its job's last response with the right error bit, and each
free pulse must carry its frame's beat count. The packet buffer overwrites a frame as soon as it
is freed, as the parser would, so a read after the free corrupts the result.

Random stimulus is seeded from ``SEED`` (printed, so a failure replays with ``SEED=<n>``).
"""

import os
import random
from dataclasses import dataclass, field

import pytest
from amaranth.hdl import Elaboratable, Module
from amaranth.lib.memory import Memory
from amaranth.sim import Simulator

from tcpdct import layouts
from tcpdct.dma_writer import DmaWriter
from tcpdct.layouts import JobKind
from tcpdct.params import Params

from axi_model import AxiWriteSlave


def _rng(salt):
    seed = int(os.environ.get("SEED", random.randrange(1 << 32)))
    print(f"SEED={seed}")
    return random.Random(f"{seed}-{salt}")


@dataclass
class Job:
    kind: JobKind
    frame: bytes = b""
    src_offset: int = 0
    segments: list = field(default_factory=list)   # (address, length)
    buf_start: int = None                           # chosen when the frame is stored

    def frame_beats(self, data_bytes):
        return -(-len(self.frame) // data_bytes)

    def expected_writes(self):
        writes = {}
        offset = self.src_offset
        for address, length in self.segments:
            for i in range(length):
                writes[address + i] = self.frame[offset + i]
            offset += length
        return writes


class HostAllocator:
    """Hands out host segments at random alignments, some straddling a 4 KiB boundary, with a gap
    after each so that no two segments share a data beat; or, asked for one that ``continues``,
    right where the last one ended, as a connection's next payload is placed."""

    def __init__(self, rng, data_bytes, base=0x7_FFFF_0000):
        self._rng = rng
        self._data_bytes = data_bytes
        self._cursor = base

    def __call__(self, length, continues=False):
        if continues:
            address = self._cursor
            self._cursor += length
            return address
        rng = self._rng
        self._cursor += rng.randint(2 * self._data_bytes, 2 * self._data_bytes + 300)
        if length > 1 and rng.random() < 0.3:
            boundary = (self._cursor // 4096 + 1) * 4096
            self._cursor = boundary - rng.randint(1, min(length - 1, 3 * self._data_bytes))
        address = self._cursor
        self._cursor += length
        return address


def _split(rng, total, n_parts, data_bytes):
    """``n_parts`` positive lengths adding up to ``total``, often with pieces shorter than a
    beat."""
    if rng.random() < 0.4:
        cuts = set()
        while len(cuts) < n_parts - 1:
            cuts.add(rng.randint(1, min(total - 1, data_bytes)) if rng.random() < 0.5
                     else rng.randint(1, total - 1))
    else:
        cuts = set(rng.sample(range(1, total), n_parts - 1))
    bounds = [0, *sorted(cuts), total]
    return [b - a for a, b in zip(bounds, bounds[1:])]


def random_jobs(rng, params, n_jobs, max_frame=None, continue_prob=0.4):
    """Random jobs; a WRITE's first segment starts where the previous segment ended with
    probability ``continue_prob`` (the writer merges the beat they share when the job before is
    a WRITE)."""
    max_frame = max_frame or params.max_frame_bytes
    alloc = HostAllocator(rng, params.data_bytes)
    jobs = []
    for _ in range(n_jobs):
        kind = rng.choices([JobKind.WRITE, JobKind.DISCARD, JobKind.FENCE], [7, 1.5, 1.5])[0]
        if kind == JobKind.FENCE:
            jobs.append(Job(kind))
            continue
        frame = rng.randbytes(rng.randint(14, max_frame))
        if kind == JobKind.DISCARD:
            jobs.append(Job(kind, frame))
            continue
        src_offset = rng.randrange(len(frame))
        room = len(frame) - src_offset
        total = room if rng.random() < 0.5 else rng.randint(1, room)
        n_segments = rng.randint(1, min(params.buffers_per_conn, total))
        lengths = _split(rng, total, n_segments, params.data_bytes)
        continues = [rng.random() < continue_prob] + [False] * (len(lengths) - 1)
        jobs.append(Job(kind, frame, src_offset,
                        [(alloc(n, c), n) for n, c in zip(lengths, continues)]))
    return jobs


class Harness(Elaboratable):
    """The writer wired to a packet buffer memory, as the top level wires it."""

    def __init__(self, params, **writer_options):
        self.dut = DmaWriter(params, **writer_options)
        self.depth = layouts.packet_buffer_depth(params)
        self.packet_buffer = Memory(shape=params.data_width, depth=self.depth, init=[])
        self._read_port = self.packet_buffer.read_port()

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = self.dut
        m.submodules.packet_buffer = self.packet_buffer
        m.d.comb += [
            self._read_port.addr.eq(self.dut.read_addr),
            self.dut.read_data.eq(self._read_port.data),
        ]
        return m


def _job_payload(params, job):
    segments = [{"address": a, "length": n} for a, n in job.segments]
    # Segments past ``n_segments`` are not the job's: filled with lengths and addresses the
    # writer must ignore, so that writing one shows up as bytes outside the segments.
    segments += [{"address": 0x7000_0000 + (slot << 12), "length": 1 + slot}
                 for slot in range(len(segments), params.buffers_per_conn)]
    return {
        "kind":        job.kind,
        "buf_start":   job.buf_start or 0,
        "frame_beats": job.frame_beats(params.data_bytes),
        "src_offset":  job.src_offset,
        "n_segments":  len(job.segments),
        "segments":    segments,
    }


def _simulate(harness, processes, testbench):
    """Runs ``harness`` with a clock, the ``processes`` and the ``testbench`` until it returns."""
    sim = Simulator(harness)
    sim.add_clock(1e-8)
    for process in processes:
        sim.add_process(process)
    sim.add_testbench(testbench)
    sim.run()


def run_jobs(params, jobs, rng, *, job_gap=(0, 0), max_cycles=200_000, **slave_options):
    """Runs ``jobs`` through the writer; returns (slave, done pulses, free pulses, accept
    cycles)."""
    harness = Harness(params)
    dut = harness.dut
    data_bytes = params.data_bytes
    depth = harness.depth

    segment_owner = sorted(
        (address - address % data_bytes, address + length, number)
        for number, job in enumerate(jobs) for address, length in job.segments)

    def owner_of(burst_addr):
        for start, end, number in segment_owner:
            if start <= burst_addr < end:
                return number
        raise AssertionError(f"burst at {burst_addr:#x} is in no segment")

    error_jobs = slave_options.pop("error_jobs", set())
    error_prob = slave_options.pop("error_prob", 0.5)
    slave = AxiWriteSlave(
        dut, data_width=params.data_width, max_burst_beats=params.max_burst_beats, rng=rng,
        error=lambda addr, awlen: owner_of(addr) in error_jobs and rng.random() < error_prob,
        **slave_options)
    slave.owner_of = owner_of

    done_pulses = []      # (cycle, error)
    free_pulses = []      # (cycle, beats)
    accept_cycles = []
    stored = []           # (buf_start, beats) of frames not yet freed, in job order
    # Frames are stored back to back from a random beat, so they wrap around the ring.
    ring = {"head": rng.randrange(depth), "room": depth}

    def store(ctx, job):
        beats = job.frame_beats(data_bytes)
        job.buf_start = ring["head"]
        padded = job.frame + rng.randbytes(beats * data_bytes - len(job.frame))
        for k in range(beats):
            word = int.from_bytes(padded[k * data_bytes:(k + 1) * data_bytes], "little")
            ctx.set(harness.packet_buffer.data[(job.buf_start + k) % depth], word)
        stored.append((job.buf_start, beats))
        ring["head"] = (job.buf_start + beats) % depth
        ring["room"] -= beats

    async def job_driver(ctx):
        cycle = 0
        for job in jobs:
            if job.kind != JobKind.FENCE:
                while ring["room"] < job.frame_beats(data_bytes):
                    await ctx.tick()
                    cycle += 1
                store(ctx, job)
            ctx.set(dut.job.payload, _job_payload(params, job))
            ctx.set(dut.job.valid, 1)
            async for _, _, ready in ctx.tick().sample(dut.job.ready):
                cycle += 1
                if ready:
                    break
            accept_cycles.append(cycle)
            ctx.set(dut.job.valid, 0)
            gap = rng.randint(*job_gap)
            if gap:
                await ctx.tick().repeat(gap)
                cycle += gap

    async def monitor(ctx):
        cycle = 0
        async for _, _, done, error, free, beats in ctx.tick().sample(
                dut.done_valid, dut.done_error, dut.free_valid, dut.free_beats):
            cycle += 1
            if done:
                done_pulses.append((cycle, error))
            if free:
                free_pulses.append((cycle, beats))
                assert stored, f"cycle {cycle}: free pulse with no frame stored"
                start, expected_beats = stored.pop(0)
                assert beats == expected_beats, \
                    f"cycle {cycle}: freed {beats} beats, the frame has {expected_beats}"
                # The parser may reuse freed beats at once; a late read now reads garbage.
                for k in range(expected_beats):
                    ctx.set(harness.packet_buffer.data[(start + k) % depth],
                            rng.getrandbits(params.data_width))
                ring["room"] += expected_beats

    async def testbench(ctx):
        for _ in range(max_cycles):
            await ctx.tick()
            if len(done_pulses) == len(jobs):
                break
        else:
            raise AssertionError(f"only {len(done_pulses)} of {len(jobs)} jobs done after "
                                 f"{max_cycles} cycles")
        await ctx.tick().repeat(50)   # long enough for a spurious extra pulse to show

    _simulate(harness, [slave.process, job_driver, monitor], testbench)
    return slave, done_pulses, free_pulses, accept_cycles


def check_results(params, jobs, slave, done_pulses, free_pulses):
    expected = {}
    for job in jobs:
        expected.update(job.expected_writes())
    assert len(done_pulses) == len(jobs), f"{len(done_pulses)} done pulses for {len(jobs)} jobs"
    assert len(free_pulses) == sum(job.kind != JobKind.FENCE for job in jobs)

    missing = sorted(set(expected) - set(slave.memory))
    stray = sorted(set(slave.memory) - set(expected))
    assert not missing, f"{len(missing)} bytes never written, first at {missing[0]:#x}"
    assert not stray, f"{len(stray)} bytes written outside the segments, first at {stray[0]:#x}"
    wrong = [addr for addr in expected if slave.memory[addr] != expected[addr]]
    assert not wrong, f"{len(wrong)} bytes wrong, first at {wrong[0]:#x}"
    twice = [addr for addr, count in slave.write_counts.items() if count != 1]
    assert not twice, f"{len(twice)} bytes written more than once, first at {twice[0]:#x}"

    # A job's bursts are those that wrote any of its bytes: one that continues the job before
    # inside a host beat has its first bytes in that job's last burst.
    job_of = {address: number for number, job in enumerate(jobs)
              for address in job.expected_writes()}
    bursts_of = {number: [] for number in range(len(jobs))}
    for burst in slave.bursts:
        assert burst.written, f"burst at {burst.addr:#x} wrote nothing"
        for number in sorted({job_of[address] for address in burst.written}):
            bursts_of[number].append(burst)
    previous_done = 0
    for number, (job, (done_cycle, done_error)) in enumerate(zip(jobs, done_pulses)):
        bursts = bursts_of[number]
        assert bool(bursts) == (job.kind == JobKind.WRITE)
        for burst in bursts:
            assert burst.b_cycle is not None, f"job {number}: a response never came back"
            assert done_cycle > burst.b_cycle, \
                f"job {number}: done at {done_cycle} before its response at {burst.b_cycle}"
        expected_error = any(burst.error for burst in bursts)
        assert done_error == expected_error, \
            f"job {number} ({job.kind.name}): done_error {done_error}, expected {expected_error}"
        assert done_cycle > previous_done
        previous_done = done_cycle


SLAVE_PROFILES = {
    "always_ready": dict(),
    "stalls":       dict(aw_ready_prob=0.5, w_ready_prob=0.6, b_delay=(0, 20),
                         b_present_prob=0.7),
    "slow_aw":      dict(aw_ready_prob=0.15, w_ready_prob=0.9, b_delay=(0, 4)),
    "slow_b":       dict(aw_ready_prob=0.9, w_ready_prob=0.9, b_delay=(20, 120)),
    "very_slow_b":  dict(b_delay=(300, 600)),
}


@pytest.mark.parametrize("profile", SLAVE_PROFILES)
@pytest.mark.parametrize("data_width,n_jobs,max_frame", [(64, 150, None), (512, 60, 700)])
def test_random_jobs(data_width, n_jobs, max_frame, profile):
    # At 64 bits the burst length limits bursts; at 512 bits 4 KiB does (64 beats < 256).
    params = Params(data_width=data_width, max_burst_beats=16 if data_width == 64 else 256)
    rng = _rng(f"random-{data_width}-{profile}")
    jobs = random_jobs(rng, params, n_jobs, max_frame)
    writes = [number for number, job in enumerate(jobs) if job.kind == JobKind.WRITE]
    error_jobs = set(rng.sample(writes, len(writes) // 5))
    slave, done, free, _ = run_jobs(params, jobs, rng, job_gap=(0, 3), error_jobs=error_jobs,
                                    **SLAVE_PROFILES[profile])
    check_results(params, jobs, slave, done, free)
    assert any(error for _, error in done) == any(b.error for b in slave.bursts)
    if profile == "very_slow_b":
        # Each job's writes must start before the earlier jobs' responses are back.
        first_aw = {}
        for burst in slave.bursts:
            first_aw.setdefault(slave.owner_of(burst.addr), burst.aw_cycle)
        overlapping = sum(1 for number, cycle in first_aw.items()
                          if any(b.b_cycle > cycle for b in slave.bursts
                                 if slave.owner_of(b.addr) < number))
        assert overlapping >= len(first_aw) // 2, \
            f"only {overlapping} of {len(first_aw)} jobs wrote before earlier responses"


@pytest.mark.parametrize("data_width", [64, 512])
def test_corner_jobs(data_width):
    """Hand-picked alignments: segments of one byte in every lane, ending on every lane,
    exactly one beat, exactly at and across 4 KiB, and jobs without writes back to back."""
    params = Params(data_width=data_width)
    data_bytes = params.data_bytes
    rng = _rng(f"corner-{data_width}")
    frame = rng.randbytes(params.max_frame_bytes)
    jobs = [Job(JobKind.FENCE), Job(JobKind.DISCARD, frame[:100]), Job(JobKind.FENCE)]
    base = 0x1234_5000
    for lane in range(0, data_bytes, max(1, data_bytes // 8)):
        jobs.append(Job(JobKind.WRITE, frame, lane, [(base + 3 * data_bytes + lane, 1)]))
        jobs.append(Job(JobKind.WRITE, frame, 0, [(base + 7 * data_bytes, lane + 1)]))
        jobs.append(Job(JobKind.WRITE, frame, data_bytes - lane,
                        [(base + 11 * data_bytes, data_bytes)]))
        base += 0x100 * data_bytes // 8 + 0x1000
    jobs.append(Job(JobKind.WRITE, frame, 3, [(0x2000 - 5, 10), (0x4000 - 600, 1200),
                                              (0x9000 - 3, 5)]))
    jobs.append(Job(JobKind.WRITE, frame, 0, [(0xF000, len(frame))]))
    jobs.append(Job(JobKind.WRITE, frame, 1, [(0x20000 - 1, len(frame) - 1)]))
    jobs.append(Job(JobKind.WRITE, frame, 0, [(0xFFFF_FFFF_FFFF_F000 - 700, 1400)]))
    slave, done, free, _ = run_jobs(params, jobs, rng, **SLAVE_PROFILES["stalls"])
    check_results(params, jobs, slave, done, free)


def test_throughput_one_write_job():
    """A 1460-byte payload streams at >= 0.95 W beats per cycle, counted from the job's
    acceptance to its last W beat, with a slave that is always ready."""
    params = Params(data_width=64)
    rng = _rng("throughput")
    frame = rng.randbytes(1514)
    jobs = [Job(JobKind.WRITE, frame, 54, [(0x8000_0000 + 2, 1460)])]
    slave, done, free, accepted = run_jobs(params, jobs, rng)
    check_results(params, jobs, slave, done, free)
    beats = len(slave.w_cycles)
    assert beats == -(-(2 + 1460) // 8)
    cycles = slave.w_cycles[-1] - accepted[0]
    rate = beats / cycles
    print(f"{beats} W beats in {cycles} cycles: {rate:.3f} beats/cycle")
    assert rate >= 0.95, f"{rate:.3f} W beats per cycle"


def test_fence_behind_jobs_of_one_read_is_free():
    """Jobs of one read, each followed by a command's FENCE, as a driver reposting a buffer per
    short frame makes them: the writer takes one job per cycle, the FENCEs included. A FENCE
    behind a job too short to take it while it streams rides on the job's count as the job ends
    (it cost two cycles of its own until the fourteenth session)."""
    params = Params(data_width=512)
    rng = _rng("fence-one-read")
    jobs = []
    for n in range(12):
        length = rng.randint(1, params.data_bytes // 2)
        address = 0x4000_0000 + n * 0x1000 + rng.randrange(params.data_bytes - length)
        src = rng.randrange(params.data_bytes - length)
        # The payload's bytes sit in one source beat and land in one host beat: one read.
        jobs.append(Job(JobKind.WRITE, rng.randbytes(src + length), src, [(address, length)]))
        jobs.append(Job(JobKind.FENCE))
    slave, done, free, accepted = run_jobs(params, jobs, rng)
    check_results(params, jobs, slave, done, free)
    assert [cycle - accepted[0] for cycle in accepted] == list(range(len(jobs))), accepted


@pytest.mark.parametrize("frame_bytes", [574, 1514])
def test_back_to_back_jobs_cost_their_source_beats(frame_bytes):
    """Jobs queued back to back cost the writer one cycle per source beat read, and nothing
    per job or per segment, at 512 bits with an always-ready slave. The exceptions: a segment
    whose last output beat needs no further source beat (a flush) costs a cycle more, unless the
    next segment starts with a read that only primes the realigner and so has a cycle to spare;
    a segment of fewer reads than its bursts plus one waits for its last address; and a command's
    FENCE is free behind a last segment of five reads or more, one cycle at most otherwise. Segments
    start at random lanes (the harness tells jobs apart by the beats they write, so no two share
    a beat), a fifth of the payloads split over two buffers, and a FENCE follows 30 % of them."""
    params = Params(data_width=512)
    data_bytes = params.data_bytes
    rng = _rng(f"back-to-back-{frame_bytes}")
    payload = frame_bytes - 54
    jobs = []
    address = 0x4000_0000 + rng.randrange(data_bytes)
    for _ in range(40):
        frame = rng.randbytes(frame_bytes)
        if rng.random() < 0.2:
            cut = rng.randrange(1, payload)
            segments = [(address, cut), (address + 0x10_0000, payload - cut)]
        else:
            segments = [(address, payload)]
        jobs.append(Job(JobKind.WRITE, frame, 54, segments))
        if rng.random() < 0.3:
            jobs.append(Job(JobKind.FENCE))   # a command's job
        end = segments[-1][0] + segments[-1][1]
        address = end + (-end) % data_bytes + rng.randrange(data_bytes)
    slave, done, free, accepted = run_jobs(params, jobs, rng)
    check_results(params, jobs, slave, done, free)

    burst_bytes = min(4096, params.max_burst_beats * data_bytes)
    segments = []   # (cycles, primes, flushes) per segment, in order
    fence_cycles = 0
    for job in jobs:
        if job.kind == JobKind.FENCE:
            # Taken while the job before it streams its last segment, so that the job after
            # it is caught in time, if that segment is long enough; otherwise it rides on that
            # job's count as the job ends, and costs at most the cycle of the next job's take.
            fence_cycles += 1 if segments[-1][0] < 5 else 0
            continue
        offset = job.src_offset
        for host, length in job.segments:
            src_lane, host_lane = offset % data_bytes, host % data_bytes
            reads = -(-(src_lane + length) // data_bytes)
            beats = -(-(host_lane + length) // data_bytes)
            bursts = (host + length - 1) // burst_bytes - host // burst_bytes + 1
            primes = src_lane >= host_lane
            # The next segment is set up once the last read is issued and the last burst's
            # address accepted, which takes a cycle after the set-up and one per burst.
            segments.append((max(reads, bursts + 1), primes, beats - reads + primes))
            offset += length
    budget = fence_cycles + sum(cycles for cycles, _, _ in segments)
    budget += sum(flush and not next_primes for (_, _, flush), (_, next_primes, _)
                  in zip(segments, segments[1:] + [(0, False, 0)]))
    cycles = slave.w_cycles[-1] - accepted[0]
    print(f"{cycles} cycles for a budget of {budget}")
    # The first job's set-up, the read port's latency and the two data stages come on top,
    # once.
    assert cycles <= budget + 4, f"{cycles} cycles for a budget of {budget}"


def _host_beats(jobs, data_bytes):
    """The host beats the jobs' bytes fall in."""
    return {address // data_bytes for job in jobs for address in job.expected_writes()}


@pytest.mark.parametrize("profile", ["always_ready", "stalls"])
@pytest.mark.parametrize("data_width", [64, 512])
def test_payloads_placed_one_after_another_write_each_beat_once(data_width, profile):
    """A connection's payloads placed one after the other (each job's segment starting where
    the job before ended, inside a host beat) write every host beat once: the earlier job's
    last beat is held and goes out completed by the later job's first. Without that, the beat
    where two payloads join goes out twice, and at 512 bits a connection's 518-byte payloads
    need 9.07 W beats per 9-beat frame. Some payloads end on a beat boundary (nothing to share)
    and some are split over two buffers, the second elsewhere."""
    params = Params(data_width=data_width)
    data_bytes = params.data_bytes
    rng = _rng(f"placed-{data_width}-{profile}")
    jobs = []
    address = 0x4000_0000 + rng.randrange(data_bytes)
    for _ in range(40):
        payload = rng.choice([518, 202, 74, rng.randint(1, 3 * data_bytes)])
        frame = rng.randbytes(54 + payload)
        trim = (address + payload) % data_bytes
        if rng.random() < 0.1 and payload > trim:
            payload -= trim                                 # ends on a beat boundary
        if rng.random() < 0.15 and payload > 1:
            cut = rng.randrange(1, payload)
            segments = [(address, cut), (address + 0x10_0000, payload - cut)]
            address = address + 0x10_0000 + payload - cut
        else:
            segments = [(address, payload)]
            address += payload
        jobs.append(Job(JobKind.WRITE, frame, 54, segments))
    slave, done, free, accepted = run_jobs(params, jobs, rng, **SLAVE_PROFILES[profile])
    check_results(params, jobs, slave, done, free)
    beats = len(slave.w_cycles)
    host_beats = len(_host_beats(jobs, data_bytes))
    assert beats == host_beats, f"{beats} W beats for {host_beats} host beats"


@pytest.mark.parametrize("payload", [518, 202, 74])
def test_payloads_placed_one_after_another_cost_their_source_beats(payload):
    """At 512 bits a connection's payloads placed one after the other cost the writer one cycle
    per source beat read, nothing per job: where one ends in a flush (its last beat needs no
    further read) and the next does not start with a priming read, the flush joins that read's
    beat in one step. Without it the flush took a step of its own, which bound 576-byte frames
    placed on one connection to 0.992 beats per cycle and 256-byte ones to 0.980. Frames carry
    a 54-byte header, as the bench's do."""
    params = Params(data_width=512)
    data_bytes = params.data_bytes
    rng = _rng(f"placed-rate-{payload}")
    address = 0x4000_0000 + rng.randrange(data_bytes)
    jobs = []
    for _ in range(40):
        jobs.append(Job(JobKind.WRITE, rng.randbytes(54 + payload), 54, [(address, payload)]))
        address += payload
    slave, done, free, accepted = run_jobs(params, jobs, rng)
    check_results(params, jobs, slave, done, free)
    assert len(slave.w_cycles) == len(_host_beats(jobs, data_bytes))
    reads = len(jobs) * -(-(54 % data_bytes + payload) // data_bytes)
    cycles = slave.w_cycles[-1] - accepted[0]
    print(f"{cycles} cycles for {reads} reads")
    # Once, on top: the first job's take and set-up, the read port's latency, the two data
    # stages and the W queue.
    assert cycles <= reads + 5, f"{cycles} cycles for {reads} source beats"


def test_an_error_in_a_shared_beat_fails_every_job_it_carries():
    """A job entirely inside the beat where the job before ends (and the one after starts) has
    no burst of its own: its bytes, and the next job's first, go out in the first job's last
    burst. When that burst fails, all three jobs are done in error."""
    params = Params(data_width=512)
    rng = _rng("shared-error")
    frame = rng.randbytes(600)
    base = 0x5000_0000
    jobs = [Job(JobKind.WRITE, frame, 54, [(base + 10, 100)]),        # ends at lane 46
            Job(JobKind.WRITE, frame, 54, [(base + 110, 5)]),         # lanes 46..50
            Job(JobKind.WRITE, frame, 54, [(base + 115, 300)]),       # from lane 51 on
            Job(JobKind.WRITE, frame, 54, [(base + 0x1000, 64)])]     # elsewhere, no error
    slave, done, free, _ = run_jobs(params, jobs, rng, error_jobs={0}, error_prob=1.0)
    check_results(params, jobs, slave, done, free)
    assert len(slave.w_cycles) == len(_host_beats(jobs, params.data_bytes))
    assert [error for _, error in done] == [True, True, True, False]


@pytest.mark.parametrize("jobs_in_flight", [1, 3])
def test_jobs_held_bound_is_tight(jobs_in_flight):
    """With write responses held back, the writer takes exactly ``jobs_held_max`` jobs when every
    WRITE is followed by a FENCE, and then no more: the top level sizes the event queue's
    completion FIFO with that bound, and a done pulse beyond it would be lost."""
    params = Params(data_width=512)
    harness = Harness(params, jobs_in_flight=jobs_in_flight)
    dut = harness.dut
    rng = _rng(f"held-{jobs_in_flight}")
    slave = AxiWriteSlave(dut, data_width=params.data_width,
                          max_burst_beats=params.max_burst_beats, rng=rng,
                          b_delay=(10**6, 10**6))
    jobs = []
    for n in range(2 * dut.jobs_held_max):
        # Eight reads each: long enough for the FENCE behind to be taken while the job streams.
        jobs.append(Job(JobKind.WRITE, bytes(512), 0, [(0x4000_0000 + n * 0x1000, 512)]))
        jobs.append(Job(JobKind.FENCE))
    taken = []
    done = []   # cycles of done pulses

    async def job_driver(ctx):
        for number, job in enumerate(jobs):
            job.buf_start = 0
            ctx.set(dut.job.payload, _job_payload(params, job))
            ctx.set(dut.job.valid, 1)
            async for _, _, ready in ctx.tick().sample(dut.job.ready):
                if ready:
                    break
            taken.append(number)

    async def monitor(ctx):
        cycle = 0
        async for _, _, pulse in ctx.tick().sample(dut.done_valid):
            cycle += 1
            if pulse:
                done.append(cycle)

    async def testbench(ctx):
        await ctx.tick().repeat(300)

    _simulate(harness, [slave.process, job_driver, monitor], testbench)
    assert not done, f"done pulses at cycles {done} with no write response back"
    assert len(slave.bursts) == jobs_in_flight + 1
    assert len(taken) == dut.jobs_held_max, \
        f"{len(taken)} jobs taken, {dut.jobs_held_max} expected"
