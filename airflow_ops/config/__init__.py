"""One typed configuration: a YAML file, ``AIRFLOW_OPS__*`` env overrides, and zero-config defaults
read from Airflow's own environment when run next to Airflow.

Every secret is a :class:`Secret`: it can be given inline, as ``<key>_env`` (an env var name) or as
``<key>_file`` (a path), and its repr never shows the value. Validation errors name the file, the
dotted key and, where the YAML has it, the line.
"""

from __future__ import annotations

import configparser
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .alerting import AlertingConfig
from .base import ConfigError, Duration, Secret, _Model, parse_duration
from .maintenance import MaintenanceConfig

__all__ = [
    "AlertingConfig",
    "Config",
    "ConfigError",
    "MaintenanceConfig",
    "Secret",
    "load_config",
    "mask",
    "parse_duration",
]

ENV_PREFIX = "AIRFLOW_OPS__"
CONFIG_ENV = "AIRFLOW_OPS_CONFIG"


class DatabaseConfig(_Model):
    dsn: Secret
    statement_timeout: Duration = 5.0
    # Reads never need a lock that Airflow holds for long; give up fast rather than queue behind DDL.
    lock_timeout: Duration = 1.0
    connect_timeout: Duration = 5.0
    # Poll pg_class sizes at most this often: they change slowly and the query touches the catalog.
    table_stats_interval: Duration = 300.0

    @field_validator("dsn")
    @classmethod
    def _dsn(cls, v: Secret) -> Secret:
        return Secret(sqlalchemy_to_libpq(v.value))


class ApiConfig(_Model):
    url: str
    username: str | None = None
    password: Secret | None = None
    # A pre-issued bearer token (Airflow 3 JWT); otherwise one is requested from /auth/token.
    token: Secret | None = None
    verify_tls: bool = True
    ca_file: str | None = None
    timeout: Duration = 10.0

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"{v!r} is not an http(s) URL")
        # The API prefix is chosen by version; accept it pasted in and strip it.
        path = re.sub(r"/api/v[12]/?$", "", parts.path.rstrip("/"))
        return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


class BrokerConfig(_Model):
    url: Secret  # redis://… or amqp://…
    queues: tuple[str, ...] = ("default",)
    timeout: Duration = 5.0

    @field_validator("url")
    @classmethod
    def _url(cls, v: Secret) -> Secret:
        scheme = urlsplit(v.value).scheme
        if scheme not in ("redis", "rediss", "amqp", "amqps", "pyamqp"):
            raise ValueError(f"broker scheme {scheme!r} is not supported (use redis:// or amqp://)")
        return v


class DeploymentConfig(_Model):
    database: DatabaseConfig | None = None
    api: ApiConfig | None = None
    broker: BrokerConfig | None = None
    # Link target for messages and dashboards; defaults to the API URL.
    ui_url: str | None = None
    maintenance: MaintenanceConfig | None = None

    @model_validator(mode="after")
    def _some_source(self) -> DeploymentConfig:
        if self.database is None and self.api is None:
            raise ValueError("a deployment needs at least one of database or api")
        return self


class BasicAuthConfig(_Model):
    username: str
    password: Secret


class TlsConfig(_Model):
    cert_file: str
    key_file: str


class ServiceConfig(_Model):
    listen: str = "127.0.0.1"
    port: int = Field(default=9112, ge=0, le=65535)
    poll_interval: Duration = 30.0
    basic_auth: BasicAuthConfig | None = None
    bearer_token: Secret | None = None
    tls: TlsConfig | None = None

    @field_validator("poll_interval")
    @classmethod
    def _poll_interval(cls, v: float) -> float:
        if v < 0.1:
            raise ValueError("poll_interval must be at least 100ms")
        return v


DEFAULT_DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)
DEFAULT_WAIT_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


class MetricsConfig(_Model):
    dag_allow: str | None = None  # regex; only matching dag_ids are exported
    dag_deny: str | None = None  # regex; matching dag_ids are never exported
    task_labels: bool = False  # add task_id to task-level series (opt-in: cardinality)
    series_budget: int = Field(default=100_000, ge=100)
    success_ratio_runs: int = Field(default=10, ge=1, le=1000)
    stale_heartbeat_threshold: Duration = 300.0  # Airflow's own zombie threshold default
    heartbeat_lookback: Duration = 86400.0  # how long a stopped component's series keeps aging
    duration_buckets: tuple[float, ...] = DEFAULT_DURATION_BUCKETS
    wait_buckets: tuple[float, ...] = DEFAULT_WAIT_BUCKETS

    @field_validator("dag_allow", "dag_deny")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as e:
                raise ValueError(f"invalid regular expression: {e}") from None
        return v

    @field_validator("duration_buckets", "wait_buckets")
    @classmethod
    def _buckets(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if not v or list(v) != sorted(set(v)):
            raise ValueError("buckets must be a non-empty, strictly increasing list")
        return v

    def dag_filter(self) -> DagFilter:
        return DagFilter(self.dag_allow, self.dag_deny)


class DagFilter:
    """Allow/deny regexes over dag_id, matched with re.fullmatch… search semantics like Prometheus."""

    def __init__(self, allow: str | None, deny: str | None) -> None:
        self._allow = re.compile(allow) if allow else None
        self._deny = re.compile(deny) if deny else None

    def __call__(self, dag_id: str) -> bool:
        if self._allow is not None and not self._allow.fullmatch(dag_id):
            return False
        return not (self._deny is not None and self._deny.fullmatch(dag_id))


class Config(_Model):
    # The ops store (alert state, notification log, silences, maintenance audit): an SQLite file
    # (relative paths from the working directory) or postgresql://… for replicas sharing state.
    store: Secret = Secret("sqlite:///airflow-ops.db")
    service: ServiceConfig = ServiceConfig()
    metrics: MetricsConfig = MetricsConfig()
    deployments: dict[str, DeploymentConfig] = Field(default_factory=dict)
    alerting: AlertingConfig | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("deployments")
    @classmethod
    def _names(cls, v: dict[str, DeploymentConfig]) -> dict[str, DeploymentConfig]:
        for name in v:
            if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
                raise ValueError(f"deployment name {name!r} must match [A-Za-z0-9_.-]{{1,64}}")
        return v


def sqlalchemy_to_libpq(url: str) -> str:
    """'postgresql+psycopg2://u:p@h/db' -> 'postgresql://u:p@h/db'; libpq strings pass through."""
    m = re.match(r"^(postgres(?:ql)?)(\+\w+)?://", url)
    if m:
        return "postgresql://" + url[m.end() :]
    if "://" in url:
        scheme = url.split("://", 1)[0]
        raise ValueError(f"only PostgreSQL metadata databases are supported, not {scheme!r}")
    return url


# ---------------------------------------------------------------- loading


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """AIRFLOW_OPS__SERVICE__PORT=9200 -> {"service": {"port": "9200"}} (keys lower-cased)."""
    tree: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX) :].split("__") if p]
        if not path:
            continue
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{name}: conflicts with another AIRFLOW_OPS__ variable")
        value_any: Any = value
        if value.startswith(("[", "{")):
            value_any = yaml.safe_load(value)
        node[path[-1]] = value_any
    return tree


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _merge(dict(out[k]), v)
        else:
            out[k] = v
    return out


def _airflow_setting(environ: Mapping[str, str], section: str, key: str) -> str | None:
    """Read one Airflow setting the way Airflow does: env var first, then airflow.cfg."""
    env = f"AIRFLOW__{section.upper()}__{key.upper()}"
    if environ.get(env):
        return environ[env]
    home = Path(environ.get("AIRFLOW_HOME", Path.home() / "airflow"))
    cfg_path = Path(environ.get("AIRFLOW_CONFIG", home / "airflow.cfg"))
    if cfg_path.is_file():
        parser = configparser.ConfigParser(interpolation=None, strict=False)
        try:
            parser.read(cfg_path)
        except configparser.Error:
            return None
        if parser.has_option(section, key):
            return parser.get(section, key) or None
    return None


def airflow_defaults(environ: Mapping[str, str]) -> dict[str, Any] | None:
    """A 'default' deployment built from Airflow's own settings, when run next to Airflow."""
    dsn = _airflow_setting(environ, "database", "sql_alchemy_conn") or _airflow_setting(
        environ, "core", "sql_alchemy_conn"
    )
    api_url = _airflow_setting(environ, "api", "base_url") or _airflow_setting(
        environ, "webserver", "base_url"
    )
    deployment: dict[str, Any] = {}
    if dsn and dsn.startswith("postgres"):
        deployment["database"] = {"dsn": dsn}
    if api_url:
        api: dict[str, Any] = {"url": api_url}
        if environ.get("AIRFLOW_OPS_API_USERNAME"):
            api["username"] = environ["AIRFLOW_OPS_API_USERNAME"]
        if environ.get("AIRFLOW_OPS_API_PASSWORD"):
            api["password"] = environ["AIRFLOW_OPS_API_PASSWORD"]
        deployment["api"] = api
    return {"default": deployment} if deployment else None


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """Follow a pydantic error location through the YAML node tree to a line number."""
    line = None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = None
            for k, v in node.value:
                if str(k.value).lower() == str(part).lower():
                    line, nxt = k.start_mark.line + 1, v
                    break
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _env_name(loc: tuple[Any, ...], environ: Mapping[str, str]) -> str | None:
    """The AIRFLOW_OPS__ variable that set this key (or a parent of it), if any."""
    for n in range(len(loc), 0, -1):
        name = ENV_PREFIX + "__".join(str(p).upper() for p in loc[:n])
        if name in environ:
            return name
    return None


def _format_errors(
    err: ValidationError, source: str, root: yaml.Node | None, environ: Mapping[str, str]
) -> str:
    lines = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        key = ".".join(str(p) for p in loc) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        env = _env_name(loc, environ)
        line = _line_of(root, loc)
        where = f"environment variable {env}" if env else f"{source}:{line}" if line else source
        lines.append(f"{where}: {key}: {msg}")
    return "\n".join(lines)


def load_config(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Config:
    """Load the config file (or $AIRFLOW_OPS_CONFIG), apply env overrides, fall back to Airflow's env."""
    environ = os.environ if environ is None else environ
    path = path or environ.get(CONFIG_ENV)
    data: dict[str, Any] = {}
    root: yaml.Node | None = None
    source = "environment"
    if path:
        source = str(path)
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise ConfigError(f"{path}: cannot read config file: {e.strerror}") from None
        try:
            root = yaml.compose(text)
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark else str(path)
            raise ConfigError(f"{where}: not valid YAML: {getattr(e, 'problem', e)}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of keys")
        data = loaded
    data = _merge(data, _env_overrides(environ))
    if path:
        _anchor_rule_files(data, Path(path).parent)
    if not data.get("deployments"):
        defaults = airflow_defaults(environ)
        if defaults:
            data["deployments"] = defaults
    try:
        config = Config.model_validate(data, context={"environ": environ})
    except ValidationError as e:
        raise ConfigError(_format_errors(e, source, root, environ)) from None
    if not config.deployments:
        raise ConfigError(
            f"{source}: deployments: no Airflow deployment configured; add one to the config file, "
            "or set AIRFLOW__DATABASE__SQL_ALCHEMY_CONN / AIRFLOW__API__BASE_URL"
        )
    return config


def _anchor_rule_files(data: dict[str, Any], base: Path) -> None:
    """Relative rule_files are relative to the config file, as in Prometheus."""
    alerting = data.get("alerting")
    if isinstance(alerting, dict) and isinstance(alerting.get("rule_files"), list):
        alerting["rule_files"] = [
            str(base / p) if isinstance(p, str) and not Path(p).is_absolute() else p
            for p in alerting["rule_files"]
        ]


def mask(text: str, config: Config, extra: Iterable[str] = ()) -> str:
    """Replace every secret value the config holds in text (for errors from libraries), and the
    ``extra`` secrets given elsewhere (e.g. a DSN on the command line)."""
    for secret in [*_secrets(config), *(s for e in extra for s in _secrets(Secret(e)))]:
        if secret and len(secret) >= 4:
            text = text.replace(secret.value, "***")
    return text


def _secrets(obj: Any) -> list[Secret]:
    found: list[Secret] = []
    if isinstance(obj, Secret):
        found.append(obj)
        # Also hide the password inside a URL-shaped secret on its own.
        pw = urlsplit(obj.value).password if "://" in obj.value else None
        if pw:
            found.append(Secret(pw))
    elif isinstance(obj, BaseModel):
        for name in type(obj).model_fields:
            found += _secrets(getattr(obj, name))
    elif isinstance(obj, Mapping):
        for v in obj.values():
            found += _secrets(v)
    return found
