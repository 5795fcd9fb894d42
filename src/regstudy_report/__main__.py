"""CLI: python -m regstudy_report --results results --data data --out reports [--params params.yaml]"""

from __future__ import annotations

import argparse
import sys
import time

from regstudy_report import NoResultsError, SettingsError, build_report
from regstudy_report.settings import read_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m regstudy_report",
        description="Write index.html, findings.json, claims.json and metrics.json from the result tables.",
    )
    parser.add_argument("--results", default="results", help="folder of <family>/<dataset>/ result tables")
    parser.add_argument("--data", default="data", help="folder of <dataset>.npz files (for the data points)")
    parser.add_argument("--out", default="reports", help="output folder")
    parser.add_argument("--params", default=None,
                        help="params file whose `report` section sets alpha, power and the equivalence margins "
                             "(default: the built-in settings)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        settings = read_settings(args.params)
        html, metrics = build_report(args.results, args.data, args.out, settings)
    except SettingsError as error:
        where = f"{args.params}: " if args.params and not str(error).startswith(str(args.params)) else ""
        print(f"error: {where}{error}", file=sys.stderr)
        return 2
    except NoResultsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {html} and {metrics} in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
