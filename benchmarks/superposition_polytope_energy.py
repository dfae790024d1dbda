"""Which geometry has the lowest loss? Planted polytopes vs a random init (n=200, m=20).

Every instance starts from a planted tegum product of one polytope type filling all m hidden
dimensions (tetrahedra, triangles, digons, pentagons; other features at zero) or from the
notebook's random init, and is trained further at one density. Comparing the final losses on
common samples says whether a geometry is a better optimum than what gradient descent finds
from scratch; the D_i after training says whether the planted polytope survives.

    nice -n 19 .venv/bin/python benchmarks/superposition_polytope_energy.py  # ~70 s, loaded CPU

Prints one JSON object.
"""

from __future__ import annotations

import json
import time

import jax.numpy as jnp
import numpy as np

from jinterp.experiments.superposition import analysis, dimensionality, geometry, model, training

N, M = 200, 20
INV_DENSITY = (1.6, 2.0, 2.5)
STEPS = 1000


def _polygon(k):
    a = 2 * np.pi * np.arange(k) / k
    return np.stack([np.cos(a), np.sin(a)])


TETRA = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], float).T / np.sqrt(3)
BLOCKS = {"tetrahedra": TETRA, "triangles": _polygon(3), "digons": _polygon(2)[:1],
          "pentagons": _polygon(5)}


def planted(kind: str) -> np.ndarray:
    """[M, N] tegum product of ``kind`` blocks filling the M dims (digons fill any rest)."""
    W = np.zeros((M, N))
    r = c = 0
    block = BLOCKS[kind]
    while r + block.shape[0] <= M:
        W[r:r + block.shape[0], c:c + block.shape[1]] = block
        r, c = r + block.shape[0], c + block.shape[1]
    while r < M:  # leftover dimensions: digons
        W[r, c:c + 2] = [1.0, -1.0]
        r, c = r + 1, c + 2
    return W


def main():
    kinds = ["random", *BLOCKS]
    K = len(kinds) * len(INV_DENSITY)
    cfg = model.ToyModelConfig(N, M, K)
    density = np.repeat(1.0 / np.asarray(INV_DENSITY), len(kinds))  # density-major
    importance = np.ones((K, N), np.float32)
    prob = np.repeat(density[:, None], N, 1).astype(np.float32)

    def init(key):
        params = model.init_params(cfg, key)
        W = np.array(params["W"])
        for i in range(K):
            kind = kinds[i % len(kinds)]
            if kind != "random":
                W[i] = planted(kind)
        return {"W": jnp.asarray(W), "b": params["b"]}

    tc = training.TrainConfig(steps=STEPS, batch_size=512, steps_per_call=500)
    t0 = time.perf_counter()
    state, _ = training.train_with(init, training.relu_output_losses,
                                   (jnp.asarray(importance), jnp.asarray(prob)), tc,
                                   desc="planted polytopes")
    losses = dimensionality.evaluate_restarts(state["params"], importance, prob, len(kinds),
                                              65_536, 1)
    W = np.asarray(state["params"]["W"])
    out = {"n": N, "m": M, "steps": STEPS, "batch": 512, "runtime_s": 0.0, "results": []}
    for j, inv in enumerate(INV_DENSITY):
        row = {"inv_density": inv}
        for k, kind in enumerate(kinds):
            i = j * len(kinds) + k
            rep = (W[i] ** 2).sum(0) > 0.5
            d = np.asarray(analysis.feature_dimensionality(jnp.asarray(W[i])))[rep]
            fr = geometry.line_fractions(d)
            row[kind] = {"loss": float(losses[i]), "represented": int(rep.sum()),
                         "lines": {k2: round(v, 3) for k2, v in fr.items() if v > 0}}
        row["best"] = min(kinds, key=lambda k: row[k]["loss"])
        out["results"].append(row)
    out["runtime_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
