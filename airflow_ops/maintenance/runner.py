"""Runs one maintenance action the way every caller (the CLI, the service's schedules) must: one
real run per task and deployment at a time (a lock in the ops store), audited from start to end,
and any exception turned into a failed Report rather than a traceback."""

from __future__ import annotations

import getpass
import logging
import socket
import time
from collections.abc import Callable

from ..store import OpsStore
from .audit import RunStatus, Trigger
from .report import Report

log = logging.getLogger(__name__)


def actor() -> str:
    """Who runs it, for the audit: user@host."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers with arbitrary uids)
        user = "uid-unknown"
    return f"{user}@{socket.gethostname()}"


def guarded(fn: Callable[[], Report], action: str, *, planned: bool, mask: Callable[[str], str]) -> Report:
    """``fn()``, or a failed Report saying what it raised (masked): every failure is reported."""
    try:
        return fn()
    except Exception as exc:
        # Our own errors and click's are phrased for the operator; anything else names its type.
        own = type(exc).__module__.startswith(("airflow_ops", "click")) and str(exc)
        reason = mask(str(exc) if own else f"{type(exc).__name__}: {exc}")
        log.error("maintenance %s failed: %s", action, reason)
        return Report(action, planned, False, f"{action} failed: {reason}", errors=[reason])


def lock_name(deployment: str, task: str) -> str:
    return f"maintenance:{deployment}:{task}"


def run_audited(
    store: OpsStore,
    fn: Callable[[], Report],
    *,
    deployment: str,
    task: str,
    action: str,
    planned: bool,
    trigger: Trigger = Trigger.CLI,
    mask: Callable[[str], str] = lambda text: text,
    who: str | None = None,
) -> Report:
    """Run ``fn`` (which plans or acts) under the task's lock, with an audit record around it.

    A dry run (``planned``) takes no lock: it changes nothing. A real run that finds the lock held
    by another process returns a failed Report at once, without waiting."""
    lock = None
    if not planned:
        lock = store.leadership(lock_name(deployment, task))
        if not lock.try_acquire():
            reason = f"another {task} run for deployment {deployment!r} is in progress (its lock is held)"
            return Report(action, planned, False, reason, errors=[reason])
    try:
        run_id = store.audit_start(
            deployment=deployment,
            task=task,
            action=action,
            trigger=trigger,
            planned=planned,
            actor=who or actor(),
            now=time.time(),
        )
        report = guarded(fn, action, planned=planned, mask=mask)
        status = RunStatus.FAILED if not report.ok else RunStatus.PLANNED if planned else RunStatus.SUCCESS
        store.audit_finish(run_id, status, report.as_dict(), time.time())
        return report
    finally:
        if lock is not None:
            lock.release()
