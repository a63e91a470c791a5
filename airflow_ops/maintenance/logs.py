"""Log retention: ``airflow-ops logs clean`` (issue 4 §3).

:func:`plan_clean` walks the log folder once and counts what the policy would delete, per kind
(task / scheduler / dag_processor / other) and per DAG; :func:`execute_clean` walks it again and
deletes. The plan keeps the policy, the cutoffs and the counts — never a list of paths — so both
steps run in constant memory on millions of files, and every decision is taken again against the
tree as it is when the deletion happens:

- a file is deleted only if its mtime, read (``lstat``) right before the ``unlink``, is older than
  the cutoff fixed by the plan: a log written to since the plan is kept;
- the live task instances are read again from the metadata DB at the start of the execution:
  a task that started or was cleared after the plan keeps its logs;
- symlinks are never followed nor deleted; every folder is opened relative to its parent with
  ``O_NOFOLLOW``, so a folder swapped for a symlink during the walk is not entered either, and
  nothing outside the log folder is ever reached;
- a folder is removed (bottom-up, never the root nor a component's own folder) only when the
  clean emptied it, or it was already empty and older than its retention — a folder Airflow just
  created for a new log is left alone;
- a failure on one file or folder (permission, I/O) is counted and reported, the walk goes on,
  and the report's ``ok`` is False. A file that vanished meanwhile (another cleaner, Airflow) is
  counted apart and is not a failure: it is gone, as wanted.

Without a DSN there is no live-task protection; the policy's ``require_db`` (default True) then
refuses to plan, because the failure this guards against — deleting the log of a task that is
deferred or waiting to retry, silent for longer than the retention — is silent too. With
``require_db=False`` the report says that protection was off.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from airflow_ops.alerts.templating import humanize1024
from airflow_ops.config import _airflow_setting
from airflow_ops.config.logs import REGEX_PREFIX, LogsConfig
from airflow_ops.maintenance.logs_layout import (
    DEFAULT_LAYOUT,
    ROOT,
    DirInfo,
    LogKind,
    LogLayout,
    descend,
    is_log_name,
    printable,
)
from airflow_ops.maintenance.logs_live import LiveReadError, LiveTaskInstances, read_live_task_instances
from airflow_ops.maintenance.report import Progress, Report, no_progress

__all__ = [
    "LogCleanError",
    "LogCleanPlan",
    "LogKind",
    "LogLayout",
    "LogPolicy",
    "execute_clean",
    "find_log_folder",
    "find_log_layout",
    "log_volume_free_bytes",
    "plan_clean",
]

ACTION = "logs.clean"
DAY = 86400.0
# Folders nested deeper than this are reported, not walked (Airflow's layouts are 5 deep).
MAX_DEPTH = 64
# Failures listed one by one in a report; the rest are only counted (constant memory).
MAX_ERRORS_LISTED = 50
# DAGs listed in the human lines of a report (all of them are in ``data``).
MAX_DAG_LINES = 20
_PROGRESS_EVERY = 10_000
_NEVER = float("-inf")  # the cutoff of what is never deleted: no mtime is older
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class LogCleanError(Exception):
    """A clean cannot be planned (folder, database, policy); the message is for the operator."""


# ------------------------------------------------------------------ policy


@dataclass(frozen=True)
class LogPolicy:
    """How long logs are kept, in seconds. ``dag_overrides`` keys are dag_ids, or ``re:<regex>``
    (full match); an exact dag_id wins, then the first matching regex in the mapping's order.
    ``scheduler_retention`` / ``processor_retention`` default to ``retention``; files not
    recognised as Airflow's are kept unless ``other_retention`` is set."""

    retention: float = 30 * DAY
    dag_overrides: Mapping[str, float] = field(default_factory=dict)
    scheduler_retention: float | None = None
    processor_retention: float | None = None
    other_retention: float | None = None
    require_db: bool = True
    live_limit: int = 100_000
    # Emptied folders are removed (a task folder per task instance: millions of inodes otherwise).
    remove_empty_folders: bool = True
    _exact: dict[str, float] = field(init=False, repr=False, compare=False)
    _patterns: tuple[tuple[re.Pattern[str], float], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("retention", "scheduler_retention", "processor_retention", "other_retention"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name}: a retention cannot be negative")
        exact: dict[str, float] = {}
        patterns = []
        for key, seconds in self.dag_overrides.items():
            if seconds < 0:
                raise ValueError(f"dag_overrides: {key}: a retention cannot be negative")
            if key.startswith(REGEX_PREFIX):
                try:
                    patterns.append((re.compile(key[len(REGEX_PREFIX) :]), seconds))
                except re.error as e:
                    raise ValueError(f"dag_overrides: {key}: invalid regular expression: {e}") from None
            else:
                exact[key] = seconds
        object.__setattr__(self, "dag_overrides", dict(self.dag_overrides))
        object.__setattr__(self, "_exact", exact)
        object.__setattr__(self, "_patterns", tuple(patterns))

    @classmethod
    def from_config(cls, config: LogsConfig) -> LogPolicy:
        return cls(
            retention=config.retention,
            dag_overrides=dict(config.dag_overrides),
            scheduler_retention=config.scheduler_retention,
            processor_retention=config.processor_retention,
            other_retention=config.other_retention,
            require_db=config.require_db,
            live_limit=config.live_limit,
            remove_empty_folders=config.remove_empty_folders,
        )

    def retention_for_dag(self, dag_id: str) -> float:
        if dag_id in self._exact:
            return self._exact[dag_id]
        for pattern, seconds in self._patterns:
            if pattern.fullmatch(dag_id):
                return seconds
        return self.retention

    def retention_for_kind(self, kind: LogKind) -> float | None:
        """Task logs: the global retention (per-DAG overrides aside); None = never deleted."""
        if kind is LogKind.SCHEDULER:
            return self.retention if self.scheduler_retention is None else self.scheduler_retention
        if kind is LogKind.PROCESSOR:
            return self.retention if self.processor_retention is None else self.processor_retention
        if kind is LogKind.OTHER:
            return self.other_retention
        return self.retention

    def as_dict(self) -> dict[str, Any]:
        return {
            "retention_seconds": self.retention,
            "dag_overrides_seconds": dict(self.dag_overrides),
            "scheduler_retention_seconds": self.retention_for_kind(LogKind.SCHEDULER),
            "processor_retention_seconds": self.retention_for_kind(LogKind.PROCESSOR),
            "other_retention_seconds": self.other_retention,
            "require_db": self.require_db,
            "remove_empty_folders": self.remove_empty_folders,
        }


# ------------------------------------------------------------------ where the logs are


def _expand(value: str, home: str) -> Path:
    return Path(os.path.expanduser(value.replace("{AIRFLOW_HOME}", home)))


def _airflow_home(environ: Mapping[str, str]) -> str:
    return environ.get("AIRFLOW_HOME") or os.path.expanduser("~/airflow")


def find_log_folder(
    environ: Mapping[str, str] | None = None, *, override: str | os.PathLike[str] | None = None
) -> Path:
    """Airflow's log folder: ``override`` (e.g. the config's ``logs.folder``), else
    ``AIRFLOW__LOGGING__BASE_LOG_FOLDER``, else ``[logging] base_log_folder`` in airflow.cfg
    (``$AIRFLOW_CONFIG`` or ``$AIRFLOW_HOME/airflow.cfg``), else ``$AIRFLOW_HOME/logs``."""
    environ = os.environ if environ is None else environ
    home = _airflow_home(environ)
    if override is not None:
        source, value = "logs.folder", os.fspath(override)
    else:
        source = "[logging] base_log_folder (AIRFLOW__LOGGING__BASE_LOG_FOLDER or airflow.cfg)"
        value = _airflow_setting(environ, "logging", "base_log_folder") or os.path.join(home, "logs")
    folder = _expand(value, home)
    if not folder.is_absolute():
        raise LogCleanError(f"{source}: {printable(value)!r} is not an absolute path")
    return Path(os.path.normpath(folder))


# (section, key, kind, default below AIRFLOW_HOME, the setting names a file in the folder)
_COMPONENT_SETTINGS: tuple[tuple[str, str, LogKind, str, bool], ...] = (
    ("scheduler", "child_process_log_directory", LogKind.SCHEDULER, "logs/scheduler", False),  # 2.x
    ("logging", "dag_processor_child_process_log_directory", LogKind.PROCESSOR, "logs/dag_processor", False),
    (
        "logging",
        "dag_processor_manager_log_location",  # 2.x
        LogKind.PROCESSOR,
        "logs/dag_processor_manager/dag_processor_manager.log",
        True,
    ),
)


def find_log_layout(log_folder: Path, environ: Mapping[str, str] | None = None) -> LogLayout:
    """The component log folders Airflow's config names (their defaults and, if configured
    elsewhere, those too), relative to ``log_folder``; ones outside it are listed as ``outside``."""
    environ = os.environ if environ is None else environ
    home = _airflow_home(environ)
    components = list(DEFAULT_LAYOUT.components)
    outside = []
    root = Path(os.path.normpath(log_folder))
    for section, key, kind, default, is_file in _COMPONENT_SETTINGS:
        value = _airflow_setting(environ, section, key)
        path = _expand(value, home) if value else Path(home) / default
        if is_file:
            path = path.parent
        path = Path(os.path.normpath(path))
        if not path.is_absolute():
            continue
        try:
            rel = path.relative_to(root).parts
        except ValueError:
            if value:  # only a configured location is worth a note; defaults elsewhere are unused
                outside.append(f"[{section}] {key}: {path}")
            continue
        if rel and (rel, kind) not in components:
            components.append((rel, kind))
    return LogLayout(components=tuple(components), outside=tuple(outside))


def log_volume_free_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes available to unprivileged users on the volume holding ``path``
    (the ``airflow_ops_log_volume_free_bytes`` gauge)."""
    return shutil.disk_usage(path).free


# ------------------------------------------------------------------ the walk

# Counters per (kind, dag_id): a list, indexed by these, because the walk updates them per file.
_COUNTERS = (
    "files",
    "bytes",
    "files_deleted",
    "bytes_freed",
    "kept_live_files",
    "kept_live_bytes",
    "kept_recent_files",
    "kept_recent_bytes",
    "failed_files",
)
_FILES, _BYTES, _DEL, _DEL_BYTES, _LIVE, _LIVE_BYTES, _RECENT, _RECENT_BYTES, _FAILED = range(len(_COUNTERS))

Tally = dict[tuple[LogKind, str | None], list[int]]


@dataclass
class _Outcome:
    """What one walk saw and did (or, planning, would do)."""

    tally: Tally = field(default_factory=dict)
    folders_removed: int = 0
    symlinks_skipped: int = 0
    vanished: int = 0
    failures: int = 0
    errors: list[str] = field(default_factory=list)


class _Walk:
    """One depth-first pass over the log folder, planning (counting) or executing (deleting)."""

    def __init__(
        self,
        policy: LogPolicy,
        layout: LogLayout,
        now: float,
        live: LiveTaskInstances | None,
        execute: bool,
        progress: Progress,
        total: int | None,
    ) -> None:
        self.policy = policy
        self.layout = layout
        self.now = now
        self.live = live
        self.execute = execute
        self.progress = progress
        self.total = total
        self.out = _Outcome()
        self.seen = 0
        self._next_progress = _PROGRESS_EVERY
        self._kind_cutoffs = {kind: self._cutoff(policy.retention_for_kind(kind)) for kind in LogKind}
        self._dag_cutoffs: dict[str, float] = {}
        self._other = (self._counts(LogKind.OTHER, None), self._kind_cutoffs[LogKind.OTHER])

    def _cutoff(self, retention: float | None) -> float:
        return _NEVER if retention is None else self.now - retention

    def _counts(self, kind: LogKind, dag_id: str | None) -> list[int]:
        key = (kind, dag_id)
        counts = self.out.tally.get(key)
        if counts is None:
            counts = self.out.tally[key] = [0] * len(_COUNTERS)
        return counts

    def _rules(self, info: DirInfo) -> tuple[list[int], float, bool]:
        """Counters, cutoff and live protection for the log files of one folder."""
        if info.kind is not LogKind.TASK:
            return self._counts(info.kind, None), self._kind_cutoffs[info.kind], False
        dag_id = info.dag_id or ""
        cutoff = self._dag_cutoffs.get(dag_id)
        if cutoff is None:
            cutoff = self._dag_cutoffs[dag_id] = self.now - self.policy.retention_for_dag(dag_id)
        protected = self.live is not None and self.live.covers(info)
        return self._counts(LogKind.TASK, dag_id), cutoff, protected

    def _fail(self, rel: str, what: str, exc: OSError | None = None) -> None:
        self.out.failures += 1
        if len(self.out.errors) < MAX_ERRORS_LISTED:
            reason = f": {exc.strerror or type(exc).__name__}" if exc is not None else ""
            self.out.errors.append(f"{printable(rel) or '.'}: {what}{reason}")

    def run(self, folder: Path) -> _Outcome:
        """Walk the whole folder; LogCleanError (before anything is touched) if it cannot start."""
        try:
            # The root itself may be a symlink (a mounted volume): it is the folder the user chose.
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise LogCleanError(
                f"{printable(str(folder))}: cannot open the log folder: {exc.strerror}"
            ) from None
        try:
            if self.execute:
                _lock(fd, folder)
            self._dir(fd, ROOT, "", 0)
        finally:
            os.close(fd)
        self.progress(self.seen, self.total, "files")
        return self.out

    def _dir(self, fd: int, info: DirInfo, rel: str, depth: int) -> bool:
        """Walk one folder; True if it is now (or, planning, would be) empty and may be removed.

        The hot path of the whole clean: one call per folder, a few lines per file."""
        counts, cutoff, protected = self._rules(info)
        other_counts, other_cutoff = self._other
        execute = self.execute
        out = self.out
        entries = gone = files = 0
        subdirs: list[str] = []
        try:
            scan = os.scandir(fd)
        except OSError as exc:
            self._fail(rel, "cannot list folder", exc)
            return False
        try:
            with scan:
                for entry in scan:
                    entries += 1
                    name = entry.name
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            subdirs.append(name)
                            continue
                        if not entry.is_file(follow_symlinks=False):
                            # Symlinks (never followed, never deleted), sockets, FIFOs: not ours.
                            if entry.is_symlink():
                                out.symlinks_skipped += 1
                            continue
                        st = entry.stat(follow_symlinks=False)
                    except OSError as exc:
                        if exc.errno == errno.ENOENT:
                            gone += 1
                            out.vanished += 1
                        else:
                            self._fail(f"{rel}/{name}", "cannot stat", exc)
                        continue
                    files += 1
                    if is_log_name(name):
                        c, file_cutoff, keep = counts, cutoff, protected
                    else:
                        c, file_cutoff, keep = other_counts, other_cutoff, False
                    size = st.st_size
                    c[_FILES] += 1
                    c[_BYTES] += size
                    if keep:
                        c[_LIVE] += 1
                        c[_LIVE_BYTES] += size
                    elif st.st_mtime < file_cutoff:
                        if execute:
                            try:
                                os.unlink(name, dir_fd=fd)
                            except OSError as exc:
                                if exc.errno == errno.ENOENT:
                                    gone += 1
                                    out.vanished += 1
                                else:
                                    c[_FAILED] += 1
                                    self._fail(f"{rel}/{name}", "cannot delete", exc)
                                continue
                        c[_DEL] += 1
                        c[_DEL_BYTES] += size
                        gone += 1
                    else:
                        c[_RECENT] += 1
                        c[_RECENT_BYTES] += size
        except OSError as exc:  # the listing itself broke off: walk what was listed, remove nothing
            self._fail(rel, "listing stopped", exc)
            entries = -1
        if files:
            self.seen += files
            if self.seen >= self._next_progress:
                self._next_progress = self.seen + _PROGRESS_EVERY
                self.progress(self.seen, self.total, "files")
        for name in subdirs:
            child_rel = f"{rel}/{name}" if rel else name
            if depth >= MAX_DEPTH:
                self._fail(child_rel, f"not walked: deeper than {MAX_DEPTH} levels")
                continue
            try:
                child_fd = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno == errno.ENOENT:
                    out.vanished += 1
                    gone += 1
                elif exc.errno in (errno.ELOOP, errno.ENOTDIR):  # swapped for a symlink since listed
                    out.symlinks_skipped += 1
                else:
                    self._fail(child_rel, "cannot open folder", exc)
                continue
            try:
                removable = self._dir(child_fd, descend(info, name, self.layout), child_rel, depth + 1)
            finally:
                os.close(child_fd)
            if not removable:
                continue
            if execute:
                try:
                    os.rmdir(name, dir_fd=fd)
                except OSError as exc:
                    if exc.errno == errno.ENOENT:
                        gone += 1
                    elif exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):  # else: written to meanwhile
                        self._fail(child_rel, "cannot remove folder", exc)
                    continue
            out.folders_removed += 1
            gone += 1
        if info.keep or protected or entries != gone or not self.policy.remove_empty_folders:
            return False
        if gone:
            return True  # emptied by this clean
        # Empty already: only once untouched for longer than the retention (a folder Airflow has
        # just created for a log it is about to write is left alone).
        try:
            return os.fstat(fd).st_mtime < cutoff
        except OSError:
            return False


def _lock(fd: int, folder: Path) -> None:
    """One clean at a time per log folder on this host (the Helm groomer's sidecars race)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise LogCleanError(f"{folder}: another logs clean is running on this folder") from None
    except OSError:
        pass  # a filesystem without flock (some network mounts): go on unlocked


# ------------------------------------------------------------------ plan and execute


@dataclass(frozen=True)
class LogCleanPlan:
    """What a clean would do: the policy, its cutoffs (fixed at ``now``) and the counts — no paths.

    :func:`execute_clean` walks the folder again with the same cutoffs."""

    log_folder: Path
    policy: LogPolicy
    layout: LogLayout
    now: datetime
    live_protection: bool
    live_task_instances: int
    live_dag_runs: int
    outcome: _Outcome = field(repr=False)
    # Needed to read the live task instances again when executing; never shown.
    dsn: str | None = field(default=None, repr=False)

    @property
    def files_to_delete(self) -> int:
        return sum(c[_DEL] for c in self.outcome.tally.values())

    @property
    def files_seen(self) -> int:
        return sum(c[_FILES] for c in self.outcome.tally.values())

    def report(self) -> Report:
        """The dry run: what would be deleted, per kind and per DAG."""
        return _report(self, self.outcome, (self.live_task_instances, self.live_dag_runs), planned=True)


def _utc(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(timezone.utc)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now


def _check_folder(folder: Path) -> Path:
    folder = Path(os.path.normpath(Path(folder).expanduser()))
    if not folder.is_absolute():
        raise LogCleanError(f"log folder {printable(str(folder))!r} is not an absolute path")
    if folder == Path(folder.anchor):
        raise LogCleanError("the log folder cannot be the filesystem root")
    if not folder.is_dir():
        raise LogCleanError(f"log folder {printable(str(folder))} does not exist or is not a folder")
    return folder


def plan_clean(
    log_folder: Path,
    policy: LogPolicy,
    *,
    dsn: str | None,
    now: datetime | None = None,
    progress: Progress = no_progress,
    layout: LogLayout | None = None,
) -> LogCleanPlan:
    """Walk ``log_folder`` (changing nothing) and count what ``policy`` would delete.

    ``dsn`` (libpq or SQLAlchemy form) is the metadata DB whose live task instances are
    protected; None refuses unless ``policy.require_db`` is False. ``layout`` says where the
    component logs are (default: Airflow's default folder names; see :func:`find_log_layout`).
    Raises LogCleanError when the clean cannot be planned."""
    folder = _check_folder(log_folder)
    when = _utc(now)
    if dsn is None and policy.require_db:
        raise LogCleanError(
            "no metadata DB to protect the logs of running and waiting tasks: give a deployment "
            "with a database, or set logs.require_db: false to clean without that protection"
        )
    live = _read_live(dsn, policy) if dsn is not None else None
    walk = _Walk(policy, layout or DEFAULT_LAYOUT, when.timestamp(), live, False, progress, None)
    outcome = walk.run(folder)
    return LogCleanPlan(
        log_folder=folder,
        policy=policy,
        layout=layout or DEFAULT_LAYOUT,
        now=when,
        live_protection=live is not None,
        live_task_instances=len(live.tis) if live else 0,
        live_dag_runs=len(live.runs) if live else 0,
        outcome=outcome,
        dsn=dsn,
    )


def _read_live(dsn: str, policy: LogPolicy) -> LiveTaskInstances:
    try:
        return read_live_task_instances(dsn, limit=policy.live_limit)
    except LiveReadError as exc:
        raise LogCleanError(str(exc)) from None


def execute_clean(plan: LogCleanPlan, progress: Progress = no_progress) -> Report:
    """Carry out ``plan``: delete what is still older than its cutoffs and not live now.

    Never raises for a failure on the way: the Report says what was done and what failed."""
    live: LiveTaskInstances | None = None
    try:
        folder = _check_folder(plan.log_folder)
        if plan.dsn is not None:
            live = _read_live(plan.dsn, plan.policy)
        walk = _Walk(plan.policy, plan.layout, plan.now.timestamp(), live, True, progress, plan.files_seen)
        outcome = walk.run(folder)
    except LogCleanError as exc:  # raised before anything was deleted
        reason = str(exc)
        return Report(
            action=ACTION,
            planned=False,
            ok=False,
            summary=f"nothing deleted: {reason}",
            errors=[reason],
            data={"log_folder": str(plan.log_folder)},
        )
    counts = (len(live.tis), len(live.runs)) if live is not None else (0, 0)
    report = _report(plan, outcome, counts, planned=False)
    report.data["planned"] = {
        "files_deleted": plan.files_to_delete,
        "bytes_freed": sum(c[_DEL_BYTES] for c in plan.outcome.tally.values()),
    }
    return report


# ------------------------------------------------------------------ reports


def _human(n: int) -> str:
    return f"{humanize1024(n)}B"


def _as_dict(counts: list[int]) -> dict[str, int]:
    return dict(zip(_COUNTERS, counts, strict=True))


def _report(plan: LogCleanPlan, outcome: _Outcome, live: tuple[int, int], *, planned: bool) -> Report:
    """The report of a walk; ``live`` = (task instances, DAG runs) read live by that step."""
    kinds: dict[str, list[int]] = {kind.value: [0] * len(_COUNTERS) for kind in LogKind}
    dags: dict[str, list[int]] = {}
    for (kind, dag_id), counts in outcome.tally.items():
        total = kinds[kind.value]
        for i, value in enumerate(counts):
            total[i] += value
        if kind is LogKind.TASK and dag_id is not None:
            dags[printable(dag_id)] = counts
    overall = [sum(k[i] for k in kinds.values()) for i in range(len(_COUNTERS))]
    errors = list(outcome.errors)
    if outcome.failures > len(outcome.errors):
        errors.append(f"… and {outcome.failures - len(outcome.errors)} more failures (not listed)")
    verb = "would delete" if planned else "deleted"
    folders = "would remove" if planned else "removed"
    summary = (
        f"{verb} {overall[_DEL]} files ({_human(overall[_DEL_BYTES])}) in {printable(str(plan.log_folder))}; "
        f"{folders} {outcome.folders_removed} emptied folders; kept {overall[_LIVE]} of live tasks "
        f"and {overall[_RECENT]} within the retention"
    )
    if outcome.failures:
        summary += f"; {outcome.failures} failures"
    lines = []
    if plan.live_protection:
        lines.append(
            f"live-task protection: on ({live[0]} live task instances, "
            f"{live[1]} running or queued DAG runs read from the metadata DB)"
        )
    else:
        lines.append("live-task protection: OFF (no metadata DB): only the retention protected logs")
    for kind in LogKind:
        c = kinds[kind.value]
        retention = plan.policy.retention_for_kind(kind)
        keep = "kept" if retention is None else f"retention {_days(retention)}"
        lines.append(
            f"{kind.value}: {c[_FILES]} files ({_human(c[_BYTES])}), {verb} {c[_DEL]} "
            f"({_human(c[_DEL_BYTES])}), {keep}"
        )
    # The DAGs with the most to delete (or live logs kept) first; all of them are in ``data``.
    shown = sorted((item for item in dags.items() if item[1][_DEL] or item[1][_LIVE]), key=_biggest)
    for dag_id, c in shown[:MAX_DAG_LINES]:
        lines.append(
            f"  dag {dag_id}: {verb} {c[_DEL]} files ({_human(c[_DEL_BYTES])}), "
            f"kept {c[_LIVE]} live, {c[_RECENT]} recent"
        )
    if len(shown) > MAX_DAG_LINES:
        lines.append(f"  … and {len(shown) - MAX_DAG_LINES} more DAGs (all in the JSON output)")
    for note in plan.layout.outside:
        lines.append(f"not cleaned (outside the log folder): {note}")
    if outcome.symlinks_skipped:
        lines.append(f"{outcome.symlinks_skipped} symlinks left alone (never followed)")
    if outcome.vanished:
        lines.append(f"{outcome.vanished} entries vanished during the walk (deleted by someone else)")
    return Report(
        action=ACTION,
        planned=planned,
        ok=outcome.failures == 0,
        summary=summary,
        lines=lines,
        errors=errors,
        files_deleted=overall[_DEL],
        bytes_freed=overall[_DEL_BYTES],
        data={
            "log_folder": str(plan.log_folder),
            "now": plan.now.isoformat(),
            "policy": plan.policy.as_dict(),
            "live_protection": {
                "enabled": plan.live_protection,
                "task_instances": live[0],
                "dag_runs": live[1],
            },
            "totals": _as_dict(overall),
            "kinds": {kind: _as_dict(c) for kind, c in kinds.items()},
            "dags": {dag_id: _as_dict(c) for dag_id, c in sorted(dags.items())},
            "folders_removed": outcome.folders_removed,
            "symlinks_skipped": outcome.symlinks_skipped,
            "vanished": outcome.vanished,
            "failures": outcome.failures,
            "outside_log_folder": list(plan.layout.outside),
        },
    )


def _biggest(item: tuple[str, list[int]]) -> tuple[int, int, str]:
    return (-item[1][_DEL_BYTES], -item[1][_LIVE], item[0])


def _days(seconds: float) -> str:
    return f"{seconds / DAY:g}d" if seconds >= DAY else f"{seconds / 3600:g}h"
