"""Fakes for tests and benchmarks: a deterministic OpenAI-compatible server with fault injection
(``server``, run as a subprocess by ``server_process``), the pieces it is made of (``text``,
``schema_fill``, ``calls``, ``replies``, ``faults``, ``accelerator``, ``handler``), a dead endpoint
that counts its connection attempts (``outage``), and the start/stop base of every process the tests
start (``process``)."""
