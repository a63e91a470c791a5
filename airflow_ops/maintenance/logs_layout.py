"""How Airflow lays out its log folder, as read from path names alone (no I/O here).

Task logs (``[logging] log_filename_template``):

- 2.2+ and 3.x default: ``dag_id=<d>/run_id=<r>/task_id=<t>/[map_index=<m>/]attempt=<n>.log``.
  The folders name themselves, so they are read as ``key=value`` in any order: a custom template
  that keeps that convention is understood too.
- 2.0/2.1 default (still on disk after upgrades): ``<dag_id>/<task_id>/<ts>/<n>.log`` where
  ``ts`` is the run's logical date in ISO 8601. A top-level folder is only taken for a DAG of this
  layout once its third level parses as such a date.
- The triggerer of a deferred task writes ``<task log>.trigger.<job id>.log`` beside it.

Component logs (each folder is configurable; :class:`LogLayout` holds where they are):

- 2.x ``[scheduler] child_process_log_directory`` = ``logs/scheduler/<YYYY-MM-DD>/<dag file>.log``
  plus a ``latest`` symlink;
- 2.x ``[logging] dag_processor_manager_log_location`` =
  ``logs/dag_processor_manager/dag_processor_manager.log`` (rotated ``.log.1`` … ``.log.5``);
- 3.x ``[logging] dag_processor_child_process_log_directory`` =
  ``logs/dag_processor/<YYYY-MM-DD>/<bundle>/<dag file>.log`` plus a ``latest`` symlink.

Everything else is ``other``. Only names that look like logs (``.log``, rotated ``.log.N``,
compressed ``.log[.N].gz``…) take the kind of their folder; any other file is ``other`` wherever
it lies, so a stray ``.swp`` or ``.nfsXXXX`` file is never taken for a task log.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from functools import cached_property
from pathlib import PurePosixPath


class LogKind(str, Enum):
    TASK = "task"
    SCHEDULER = "scheduler"
    PROCESSOR = "dag_processor"
    OTHER = "other"


@dataclass(frozen=True)
class LogLayout:
    """Where the component logs live, as paths relative to the log folder.

    ``outside`` names configured component folders that lie outside the log folder: they are
    never cleaned (nothing outside the log folder is), and the report says so.
    """

    components: tuple[tuple[tuple[str, ...], LogKind], ...] = (
        (("scheduler",), LogKind.SCHEDULER),
        (("dag_processor",), LogKind.PROCESSOR),
        (("dag_processor_manager",), LogKind.PROCESSOR),
    )
    outside: tuple[str, ...] = ()

    @cached_property
    def _by_path(self) -> dict[tuple[str, ...], LogKind]:
        return dict(self.components)

    @cached_property
    def _depth(self) -> int:
        return max((len(path) for path, _ in self.components), default=0)

    def component(self, rel: tuple[str, ...]) -> LogKind | None:
        return self._by_path.get(rel)


DEFAULT_LAYOUT = LogLayout()

# Stages of a folder: the root, a top-level folder not yet known (maybe the old layout), known.
_ROOT, _CANDIDATE, _KNOWN = 0, 1, 2


@dataclass(frozen=True, slots=True)
class DirInfo:
    """What a folder's path says about the files below it."""

    kind: LogKind
    dag_id: str | None = None
    run_id: str | None = None
    task_id: str | None = None
    map_index: int | None = None
    # Old layout only: the run's logical date (its ``ts`` folder).
    logical_date: datetime | None = None
    # A component's own folder (``scheduler/``…) and the root: never removed, even when empty.
    keep: bool = False
    stage: int = _KNOWN
    # The path from the root while the folder is not classified yet (stage _CANDIDATE).
    rel: tuple[str, ...] = ()


ROOT = DirInfo(LogKind.OTHER, keep=True, stage=_ROOT)
_UNKNOWN = DirInfo(LogKind.OTHER)
# An Airflow ``ts``: 2021-04-19T13:23:05.265458+00:00 (the date part is required, so a task
# folder called "2021" is never read as a date).
_TS = re.compile(r"\d{4}-\d{2}-\d{2}T")


def descend(parent: DirInfo, name: str, layout: LogLayout = DEFAULT_LAYOUT) -> DirInfo:
    """The DirInfo of the sub-folder ``name`` of a folder described by ``parent``."""
    if parent.stage == _KNOWN:
        if parent.kind is LogKind.TASK and "=" in name:
            return _with_key(parent, name)
        return dataclasses.replace(parent, keep=False) if parent.keep else parent
    rel = (*parent.rel, name)
    kind = layout.component(rel)
    if kind is not None:
        return DirInfo(kind, keep=True)
    if parent.stage == _ROOT and name.startswith("dag_id=") and len(name) > len("dag_id="):
        return _with_key(DirInfo(LogKind.TASK), name)
    if len(rel) == 3 and _TS.match(name):
        logical_date = _parse_ts(name)
        if logical_date is not None:
            return DirInfo(LogKind.TASK, dag_id=rel[0], task_id=rel[1], logical_date=logical_date)
    if len(rel) < max(3, layout._depth):
        return DirInfo(LogKind.OTHER, stage=_CANDIDATE, rel=rel)
    return _UNKNOWN


def _with_key(info: DirInfo, name: str) -> DirInfo:
    # Built field by field: this runs for every folder of a walk (dataclasses.replace is slower).
    key, _, value = name.partition("=")
    dag_id, run_id, task_id, map_index = info.dag_id, info.run_id, info.task_id, info.map_index
    if not value:
        return info
    if key == "run_id":
        run_id = value
    elif key == "task_id":
        task_id = value
    elif key == "map_index":
        try:
            map_index = int(value)
        except ValueError:
            return info  # not a number: a folder of some other meaning, identity unchanged
    elif key == "dag_id":
        dag_id = value
    else:
        return info
    return DirInfo(LogKind.TASK, dag_id, run_id, task_id, map_index, info.logical_date)


def _parse_ts(name: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(name)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)


# What a log file is called: x.log, rotated x.log.3, compressed x.log.gz / x.log.3.gz.
_LOG_NAME = re.compile(r".+\.log(?:\.\d+)?(?:\.(?:gz|bz2|xz|zst|lz4))?")


def is_log_name(name: str) -> bool:
    return (name.endswith(".log") and len(name) > 4) or _LOG_NAME.fullmatch(name) is not None


_ATTEMPT = re.compile(r"(?:attempt=)?(\d+)\.log(?:\.|$)")


@dataclass(frozen=True)
class LogFile:
    """What a path inside the log folder is: its kind and, for task logs, whose log it is."""

    kind: LogKind
    dag_id: str | None = None
    run_id: str | None = None
    task_id: str | None = None
    map_index: int | None = None
    logical_date: datetime | None = None
    try_number: int | None = None


def parse_log_path(path: str | PurePosixPath, layout: LogLayout = DEFAULT_LAYOUT) -> LogFile:
    """Classify a file by its path relative to the log folder (the walk does the same per folder)."""
    parts = PurePosixPath(path).parts
    if not parts or PurePosixPath(path).is_absolute():
        raise ValueError("expected a path relative to the log folder")
    info = ROOT
    for name in parts[:-1]:
        info = descend(info, name, layout)
    name = parts[-1]
    if info.stage != _KNOWN or not is_log_name(name):
        return LogFile(LogKind.OTHER)
    if info.kind is not LogKind.TASK:
        return LogFile(info.kind)
    attempt = _ATTEMPT.match(name)
    return LogFile(
        LogKind.TASK,
        dag_id=info.dag_id,
        run_id=info.run_id,
        task_id=info.task_id,
        map_index=info.map_index if info.map_index is not None else -1,
        logical_date=info.logical_date,
        try_number=int(attempt.group(1)) if attempt else None,
    )


def printable(text: str) -> str:
    """A file or DAG name made safe to print: control characters and undecodable bytes escaped."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable():
            out.append(ch)
        elif "\udc80" <= ch <= "\udcff":  # a byte that was not UTF-8 (surrogateescape)
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        else:
            out.append(ch.encode("unicode_escape").decode("ascii"))
    return "".join(out)
