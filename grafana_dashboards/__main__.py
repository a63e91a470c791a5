"""``python -m grafana_dashboards [--check]``: rewrite every dashboard JSON, or list the stale ones."""

from __future__ import annotations

import argparse
import sys

from . import DASHBOARDS, output_path, render


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grafana_dashboards", description=__doc__)
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 listing files that differ from the code"
    )
    args = parser.parse_args(argv)
    stale = []
    for name, build in DASHBOARDS.items():
        path = output_path(name)
        text = render(build())
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        stale.append(path)
        if not args.check:
            path.write_text(text)
            print(f"wrote {path}")
    if args.check and stale:
        print("stale dashboards (run `python -m grafana_dashboards`):", file=sys.stderr)
        for path in stale:
            print(f"  {path}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
