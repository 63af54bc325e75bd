"""pytest entry of the DCT loop tests (transmit engine, resynchronisation, buffer requests): run
``test_dct_loop`` on the same builds as the system tests, at 64 and at 512 bits.

``TCPDCT_SEED`` and ``TCPDCT_TESTCASE`` work as for ``test_system_runner.py``.
"""

from test_system_runner import run_system


def test_dct_loop_64():
    run_system(64, "test_dct_loop")


def test_dct_loop_512():
    run_system(512, "test_dct_loop")
