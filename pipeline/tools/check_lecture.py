"""`make check`: the lecture seed's metrics/*.json against the lecture's and the notebook's
numbers in expected.yaml; exit 1 on any drift."""

import json
import sys
from pathlib import Path

import click
import pandas as pd

from actgrad.params import load_yaml
from actgrad.report.tables import drift


@click.command()
@click.option("--metrics", "metrics_dir", default="metrics", show_default=True)
@click.option("--expected", default="expected.yaml", show_default=True)
def main(metrics_dir, expected):
    spec = load_yaml(Path(expected).read_text())
    metrics = {}
    for row in spec:
        path = Path(metrics_dir) / f"{row}.json"
        metrics[row] = json.loads(path.read_text()) if path.exists() else None
    rows = drift(spec, metrics)
    table = pd.DataFrame(rows)
    table["ok"] = table["ok"].map({True: "ok", False: "DRIFT"})
    print(table.to_markdown(index=False, floatfmt=".6g"))
    bad = [f"{r['row']}.{r['metric']}" for r in rows if not r["ok"]]
    if bad:
        print(f"drift in {len(bad)} of {len(rows)} checks: {', '.join(bad)}", file=sys.stderr)
        sys.exit(1)
    print(f"all {len(rows)} checks within tolerance")


if __name__ == "__main__":
    main()
