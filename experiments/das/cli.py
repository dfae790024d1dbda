"""Command line: ``python -m jinterp.experiments.das --out DIR [--fast] [--seed S]``.

Writes ``DIR/summary.json`` (every number, the study's checks) and ``DIR/iia.png``; prints the
checks. Exits 1 when a check fails (see :func:`.study.checks`).
"""

from __future__ import annotations

import argparse
import json
import os

from jinterp import distributed
from jinterp.experiments.das.plots import iia_figure
from jinterp.experiments.das.study import StudyConfig, run


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m jinterp.experiments.das",
        description="Distributed alignment search on a toy MLP trained in-process: IIA against "
                    "the subspace size, learned against random subspaces, at two hooks.")
    parser.add_argument("--out", required=True, help="output directory (summary.json, iia.png)")
    parser.add_argument("--fast", action="store_true", help="fewer sizes and steps (for tests)")
    parser.add_argument("--seed", type=int, default=0, help="PRNG seed (default: 0)")
    distributed.add_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    distributed.single_process(distributed.initialize_from_args(args),
                               "python -m jinterp.experiments.das")
    config = StudyConfig.fast() if args.fast else StudyConfig()
    config = type(config)(**{**config.__dict__, "seed": args.seed})
    os.makedirs(args.out, exist_ok=True)
    summary = run(config)
    summary["figures"] = [os.path.basename(iia_figure(summary, os.path.join(args.out,
                                                                             "iia.png")))]
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2, default=str)
    for row in summary["rows"]:
        print(f"{row['hook']:>26} {row['variable']} k={row['k']}: IIA {row['iia']:.3f} "
              f"(random {row['iia_random']:.3f}, chance {row['chance']:.3f})")
    for variable, b in summary["boundless"].items():
        print(f"boundless DAS {variable}: size {b['learned_size']:.2f} -> k={b['n_dims']}, "
              f"IIA {b['iia']:.3f}")
    print("checks:", json.dumps(summary["checks"]), f"({summary['wall_s']:.0f} s)")
    if not all(summary["checks"].values()):
        raise SystemExit(1)
    return summary


if __name__ == "__main__":
    main()
