"""Creating and showing silences: the one place the CLI and the HTTP API share."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..config import parse_duration
from ..store import OpsStore
from .matchers import format_matcher, parse_matchers
from .model import Silence


class SilenceError(ValueError):
    """Bad silence input; the message names the argument or key."""


def new_silence(matchers: Sequence[str], duration: Any, comment: str, created_by: str, now: float) -> Silence:
    """A silence starting now. Raises SilenceError naming what is wrong."""
    if not matchers:
        raise SilenceError("matchers: give at least one, e.g. 'alertname=\"DagFailing\"'")
    try:
        parsed = parse_matchers(matchers)
    except ValueError as e:
        raise SilenceError(f"matchers: {e}") from None
    # Alertmanager's rule: a missing label is the empty string, so matchers that all accept ""
    # (dag_id!="x", env="", job=~".*") silence every alert lacking those labels.
    if all(m.matches({}) for m in parsed):
        raise SilenceError(
            "matchers: at least one must not match the empty string (it would silence everything)"
        )
    try:
        seconds = parse_duration(duration)
    except ValueError as e:
        raise SilenceError(f"duration: {e}") from None
    if seconds <= 0:
        raise SilenceError("duration: must be longer than 0")
    if not comment or not comment.strip():
        raise SilenceError("comment: say why (it is shown to whoever wonders where the alerts went)")
    return Silence(
        id="",
        matchers=parsed,
        starts_at=now,
        ends_at=now + seconds,
        created_by=created_by or "unknown",
        comment=comment.strip(),
    )


def silence_json(s: Silence) -> dict[str, Any]:
    return {
        "id": s.id,
        "matchers": [format_matcher(m) for m in s.matchers],
        "starts_at": s.starts_at,
        "ends_at": s.ends_at,
        "expired_at": s.expired_at,
        "created_by": s.created_by,
        "comment": s.comment,
    }


def stored_alerts(store: OpsStore, now: float) -> list[dict[str, Any]]:
    """The alerts the evaluating replica last stored, each with the silences that hold it (the
    view of a standby replica and of ``airflow-ops alerts list``)."""
    silences = store.silence_list(now)
    alerts = sorted(store.load_alerts(), key=lambda a: (a.state.value, a.name, a.fingerprint))
    return [
        {
            **a.to_json(),
            "fingerprint": a.fingerprint,
            "silenced_by": [s.id for s in silences if s.matches(a.labels, now)],
        }
        for a in alerts
    ]
