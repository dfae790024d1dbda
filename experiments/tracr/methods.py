"""Every method of :mod:`jinterp.patching` run on one compiled program's task.

Node methods score each head and MLP (``upstream_nodes(model)[1:]`` order); edge methods score
each edge (``edge_index(model)`` order); circuit discovery (ACDC) returns a binary circuit per
threshold, and a threshold sweep gives its ROC as in the ACDC paper (Conmy et al. 2023, who
sweep the threshold and draw one ROC point per circuit).

- ``act_patch``: activation patching (denoising): each head's ``hook_z`` and each MLP's output
  at every position, from the clean run into the corrupted run; the score is ``|metric|``.
- ``atp``: attribution patching, the same patches estimated from one gradient pass.
- ``atp*``: AtP* (Kramár et al. 2024): the QK fix and GradDrop (one-layer programs: the QK fix
  alone, GradDrop cuts one layer at a time).
- ``eap`` / ``eap_ig``: edge attribution patching, plain and with integrated gradients.
- ``acdc``: ACDC's pruned circuit at each threshold.

Node scores of edge methods are not defined here: a method is scored on what it outputs.
"""

from __future__ import annotations

import numpy as np

from jinterp import patching
from jinterp.experiments.tracr.task import Task
from jinterp.patching import Node, Site, upstream_nodes

NODE_METHODS = ("act_patch", "atp", "atp*")
EDGE_METHODS = ("eap", "eap_ig")
#: ACDC thresholds on the task metric (clean 1, corrupted 0), swept for its ROC.
ACDC_THRESHOLDS = (0.0, 1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)

_MLP_ALL_POS = Site("mlp_out_all_pos", "hook_mlp_out", ())  # one node per MLP, every position


def _as_nodes(model, heads: np.ndarray, mlps: np.ndarray) -> np.ndarray:
    """``[layer, head]`` and ``[layer]`` scores in ``upstream_nodes(model)[1:]`` order."""
    by_node = {Node.head(l, h): heads[l, h] for l in range(heads.shape[0])
               for h in range(heads.shape[1])}
    by_node |= {Node.mlp(l): mlps[l] for l in range(mlps.shape[0])}
    return np.array([by_node[n] for n in upstream_nodes(model)[1:]], np.float64)


def node_scores(model, params, task: Task) -> dict[str, np.ndarray]:
    """``method -> [n_nodes]`` effect sizes (``|patched metric - corrupted metric|``)."""
    import jinterp

    names = ([f"blocks.{l}.attn.hook_z" for l in range(model.n_layers)]
             + [f"blocks.{l}.hook_mlp_out" for l in range(model.n_layers)]
             + [f"blocks.{l}.attn.{p}" for l in range(model.n_layers)
                for p in ("hook_q", "hook_k")])
    _, cache = jinterp.run_with_cache(model, params, task.clean, names=names)
    m, base = task.metric, 0.0  # the corrupted run scores 0 by construction
    out = {}
    heads = patching.get_act_patch_attn_head_out_all_pos(model, params, task.corrupted, cache, m)
    mlps = patching.act_patch(model, params, task.corrupted, cache, m, _MLP_ALL_POS)
    out["act_patch"] = np.abs(_as_nodes(model, np.asarray(heads), np.asarray(mlps)) - base)
    star = {"method": "atp*", "grad_drop": model.n_layers >= 2}  # GradDrop needs 2 layers
    for name, kw in (("atp", {"method": "atp"}), ("atp*", star)):
        heads = patching.get_attr_patch_attn_head_out_all_pos(model, params, task.corrupted,
                                                              cache, m, **kw)
        mlps = patching.attr_patch(model, params, task.corrupted, cache, m, _MLP_ALL_POS, **kw)
        scores = _as_nodes(model, np.asarray(heads), np.asarray(mlps))
        out[name] = scores if kw.get("grad_drop") else np.abs(scores - base)
    return out


def edge_scores(model, params, task: Task, *, ig_steps: int = 16) -> dict[str, np.ndarray]:
    """``method -> [n_edges]`` ``|score|`` of EAP and EAP-IG."""
    eap = patching.eap(model, params, task.corrupted, task.clean, task.metric)
    ig = patching.eap_ig(model, params, task.corrupted, task.clean, task.metric, steps=ig_steps)
    return {"eap": np.abs(np.asarray(eap.scores, np.float64)),
            "eap_ig": np.abs(np.asarray(ig.scores, np.float64))}


def acdc_circuits(model, params, task: Task, thresholds=ACDC_THRESHOLDS
                  ) -> list[tuple[float, np.ndarray, float]]:
    """``[(threshold, kept edges [n_edges] bool, faithfulness)]``, one ACDC run per threshold.

    The task metric is tested on ``|change|`` (it is not a KL, which Tracr's numerical outputs
    would make meaningless).
    """
    out = []
    for threshold in thresholds:
        circuit, log = patching.acdc(model, params, task.clean, task.corrupted, task.metric,
                                     float(threshold))
        out.append((float(threshold), np.asarray(circuit.mask) > 0.5, float(log.faithfulness)))
    return out
