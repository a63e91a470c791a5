"""Install real Apache Airflow releases into private venvs for the local dev/test stack.

Each version lives in ``<stack dir>/venvs/airflow-<version>`` and is installed with the committed
constraints file (``constraints/airflow-<version>.txt``) so every machine gets the same packages.
A marker file written only after pip succeeds makes an interrupted install get redone; pip itself
is idempotent, so redoing it over a half-finished venv only fetches what is missing.
"""

from __future__ import annotations

import collections
import fcntl
import hashlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

AIRFLOW3 = "3.3.2"
AIRFLOW2 = "2.11.2"
SUPPORTED_VERSIONS = (AIRFLOW3, AIRFLOW2)

CONSTRAINTS_DIR = Path(__file__).resolve().parent / "constraints"
_REPO_ROOT = Path(__file__).resolve().parents[2]
_MARKER = ".airflow-ops-installed"
# Lines of pip's output kept for the error message when an install fails.
_TAIL_LINES = 40


class AirflowInstallError(RuntimeError):
    """Installing Airflow into its venv failed; the message names the command that failed."""


def stack_dir() -> Path:
    """Root of everything the dev stack writes (venvs, instances): ``$AIRFLOW_OPS_STACK_DIR`` or
    ``<repo>/.stack`` (git-ignored)."""
    configured = os.environ.get("AIRFLOW_OPS_STACK_DIR")
    return Path(configured).expanduser().resolve() if configured else _REPO_ROOT / ".stack"


def venv_dir(version: str) -> Path:
    return stack_dir() / "venvs" / f"airflow-{_check_version(version)}"


def constraints_file(version: str) -> Path:
    return CONSTRAINTS_DIR / f"airflow-{_check_version(version)}.txt"


def constraints_hash(version: str) -> str:
    """Short hash of the constraints file: names things derived from an exact package set
    (e.g. the migrated template database). Empty string when the file does not exist yet."""
    path = constraints_file(version)
    if not path.exists():
        return ""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:8]


def major_version(version: str) -> int:
    return int(_check_version(version).split(".", 1)[0])


def ensure_airflow(version: str) -> Path:
    """Return the venv directory of ``apache-airflow[postgres]==<version>``, installing it first
    if it is missing, incomplete, or was installed from a different constraints file."""
    venv = venv_dir(version)
    if _marker_matches(venv, version):
        return venv
    venv.parent.mkdir(parents=True, exist_ok=True)
    # Concurrent test sessions (or parallel fixtures) must not run pip into the same venv.
    with _file_lock(venv.parent / f"airflow-{version}.lock"):
        if _marker_matches(venv, version):
            return venv
        _install(version, venv)
    return venv


def _check_version(version: str) -> str:
    if not re.fullmatch(r"\d+\.\d+\.\d+", version) or version.split(".")[0] not in ("2", "3"):
        raise ValueError(
            f"unsupported Airflow version {version!r}: expected a 2.x.y or 3.x.y release, "
            f"e.g. one of {', '.join(SUPPORTED_VERSIONS)}"
        )
    return version


def _marker_text(version: str) -> str:
    return f"apache-airflow[postgres]=={version} constraints={constraints_hash(version) or 'none'}\n"


def _marker_matches(venv: Path, version: str) -> bool:
    marker = venv / _MARKER
    return (
        (venv / "bin" / "python").exists() and marker.exists() and marker.read_text() == _marker_text(version)
    )


def _install(version: str, venv: Path) -> None:
    (venv / _MARKER).unlink(missing_ok=True)
    python = venv / "bin" / "python"
    if not python.exists():
        _progress(f"creating venv {venv}")
        _run([sys.executable, "-m", "venv", str(venv)])
    constraints = constraints_file(version)
    cmd = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off"]
    if constraints.exists():
        cmd += ["-c", str(constraints)]
    else:
        _progress(f"no constraints file {constraints}: resolving freely and writing one afterwards")
    cmd.append(f"apache-airflow[postgres]=={version}")
    _progress(f"installing apache-airflow[postgres]=={version} into {venv}")
    _run(cmd)
    if not constraints.exists():
        _write_constraints(version, python, constraints)
    (venv / _MARKER).write_text(_marker_text(version))
    _progress(f"apache-airflow {version} ready in {venv}")


def _write_constraints(version: str, python: Path, target: Path) -> None:
    frozen = subprocess.run(
        [str(python), "-m", "pip", "freeze", "--all", "--disable-pip-version-check"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    # Installer tooling and local/editable installs are not part of Airflow's package set.
    pins = [
        line
        for line in frozen
        if line
        and not re.match(r"(pip|setuptools|wheel)==", line)
        and " @ " not in line
        and not line.startswith("-e ")
    ]
    py = f"{sys.version_info[0]}.{sys.version_info[1]}"
    header = (
        f"# Constraints for apache-airflow[postgres]=={version}: "
        f"pip freeze of a venv where it installed and ran (Python {py}).\n"
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(header + "\n".join(pins) + "\n")
    _progress(f"wrote {target}")


def _run(cmd: Sequence[str]) -> None:
    """Run ``cmd`` streaming its output to stderr (install progress), keeping a tail for errors."""
    tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            tail.append(line)
            sys.stderr.write(line)
        code = proc.wait()
    if code != 0:
        raise AirflowInstallError(
            f"command failed with exit code {code}: {' '.join(cmd)}\n"
            f"--- last {len(tail)} lines of output ---\n{''.join(tail)}"
        )


def _progress(message: str) -> None:
    print(f"[airflow-ops devstack] {message}", file=sys.stderr, flush=True)


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
