"""``instrument(worker)``: wires the metrics, the probes and their HTTP server to one worker."""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Final

from prometheus_client import CollectorRegistry

from conveyor import __version__
from conveyor._errors import InvalidArgument
from conveyor._worker import Worker
from conveyor.metrics.families import Families
from conveyor.metrics.health import STALL_SECONDS, HealthMonitor
from conveyor.metrics.observer import JobMetrics
from conveyor.metrics.poller import INTERVAL, DepthPoller, LeaderCollector
from conveyor.metrics.server import MetricsServer

DEFAULT_PORT: Final = 9400
# All interfaces: Prometheus scrapes, and the kubelet probes, the pod's IP, never its loopback.
# Nothing served can change anything, and nothing in it is secret (no job ids, payloads or
# hostnames); pass host="127.0.0.1" to keep it on the machine.
DEFAULT_HOST: Final = "0.0.0.0"

log = logging.getLogger("conveyor.metrics")

_instrumented: weakref.WeakSet[Worker] = weakref.WeakSet()


class Metrics:
    """One instrumented worker: its :attr:`registry`, its :attr:`health`, and the server on
    :attr:`port`. :meth:`close` stops serving (the worker itself is not stopped)."""

    def __init__(
        self,
        worker: Worker,
        *,
        port: int,
        host: str,
        depth_interval: float,
        stall_seconds: float,
        process_metrics: bool,
    ) -> None:
        self.worker = worker
        self.registry = CollectorRegistry()
        self.families = Families(self.registry, process=process_metrics)
        self.health = HealthMonitor(stall_seconds=stall_seconds)
        self.observer = JobMetrics(
            self.families, self.health, lambda: (worker.queues, worker.registry.names())
        )
        self.observer.register(self.registry)
        self.collector = LeaderCollector(self.registry)
        self.poller = DepthPoller(
            worker.queue.driver,
            worker_id=worker.id,
            clock=worker.config.clock,
            families=self.families,
            collector=self.collector,
            interval=depth_interval,
        )
        self.families.up.set_function(lambda: 1.0 if self.health.running() else 0.0)
        try:
            self.server = MetricsServer(
                host, port, registry=self.registry, families=self.families, health=self.health
            )
        except OSError as exc:
            raise InvalidArgument(
                f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}"
            ) from exc
        worker.observe(self.observer)
        self._unsubscribe = worker.queue.driver.subscribe(self.observer.on_operation)
        worker.run_beside("metrics", self._run)

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        host = self.server.host
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else f"[{host}]" if ":" in host else host
        return f"http://{shown}:{self.port}"

    async def _run(self, stopping: asyncio.Event) -> None:
        """Beside the worker, under its supervisor: binds the probes to its loop, then polls
        the depth (if it leads) until the worker stops. It never raises: a loop beside the
        worker that keeps failing stops the worker, and metrics must never do that."""
        if self.poller.closed:
            return
        worker, families = self.worker, self.families
        try:
            cfg = worker.config
            self.poller.clock = cfg.clock  # the config may have been replaced since instrument()
            self.health.attach(
                asyncio.get_running_loop(),
                stopping,
                lease_seconds=cfg.lease_seconds,
                renew_interval=cfg.renew_interval,
            )
            families.info.clear()
            families.info.labels(__version__, ",".join(worker.queues)).set(1)
            families.concurrency.set(cfg.concurrency)
            await self.poller.run(stopping)
        except Exception:
            log.exception("the metrics loop failed; the queue depth is no longer exported")
        finally:
            self.health.detach()

    def close(self) -> None:
        """Stop serving and observing; idempotent."""
        self.poller.closed = True
        self._unsubscribe()
        if self.observer in self.worker.observers.observers:
            self.worker.observers.observers.remove(self.observer)
        self.server.close()
        _instrumented.discard(self.worker)


def instrument(
    worker: Worker,
    port: int = DEFAULT_PORT,
    host: str = DEFAULT_HOST,
    *,
    depth_interval: float = INTERVAL,
    stall_seconds: float = STALL_SECONDS,
    process_metrics: bool = True,
) -> Metrics:
    """Export ``worker``'s metrics on ``http://host:port/metrics`` and its probes on
    ``/healthz`` and ``/readyz``, from now on (the server starts at once; the worker's
    figures appear once it runs). ``port=0`` takes any free port (see ``Metrics.port``).

    ``depth_interval``: seconds between two reads of the queue depth by the one worker that
    leads (see :mod:`conveyor.metrics.poller`); ``stall_seconds``: how long the event loop may
    leave a ping unanswered before ``/healthz`` fails; ``process_metrics``: also export the
    process' CPU, memory and garbage collector series (``process_*``, ``python_*``).
    """
    if not isinstance(worker, Worker):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise InvalidArgument(f"instrument() needs a conveyor.Worker, got {worker!r}")
    if worker in _instrumented:
        raise InvalidArgument(f"worker {worker.id} is instrumented already")
    if not 0 <= port <= 65535:
        raise InvalidArgument(f"port must be from 0 to 65535, got {port}")
    if not depth_interval > 0 or not stall_seconds > 0:
        raise InvalidArgument(
            f"depth_interval and stall_seconds must be > 0, got {depth_interval}, {stall_seconds}"
        )
    metrics = Metrics(
        worker,
        port=port,
        host=host,
        depth_interval=depth_interval,
        stall_seconds=stall_seconds,
        process_metrics=process_metrics,
    )
    _instrumented.add(worker)
    log.info(
        "serving metrics on %s/metrics, probes on /healthz and /readyz",
        metrics.url,
        extra={"event": "setup", "worker_id": worker.id},
    )
    return metrics
