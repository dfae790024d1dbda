"""``report.md`` (figures as relative PNG links, the numbers, the checks) and ``summary.json``."""

from __future__ import annotations

import json
import os

import numpy as np

CHECKS = (
    ("induction_heads_found_by_patching",
     "noising the keys singles out the heads with induction attention patterns"),
    ("previous_token_head_found",
     "path patching into K, noising outputs and attention scores agree on the previous-token head"),
    ("k_path_dominates", "the previous-token head reaches the induction heads through K, not Q/V"),
    ("circuit_contains_k_edge",
     "ACDC's circuit keeps previous-token head -> induction head key"),
    ("sweeps_match_direct_patches",
     "compiled sweep entries equal a plain run_with_hooks patch of the same node"),
)


def _mark(value) -> str:
    return "n/a" if value is None else ("yes" if value else "**no**")


def _heads_table(values: list, title: str) -> list[str]:
    x = np.asarray(values)
    lines = [f"| {title} | " + " | ".join(f"H{h}" for h in range(x.shape[1])) + " |",
             "|---" * (x.shape[1] + 1) + "|"]
    lines += [f"| L{l} | " + " | ".join(f"{v:.3f}" for v in row) + " |"
              for l, row in enumerate(x)]
    return lines + [""]


def markdown(summary: dict, figures: dict[str, str]) -> str:
    """The report's text (figure paths relative to the report)."""
    c, t, m = summary["checks"], summary["training"], summary["metric"]
    img = lambda key, alt: f"![{alt}]({figures[key]})" if key in figures else ""
    lines = [
        "# Circuit study: the induction circuit of a 2-layer attention-only model", "",
        "Clean prompts `r r` (a random sequence written twice), corrupted `r' r` (the first copy "
        "resampled). Metric: the loss on the second copy, normalised to 0 (corrupted) .. 1 "
        f"(clean): clean loss {m['clean_second_copy_loss']:.3f}, corrupted "
        f"{m['corrupted_second_copy_loss']:.3f} nats.", "",
        "## Checks", "", "| check | result | what it means |", "|---|---|---|",
    ]
    lines += [f"| `{key}` | {_mark(c[key])} | {text} |" for key, text in CHECKS]
    lines += [
        "", f"Previous-token head L0H{c['previous_token_head_by_path_patching'][1]}; induction "
        f"heads by patching {['L1H%d' % h for h in c['induction_heads_by_patching']]}, by "
        f"attention {['L1H%d' % h for h in c['induction_heads_by_attention']]}. Path effect "
        f"(1 - metric) of the previous-token head into the induction heads' K "
        f"**{c['path_effect_prev_to_induction_k']:.3f}**, Q "
        f"{c['path_effect_prev_to_induction_q']:.3f}, V {c['path_effect_prev_to_induction_v']:.3f}."
        + ("" if c["faithfulness"] is None else
           f" ACDC circuit faithfulness **{c['faithfulness']:.3f}**."), "",
        "## 1. Training", "",
        ("The hand-built circuit of `planted.py` (fast mode: no training)." if t.get("planted")
         else f"{t['steps']} steps; phase change at step {t['phase_change_step']}; final loss "
              f"on predictable tokens {t['final_loss_predictable']:.3f} (ln vocab = "
              f"{t['ln_vocab']:.3f})."),
        "", img("loss_curve", "loss curve"), "", img("patterns", "attention patterns"), "",
        f"Interactive: [attention pattern viewer]({figures.get('viewer', '')}) (one HTML file, "
        "no network).", "",
    ]
    lines += _heads_table(summary["attention_scores"]["induction"], "induction score")
    lines += _heads_table(summary["attention_scores"]["previous_token"], "previous-token score")
    lines += ["## 2. Localisation: compiled sweeps and AtP*", "",
              img("resid_pre", "resid_pre"), img("attn_out", "attn_out"), "",
              img("head_out_by_pos", "head out by position"), "",
              img("heads_every", "every head site"), "", img("heads_every_atp", "AtP*"), "",
              img("noising_cost", "noising cost"), img("atp_scatter", "AtP* vs exact"), "",
              "AtP* vs exact (Spearman over heads): " + ", ".join(
                  f"{k} {'n/a (constant)' if v is None else f'{v:.2f}'}" for k, v in
                  summary["atp_star"]["rank_correlation_with_exact"].items()) + ".", "",
              img("pattern_dest_src", "pattern dest x src"), "",
              "## 3. Path patching: previous-token head -> induction heads", "",
              img("paths", "path patching"), img("path_graph", "path graph"), "",
              "## 4. Circuit discovery", ""]
    for name, d in summary["discovery"].items():
        lines += [f"**{name}**: {d['n_edges']} of {d['n_total']} edges, faithfulness "
                  f"{d['faithfulness']:.3f}; edges: "
                  + ", ".join(f"`{u} -> {v}`" for u, v in d["edges"][:40])
                  + (" ..." if len(d["edges"]) > 40 else ""), "",
                  img(f"circuit_{name}", f"{name} circuit"), ""]
    runtime = summary.get("runtime_s", {})
    lines += ["## Runtime", "", ", ".join(f"{k} {v} s" for k, v in runtime.items()) + ".", ""]
    return "\n".join(lines)


def write(summary: dict, figures: dict[str, str], out_dir: str) -> tuple[str, str]:
    """Writes ``report.md`` and ``summary.json``; returns their paths."""
    summary = dict(summary, figures=figures)
    report = os.path.join(out_dir, "report.md")
    with open(report, "w", encoding="utf-8") as f:
        f.write(markdown(summary, figures))
    path = os.path.join(out_dir, "summary.json")
    with open(path, "w") as f:
        json.dump(summary, f, indent=2)
    return report, path
