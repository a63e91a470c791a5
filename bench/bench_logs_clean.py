"""Benchmark ``logs clean`` against ``find <dir> -type f -mtime +N -delete`` (issue 4 §7).

Builds the same synthetic log tree once per variant (default 1,000,000 files) in a temp dir:
2.2+/3.x task logs (``dag_id=…/run_id=…/task_id=…/[map_index=…/]attempt=N.log``, some with a
triggerer ``.trigger.N.log``), the 2.0/2.1 layout (``dag/task/ts/N.log``), 2.x scheduler logs, the
2.x dag_processor_manager log with its rotations and 3.x dag-processor logs. A share of the files
(``--old-fraction``) is 40.5 days old, the rest 5.5 days, so ``find -mtime +30`` and a 30-day
retention select exactly the same files (find's ``+30`` means 31 days or more; the half days keep
both away from that boundary).

Then, in the same run, each variant on its own identical copy, built right before it is timed
(see ``VARIANTS``): ``find`` alone (it leaves every emptied folder behind), ``find`` followed by
``find -type d -empty -delete`` (the end state of ours), and ours (``plan_clean`` +
``execute_clean``, no DSN, ``require_db: false``), with and without removing emptied folders.
Ours runs in a fresh process, so its peak RSS (``ru_maxrss``) is its own; every variant must
delete exactly the expected files (checked). On a shared machine the load drifts by the minute:
``--rounds`` repeats the variants in rotated order and compares the totals and per-round ratios.

    python -m bench.bench_logs_clean                      # 1M files per tree, all variants
    python -m bench.bench_logs_clean --files 100000 --variants find,ours --dir /var/tmp
    python -m bench.bench_logs_clean --files 100000 --rounds 10   # 1M files in all, interleaved
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

DAY = 86400.0
OLD_AGE = 40.5 * DAY
NEW_AGE = 5.5 * DAY
FIND_DAYS = 30
_CONTENT = b"[2024-01-01, 00:00:00 UTC] {taskinstance.py:1} INFO - a line of a task log\n" * 3


def _write(dir_fd: int, name: str, mtime: float, size: int) -> None:
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644, dir_fd=dir_fd)
    try:
        if size:
            os.write(fd, _CONTENT[:size])
        os.utime(fd, (mtime, mtime))
    finally:
        os.close(fd)


class _Tree:
    """Builds one tree; the same seed gives the same tree, file for file."""

    def __init__(self, root: Path, files: int, old_fraction: float, now: float, seed: int = 7) -> None:
        self.root = root
        self.target = files
        self.old_fraction = old_fraction
        self.now = now
        self.rng = random.Random(seed)
        self.made = 0
        self.old = 0

    def _mtime(self) -> float:
        if self.rng.random() < self.old_fraction:
            self.old += 1
            return self.now - OLD_AGE
        return self.now - NEW_AGE

    def _folder(self, *parts: str) -> int:
        path = self.root.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY)

    def _files(self, dir_fd: int, names: list[str]) -> None:
        for name in names:
            if self.made >= self.target:
                return
            _write(dir_fd, name, self._mtime(), self.rng.randint(40, len(_CONTENT)))
            self.made += 1

    def build(self) -> _Tree:
        # Shares of the files: 80% new task layout, 8% old layout, 8% scheduler, 4% processor.
        shares = (("new", 0.80), ("old", 0.08), ("scheduler", 0.08), ("processor", 0.04))
        start = datetime(2024, 1, 1, tzinfo=timezone.utc)
        for part, share in shares:
            goal = self.made + int(self.target * share) if part != "processor" else self.target
            goal = min(goal, self.target)
            i = 0
            while self.made < goal:
                dag = f"dag_{i % 500:03d}"
                ts = (start + timedelta(hours=i // 500)).isoformat()
                if part == "new":
                    for t in range(8):
                        task = ["dag_id=" + dag, f"run_id=scheduled__{ts}", f"task_id=group.task_{t}"]
                        if t == 7:  # a mapped task: one folder per map index
                            for m in range(3):
                                fd = self._folder(*task, f"map_index={m}")
                                self._files(fd, ["attempt=1.log"])
                                os.close(fd)
                            continue
                        fd = self._folder(*task)
                        names = ["attempt=1.log", "attempt=2.log"] if t % 3 == 0 else ["attempt=1.log"]
                        if t == 5:
                            names.append("attempt=1.log.trigger.42.log")
                        self._files(fd, names[: goal - self.made])
                        os.close(fd)
                        if self.made >= goal:
                            break
                elif part == "old":
                    for t in range(4):
                        fd = self._folder(dag, f"task_{t}", ts)
                        self._files(fd, ["1.log"][: goal - self.made])
                        os.close(fd)
                elif part == "scheduler":
                    fd = self._folder("scheduler", (start + timedelta(days=i)).date().isoformat())
                    self._files(fd, [f"{dag}_{k}.py.log" for k in range(min(200, goal - self.made))])
                    os.close(fd)
                else:
                    if i == 0:
                        fd = self._folder("dag_processor_manager")
                        self._files(
                            fd,
                            [
                                "dag_processor_manager.log",
                                *(f"dag_processor_manager.log.{k}" for k in range(1, 6)),
                            ],
                        )
                        os.close(fd)
                    day = (start + timedelta(days=i)).date().isoformat()
                    fd = self._folder("dag_processor", day, "dags-folder")
                    self._files(fd, [f"{dag}_{k}.py.log" for k in range(min(200, goal - self.made))])
                    os.close(fd)
                i += 1
        return self


def _count(root: Path) -> tuple[int, int]:
    files = dirs = 0
    for _, dirnames, filenames in os.walk(root):
        files += len(filenames)
        dirs += len(dirnames)
    return files, dirs


def _run_ours(root: str, now: float, keep_folders: bool) -> None:
    """In a fresh process: plan + execute, printing timings and this process's peak RSS."""
    from airflow_ops.maintenance.logs import LogPolicy, execute_clean, plan_clean

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    policy = LogPolicy(retention=FIND_DAYS * DAY, require_db=False, remove_empty_folders=not keep_folders)
    when = datetime.fromtimestamp(now, timezone.utc)
    t0 = time.perf_counter()
    plan = plan_clean(Path(root), policy, dsn=None, now=when)
    t1 = time.perf_counter()
    report = execute_clean(plan)
    t2 = time.perf_counter()
    print(
        json.dumps(
            {
                "plan_seconds": t1 - t0,
                "execute_seconds": t2 - t1,
                "planned": plan.files_to_delete,
                "files_deleted": report.files_deleted,
                "bytes_freed": report.bytes_freed,
                "folders_removed": report.data["folders_removed"],
                "ok": report.ok,
                "rss_before_kib": rss_before,
                "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            }
        )
    )


# What each variant runs on its own copy of the tree; by default in this order, find and ours
# alternating so that a change of load on the machine does not favour one of them.
VARIANTS = {
    "find": "find -type f -mtime +30 -delete (leaves the emptied folders)",
    "ours": "logs clean: plan + execute, emptied folders removed (the default)",
    "find+empty": "the same find, then find -type d -empty -delete (the end state of ours)",
    "ours-keep-folders": "logs clean with remove_empty_folders: false (the end state of find)",
}


def _time_variant(name: str, root: Path, now: float) -> tuple[float, dict[str, object]]:
    t0 = time.perf_counter()
    if name.startswith("find"):
        subprocess.run(["find", str(root), "-type", "f", "-mtime", f"+{FIND_DAYS}", "-delete"], check=True)
        if name == "find+empty":
            subprocess.run(
                ["find", str(root), "-mindepth", "1", "-type", "d", "-empty", "-delete"], check=True
            )
        return time.perf_counter() - t0, {}
    cmd = [sys.executable, "-m", "bench.bench_logs_clean", "--run-ours", str(root), repr(now)]
    if name == "ours-keep-folders":
        cmd.append("--keep-folders")
    out = subprocess.run(
        cmd, check=True, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1]
    )
    return time.perf_counter() - t0, json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=1_000_000, help="files per tree (default 1,000,000)")
    parser.add_argument("--old-fraction", type=float, default=0.8, help="share of files past the retention")
    parser.add_argument("--dir", default=None, help="where to build the trees (default: the temp dir)")
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help=f"comma-separated, of: {', '.join(VARIANTS)}"
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="repeat all variants, each round in a rotated order"
    )
    parser.add_argument("--keep", action="store_true", help="leave the trees behind")
    parser.add_argument("--run-ours", nargs=2, metavar=("ROOT", "NOW"), help=argparse.SUPPRESS)
    parser.add_argument("--keep-folders", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run_ours:
        _run_ours(args.run_ours[0], float(args.run_ours[1]), args.keep_folders)
        return 0
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        parser.error(
            f"--variants: unknown {', '.join(unknown) or '(none given)'}; known: {', '.join(VARIANTS)}"
        )
    if args.files < 1 or not 0 <= args.old_fraction <= 1:
        parser.error("--files must be positive and --old-fraction within 0..1")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    base = Path(tempfile.mkdtemp(prefix="bench-logs-", dir=args.dir))
    now = time.time()
    totals = dict.fromkeys(variants, 0.0)
    per_round: list[dict[str, float]] = []
    ok = True
    try:
        for r in range(args.rounds):
            # Each round in a rotated order: on a shared machine the load drifts, and a variant
            # that always ran first (or last) would carry that drift alone.
            order = variants[r % len(variants) :] + variants[: r % len(variants)]
            if args.rounds > 1:
                print(f"-- round {r + 1}/{args.rounds}: {', '.join(order)}", flush=True)
            times = {}
            for name in order:
                seconds, good = _one_variant(name, base / name, args, now)
                times[name] = seconds
                totals[name] += seconds
                ok = ok and good
            per_round.append(times)
        load = os.getloadavg()
        print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
        if args.rounds > 1:
            for name in variants:
                print(f"total {name:18} {totals[name]:8.2f}s over {args.rounds} rounds")
        for ours_name, find_name in (("ours", "find"), ("ours", "find+empty"), ("ours-keep-folders", "find")):
            if ours_name in totals and find_name in totals:
                ratio = totals[ours_name] / totals[find_name]
                line = f"ratio {ours_name} / {find_name}: {ratio:.2f}x"
                if args.rounds > 1:
                    ratios = [t[ours_name] / t[find_name] for t in per_round]
                    line += f" of the totals, median per round {statistics.median(ratios):.2f}x"
                    line += f" (min {min(ratios):.2f}x, max {max(ratios):.2f}x)"
                print(f"{line} (target <= 1.5x)")
        return 0 if ok else 1
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


def _one_variant(name: str, root: Path, args: argparse.Namespace, now: float) -> tuple[float, bool]:
    """Build a tree, time one variant on it, check and print what it did, remove what is left."""
    # Built right before it is timed, so every variant meets the same cache state (a tree built
    # long before has had its inodes and folders evicted by the later builds).
    t0 = time.perf_counter()
    tree = _Tree(root, args.files, args.old_fraction, now).build()
    os.sync()  # no variant pays for flushing what its build wrote
    load = os.getloadavg()
    print(
        f"{name}: built {tree.made:,} files ({tree.old:,} past a {FIND_DAYS}-day retention) in "
        f"{time.perf_counter() - t0:.1f}s; load average {load[0]:.2f} {load[1]:.2f} (2 cores)",
        flush=True,
    )
    seconds, ours = _time_variant(name, root, now)
    left, folders = _count(root)
    deleted = args.files - left
    same = deleted == tree.old and (not ours or ours["files_deleted"] == tree.old)
    flag = "" if same else "  <-- NOT THE EXPECTED FILES"
    print(
        f"{name:18} {seconds:8.2f}s  deleted {deleted:,} files, left {left:,} files "
        f"in {folders:,} folders{flag}   [{VARIANTS[name]}]"
    )
    if ours:
        rss, rss_before = ours["peak_rss_kib"] / 1024, ours["rss_before_kib"] / 1024
        print(
            f"{'':18} plan {ours['plan_seconds']:.2f}s + execute {ours['execute_seconds']:.2f}s "
            f"(the rest is interpreter start); {ours['bytes_freed']:,} bytes freed, "
            f"{ours['folders_removed']:,} folders removed; peak RSS {rss:.1f} MiB "
            f"({rss_before:.1f} MiB after imports, before the walk)",
            flush=True,
        )
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return seconds, same and ours.get("ok", True) is True


if __name__ == "__main__":
    sys.exit(main())
