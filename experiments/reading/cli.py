"""Command line: ``python -m jinterp.experiments.reading --out DIR [--fast] [--seed S]``.

Writes ``DIR/summary.json`` (every number the figures show), ``DIR/config.json``, one PNG per
reading method (:data:`.plots.FIGURES`) and orbax checkpoints of both models under
``DIR/checkpoints`` (rerunning the command resumes the training exactly and redoes the
analysis; a different training configuration in an existing ``DIR`` is refused).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

from tqdm import tqdm

from jinterp import distributed
from jinterp.experiments.reading.plots import all_figures
from jinterp.experiments.reading.study import STEPS, StudyConfig, run_study


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m jinterp.experiments.reading",
        description="One figure per reading method (direct logit attribution, logit and tuned "
                    "lens, probes, difference-in-means ablation and steering, composition "
                    "scores, weight processing) on an induction model trained in-process.")
    parser.add_argument("--out", required=True,
                        help="output directory (figures, summary.json, checkpoints)")
    parser.add_argument("--fast", action="store_true",
                        help="tiny models and few steps (seconds of compute; for tests)")
    parser.add_argument("--seed", type=int, default=0, help="PRNG seed (default: 0)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    distributed.add_arguments(parser)
    return parser.parse_args(argv)


def _check_same_training(path: str, config: dict) -> None:
    """Refuses to resume checkpoints trained with other settings."""
    if os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)
        if {k: saved.get(k) for k in ("induction", "norm")} != {k: config[k] for k in
                                                                 ("induction", "norm")}:
            raise SystemExit(f"{path} holds a different training configuration than this "
                             "command; its checkpoints would be resumed with the wrong settings. "
                             "Use a fresh --out directory.")


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    distributed.single_process(distributed.initialize_from_args(args),
                               "python -m jinterp.experiments.reading")
    cfg = (StudyConfig.fast if args.fast else StudyConfig.full)(seed=args.seed)
    os.makedirs(args.out, exist_ok=True)
    config = json.loads(json.dumps(dataclasses.asdict(cfg), default=str))
    config_path = os.path.join(args.out, "config.json")
    _check_same_training(config_path, config)
    with open(config_path, "w") as f:
        json.dump(config, f, indent=2)

    bar = tqdm(total=len(STEPS) + 1, desc="reading study", unit="step",
               disable=args.no_progress, file=sys.stderr)
    started = []

    def tick(name: str) -> None:
        if started:
            bar.update(1)
        started.append(name)
        bar.set_postfix_str(name)

    def train_progress(label: str, done: int, state: dict) -> None:
        loss = float(state["history"][done - 1, 0])
        bar.set_postfix_str(f"train {label}: step {done}, loss {loss:.3f}")

    summary = run_study(cfg, args.out, tick, train_progress)
    bar.update(1)
    bar.set_postfix_str("figures")
    figures = all_figures(summary, args.out)
    bar.update(1)
    bar.close()
    summary["figures"] = [os.path.basename(p) for p in figures]
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(json.dumps({"top_dla_head": summary["dla"]["top_head_repeated"],
                      "runtime_s": summary["runtime_s"]}))
    return summary
