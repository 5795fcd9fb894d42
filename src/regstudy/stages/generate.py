"""DVC stage ``generate``: every dataset of ``params.yaml`` into ``data/<name>.npz``.

One draw per seed of the dataset's seeds (``study.by_dataset.<name>.seeds``, or for a CSV
file ``csv.<name>.seeds``, where given, else ``study.seeds``; ``data.seed`` fixes the task: the signal's function); see
:mod:`regstudy.data`.

Usage: ``python -m regstudy.stages.generate [--params params.yaml] [--out data]`` for
the built-in datasets under ``data``, or ``... --csv NAME`` for the CSV file of entry
``NAME`` under ``csv`` (checked first: a bad file is a clear error and writes nothing).
"""

from __future__ import annotations

import argparse
import errno
import sys
from pathlib import Path

from .. import warm
from . import dataset_seeds, read_params
from ..data import GENERATORS, CsvError, make_csv_dataset, make_dataset, save_npz, text_of


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", default="data")
    parser.add_argument("--csv", metavar="NAME", help="the CSV entry csv.NAME of the params file")
    args = parser.parse_args(argv)
    warm.prestart()  # the train stages' warm server imports while the data are drawn
    loaded = read_params(args.params)
    params, study = loaded["data"], loaded.get("study") or {}
    task_seed = params.get("seed", 0)
    names = [n for n in params if n != "seed"]
    try:  # every dataset's seeds first: a bad value writes nothing
        seeds = ({args.csv: dataset_seeds(study, args.csv, loaded.get("csv"))} if args.csv is not None
                 else {n: dataset_seeds(study, n) for n in names})
    except ValueError as e:  # ConfigError
        print(f"error: {e.key}={e.value!r} in {args.params}; allowed: {e.allowed}", file=sys.stderr)
        return 2
    unknown = [n for n in names if n not in GENERATORS]
    if unknown:
        print(f"error: data.{unknown[0]} in {args.params} is not a dataset; allowed: "
              f"{sorted(GENERATORS)}", file=sys.stderr)
        return 2
    if args.csv is not None:
        entry = (loaded.get("csv") or {}).get(args.csv)
        if not isinstance(entry, dict) or not entry.get("path") or not entry.get("target"):
            print(f"error: csv.{args.csv}={entry!r} in {args.params}; allowed: a mapping with path and "
                  f"target (and optionally task, val_fraction, test_fraction, epochs, overrides, seeds)",
                  file=sys.stderr)
            return 2
        try:
            made = {args.csv: make_csv_dataset(entry, seeds[args.csv], task_seed)}
        except CsvError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"csv.{args.csv}: {text_of(made[args.csv], 'note')}")
    else:
        try:  # make everything first, so a bad parameter leaves no file behind
            made = {n: make_dataset(n, dict(params[n]), seeds[n], task_seed) for n in names}
        except (TypeError, ValueError) as e:
            print(f"error: bad parameter under data in {args.params}: {e}", file=sys.stderr)
            return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, arrays in made.items():
        try:
            save_npz(out / f"{name}.npz", arrays)  # all or nothing: no partial file is left
        except OSError as e:  # a full disk said as such, naming the file, not a traceback
            why = "the disk is full" if e.errno == errno.ENOSPC else e.strerror or str(e)
            print(f"error: could not write {e.filename or out / f'{name}.npz'}: {why}", file=sys.stderr)
            return 1
        print(f"{out / name}.npz: " + ", ".join(f"{k} {v.shape}" for k, v in sorted(arrays.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
