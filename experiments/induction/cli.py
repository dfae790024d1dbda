"""Command line: ``python -m jinterp.experiments.induction --out DIR [--fast] [--steps N]``.

Writes ``DIR/summary.json``, ``DIR/config.json``, the PNG figures and orbax checkpoints under
``DIR/checkpoints`` (re-running the same command after an interruption resumes exactly; a
different *training* configuration in an existing ``DIR`` is refused rather than silently
mixed; re-running with finished checkpoints only redoes the analysis).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

from tqdm import tqdm

from jinterp import distributed
from jinterp.experiments.induction.plots import all_figures
from jinterp.experiments.induction.study import StudyConfig, run_study


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m jinterp.experiments.induction",
        description="Induction heads in a 2-layer attention-only transformer trained on repeated "
                    "random subsequences (phase change, per-head scores, OV copying, "
                    "K-composition, patching), with a 1-layer control.")
    parser.add_argument("--out", required=True,
                        help="output directory (figures, summary.json, checkpoints)")
    parser.add_argument("--fast", action="store_true",
                        help="tiny model and few steps (seconds; for tests)")
    parser.add_argument("--steps", type=int, default=None,
                        help="training steps per model (default: 2500; fast: 120)")
    parser.add_argument("--seed", type=int, default=0,
                        help="PRNG seed for init and data (default: 0)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    distributed.add_arguments(parser)
    return parser.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> StudyConfig:
    make = StudyConfig.fast if args.fast else StudyConfig.full
    return make(seed=args.seed) if args.steps is None else make(seed=args.seed, n_steps=args.steps)


def write_config(out: str, cfg) -> dict:
    """Writes ``cfg`` to ``out/config.json`` (creating ``out``) and returns it as JSON data.

    Refuses to overwrite a config whose training settings differ (analysis options may change):
    the directory's checkpoints would otherwise be resumed with the wrong settings.
    """
    os.makedirs(out, exist_ok=True)
    config = json.loads(json.dumps(dataclasses.asdict(cfg)))
    path = os.path.join(out, "config.json")
    if os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)
        if saved.get("train") != config["train"]:
            raise SystemExit(f"{path} holds a different training configuration than this "
                             "command; its checkpoints would be resumed with the wrong settings. "
                             "Use a fresh --out directory.")
    with open(path, "w") as f:
        json.dump(config, f, indent=2)
    return config


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    distributed.single_process(distributed.initialize_from_args(args),
                               "python -m jinterp.experiments.induction")
    cfg = config_from_args(args)
    write_config(args.out, cfg)

    bars = []

    def make_progress(label: str, total: int):
        bar = tqdm(total=total, desc=f"train {label}", unit="step", disable=args.no_progress,
                   file=sys.stderr)
        bars.append(bar)

        def progress(done: int, state: dict) -> None:
            bar.n = done
            bar.set_postfix(loss=f"{float(state['history'][done - 1, 0]):.3f}")
            bar.refresh()
        return progress

    summary, arrays = run_study(cfg, args.out, make_progress)
    for bar in bars:
        bar.close()
    figures = all_figures(arrays, summary, cfg.window, args.out)
    summary["figures"] = [os.path.basename(p) for p in figures]
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    keys = ("phase_change_step", "induction_heads", "induction_scores", "previous_token_heads",
            "previous_token_scores", "one_layer_final_loss", "two_layer_final_loss", "runtime_s")
    print(json.dumps({k: summary[k] for k in keys}))
    return summary
