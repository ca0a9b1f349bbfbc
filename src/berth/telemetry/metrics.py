"""Berth's Prometheus metrics, on their own `CollectorRegistry` (no global state).

Names, types, labels and buckets follow Backend.AI's agent so its dashboards keep working:

    backendai_rpc_requests_total{method}                          counter
    backendai_rpc_failure_requests_total{method, exception}       counter
    backendai_rpc_request_duration_seconds{method}                histogram (RPC_BUCKETS)
    backendai_container_utilization{container_metric_name, agent_id, kernel_id, session_id,
        user_id, project_id, value_type}                          gauge, from the stats snapshot
    backendai_device_utilization{device_metric_name, agent_id, device_id, value_type}
                                                                  gauge, from the stats snapshot
    backendai_process_utilization{process_metric_name, agent_id, kernel_id, session_id,
        user_id, project_id, container_id, pid, value_type}      gauge, from the stats snapshot

The names the seed lists (CONTAINER_METRICS, DEVICE_METRICS) come first; every other metric
the snapshot holds is exported too: io_read / io_write / io_scratch_size / pids / mem_* per
kernel, net_rx / net_tx per node (device "node"), and each accelerator plugin's keys
(cuda_*, rocm_*, tpu_*, mock_*) per device and per kernel.
    backendai_sync_container_lifecycle_{trigger,success}_count_total{agent_id}
    backendai_sync_container_lifecycle_failure_count_total{agent_id, exception}
    backendai_stat_task_{trigger,success}_count_total{agent_id, stat_scope}
    backendai_stat_task_failure_count_total{agent_id, stat_scope, exception}
    backendai_stat_task_duration_sec{agent_id, stat_scope}        histogram (STAT_TASK_BUCKETS)
    backendai_agent_heartbeat{agent_id}                           gauge: unix time of last beat
    backendai_agent_cpu_usage{agent_id}                           gauge: agent process CPU %
    backendai_agent_mem_usage{agent_id}                           gauge: agent process RSS bytes
    backendai_agent_gpu_usage{agent_id}                           gauge: mean cuda_util % (GPUs only)
    backendai_kernel_count{agent_id}                              gauge
    backendai_kernel_start_phase_duration_seconds{agent_id, phase} histogram (PHASE_BUCKETS)
    berth_kernel_worker_deaths_total{agent_id, reason}            counter (Berth's own): code
        workers (the interpreter of an interactive kernel) killed by the OOM killer
        (reason="oom-killed") or by SIGBUS on a full /dev/shm (reason="shm-exhausted")
    berth_kernel_auto_restarts_total{agent_id, outcome}           counter (Berth's own): what
        [kernel-lifecycles] restart-policy = "on-failure" did with a container that failed:
        restarted, failed (the new container did not come up), gave-up (restart-max reached)
    berth_warm_pool_size{agent_id, image}                         gauge (Berth's own): idle
        warm-pool containers ready to be claimed, per configured image
    berth_warm_pool_hits_total{agent_id, image}                   counter: creates served by a
        pool container
    berth_warm_pool_misses_total{agent_id, reason}                counter: creates of a pooled
        agent that took the cold path, and why (warmplan.MissReason)
    berth_warm_pool_refill_seconds{agent_id}                      histogram (PHASE_BUCKETS):
        one pool container's start until its runner waits for a claim

What the node holds, so that drift shows instead of being guessed (Berth's own, read at scrape
time; containers from the janitor's last listing):

    berth_node_containers_owned{agent_id}                         gauge: containers with the
        agent's owner label at the last reconcile/sync listing
    berth_node_ledgers{agent_id}                                  gauge: kernel ledgers on disk
    berth_node_scratch_dirs{agent_id}                             gauge: kernel scratch dirs
    berth_node_host_ports_reserved{agent_id}                      gauge: host ports out of the pool
    berth_node_slots_allocated{agent_id, slot}                    gauge: slot amounts allocated
    berth_janitor_reaped_total{agent_id, kind}                    counter: what reconcile (at
        start) and the periodic sync removed: kind="kernel" (a dead kernel cleaned),
        "container" (a container no kernel owns), "scratch" (a scratch dir no ledger owns)

Container and device series are written at scrape time from the latest snapshot
(`snapshot_text`, in chunks), so the series of a terminated kernel disappear as soon as it
leaves the snapshot.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric as PromMetric
from prometheus_client.registry import Collector

from berth.stats import EMPTY_SNAPSHOT, StatsSnapshot
from berth.telemetry.snapshot_text import snapshot_text

RPC_BUCKETS = (0.001, 0.01, 0.1, 0.5, 1, 2, 5, 10, 30, 60)
STAT_TASK_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600)
PHASE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600)
STAT_SCOPES = ("node", "container", "process")
REAPED_KINDS = ("kernel", "container", "scratch")

SnapshotSource = Callable[[], StatsSnapshot]


@dataclass(frozen=True)
class Holdings:
    """What the node holds right now; ``containers`` is None until the first listing."""

    containers: int | None = None
    ledgers: int = 0
    scratch_dirs: int = 0
    host_ports: int = 0
    slots: dict[str, Decimal] = field(default_factory=dict)


HoldingsSource = Callable[[], Holdings]


class HoldingsCollector(Collector):
    """The leak gauges, read from ``source`` at scrape time."""

    def __init__(self, agent_id: str, source: HoldingsSource | None = None) -> None:
        self.agent_id = agent_id
        self.source = source

    def describe(self) -> Iterable[PromMetric]:
        return []

    def collect(self) -> Iterable[PromMetric]:
        if self.source is None:
            return
        held = self.source()
        for name, doc, value in (
            ("berth_node_containers_owned",
             "Containers with this agent's owner label at the last reconcile/sync listing",
             held.containers),
            ("berth_node_ledgers", "Kernel ledgers on disk", held.ledgers),
            ("berth_node_scratch_dirs", "Kernel scratch directories", held.scratch_dirs),
            ("berth_node_host_ports_reserved", "Host ports taken from the pool", held.host_ports),
        ):
            if value is None:
                continue
            family = GaugeMetricFamily(name, doc, labels=["agent_id"])
            family.add_metric([self.agent_id], float(value))
            yield family
        slots = GaugeMetricFamily("berth_node_slots_allocated",
                                  "Resource slot amounts allocated to kernels",
                                  labels=["agent_id", "slot"])
        for slot, amount in sorted(held.slots.items()):
            slots.add_metric([self.agent_id, slot], float(amount))
        yield slots


class BerthMetrics:
    """Every metric the agent exposes; the lead wires the observe_* calls and the snapshot."""

    def __init__(self, agent_id: str, snapshot: SnapshotSource = lambda: EMPTY_SNAPSHOT,
                 *, holdings: HoldingsSource | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.agent_id = agent_id
        self.registry = CollectorRegistry(auto_describe=True)
        self._clock = clock
        self._snapshot = snapshot  # its families are written at scrape time (snapshot_text)
        self._holdings = HoldingsCollector(agent_id, holdings)
        self.registry.register(self._holdings)
        self._rpc()
        self._tasks()
        self._agent()
        self._warm_pool()

    def _rpc(self) -> None:
        r = self.registry
        self.rpc_requests = Counter("backendai_rpc_requests", "RPC requests", ["method"],
                                    registry=r)
        self.rpc_failures = Counter("backendai_rpc_failure_requests", "Failed RPC requests",
                                    ["method", "exception"], registry=r)
        self.rpc_duration = Histogram("backendai_rpc_request_duration_seconds",
                                      "RPC request duration", ["method"],
                                      buckets=RPC_BUCKETS, registry=r)

    def _tasks(self) -> None:
        r, a, s = self.registry, ["agent_id"], ["agent_id", "stat_scope"]
        prefix = "backendai_sync_container_lifecycle"
        self.sync_trigger = Counter(f"{prefix}_trigger_count", "Lifecycle syncs", a, registry=r)
        self.sync_success = Counter(f"{prefix}_success_count", "Lifecycle sync ok", a, registry=r)
        self.sync_failure = Counter(f"{prefix}_failure_count", "Lifecycle sync failed",
                                    [*a, "exception"], registry=r)
        self.stat_trigger = Counter("backendai_stat_task_trigger_count", "Stat tasks", s,
                                    registry=r)
        self.stat_success = Counter("backendai_stat_task_success_count", "Stat tasks ok", s,
                                    registry=r)
        self.stat_failure = Counter("backendai_stat_task_failure_count", "Stat tasks failed",
                                    [*s, "exception"], registry=r)
        self.stat_duration = Histogram("backendai_stat_task_duration_sec", "Stat task duration",
                                       s, buckets=STAT_TASK_BUCKETS, registry=r)
        # Zero series from the start (no exception: label empty), so failure rates read 0
        # instead of "no data" on a healthy agent.
        self.sync_failure.labels(self.agent_id, "")
        for scope in STAT_SCOPES:
            self.stat_failure.labels(self.agent_id, scope, "")

    def _agent(self) -> None:
        r, a = self.registry, ["agent_id"]
        self.heartbeat_gauge = Gauge("backendai_agent_heartbeat",
                                     "Unix time of the last heartbeat sent", a, registry=r)
        self.kernel_count = Gauge("backendai_kernel_count", "Kernels on this agent", a,
                                  registry=r)
        self.start_phase = Histogram("backendai_kernel_start_phase_duration_seconds",
                                     "Duration of each kernel start phase",
                                     ["agent_id", "phase"], buckets=PHASE_BUCKETS, registry=r)
        self.worker_deaths = Counter("berth_kernel_worker_deaths",
                                     "Code workers of kernels killed by OOM or SIGBUS",
                                     ["agent_id", "reason"], registry=r)
        self.auto_restarts = Counter("berth_kernel_auto_restarts",
                                     "Kernel containers that ended on their own and the restart "
                                     "policy's outcome (restarted, failed, gave-up)",
                                     ["agent_id", "outcome"], registry=r)
        self.reaped = Counter("berth_janitor_reaped",
                              "What reconcile and the periodic sync removed",
                              ["agent_id", "kind"], registry=r)
        for kind in REAPED_KINDS:  # every series exists from the start, at zero
            self.reaped.labels(self.agent_id, kind)

    def _warm_pool(self) -> None:
        r = self.registry
        self.warm_size = Gauge("berth_warm_pool_size", "Idle warm-pool containers per image",
                               ["agent_id", "image"], registry=r)
        self.warm_hits = Counter("berth_warm_pool_hits", "Creates served from the warm pool",
                                 ["agent_id", "image"], registry=r)
        self.warm_misses = Counter("berth_warm_pool_misses",
                                   "Creates that took the cold path, by reason",
                                   ["agent_id", "reason"], registry=r)
        self.warm_refill = Histogram("berth_warm_pool_refill_seconds",
                                     "Time to start one warm-pool container",
                                     ["agent_id"], buckets=PHASE_BUCKETS, registry=r)

    def observe_warm_pool(self, event: str, value: str = "", seconds: float = 0.0) -> None:
        """``hit`` (value: image), ``miss`` (value: reason), ``refill`` (seconds)."""
        if event == "hit":
            self.warm_hits.labels(self.agent_id, value).inc()
        elif event == "miss":
            self.warm_misses.labels(self.agent_id, value).inc()
        elif event == "refill":
            self.warm_refill.labels(self.agent_id).observe(seconds)
        else:
            raise ValueError(f"unknown warm-pool event {event!r}")

    def set_warm_pool_size(self, image: str, size: int) -> None:
        self.warm_size.labels(self.agent_id, image).set(size)

    def set_snapshot_source(self, source: SnapshotSource) -> None:
        self._snapshot = source

    def set_holdings_source(self, source: HoldingsSource) -> None:
        self._holdings.source = source

    def observe_reaped(self, kind: str, count: int = 1) -> None:
        if kind not in REAPED_KINDS:
            raise ValueError(f"kind must be one of {REAPED_KINDS}, not {kind!r}")
        if count:
            self.reaped.labels(self.agent_id, kind).inc(count)

    def observe_rpc(self, method: str, duration: float, exc: BaseException | None = None) -> None:
        self.rpc_requests.labels(method).inc()
        self.rpc_duration.labels(method).observe(duration)
        if exc is not None:
            self.rpc_failures.labels(method, type(exc).__name__).inc()

    def observe_start_phase(self, phase: str, seconds: float) -> None:
        self.start_phase.labels(self.agent_id, phase).observe(seconds)

    def observe_worker_death(self, reason: str) -> None:
        self.worker_deaths.labels(self.agent_id, reason).inc()

    def observe_auto_restart(self, outcome: str) -> None:
        self.auto_restarts.labels(self.agent_id, outcome).inc()

    def set_kernel_count(self, count: int) -> None:
        self.kernel_count.labels(self.agent_id).set(count)

    def heartbeat(self, at: float | None = None) -> None:
        self.heartbeat_gauge.labels(self.agent_id).set(self._clock() if at is None else at)

    def observe_lifecycle_sync(self, exc: BaseException | None = None) -> None:
        self.sync_trigger.labels(self.agent_id).inc()
        if exc is None:
            self.sync_success.labels(self.agent_id).inc()
        else:
            self.sync_failure.labels(self.agent_id, type(exc).__name__).inc()

    def observe_stat_task(self, scope: str, duration: float,
                          exc: BaseException | None = None) -> None:
        if scope not in STAT_SCOPES:
            raise ValueError(f"stat_scope must be one of {STAT_SCOPES}, not {scope!r}")
        self.stat_trigger.labels(self.agent_id, scope).inc()
        self.stat_duration.labels(self.agent_id, scope).observe(duration)
        if exc is None:
            self.stat_success.labels(self.agent_id, scope).inc()
        else:
            self.stat_failure.labels(self.agent_id, scope, type(exc).__name__).inc()

    @contextmanager
    def stat_task(self, scope: str) -> Iterator[None]:
        """Time a stat collection; an exception is counted as a failure and re-raised."""
        started = time.perf_counter()
        try:
            yield
        except Exception as exc:
            self.observe_stat_task(scope, time.perf_counter() - started, exc)
            raise
        self.observe_stat_task(scope, time.perf_counter() - started)

    def exposition_chunks(self) -> Iterator[bytes]:
        """The whole exposition in pieces: the snapshot's families as they are written (one
        piece held at a time), then the registry's own metrics."""
        for text in snapshot_text(self.agent_id, self._snapshot()):
            yield text.encode()
        yield generate_latest(self.registry)

    def exposition(self) -> bytes:
        return b"".join(self.exposition_chunks())
