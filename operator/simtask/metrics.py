"""Prometheus metrics of the operator: `simtask_` prefix, base units, no per-task labels."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)

TASKS = Gauge(
    "simtask_tasks", "SimulationTasks by phase and MachineGroup", ["phase", "machine_group"]
)
TRANSITIONS = Counter(
    "simtask_transitions_total", "Phase transitions of SimulationTasks", ["from_phase", "to_phase"]
)
RESUBMISSIONS = Counter(
    "simtask_resubmissions_total", "Automatic resubmissions after an executor was lost", ["reason"]
)
QUEUE_WAIT = Histogram(
    "simtask_queue_wait_seconds",
    "Time from Submitted to Started of an attempt",
    ["machine_group"],
    buckets=DURATION_BUCKETS,
)
RUN_DURATION = Histogram(
    "simtask_run_duration_seconds",
    "Time from Started to the end of an attempt",
    ["machine_group", "outcome"],
    buckets=DURATION_BUCKETS,
)
RECONCILE_DURATION = Histogram(
    "simtask_reconcile_duration_seconds",
    "Time of one reconcile pass of a task",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RECONCILE_ERRORS = Counter(
    "simtask_reconcile_errors_total", "Reconcile passes that failed", ["kind"]
)
WATCH_RESTARTS = Counter(
    "simtask_watch_restarts_total",
    "Watches started again after a failure: error, silent (read timeout) or expired",
    ["resource", "reason"],
)
API_ERRORS = Counter(
    "simtask_api_errors_total", "Kubernetes API requests that failed", ["verb", "resource", "code"]
)
WORKQUEUE_DEPTH = Gauge("simtask_workqueue_depth", "Keys waiting to be reconciled", ["queue"])
WORKQUEUE_WAIT = Histogram(
    "simtask_workqueue_wait_seconds",
    "Time a key waited in the work queue before a worker took it",
    ["queue"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
WORKQUEUE_RETRIES = Counter(
    "simtask_workqueue_retries_total", "Keys put back with backoff after a failed pass", ["queue"]
)
BATCHES = Gauge("simtask_batches", "SimulationBatches by phase", ["phase"])
LEADER = Gauge("simtask_leader", "1 while this replica leads (or runs without election)")


class QueueMetrics:
    """A work queue's depth and wait, labelled by the queue's name."""

    def __init__(self, queue: str) -> None:
        self._depth = WORKQUEUE_DEPTH.labels(queue)
        self._wait = WORKQUEUE_WAIT.labels(queue)

    def depth(self, n: int) -> None:
        self._depth.set(n)

    def waited(self, seconds: float) -> None:
        self._wait.observe(seconds)
