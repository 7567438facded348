"""The `fronts` command: turn a sweep's eval.json files into front tables, a plot and metrics.

    python -m pama_lit.fronts SWEEP_DIR [SWEEP_DIR ...] --out OUT_DIR
        [--ref-point V1 V2 ...] [--ref-shift D] [--no-progress]

Writes into OUT_DIR: runs_all.csv, runs_{algorithm}.csv per algorithm, metrics.csv and front.png,
and prints each algorithm's runs, hypervolume, IGD+, additive epsilon and spacing. Exits 1 with
a one-line error when the folders cannot be read (see `pama_lit.fronts.collect`).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pama_lit.fronts.collect import (
    FrontsError,
    front_metrics,
    load_sweep,
    reference_point,
    write_tables,
)
from pama_lit.fronts.plot import plot_front


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pama_lit.fronts",
        description=(
            "Gather eval.json files (searched recursively: Hydra multirun folders, run folders, "
            "W&B offline runs) into one CSV per algorithm, a front plot and front metrics. "
            "All objectives are maximised."
        ),
    )
    parser.add_argument("sweep_dirs", nargs="+", type=Path, metavar="SWEEP_DIR", help="folders to search")
    parser.add_argument("--out", required=True, type=Path, metavar="OUT_DIR", help="folder for CSVs and PNG")
    parser.add_argument(
        "--ref-point",
        nargs="+",
        type=float,
        metavar="V",
        help=(
            "hypervolume reference point, one value per objective in the eval files' order; "
            "default: the reference policy's scores (an eval.json with policy 'reference'), "
            "else the component-wise minimum of all runs"
        ),
    )
    parser.add_argument(
        "--ref-shift",
        type=float,
        default=0.0,
        metavar="D",
        help="subtract D from every coordinate of the reference point (default 0)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar while reading files")
    return parser


def check_out_dir(out: Path) -> None:
    """``out`` is a writable folder, or can be created as one (checked before any file is read).

    Raises:
        FrontsError: ``out`` is a file, or it (or the nearest existing folder above it) is not writable.
    """
    if out.exists() and not out.is_dir():
        raise FrontsError(f"--out {out} is a file, not a folder; give a folder for the CSVs and the plot")
    existing = out
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise FrontsError(f"--out {out}: {existing} is a file, so the folder cannot be created there")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise FrontsError(f"--out {out}: the folder {existing} is not writable")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        check_out_dir(args.out)
        sweep = load_sweep(args.sweep_dirs, progress=not args.no_progress)
        ref, source = reference_point(sweep, args.ref_point, args.ref_shift)
    except FrontsError as err:
        print(f"fronts: error: {err}", file=sys.stderr)
        return 1

    metrics = front_metrics(sweep, ref)
    try:
        written = write_tables(sweep, args.out)
        written.append(args.out / "metrics.csv")
        metrics.to_csv(written[-1], index=False)
        fig = plot_front(sweep.runs, sweep.objectives, ref, ref_label="reference point")
        written.append(args.out / "front.png")
        fig.savefig(written[-1], dpi=150)
    except OSError as err:  # a full disk, or the folder changed since check_out_dir
        where = f" ({err.filename})" if err.filename else ""
        print(f"fronts: error: --out {args.out}: cannot write{where}: {err.strerror or err}", file=sys.stderr)
        return 1

    print(f"runs: {len(sweep.runs)} of {len(sweep.algorithms)} algorithms ({', '.join(sweep.algorithms)})")
    if sweep.skipped:
        print(
            f"skipped {len(sweep.skipped)} malformed file(s): {', '.join(str(p) for p, _ in sweep.skipped)}"
        )
    print(f"objectives (maximised): {', '.join(sweep.objectives)}")
    coords = ", ".join(f"{o}={v:.6g}" for o, v in zip(sweep.objectives, ref, strict=True))
    print(f"reference point: {coords} ({source})")
    print("IGD+ and additive epsilon are against the union of all algorithms' non-dominated points")
    print(metrics.to_string(index=False, float_format=lambda v: f"{v:.6g}"))
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
