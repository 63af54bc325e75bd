"""Top-level port sets, flat and named the way cocotbext-axi's ``from_prefix`` expects.

Amaranth names a nested port ``prefix__member``; FPGA flows and cocotbext-axi expect
``prefix_member``. The top-level component therefore declares each bus as flat members built
here, and converts to the internal ``lib.stream`` interfaces inside.
"""

from amaranth.lib.wiring import In, Out


__all__ = ["axis_sink", "axis_source", "axi4_write_master", "axil_slave", "AXI_ID_WIDTH",
           "AXIL_ADDR_WIDTH"]


AXI_ID_WIDTH    = 4
AXIL_ADDR_WIDTH = 12


def _axis(prefix, data_width, user_width, forward, backward):
    members = {
        f"{prefix}_tdata":  forward(data_width),
        f"{prefix}_tkeep":  forward(data_width // 8),
        f"{prefix}_tvalid": forward(1),
        f"{prefix}_tready": backward(1),
        f"{prefix}_tlast":  forward(1),
    }
    if user_width:
        members[f"{prefix}_tuser"] = forward(user_width)
    return members


def axis_sink(prefix, data_width, user_width=0):
    """An AXI4-Stream input port."""
    return _axis(prefix, data_width, user_width, In, Out)


def axis_source(prefix, data_width, user_width=0):
    """An AXI4-Stream output port."""
    return _axis(prefix, data_width, user_width, Out, In)


def axi4_write_master(prefix, data_width, addr_width=64):
    """The write half of an AXI4 master (AW, W and B channels)."""
    return {
        f"{prefix}_awid":    Out(AXI_ID_WIDTH),
        f"{prefix}_awaddr":  Out(addr_width),
        f"{prefix}_awlen":   Out(8),
        f"{prefix}_awsize":  Out(3),
        f"{prefix}_awburst": Out(2),
        f"{prefix}_awlock":  Out(1),
        f"{prefix}_awcache": Out(4),
        f"{prefix}_awprot":  Out(3),
        f"{prefix}_awvalid": Out(1),
        f"{prefix}_awready": In(1),
        f"{prefix}_wdata":   Out(data_width),
        f"{prefix}_wstrb":   Out(data_width // 8),
        f"{prefix}_wlast":   Out(1),
        f"{prefix}_wvalid":  Out(1),
        f"{prefix}_wready":  In(1),
        f"{prefix}_bid":     In(AXI_ID_WIDTH),
        f"{prefix}_bresp":   In(2),
        f"{prefix}_bvalid":  In(1),
        f"{prefix}_bready":  Out(1),
    }


def axil_slave(prefix, addr_width=AXIL_ADDR_WIDTH):
    """A 32-bit AXI4-Lite slave."""
    return {
        f"{prefix}_awaddr":  In(addr_width),
        f"{prefix}_awprot":  In(3),
        f"{prefix}_awvalid": In(1),
        f"{prefix}_awready": Out(1),
        f"{prefix}_wdata":   In(32),
        f"{prefix}_wstrb":   In(4),
        f"{prefix}_wvalid":  In(1),
        f"{prefix}_wready":  Out(1),
        f"{prefix}_bresp":   Out(2),
        f"{prefix}_bvalid":  Out(1),
        f"{prefix}_bready":  In(1),
        f"{prefix}_araddr":  In(addr_width),
        f"{prefix}_arprot":  In(3),
        f"{prefix}_arvalid": In(1),
        f"{prefix}_arready": Out(1),
        f"{prefix}_rdata":   Out(32),
        f"{prefix}_rresp":   Out(2),
        f"{prefix}_rvalid":  Out(1),
        f"{prefix}_rready":  In(1),
    }


def top_ports(params):
    """Every port of the top level: ``s_axis_rx``, ``s_axis_tx``/``m_axis_tx``, ``s_axis_cmd``,
    ``m_axis_evt``, ``m_axi`` (DMA) and ``s_axil`` (registers)."""
    from .records import RECORD_BITS
    return {
        **axis_sink("s_axis_rx", params.data_width, user_width=1),
        **axis_sink("s_axis_tx", params.data_width),
        **axis_source("m_axis_tx", params.data_width),
        **axis_sink("s_axis_cmd", RECORD_BITS),
        **axis_source("m_axis_evt", RECORD_BITS),
        **axi4_write_master("m_axi", params.data_width),
        **axil_slave("s_axil"),
    }
