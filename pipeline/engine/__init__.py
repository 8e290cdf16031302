"""The engine adapter: the one package that imports Faust, mode and aiokafka.

The runtime's core (pipeline.streaming) works through the ports of
pipeline.streaming.ports; this package implements them on faust-streaming, and holds
what Faust needs fixed (``fixes``), what it does per event that we do per batch
(``fast_path``), its stores reached directly (``store``, ``tables``, ``restore``,
``copies``), the group membership and fetch positions (``membership``, ``lag``) and the
Faust app itself (``app``). Every private name it touches is pinned by
tests/unit/engine/test_faust_internals.py.
"""

# The Faust version whose code this package's classes replace.
FAUST_VERSION = "0.15.3"
