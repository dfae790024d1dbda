"""Command line: ``python -m jinterp.experiments.circuits --out DIR [--fast] [--steps N]``.

Writes ``DIR/report.md`` (figures embedded as relative PNG links), ``DIR/summary.json`` (the
checks and every number), the PNG figures, ``DIR/attention_patterns.html`` (the interactive
viewer) and orbax checkpoints of the training under ``DIR/checkpoints`` (a rerun resumes them;
a different training configuration in an existing ``DIR`` is refused).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from tqdm import tqdm

from jinterp import distributed
from jinterp.experiments.circuits import figures, report
from jinterp.experiments.circuits.config import CircuitConfig
from jinterp.experiments.circuits.study import run_study
from jinterp.experiments.induction.cli import write_config


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m jinterp.experiments.circuits",
        description="Circuit study of the induction circuit: train a 2-layer attention-only "
                    "model, localise with compiled patching sweeps and AtP*, path-patch the "
                    "previous-token head into the induction heads, discover the circuit (ACDC, "
                    "learned edge mask), write report.md and summary.json.")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--fast", action="store_true",
                        help="tiny model, few steps (seconds; a smoke test of the pipeline)")
    parser.add_argument("--steps", type=int, default=None,
                        help="training steps (default: 1500; fast: 120)")
    parser.add_argument("--seed", type=int, default=0, help="PRNG seed (default: 0)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    distributed.add_arguments(parser)
    return parser.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> CircuitConfig:
    make = CircuitConfig.fast if args.fast else CircuitConfig.full
    return make(seed=args.seed) if args.steps is None else make(seed=args.seed, n_steps=args.steps)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    distributed.single_process(distributed.initialize_from_args(args),
                               "python -m jinterp.experiments.circuits")
    cfg = config_from_args(args)
    write_config(args.out, cfg)
    start, cpu_start = time.perf_counter(), time.process_time()
    bars = []

    def progress(label: str, total: int):
        for bar in bars:  # one bar at a time: the previous step is done
            bar.close()
        bar = tqdm(total=total, desc=label, disable=args.no_progress, file=sys.stderr,
                   leave=True, dynamic_ncols=True)
        bars.append(bar)

        def tick(name: str, n: int = 1) -> None:
            bar.set_postfix_str(name, refresh=False)
            bar.update(n)
        return tick

    summary, arrays = run_study(cfg, args.out, progress)
    t, c = time.perf_counter(), time.process_time()
    files = figures.all_figures(arrays, args.out,
                                tick=progress("5/5 figures and report", figures.n_figures(arrays)))
    for bar in bars:
        bar.close()
    summary["runtime_s"]["figures"] = round(time.perf_counter() - t, 1)
    summary["runtime_s"]["total"] = round(time.perf_counter() - start, 1)
    summary["cpu_s"]["figures"] = round(time.process_time() - c, 1)
    summary["cpu_s"]["total"] = round(time.process_time() - cpu_start, 1)
    summary["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    report.write(summary, files, args.out)
    print(json.dumps({k: summary[k] for k in ("checks", "runtime_s", "cpu_s",
                                              "load_average_at_end")}))
    return json.loads(json.dumps(dict(summary, figures=files)))
