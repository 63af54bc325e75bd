"""Layouts of the state and buffer portions of the Delegated Connection Table (SPEC section 2)."""

from amaranth.lib import data


__all__ = ["conn_state_layout", "user_buffer_layout", "buffer_queue_layout", "legacy_buffer_layout"]


#: One entry of the state portion (claim 22, second storage resource).
conn_state_layout = data.StructLayout({
    "rcv_nxt":       32,
    "snd_nxt":       32,
    "last_ack_sent": 32,
    "rcv_wnd":       16,
    "sync_req":      1,
    "buf_req":       1,
})

#: A posted user buffer. Every buffer in a queue has ``filled < length``: a buffer leaves the
#: queue the moment it is completed. ``room`` is ``length - filled``, kept beside ``filled`` so
#: that a frame decision starts from the rooms instead of subtracting first: the decision is the
#: receive engine's critical path (``docs/performance.md``, "Critical paths").
user_buffer_layout = data.StructLayout({
    "address": 64,
    "length":  32,
    "filled":  32,
    "room":    32,
    "tag":     32,
})


def buffer_queue_layout(params):
    """One entry of the buffer portion (claim 22, first storage resource): the queue of posted
    user buffers, kept compacted so that ``slots[0]`` is always the oldest."""
    return data.StructLayout({
        "count": params.buffers_per_conn.bit_length(),
        "slots": data.ArrayLayout(user_buffer_layout, params.buffers_per_conn),
    })


#: A legacy buffer in the driver's ring.
legacy_buffer_layout = data.StructLayout({
    "address": 64,
    "length":  32,
    "tag":     32,
})
