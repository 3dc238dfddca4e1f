"""A stage of the sweep as a flow run of another deployment (a `gpu` pool worker runs it), watched until it
ends, and submitted again when its run is lost.

A run is *lost* when it crashed (its process died under a living worker, which reports Crashed) or when
it was claimed (Pending/Running) and its flow-run heartbeats stopped for `grid.lost_after_s` seconds: the
worker and its flow-run process were killed together (a preempted pod, `kill -9`, a lost network), so
nothing reports a final state and the run would stay Running for ever. Heartbeats are Prefect's
`prefect.flow-run.heartbeat` events, which every flow run emits every `PREFECT_FLOWS_HEARTBEAT_FREQUENCY`
seconds (the deployments set 30, Prefect's minimum); the sweep reads them from the events API. The lost
run is marked Crashed (so the UI shows the truth) and a new run is submitted with a new idempotency key,
up to `grid.cell_retries` times; it resumes from what the lost one left on shared storage (every stage
is cached by content, training resumes from its last checkpoint, the cell's lock was released by the
kernel with the dead process).

A Failed run is not submitted again: it failed in our code (a bad config, a NaN loss), which fails the
same way again; the stages retry their own transient errors as tasks.

Time the sweep itself could not reach the API (a server restart) does not count towards the bound: a
run's heartbeats could not arrive either.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from sae_core.config import SweepConfig
from tasks.progress import run_logger

POLL_S = 2.0
HEARTBEAT_EVENT = "prefect.flow-run.heartbeat"
CLAIMED = {"PENDING", "RUNNING"}
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


@dataclass
class Outcome:
    """How one watched flow run ended: its final state type, or `LOST`."""

    flow_run_id: UUID
    name: str
    state: str
    message: str = ""


class RunWatch:
    """The liveness of one child run: when the sweep last saw it alive (its heartbeat or a state change),
    in the sweep's monotonic clock, so the workers' and the server's clocks never matter."""

    def __init__(self, lost_after_s: float) -> None:
        self.lost_after_s = lost_after_s
        self.last_alive = time.monotonic()
        self.last_sign: tuple[Any, ...] = ()

    def saw(self, sign: tuple[Any, ...]) -> None:
        """A new state or a new heartbeat is a sign of life; the same one again is not."""
        if sign != self.last_sign:
            self.last_sign = sign
            self.last_alive = time.monotonic()

    def unreachable(self) -> None:
        """The sweep could not ask: the outage does not count against the run."""
        self.last_alive = time.monotonic()

    def silent_s(self) -> float:
        return time.monotonic() - self.last_alive

    def lost(self) -> bool:
        return self.silent_s() > self.lost_after_s


def _last_heartbeat(client: Any, flow_run_id: UUID) -> Any:
    """The id of the run's newest heartbeat event, or None before the first."""
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    page = client.read_events(
        EventFilter(
            event=EventNameFilter(name=[HEARTBEAT_EVENT]),
            resource=EventResourceFilter(id=[f"prefect.flow-run.{flow_run_id}"]),
        ),
        limit=1,
    )
    return page.events[0].id if page.events else None


def watch(flow_run_id: UUID, lost_after_s: float, poll_s: float = POLL_S) -> Outcome:
    """Poll the run until it is final or lost (then it is marked Crashed here)."""
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    watcher = RunWatch(lost_after_s)
    name = str(flow_run_id)
    while True:
        time.sleep(poll_s)
        try:
            with get_client(sync_client=True) as client:
                run = client.read_flow_run(flow_run_id)
                name = run.name
                kind = run.state.type.value if run.state else "SCHEDULED"
                if kind in FINAL:
                    return Outcome(flow_run_id, name, kind, (run.state.message or "") if run.state else "")
                if kind not in CLAIMED:  # Scheduled: waiting for a worker, which is no loss
                    watcher.saw((kind,))
                    continue
                watcher.saw((kind, run.state.timestamp, _last_heartbeat(client, flow_run_id)))
                if watcher.lost():
                    message = (
                        f"no heartbeat for {watcher.silent_s():.0f} s (grid.lost_after_s "
                        f"{lost_after_s:g}): its worker is gone"
                    )
                    client.set_flow_run_state(flow_run_id, Crashed(message=message), force=True)
                    return Outcome(flow_run_id, name, "LOST", message)
        except Exception as exc:  # the API is away (a restart): wait for it, the clock stopped
            run_logger().warning("cannot read flow run %s (%s: %s); retrying", name, type(exc).__name__, exc)
            watcher.unreachable()


def run_stage_deployment(
    cfg: SweepConfig,
    deployment: str,
    parameters: dict[str, Any],
    key: str,
    run_name: str,
    what: str,
    poll_s: float = POLL_S,
) -> Outcome:
    """Run `deployment` as a subflow of the sweep and wait for it, submitting it again when a run is lost
    or crashed (up to `grid.cell_retries` more runs); returns the completed run's outcome, else raises."""
    from prefect.deployments import run_deployment

    logger = run_logger()
    retries = cfg.grid.cell_retries
    outcome: Outcome | None = None
    for attempt in range(retries + 1):
        # A new key per attempt: the same key would return the lost run instead of creating one.
        child = run_deployment(
            name=deployment,
            parameters=parameters,
            idempotency_key=key if attempt == 0 else f"{key}:retry-{attempt}",
            # Named from creation (a deployment run otherwise shows a random name until it starts).
            flow_run_name=run_name,
            timeout=0,
            as_subflow=True,
            # Where the pool's runs go: grid.work_queue (None: the deployment's own queue).
            work_queue_name=cfg.grid.work_queue,
        )
        outcome = watch(child.id, cfg.grid.lost_after_s, poll_s)
        if outcome.state == "COMPLETED":
            return outcome
        if outcome.state not in {"CRASHED", "LOST"}:
            break
        logger.warning(
            "%s: flow run %s of %s %s (%s); %s",
            what,
            outcome.name,
            deployment,
            "was lost" if outcome.state == "LOST" else "crashed",
            outcome.message,
            f"submitting it again ({attempt + 1} of grid.cell_retries {retries})"
            if attempt < retries
            else f"giving up (grid.cell_retries {retries})",
        )
    assert outcome is not None
    raise RuntimeError(
        f"flow run {outcome.name} of {deployment} ended {outcome.state.lower()}: {outcome.message}"
    )


def check_heartbeat(cfg: SweepConfig) -> None:
    """In a run a sweep watches: stop at once when this process sends heartbeats too seldom for
    `grid.lost_after_s` (Prefect's default is every 180 s, and a run started without the deployments'
    env would be taken as lost, and run twice, while it is healthy)."""
    from prefect.runtime import flow_run
    from prefect.settings import get_current_settings

    if flow_run.parent_flow_run_id is None:
        return  # started by hand: nothing watches it
    every = get_current_settings().flows.heartbeat_frequency
    if every is None or every >= cfg.grid.lost_after_s:
        raise ValueError(
            f"PREFECT_FLOWS_HEARTBEAT_FREQUENCY is {every} in this worker's environment, not below "
            f"grid.lost_after_s ({cfg.grid.lost_after_s:g}): the sweep would take this healthy run as "
            "lost between two heartbeats. Set it to 30 (deployments/prefect.yaml does) or raise "
            "grid.lost_after_s."
        )
