"""``python -m jinterp.experiments.tracr``: methods scored on Tracr-compiled programs.

Compiles every program of :data:`~.programs.PROGRAMS`, runs every method of :mod:`.methods` on
it and scores them against the weights' ground truth (:mod:`.study`); then the
compressed-residual study (:mod:`.study_compressed`). Writes into ``--out``: one JSON per
program under ``programs/`` (a rerun skips the programs already there, so an interrupted run
resumes), ``summary.json``, ``table.md`` and the figures ``methods_auc.png``,
``edge_roc.png`` and ``compressed.png``.
"""

from __future__ import annotations

import argparse
import json
import os

from tqdm import tqdm

from jinterp import distributed
from jinterp.experiments.tracr.programs import PROGRAMS, compiled

PARTS = ("methods", "compressed")
FAST_PROGRAMS = ("sort", "reverse")


def _fmt(v) -> str:
    return "–" if v is None else f"{v:.2f}"


def table(results: dict, truth: str = "effective") -> str:
    """Markdown: one row per program, per method ``AUC (precision / recall)``; then the SAE's
    recovery of the labelled directions (mean over them of the best decoder ``|cos|``, and a
    random decoder's) and the probes' mean accuracy on the uncompressed residual."""
    first = next(iter(results.values()))["scores"][truth]
    cols = [(lvl, m) for lvl in ("nodes", "edges") for m in first[lvl]]
    head = "| program | nodes / edges (true) | " + " | ".join(
        f"{m} ({lvl[:-1]})" for lvl, m in cols) + " | SAE: mean max cos (random) | probe acc |"
    lines = [head, "|" + "---|" * (len(cols) + 4)]
    for name, r in results.items():
        t = r["truth"][truth]
        row = [name, f"{r['n_nodes']} / {r['n_edges']} ({len(t['nodes'])} / {len(t['edges'])})"]
        for lvl, m in cols:
            s = r["scores"][truth][lvl][m]
            row.append(f"{_fmt(s['auc'])} ({_fmt(s['precision'])} / {_fmt(s['recall'])})")
        dic = r.get("dictionary", {}).get("original")
        row += ["–", "–"] if dic is None else [
            f"{_fmt(dic['sae']['mean_max_cos'])} ({_fmt(dic['sae']['random_mean_max_cos'])})",
            _fmt(dic["probe"]["mean_accuracy"])]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def run_methods(out: str, names, *, fast: bool = False, dictionary: bool = True) -> dict:
    """Scores every method on ``names``; one JSON per program under ``out/programs``.

    ``dictionary``: also train an SAE and probes on each program's residual (the table's last
    two columns)."""
    from jinterp.experiments.tracr.plots import plot_auc, plot_edge_roc
    from jinterp.experiments.tracr.study import score_program
    from jinterp.experiments.tracr.study_compressed import original_scores

    os.makedirs(os.path.join(out, "programs"), exist_ok=True)
    results = {}
    kw = {"thresholds": (0.0, 0.01, 0.1)} if fast else {}
    for name in tqdm(names, desc="programs"):
        path = os.path.join(out, "programs", f"{name}.json")
        if os.path.exists(path):
            with open(path) as f:
                results[name] = json.load(f)
            continue
        results[name] = score_program(name, compiled(name), **kw)
        if dictionary:
            results[name]["dictionary"] = original_scores(name, sae_steps=200 if fast else 3000)
        with open(path + ".tmp", "w") as f:
            json.dump(results[name], f)
        os.replace(path + ".tmp", path)  # a program's file is complete or absent
    plot_auc(results, os.path.join(out, "methods_auc.png"))
    plot_edge_roc(results, os.path.join(out, "edge_roc.png"))
    md = "\n\n".join(f"### Against the {t} circuit\n\n{table(results, t)}"
                     for t in ("effective", "structural"))
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(md + "\n")
    print(md)
    return results


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m jinterp.experiments.tracr",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/tracr", help="output directory")
    parser.add_argument("--part", choices=PARTS + ("all",), default="all")
    parser.add_argument("--programs", nargs="+", choices=sorted(PROGRAMS), default=None,
                        help="programs of the methods part (default: all)")
    parser.add_argument("--fast", action="store_true", help="a smoke run (the tests' size)")
    parser.add_argument("--no-dictionary", action="store_true",
                        help="methods part: skip the SAE and probes on each residual")
    distributed.add_arguments(parser)
    args = parser.parse_args(argv)
    distributed.single_process(distributed.initialize_from_args(args),
                               "python -m jinterp.experiments.tracr")
    names = args.programs or (FAST_PROGRAMS if args.fast else tuple(PROGRAMS))
    summary = {}
    if args.part in ("methods", "all"):
        summary["methods"] = {n: {k: v for k, v in r.items() if k not in ("raw", "roc")}
                              for n, r in run_methods(args.out, names, fast=args.fast,
                                         dictionary=not args.no_dictionary).items()}
    if args.part in ("compressed", "all"):
        from jinterp.experiments.tracr.study_compressed import run_compressed

        summary["compressed"] = run_compressed(os.path.join(args.out, "compressed"),
                                               fast=args.fast)
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(f"wrote {args.out}/summary.json")
