"""The replay schedule: a capture turned into a deterministic sequence of effects on the core.

A replay is a sequence of **steps**, each one of:

``RX``
    A frame from the capture addressed to the local host, given to the receive port.
``TX``
    A frame from the capture that the local host sent, given to the transmit port.
``COMMAND``
    A command record the host driver (:mod:`host_driver`) decided to issue.

RX and TX steps come from the capture, in capture order. COMMAND steps are decided by the host
driver from what the core has reported so far, so they are not known in advance; they are the
same for every backend as long as the backend emits the events the model emits.

**Order of effects** (the contract that makes the model and the RTL see the same inputs in the
same order, ``docs/architecture.md``, "Ordering rule between frames and commands"):

1. Before each group of steps from the capture, the driver issues the commands it wants, one at
   a time: a command is issued only once every earlier RX frame has been decided (RX_PLACED,
   LEGACY or DROP) or waits behind a frame held by a buffer request, and nothing after it is
   issued before its CMD_DONE.
2. Consecutive RX frames of the capture are streamed back to back as one **batch**, at most
   :meth:`HostDriver.rx_batch_limit` frames long; the driver sets that limit so that the batch
   can neither run out of legacy buffers nor reach the receive packet buffer's high-water mark.
   The batch is finished when every frame in it has been decided, or when a frame of it is held
   by a buffer request (R17) and the frames after it wait behind it. Nothing else can happen
   then — the held frame and everything behind it wait in the model and the RTL alike — so the
   driver answers at once: with POST_BUFFER commands (rule 1) that make room, whose events end
   with those of the released frames (the held one placed, then the frames behind it), or, when
   it has no free buffer slot, by letting the request time out (``expire_buffer_request``: the
   held frame goes to legacy ``BUF_TIMEOUT``, R19). This repeats until every frame of the batch
   is decided.
3. A TX frame is given to the transmit port only after every earlier RX frame has been decided,
   so that the DCT update it causes (R31–R33) acts on a settled entry; the step is finished when
   the frame has left the transmit port and its DCT update has taken effect, with the events it
   caused (a RESYNC when the stack's ACK reaches rcv_nxt of a connection in SYNC_REQ, R32).
4. After the last frame of the capture the driver issues its closing commands (RECLAIM of every
   connection still delegated), under rule 1.

Backends
--------
A backend is a :class:`Runner`: an object with the members below. Its methods are coroutines so
that the same :func:`execute` drives the golden model (:class:`ModelRunner`, run with
:func:`asyncio.run`) and a cocotb testbench (awaited inside a cocotb test, where each method
waits on simulator triggers).

``params``
    The :class:`tcpdct.params.Params` the core was built with.
``memory``
    Host memory with ``read(address, length) -> bytes``; DMA writes land there.
``async command(command) -> list[Event]``
    Issue one :class:`tcpdct.records.Command`; return every event emitted from the moment it is
    issued up to and including its CMD_DONE, followed by the events of the frames a held
    frame's re-decision released (R18), in stream order.
``async rx(frames) -> list[Event]``
    Stream the frames (``bytes``, no FCS) back to back into the receive port; return once each
    has been decided or waits behind a held frame, with every event emitted meanwhile, in
    stream order (a held frame's BUF_REQ included).
``async tx(frame) -> list[Event]``
    Send one frame into the transmit port; return once it has left the transmit port and its DCT
    update has taken effect, with the events it caused (a RESYNC, or none) followed by those of
    any frame a held frame's re-decision released.
``async expire_buffer_request(reason) -> list[Event]``
    End the buffer request of the held frame as its timer would (``reason`` is
    ``LegacyReason.BUF_TIMEOUT``); return the events of the frames it decided: the held one
    (LEGACY) and those queued behind it, until one is held again or none is left.
``tx_frames_out``
    How many frames have left the transmit port so far (a DUT runner also checks that they are
    byte for byte the frames sent in, R30, and counts any difference in ``mismatches``).
``mismatches``
    How many differences the backend found between the DUT and the golden model (always 0 for
    the model itself).

:class:`LockstepRunner` turns a DUT runner into one that checks every step against the model.
"""

import struct
from collections import deque
from dataclasses import dataclass
from enum import Enum

from tcpdct.params import Params
from tcpdct.records import EventType, LegacyReason


__all__ = [
    "StepKind", "CapturedFrame", "Step", "CaptureError", "read_pcap", "write_pcap",
    "choose_local_ip", "capture_steps", "TERMINAL_EVENTS", "ModelRunner", "LockstepRunner",
    "execute",
]


#: The events that end a received frame: exactly one per frame (R23).
TERMINAL_EVENTS = (EventType.RX_PLACED, EventType.LEGACY, EventType.DROP)

LINKTYPE_ETHERNET = 1
_LINKTYPE_NAMES = {113: "Linux cooked capture (SLL)", 276: "Linux cooked capture v2 (SLL2)",
                   101: "raw IP", 0: "BSD loopback"}


class StepKind(Enum):
    RX      = "rx"
    TX      = "tx"
    COMMAND = "command"


class CaptureError(ValueError):
    """A capture file this replay cannot use; the message says why and what to do."""


@dataclass(frozen=True)
class CapturedFrame:
    """One frame of a capture.

    Members
    -------
    number : int
        Position in the capture, from 1 (as Wireshark and tcpdump number frames).
    data : bytes
        The captured bytes, Ethernet header first.
    wire_len : int
        Length of the frame on the wire; more than ``len(data)`` if the capture cut it short.
    """
    number:   int
    data:     bytes
    wire_len: int


@dataclass(frozen=True)
class Step:
    """One step of a replay.

    Members
    -------
    kind : StepKind
    frame : CapturedFrame or None
        The captured frame of an RX or TX step.
    command : tcpdct.records.Command or None
        The command of a COMMAND step.
    """
    kind:    StepKind
    frame:   CapturedFrame = None
    command: object = None


def read_pcap(path):
    """The frames of a classic pcap file with Ethernet link type.

    Raises
    ------
    CaptureError
        If the file is not a classic pcap (pcapng included), or its link type is not Ethernet.
    """
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        raise CaptureError(f"{path} is too short to be a pcap file ({len(data)} bytes)")
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        endian = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        endian = ">"
    elif magic == b"\x0a\x0d\x0d\x0a":
        raise CaptureError(f"{path} is pcapng; convert it to classic pcap first "
                           f"(`tcpdump -r {path} -w out.pcap` or `editcap -F pcap`)")
    else:
        raise CaptureError(f"{path} is not a pcap file (magic {magic.hex()})")
    linktype = struct.unpack(endian + "I", data[20:24])[0] & 0x0fffffff
    if linktype != LINKTYPE_ETHERNET:
        name = _LINKTYPE_NAMES.get(linktype, f"link type {linktype}")
        raise CaptureError(
            f"{path} is a {name} capture; the replay needs Ethernet frames (link type 1), "
            f"as the MAC delivers them. Capture on the Ethernet interface itself "
            f"(`tcpdump -i eth0`, not `-i any`)")
    frames = []
    offset = 24
    while offset < len(data):
        if offset + 16 > len(data):
            raise CaptureError(f"{path} ends inside the header of frame {len(frames) + 1}")
        _, _, caplen, wire_len = struct.unpack(endian + "IIII", data[offset:offset + 16])
        offset += 16
        if offset + caplen > len(data):
            raise CaptureError(f"{path} ends inside frame {len(frames) + 1}")
        frames.append(CapturedFrame(len(frames) + 1, data[offset:offset + caplen], wire_len))
        offset += caplen
    return frames


def write_pcap(path, frames):
    """Write ``frames`` (:class:`CapturedFrame` or ``bytes``) as a classic little-endian pcap.

    Timestamps are the frame numbers in microseconds: replays use only the order of frames.
    """
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xa1b2c3d4, 2, 4, 0, 0, 0xffff, LINKTYPE_ETHERNET))
        for number, frame in enumerate(frames, 1):
            data, wire_len = ((frame.data, frame.wire_len) if isinstance(frame, CapturedFrame)
                              else (bytes(frame), len(frame)))
            f.write(struct.pack("<IIII", 0, number, len(data), wire_len) + data)


def _ipv4_tcp(frame):
    """``(src ip, dst ip, tcp payload length)`` of an untagged or 802.1Q-tagged IPv4 frame,
    ``payload length`` None when it is not TCP; None when it is not IPv4."""
    ip = 14
    ethertype = int.from_bytes(frame[12:14], "big")
    if ethertype == 0x8100:
        ip, ethertype = 18, int.from_bytes(frame[16:18], "big")
    if ethertype != 0x0800 or len(frame) < ip + 20:
        return None
    src, dst = (int.from_bytes(frame[ip + n:ip + n + 4], "big") for n in (12, 16))
    ihl = (frame[ip] & 0xf) * 4
    total = int.from_bytes(frame[ip + 2:ip + 4], "big")
    if frame[ip + 9] != 6 or len(frame) < ip + ihl + 13:
        return src, dst, None
    return src, dst, max(0, total - ihl - (frame[ip + ihl + 12] >> 4) * 4)


def choose_local_ip(frames):
    """The IPv4 address (as an integer) that receives the most TCP payload bytes.

    Raises
    ------
    CaptureError
        If the capture has no TCP payload at all.
    """
    received = {}
    for frame in frames:
        parsed = _ipv4_tcp(frame.data)
        if parsed is not None and parsed[2]:
            received[parsed[1]] = received.get(parsed[1], 0) + parsed[2]
    if not received:
        raise CaptureError("The capture carries no TCP payload: give the local address "
                           "explicitly with --local")
    # Ties go to the lower address so that the choice never depends on dictionary order.
    return min(received, key=lambda ip: (-received[ip], ip))


def capture_steps(frames, local_ip):
    """RX and TX steps for ``frames`` as seen by the host with IPv4 address ``local_ip``.

    A frame is TX when its source MAC address is the local host's (learnt from the frames whose
    IPv4 source is ``local_ip``), RX otherwise, so that ARP and other non-IP frames go the same
    way as the host's own traffic.

    Raises
    ------
    CaptureError
        If no frame of the capture was sent by or to ``local_ip``.
    """
    local_macs = set()
    seen = False
    for frame in frames:
        parsed = _ipv4_tcp(frame.data)
        if parsed is not None and local_ip in parsed[:2]:
            seen = True
            if parsed[0] == local_ip:
                local_macs.add(frame.data[6:12])
    if not seen:
        raise CaptureError(f"No frame of the capture is from or to {_dotted(local_ip)}")
    return [Step(StepKind.TX if frame.data[6:12] in local_macs else StepKind.RX, frame)
            for frame in frames]


def _dotted(ip):
    return ".".join(str(ip >> shift & 0xff) for shift in (24, 16, 8, 0))


class ModelRunner:
    """The golden model as a :class:`Runner`.

    Parameters
    ----------
    params : tcpdct.params.Params
        Build parameters; ``Params()`` when omitted.

    Members
    -------
    model : model.Model
        The golden model being driven.
    """

    name = "model"

    def __init__(self, params=None):
        from model import Model
        self.model = Model(params or Params())
        self.params = self.model.params
        self.memory = self.model.memory
        self.mismatches = 0
        self.tx_frames_out = 0

    async def command(self, command):
        return self.model.command(command)

    async def rx(self, frames):
        events = []
        for frame in frames:
            events += self.model.rx_frame(frame)
        return events

    async def tx(self, frame):
        events = list(self.model.tx_frame(frame) or [])
        # The model is the reference for R30: what it transmits is by definition the frame.
        self.tx_frames_out += 1
        return events

    async def expire_buffer_request(self, reason):
        return self.model.expire_buffer_request(reason)


class LockstepRunner:
    """A DUT runner checked step by step against the golden model.

    Every step is given to the model, then to the DUT; the two event lists must be equal. The
    DUT's events are returned, so that the driver reacts to what the hardware really said.

    Parameters
    ----------
    dut : Runner
        The runner that drives the RTL.
    model : ModelRunner, optional
        The reference; a new one with ``dut.params`` when omitted.
    max_logged : int
        How many mismatches to keep in :attr:`log`.

    Members
    -------
    mismatches : int
        Steps whose events differ, plus whatever the DUT runner counted itself.
    log : list of str
        The first ``max_logged`` mismatches, described.
    """

    name = "lockstep"

    def __init__(self, dut, model=None, *, max_logged=20):
        self.dut = dut
        self.model = model if model is not None else ModelRunner(dut.params)
        self.params = dut.params
        self.max_logged = max_logged
        self.log = []
        self._mismatches = 0

    @property
    def memory(self):
        return self.dut.memory

    @property
    def tx_frames_out(self):
        return self.dut.tx_frames_out

    @property
    def mismatches(self):
        return self._mismatches + self.dut.mismatches

    def _compare(self, what, expected, got):
        if expected != got:
            self._mismatches += 1
            if len(self.log) < self.max_logged:
                self.log.append(f"{what}: model {expected!r}, DUT {got!r}")
        return got

    async def command(self, command):
        expected = await self.model.command(command)
        return self._compare(f"command {command!r}", expected, await self.dut.command(command))

    async def rx(self, frames):
        expected = await self.model.rx(frames)
        return self._compare(f"rx of {len(frames)} frame(s)", expected, await self.dut.rx(frames))

    async def tx(self, frame):
        expected = await self.model.tx(frame)
        return self._compare("tx", expected, await self.dut.tx(frame))

    async def expire_buffer_request(self, reason):
        expected = await self.model.expire_buffer_request(reason)
        return self._compare(f"expiry ({reason.name}) of a buffer request", expected,
                             await self.dut.expire_buffer_request(reason))


async def execute(steps, runner, driver, observer=None):
    """Run capture ``steps`` on ``runner`` with ``driver`` deciding the commands.

    Implements the order of effects of this module's docstring.

    Parameters
    ----------
    steps : list of Step
        RX and TX steps, in capture order (:func:`capture_steps`).
    runner : Runner
    driver : host_driver.HostDriver
        Decides the commands and consumes the events.
    observer : callable, optional
        ``observer(step, events)`` is called once per executed step (COMMAND steps included)
        with the events that step itself caused. An RX step is reported once its frame has been
        decided, with every event of that frame (its BUF_REQ, its terminal event and the
        BUF_DONEs of a placed frame), after the step whose events decided it.

    Raises
    ------
    RuntimeError
        If the runner's events cannot be attributed: more terminal events than frames received,
        or a frame left undecided with no buffer request open (R23).
    """
    def notify(step, events):
        if observer is not None:
            observer(step, events)

    undecided = _UndecidedFrames(notify)

    async def perform(step, action, own_events):
        events = await action
        driver.on_events(events, runner.memory)
        own = own_events(events)
        if step is not None:
            notify(step, events[:own])
        undecided.take(events[own:])

    async def settle():
        while True:
            command = driver.next_command()
            if command is not None:
                await perform(Step(StepKind.COMMAND, command=command), runner.command(command),
                              _command_events)
            elif undecided:
                if not driver.buffer_request_open:
                    raise RuntimeError(f"{len(undecided)} frame(s) were received but not "
                                       f"decided, with no buffer request open (R23)")
                # The driver has no buffer to give: the request times out (R19).
                await perform(None, runner.expire_buffer_request(LegacyReason.BUF_TIMEOUT),
                              lambda events: 0)
            else:
                return

    position = 0
    while position < len(steps):
        await settle()
        step = steps[position]
        if step.kind is StepKind.TX:
            driver.on_tx(step.frame.data)
            await perform(step, runner.tx(step.frame.data), _tx_update_events)
            position += 1
            continue
        batch = []
        limit = max(1, driver.rx_batch_limit())
        while (position < len(steps) and steps[position].kind is StepKind.RX
               and len(batch) < limit):
            batch.append(steps[position])
            position += 1
        undecided.extend(batch)
        await perform(None, runner.rx([step.frame.data for step in batch]), lambda events: 0)
    await settle()
    driver.close_all()
    await settle()


def _command_events(events):
    """How many of a command step's events are the command's own: up to its CMD_DONE (R40);
    the events after it are those of frames a held frame's re-decision released."""
    for number, event in enumerate(events):
        if event.type is EventType.CMD_DONE:
            return number + 1
    raise RuntimeError(f"A command ended without CMD_DONE (R40): {events!r}")


def _tx_update_events(events):
    """How many of a TX step's events its DCT update caused (a RESYNC, R32); the events after
    them are those of frames a held frame's re-decision released."""
    number = 0
    while number < len(events) and events[number].type is EventType.RESYNC:
        number += 1
    return number


class _UndecidedFrames:
    """RX steps given to the receive port whose frames have no terminal event yet, oldest first.

    Frames are decided in arrival order, so each terminal event belongs to the oldest undecided
    frame; a BUF_REQ to the oldest too, as only the frame at the head of the receive engine can
    be held (R17); BUF_DONEs right after an RX_PLACED to the frame placed.
    """

    def __init__(self, notify):
        self._notify = notify
        self._frames = deque()

    def __len__(self):
        return len(self._frames)

    def extend(self, steps):
        self._frames.extend((step, []) for step in steps)

    def take(self, events):
        """Attribute ``events`` (frame events only, in stream order) and report decided frames."""
        decided = []
        placed = None
        for event in events:
            if event.type in TERMINAL_EVENTS:
                if not self._frames:
                    raise RuntimeError(f"More terminal events than frames received (R23): "
                                       f"{events!r}")
                step, own = self._frames.popleft()
                own.append(event)
                decided.append((step, own))
                placed = own if event.type is EventType.RX_PLACED else None
            elif event.type is EventType.BUF_DONE and placed is not None:
                placed.append(event)
            elif event.type is EventType.BUF_REQ and self._frames:
                self._frames[0][1].append(event)
                placed = None
            else:
                raise RuntimeError(f"{event!r} belongs to no frame received: {events!r}")
        for step, own in decided:
            self._notify(step, own)
