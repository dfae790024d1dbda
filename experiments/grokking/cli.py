"""Command line: ``python -m jinterp.experiments.grokking --out DIR [--fast] [--seeds K]``.

Trains (resuming whatever ``DIR`` already holds), analyses every seed, and writes
``DIR/summary.json`` and PNG figures. Run once per process with ``--coordinator``,
``--num-processes`` and ``--process-id`` (or ``python -m jinterp.launch``) to split the seeds
over several processes' devices. Rerunning an interrupted command continues exactly where
the last checkpoint left off; rerunning a finished one only redoes the analysis.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import numpy as np

from jinterp import distributed

from . import plots
from .analysis import analyse_run, seed_params
from .config import GrokConfig, check_seeds
from .training import load_history, train, train_seconds


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m jinterp.experiments.grokking",
        description="Grokking modular addition (Nanda et al. 2023): train the 1-layer "
                    "transformer on (a + b) mod 113 with full-batch AdamW, then compute the "
                    "Fourier progress measures. Default: the full 40,000-step reproduction.")
    parser.add_argument("--out", required=True, help="output directory (rerun the same to resume)")
    parser.add_argument("--fast", action="store_true",
                        help="tiny smoke-test setting (p=23, small model, 400 steps; seconds)")
    parser.add_argument("--seeds", default="1",
                        help="K: train model-init seeds 0..K-1 together with vmap (default 1); "
                             "or a comma-separated list such as 4,5,6,7 (the first is the "
                             "default seed)")
    parser.add_argument("--steps", type=int, default=None, help="optimiser steps (default 40000)")
    parser.add_argument("--steps-per-call", type=int, default=None,
                        help="steps scanned per compiled call = checkpoint interval (default 100)")
    parser.add_argument("--snapshot-every", type=int, default=None,
                        help="keep parameters every N steps for the progress measures "
                             "(default 500)")
    parser.add_argument("--loss", choices=("answers", "all"), default=None,
                        help="training softmax over the p answer logits ('answers') or over "
                             "all p + 1, the '=' logit included, as the authors' code ('all'); "
                             "default: "
                             f"{'all' if GrokConfig.eq_logit_in_loss else 'answers'}")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--analyse-only", action="store_true",
                        help="skip training; analyse the history DIR holds (e.g. a run still "
                             "in progress)")
    distributed.add_arguments(parser)  # several processes split the seeds over their devices
    return parser


def parse_seeds(text: str) -> tuple[int, ...]:
    """``"4"`` -> seeds 0..3; ``"4,5,6,7"`` -> those seeds."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise SystemExit(f"--seeds takes a count K or a list like 4,5,6,7, got {text!r}.") from None
    if "," not in text:
        if values[0] < 1:
            raise SystemExit(f"--seeds must be at least 1, got {text}.")
        return tuple(range(values[0]))
    try:
        check_seeds(tuple(values))
    except ValueError as err:
        raise SystemExit(f"--seeds {text}: {err}") from None
    return tuple(values)


def config_from_args(args: argparse.Namespace) -> GrokConfig:
    overrides = {"seeds": parse_seeds(args.seeds)}
    for name in ("steps", "steps_per_call", "snapshot_every"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    if args.loss is not None:
        overrides["eq_logit_in_loss"] = args.loss == "all"
    return GrokConfig.fast(**overrides) if args.fast else GrokConfig(**overrides)


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    return x


def run(cfg: GrokConfig, out_dir: str, progress: bool = True, analyse_only: bool = False) -> dict:
    """Train/resume (unless ``analyse_only``), analyse, plot; returns the summary that was written.

    ``wall_time_s`` is the training time summed over every session of the run (``timing.json``)
    plus this analysis, so re-analysing a finished run does not report only the analysis.
    """
    if not analyse_only:
        train(cfg, out_dir, progress=progress)
    if not distributed.is_main():  # process 0 analyses the history it wrote
        return {}
    tic = time.perf_counter()
    history = load_history(out_dir)
    summary, curves = analyse_run(cfg, history)
    final_params = seed_params(history["snapshots"], 0)[-1]
    figures = plots.write_all(out_dir, summary, curves, final_params, cfg.p)
    analysis_s, train_s = time.perf_counter() - tic, train_seconds(out_dir)
    summary = {"train_wall_time_s": train_s, "analysis_wall_time_s": analysis_s,
               "wall_time_s": train_s + analysis_s, **summary,
               "figures": [os.path.basename(f) for f in figures],
               "config": {k: v for k, v in vars(cfg).items()},
               "device": str(jax.devices()[0]), "cpu_count": os.cpu_count()}
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(_jsonable(summary), f, indent=1)
    return summary


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    distributed.initialize_from_args(args)
    cfg = config_from_args(args)
    summary = run(cfg, args.out, progress=not args.no_progress, analyse_only=args.analyse_only)
    if not summary:
        return
    keys = ("steps", "train_accuracy", "test_accuracy", "test_loss", "memorization_step",
            "grok_step", "key_frequencies", "single_frequency_neuron_fraction",
            "restricted_loss_drop_step", "test_loss_drop_step", "train_wall_time_s",
            "wall_time_s")
    keys += ("across_seeds",) if len(cfg.seeds) > 1 else ()
    print(json.dumps({k: _jsonable(summary[k]) for k in keys}, indent=1))
    print(f"wrote {os.path.join(args.out, 'summary.json')} and {', '.join(summary['figures'])}")
