"""`python -m bench.table`: bench/results.json as a Markdown table (for the README)."""

from __future__ import annotations

import json
import math
from pathlib import Path


def main() -> None:
    rows = json.loads(Path(__file__).with_name("results.json").read_text())
    machines = sorted({r["machine"] for r in rows})
    print("| benchmark | value | unit | target | met |")
    print("|---|---:|---|---|---|")
    for r in rows:
        v = r["value"]
        shown = "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:,.3f}".rstrip("0").rstrip(".")
        met = {True: "yes", False: "**no**", None: ""}[r["ok"]]
        print(f"| {r['name']} | {shown} | {r['unit']} | {r['target']} | {met} |")
    print()
    for m in machines:
        print(f"Machine: {m}")


if __name__ == "__main__":
    main()
