"""The ``alerting:`` section of the config: rule files, the ops store, the route tree, inhibit
rules and receivers — Alertmanager's shape and names, so an existing config reads familiar.

Durations accept ``30s``/``5m``/``4h``; secrets (webhook URLs, tokens, SMTP passwords) are
:class:`Secret` and accept ``<key>_env`` / ``<key>_file`` like every secret in the config.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from .base import Duration, OptionalDuration, Secret, _Model


def _check_matchers(values: tuple[str, ...]) -> tuple[str, ...]:
    from ..alerts.matchers import parse_matchers  # the one matcher parser

    parse_matchers(values)
    return values


def _http_url(v: str) -> None:
    """An absolute http(s) URL; the error never repeats the value (it may hold a secret)."""
    parts = urlsplit(v)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an absolute http:// or https:// URL")


class RouteConfig(_Model):
    """A node of the route tree. Unset timing/grouping fields inherit from the parent."""

    receiver: str | None = None
    matchers: tuple[str, ...] = ()
    group_by: tuple[str, ...] | None = None  # ["..."] groups by all labels
    group_wait: OptionalDuration = None
    group_interval: OptionalDuration = None
    repeat_interval: OptionalDuration = None
    continue_: bool = Field(default=False, alias="continue")
    mute_paused_dags: bool | None = None
    routes: tuple[RouteConfig, ...] = ()

    model_config = {**_Model.model_config, "populate_by_name": True}

    @field_validator("matchers")
    @classmethod
    def _matchers(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return _check_matchers(v)


class InhibitRuleConfig(_Model):
    source_matchers: tuple[str, ...]
    target_matchers: tuple[str, ...]
    equal: tuple[str, ...] = ()

    @field_validator("source_matchers", "target_matchers")
    @classmethod
    def _matchers(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("needs at least one matcher")
        return _check_matchers(v)


class SlackConfig(_Model):
    """Either an incoming webhook (``webhook_url``) or a bot token + ``channel`` (chat.postMessage,
    and chat.update to turn the firing message into the resolved one)."""

    webhook_url: Secret | None = None
    token: Secret | None = None
    channel: str | None = None
    # Where the Web API lives; tests point it at a loopback server that speaks Slack's protocol.
    api_url: str = "https://slack.com/api/"
    send_resolved: bool = True
    # Slack allows about one message per second per channel.
    min_interval: Duration = 1.0
    timeout: Duration = 10.0

    @field_validator("webhook_url", "api_url")
    @classmethod
    def _urls(cls, v: str | None) -> str | None:
        if v is not None:
            _http_url(v)
        return v

    @model_validator(mode="after")
    def _one_way(self) -> SlackConfig:
        if (self.webhook_url is None) == (self.token is None):
            raise ValueError("give exactly one of webhook_url or token")
        if self.token is not None and not self.channel:
            raise ValueError("a bot token needs a channel")
        return self


class EmailConfig(_Model):
    to: tuple[str, ...]
    from_: str = Field(alias="from")
    smarthost: str  # host:port
    tls: Literal["starttls", "ssl", "none"] = "starttls"
    auth_username: str | None = None
    auth_password: Secret | None = None
    send_resolved: bool = True
    timeout: Duration = 10.0
    verify_tls: bool = True
    ca_file: str | None = None

    model_config = {**_Model.model_config, "populate_by_name": True}

    @field_validator("smarthost")
    @classmethod
    def _hostport(cls, v: str) -> str:
        host, _, port = v.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"{v!r} must be host:port")
        return v

    @field_validator("to")
    @classmethod
    def _to(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("needs at least one address")
        return v


class WebhookConfig(_Model):
    """POSTs Alertmanager's webhook JSON (version 4)."""

    url: Secret
    send_resolved: bool = True
    max_alerts: int = Field(default=0, ge=0)  # 0 = all
    bearer_token: Secret | None = None
    timeout: Duration = 10.0

    @field_validator("url")
    @classmethod
    def _url(cls, v: Secret) -> Secret:
        _http_url(v.value)
        return v


class AlertmanagerForwardConfig(_Model):
    """Forwards alerts to an existing Alertmanager (``POST /api/v2/alerts``)."""

    url: str
    timeout: Duration = 10.0

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        _http_url(v)
        return v


class ReceiverConfig(_Model):
    name: str
    slack_configs: tuple[SlackConfig, ...] = ()
    email_configs: tuple[EmailConfig, ...] = ()
    webhook_configs: tuple[WebhookConfig, ...] = ()
    alertmanager_configs: tuple[AlertmanagerForwardConfig, ...] = ()


DEFAULT_ROUTE = RouteConfig(
    receiver=None,
    group_by=("alertname", "deployment", "dag_id"),
    group_wait=30.0,
    group_interval=300.0,
    repeat_interval=4 * 3600.0,
)


class AlertingConfig(_Model):
    # Prometheus rule files (globs); they load unchanged into Prometheus too.
    rule_files: tuple[str, ...]
    # Base URL of this service, for links in messages (defaults to the service's own address).
    external_url: str | None = None
    # Alerts carrying a dag_id of a paused DAG are muted (not notified) when true.
    mute_paused_dags: bool = True
    # How many log lines of a failed task attempt a DAG-failure notification carries.
    log_tail_lines: int = Field(default=20, ge=0, le=200)
    route: RouteConfig
    inhibit_rules: tuple[InhibitRuleConfig, ...] = ()
    receivers: tuple[ReceiverConfig, ...]

    @model_validator(mode="after")
    def _receivers_exist(self) -> AlertingConfig:
        names = [r.name for r in self.receivers]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"receiver names must be unique: {sorted(dupes)}")
        if self.route.receiver is None:
            raise ValueError("route.receiver: the root route needs a receiver")
        missing = sorted(_route_receivers(self.route) - set(names))
        if missing:
            raise ValueError(f"route refers to undefined receiver(s): {', '.join(missing)}")
        return self


def _route_receivers(route: RouteConfig) -> set[str]:
    out = {route.receiver} if route.receiver else set()
    for child in route.routes:
        out |= _route_receivers(child)
    return out
