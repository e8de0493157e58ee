"""Prometheus metrics and Kubernetes probes for a worker (``pip install 'conveyor[metrics]'``).

``conveyor worker app:worker --metrics-port 9400``, or from Python::

    from conveyor.metrics import instrument

    metrics = instrument(worker, port=9400)
    worker.run_sync()

serves ``/metrics`` (Prometheus text format), ``/healthz`` (liveness) and ``/readyz``
(readiness) from a thread of its own. The pieces: :mod:`~conveyor.metrics.families` (what is
exported), :mod:`~conveyor.metrics.observer` (jobs and backend calls, as they happen),
:mod:`~conveyor.metrics.poller` (queue depth and workers, read by one leader),
:mod:`~conveyor.metrics.health` (the probes), :mod:`~conveyor.metrics.server` (HTTP).

Importing :mod:`conveyor` never imports prometheus_client; importing this package without it
raises an :class:`ImportError` that says what to install.
"""

from __future__ import annotations

import importlib.util

if (
    importlib.util.find_spec("prometheus_client") is None
):  # pragma: no cover - exercised by a test that hides the package
    raise ImportError("Conveyor's metrics need prometheus-client: pip install 'conveyor[metrics]'")

from conveyor.metrics._instrument import Metrics, instrument

__all__ = ["Metrics", "instrument"]
