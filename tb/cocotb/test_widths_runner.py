"""pytest entry of the smoke tests at the data widths between the two that run every system
test (64 and 512 bits, ``test_system_runner.py``): 128 and 256 bits get a build of the whole
core each and the system tests that depend most on the width.

Those are the tests whose frames, payloads and buffers start and end on every byte lane
(``test_alignment_sweep``), whose payloads span buffers mid-beat (``test_span_buffers``) or wrap
the sequence space (``test_place_one_buffer``), that send every special and legacy frame
(``test_legacy_reasons``), and the random traffic; and the DCT loop's held frames, whose
high-water mark is counted in beats (``test_high_water_mark``), and its received and transmitted
frames reaching the sequencer together (``test_rx_and_tx_same_entry``).

``TCPDCT_SEED`` works as for ``test_system_runner.py``.
"""

import pytest

from test_system_runner import run_system


SMOKE_WIDTHS = (128, 256)

#: cocotb tests run at each smoke width, by module; every pause pattern of each.
SMOKE_TESTS = {
    "test_system": ["test_place_one_buffer", "test_span_buffers", "test_alignment_sweep",
                    "test_legacy_reasons", "test_random_traffic"],
    "test_dct_loop": ["test_high_water_mark", "test_rx_and_tx_same_entry"],
}


@pytest.mark.parametrize("data_width", SMOKE_WIDTHS)
def test_width_smoke(data_width):
    # One pytest item per width, so that a pytest-xdist worker never sits waiting on the lock
    # of a build that the other worker is still compiling for the same width.
    failures = []
    for module, names in SMOKE_TESTS.items():
        try:
            run_system(data_width, module, names)
        except AssertionError as failure:
            failures.append(str(failure))
    assert not failures, "\n".join(failures)
