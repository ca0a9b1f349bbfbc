"""Helpers shared by the integration tier: service processes on free loopback ports
(:mod:`support.procs`), the Docker CLI (:mod:`support.docker`), a private dockerd for tests
that restart the engine (:mod:`support.dockerd`) and the chaos tier's leak audit
(:mod:`support.leaks`).

Importable as ``support`` because pytest puts ``tests/`` on ``sys.path`` (``pythonpath``).
Nothing here skips: a missing binary, image or dockerd fails the test with a clear message.
"""

from __future__ import annotations

__all__: list[str] = []
