"""pytest entry of the DCT loop tests (transmit engine, resynchronisation, buffer requests): run
``test_dct_loop`` on the same build as the system tests.

``TCPDCT_SEED`` and ``TCPDCT_TESTCASE`` work as for ``test_system_runner.py``.
"""

from test_system_runner import run_system


def test_dct_loop_64():
    run_system(64, "test_dct_loop")
