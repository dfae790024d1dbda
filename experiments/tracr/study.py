"""Methods scored against Tracr's known circuits: one program at a time, then the table.

For each program: the task (:mod:`.task`), the ground truth read from the weights
(:mod:`.ground_truth`: ``structural``, every edge the weights carry; ``effective``, only edges
carrying a direction that differs between the task's inputs, which same-length patching can
see), every method of :mod:`.methods`, and per method the ROC AUC and the precision / recall of
its selection: a score-based method selects what scores at least ``FOUND_AT`` (the metric is 1
for the clean run, so that is 1% of the whole effect); ACDC selects its circuit at
``ACDC_DEFAULT``.
"""

from __future__ import annotations

import time

import numpy as np

from jinterp.experiments.tracr.ground_truth import ground_truth, varying_directions
from jinterp.experiments.tracr.methods import (
    ACDC_THRESHOLDS,
    acdc_circuits,
    edge_scores,
    node_scores,
)
from jinterp.experiments.tracr.programs import Compiled
from jinterp.experiments.tracr.scoring import points_roc, precision_recall, roc_auc, roc_curve
from jinterp.experiments.tracr.task import Task, make_task
from jinterp.patching import edge_index, upstream_nodes

FOUND_AT = 0.01
ACDC_DEFAULT = 0.01
TRUTHS = ("effective", "structural")


def _score(scores: np.ndarray, labels: np.ndarray) -> dict:
    precision, recall = precision_recall(scores >= FOUND_AT, labels)
    return {"auc": roc_auc(scores, labels), "precision": precision, "recall": recall}


def _acdc_nodes(model, kept: np.ndarray) -> np.ndarray:
    """``[n_nodes]``: heads and MLPs with a kept outgoing edge (ACDC's node set)."""
    index, up = edge_index(model), upstream_nodes(model)
    used = {up[i] for i in index[kept, 0]}
    return np.array([n in used for n in up[1:]])


def task_inputs(c: Compiled, *, seed: int = 0) -> tuple[list[list], Task]:
    """The longest input length whose outputs differ between inputs, and its task.

    Usually the full length; ``sort_unique`` over as many values as positions sorts every
    full-length input to the same output, so it is scored one position shorter.
    """
    for n in range(c.spec.max_seq_len, 0, -1):
        inputs = [x for x in c.spec.domain() if len(x) == n]
        try:
            return inputs, make_task(c.model, c.params, c.io, inputs, seed=seed)
        except ValueError:
            continue
    raise ValueError(f"No input length of {c.spec} gives inputs with different outputs.")


def score_program(name: str, c: Compiled, *, seed: int = 0, ig_steps: int = 16,
                  thresholds=ACDC_THRESHOLDS) -> dict:
    """Every method on one compiled program, scored against both ground truths.

    Returns:
        A JSON-able dict: sizes, the ground truths (as strings), the raw scores and, under
        ``scores[truth][level][method]``, ``auc`` / ``precision`` / ``recall``.
    """
    start = time.perf_counter()
    model, params, io = c.model, c.params, c.io
    inputs, task = task_inputs(c, seed=seed)
    varying = varying_directions(model, params, io, inputs)
    truths = {"structural": ground_truth(model, params),
              "effective": ground_truth(model, params, varying)}
    nodes = node_scores(model, params, task)
    edges = edge_scores(model, params, task, ig_steps=ig_steps)
    circuits = acdc_circuits(model, params, task, thresholds)
    default = next(kept for t, kept, _ in circuits if t == ACDC_DEFAULT)
    out = {"n_nodes": len(upstream_nodes(model)) - 1, "n_edges": len(edge_index(model)),
           "n_inputs": len(inputs), "length": len(inputs[0]), "scores": {}, "truth": {}, "roc": {}}
    for truth_name, truth in truths.items():
        node_labels, edge_labels = truth.node_labels(model), truth.edge_labels(model)
        out["truth"][truth_name] = {"nodes": sorted(map(str, truth.nodes)),
                                    "edges": sorted(f"{u}->{d}" for u, d in truth.edges)}
        level_node = {m: _score(s, node_labels) for m, s in nodes.items()}
        level_edge = {m: _score(s, edge_labels) for m, s in edges.items()}
        fpr, tpr, auc = points_roc([kept for _, kept, _ in circuits], edge_labels)
        out["roc"][truth_name] = {"acdc": [fpr.tolist(), tpr.tolist()]} | {
            m: [c.tolist() for c in roc_curve(s, edge_labels)] for m, s in edges.items()}
        precision, recall = precision_recall(default, edge_labels)
        level_edge["acdc"] = {"auc": auc, "precision": precision, "recall": recall}
        p_node, r_node = precision_recall(_acdc_nodes(model, default), node_labels)
        _, _, auc_node = points_roc([_acdc_nodes(model, k) for _, k, _ in circuits], node_labels)
        level_node["acdc"] = {"auc": auc_node, "precision": p_node, "recall": r_node}
        out["scores"][truth_name] = {"nodes": level_node, "edges": level_edge}
    out["raw"] = {"nodes": {m: s.tolist() for m, s in nodes.items()},
                  "edges": {m: s.tolist() for m, s in edges.items()},
                  "acdc": [{"threshold": t, "n_edges": int(k.sum()), "faithfulness": f}
                           for t, k, f in circuits]}
    out["seconds"] = time.perf_counter() - start
    return out
