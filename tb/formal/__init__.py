"""Formal property harnesses of the core's blocks, proved with Yosys and yosys-smtbmc.

One module per block (:mod:`.match_cam`, :mod:`.rx_engine`, :mod:`.event_queue`,
:mod:`.tx_path`, :mod:`.rx_parser`, :mod:`.dma_writer`); each has a ``proofs()`` function that
returns the :class:`.runner.Proof` objects of that block. :mod:`.runner` turns a proof into RTLIL,
SMT-LIB and a solver run, and ``python -m formal.runner`` runs them all (``make formal``).
"""
