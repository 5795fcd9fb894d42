"""CLI: python -m regstudy_report --results results --data data --out reports"""

from __future__ import annotations

import argparse
import sys
import time

from regstudy_report import NoResultsError, build_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m regstudy_report",
        description="Write index.html (figures, best settings, provenance) and metrics.json from the result tables.",
    )
    parser.add_argument("--results", default="results", help="folder of <family>/<dataset>/ result tables")
    parser.add_argument("--data", default="data", help="folder of <dataset>.npz files (for the data points)")
    parser.add_argument("--out", default="reports", help="output folder")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        html, metrics = build_report(args.results, args.data, args.out)
    except NoResultsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {html} and {metrics} in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
