"""Before and after in one run: the same migrate by another build of podyn-fast and by this one,
alternating, so that a change is measured against its baseline on the same machine at the same
moment (these machines are shared: figures of two runs an hour apart differ by more than most
changes).

    git worktree add /tmp/before <commit>
    (cd /tmp/before && "$OLDPWD/.venv/bin/maturin" build --release -o /tmp/before-wheel)
    unzip -o -j /tmp/before-wheel/*.whl 'podyn_fast/_core.abi3.so' -d /tmp/before/python/podyn_fast
    .venv/bin/python -m benches.compare --before /tmp/before/python [--dataset rich] [--items 300000]

The other build runs with its ``python`` directory first on PYTHONPATH (its modules and its
``_core``); the Scan server, PostgreSQL and the checks are this tree's, shared by both. Every load
is checked like the migrate benchmark's (rows, distinct keys, the sum of ``balance``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benches import machine
from benches.migrate import DATASETS, run_once, serve


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", type=Path, required=True, help="the other build's python directory")
    ap.add_argument("--items", type=int, default=300_000)
    ap.add_argument("--dataset", choices=sorted(DATASETS), default="rich")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="loads by each build, alternating")
    ap.add_argument("--dsn", default=os.environ.get("PODYN_TEST_DSN"))
    ap.add_argument("--out", type=Path, help="where to write compare.json/.md (default: print only)")
    args = ap.parse_args(argv)
    if not (args.before / "podyn_fast" / "cli.py").is_file():
        ap.error(f"--before {args.before}: not a python directory holding podyn_fast")

    server, _, want_sum = serve(args.dataset, args.items)
    runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    try:
        with machine.postgres(args.dsn) as pg:
            n = 0
            for _ in range(args.rounds):
                for build, done in runs.items():
                    if build == "before":
                        os.environ["PYTHONPATH"] = str(args.before.resolve())
                    else:
                        os.environ.pop("PYTHONPATH", None)
                    run = run_once(pg.dsn, server.endpoint, args.workers, 16, n, pg.postmaster)
                    n += 1
                    exact = run["rows"] == run["distinct_keys"] == args.items
                    run["correct"] = exact and run["balance_sum"] == str(want_sum)
                    done.append(run)
            pg_version = pg.version
    finally:
        os.environ.pop("PYTHONPATH", None)
        server.stop()

    def median(build: str, key: str) -> float:
        return float(statistics.median(r[key] for r in runs[build]))

    def ratio(build: str) -> float:
        return float(statistics.median(r["client_cpu_seconds"] / r["postgres_cpu_seconds"] for r in runs[build]))

    lines = [
        f"machine: {machine.describe(pg_version)}",
        "command: .venv/bin/python -m benches.compare " + " ".join(argv if argv is not None else sys.argv[1:]),
        f"source: {args.items:,} {args.dataset} items, {args.workers} workers, {args.rounds} loads by each build,"
        " alternating",
        "",
        "| build | seconds (median) | client CPU s | PostgreSQL CPU s | client ÷ PostgreSQL CPU | correct |",
        "|---|---|---|---|---|---|",
    ]
    for build, done in runs.items():
        lines.append(
            f"| {build} | {median(build, 'seconds'):.2f} | {median(build, 'client_cpu_seconds'):.2f} "
            f"| {median(build, 'postgres_cpu_seconds'):.2f} | {ratio(build):.2f} "
            f"| {all(r['correct'] for r in done)} |"
        )
    lines += [
        "",
        f"after / before: seconds {median('after', 'seconds') / median('before', 'seconds'):.2f}, client CPU "
        f"{median('after', 'client_cpu_seconds') / median('before', 'client_cpu_seconds'):.2f}",
    ]
    print("\n".join(lines))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "compare.json").write_text(json.dumps({"runs": runs}, indent=2, default=str) + "\n")
        (args.out / "compare.md").write_text("# before and after\n\n" + "\n".join(lines) + "\n")
    return 0 if all(r["correct"] for rs in runs.values() for r in rs) else 1


if __name__ == "__main__":
    sys.exit(main())
