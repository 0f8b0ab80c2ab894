"""`python -m bench [name ...]`: run every bench_*.py module, print a table, write bench/results.json."""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import sys
import traceback
from pathlib import Path

import bench
from bench.common import BenchResult

OUT = Path(__file__).with_name("results.json")


def main(argv: list[str]) -> int:
    names = sorted(m.name for m in pkgutil.iter_modules(bench.__path__) if m.name.startswith("bench_"))
    if argv:
        names = [n for n in names if any(a in n for a in argv)]
    previous = {r["name"]: r for r in json.loads(OUT.read_text())} if OUT.exists() else {}
    failed = False
    for name in names:
        print(f"== {name}", flush=True)
        environ = dict(os.environ)
        try:
            results: list[BenchResult] = importlib.import_module(f"bench.{name}").run()
        except Exception:
            traceback.print_exc()
            failed = True
            continue
        finally:
            # Each benchmark starts from the environment `python -m bench` was started with: one that
            # configures Prefect (PREFECT_HOME in its temporary directory, the lean server's services off)
            # must not hand that to a later one's child processes (the rehearsal's `mlcrypto up`).
            os.environ.clear()
            os.environ.update(environ)
        for r in results:
            previous[r.name] = r.as_dict()
            verdict = "-" if r.ok is None else "ok" if r.ok else "MISSED"
            print(f"   {r.name:<55} {r.value:>14,.3f} {r.unit:<10} target {r.target:<12} {verdict}")
    rows = sorted(previous.values(), key=lambda r: r["name"])
    OUT.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"\n{'benchmark':<55} {'value':>14} {'unit':<10} {'target':<12} ok")
    for r in rows:
        print(f"{r['name']:<55} {r['value']:>14,.3f} {r['unit']:<10} {r['target']:<12} {r['ok']}")
    print(f"\nwrote {OUT}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
