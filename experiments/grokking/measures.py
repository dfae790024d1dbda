"""Progress measures of Nanda et al. (2023) §5, computed on saved parameter snapshots.

Everything here runs the real library model (``models.GPT2`` through ``jinterp``) on all p^2
inputs and reads the last position's logits over the p answer classes.

- **restricted loss**: keep only the constant term and the ``cos/sin(w_k (a + b))`` directions of
  the key frequencies in the logits (per output class, over the (a, b) grid), then take the loss
  on all pairs (the authors' ``calculate_trig_loss``, ``mode='all'``). It measures how well the
  generalising circuit alone does, so it falls while the network still memorises.
- **excluded loss**: remove exactly those directions and take the loss on the *training* pairs;
  it rises when the network's train performance starts to rely on the circuit.
- **Gini** of the Fourier-component norms of ``W_E`` and of ``W_L = W_out W_U`` (sparsity in
  the Fourier basis), and the **sum of squared weights**.

The key frequencies are fixed from the final snapshot and reused for all earlier ones.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Float, Int

import jinterp
from jinterp import models

from . import fourier
from .data import ModAddData, tokens
from .model import Params, cross_entropy

NEURON_POINT = "blocks.0.mlp.hook_post"


def grid_logits_and_neurons(model: models.GPT2, params: Params, data: ModAddData
                            ) -> tuple[Float[np.ndarray, "n_pairs p"],
                                       Float[np.ndarray, "n_pairs d_mlp"]]:
    """Last-position logits over the p classes and MLP neuron activations on every (a, b)."""
    a, b, _ = data.grid()
    toks = jnp.asarray(tokens(a, b, data.p))  # n_pairs 3
    logits, cache = jinterp.run_with_cache(model, params, toks, names=[NEURON_POINT])
    return np.asarray(logits[:, -1, :data.p]), np.asarray(cache[NEURON_POINT][:, -1])


def mean_loss(logits: Float[np.ndarray, "n p"], labels: Int[np.ndarray, " n"]) -> float:
    """Mean high-precision cross-entropy (see :func:`.model.cross_entropy`)."""
    return float(jnp.mean(cross_entropy(jnp.asarray(logits, jnp.float32), jnp.asarray(labels))))


def restricted_and_excluded(logits: Float[np.ndarray, "n_pairs p"], data: ModAddData,
                            key_freqs) -> tuple[float, float]:
    """``(restricted loss on all pairs, excluded loss on train pairs)`` for these logits."""
    _, _, labels = data.grid()
    dirs = fourier.sum_directions(data.p, key_freqs)
    along = fourier.project(logits.astype(np.float64), dirs)  # n_pairs p
    restricted = along + logits.mean(axis=0, keepdims=True)
    excluded = logits - along
    train = data.train_idx
    return mean_loss(restricted, labels), mean_loss(excluded[train], labels[train])


def neuron_logit_map(params: Params, p: int) -> Float[np.ndarray, "d_mlp p"]:
    """``W_L = W_out W_U``: how each neuron writes to the p answer logits."""
    W_out = np.asarray(params["blocks"]["mlp"]["W_out"][0])  # d_mlp d_model
    return W_out @ np.asarray(params["unembed"]["W_U"])[:, :p]  # d_mlp p


def sum_squared_weights(params: Params) -> float:
    return float(sum(np.sum(np.asarray(x, np.float64) ** 2) for x in jax.tree.leaves(params)))


#: A neuron whose ReLU output is positive on more than this share of the p^2 inputs is counted as
#: near-linear: its ReLU almost never clips, so it adds no nonlinearity of its own and only passes
#: on the mix of frequencies already in the residual stream.
NEAR_LINEAR_FIRING_RATE = 0.95


@dataclasses.dataclass(frozen=True)
class NeuronAnalysis:
    """Final-model frequency structure: key frequencies and how clean the neurons are.

    Besides the paper's test (> 85% of a neuron's variance in one frequency), it keeps two facts
    per neuron that explain *which* neurons fail it: the firing rate (share of inputs where the
    ReLU output is positive) and the output energy ``||W_out[i]||^2 Var(a_i)``, the variance a
    neuron alone would write into the residual stream.
    """

    key_freqs: list[int]
    fractions: Float[np.ndarray, "n_freq d_mlp"]  # variance share of each frequency per neuron
    cluster: Int[np.ndarray, " d_mlp"]  # frequency a neuron belongs to (0 = none)
    firing_rate: Float[np.ndarray, " d_mlp"]  # share of the p^2 inputs with ReLU output > 0
    output_energy: Float[np.ndarray, " d_mlp"]  # ||W_out[i]||^2 * Var(a_i) over the grid

    @property
    def single_frequency_fraction(self) -> float:
        """Share of all neurons with > 85% of their variance in one frequency (paper: 84.6%)."""
        return float(np.mean(self.cluster > 0))

    @property
    def near_linear(self) -> np.ndarray:
        """Neurons firing on more than :data:`NEAR_LINEAR_FIRING_RATE` of the inputs."""
        return self.firing_rate > NEAR_LINEAR_FIRING_RATE

    def diagnostics(self) -> dict[str, float | int]:
        """Where the neurons that fail the single-frequency test sit (JSON-ready).

        Returns:
            ``near_linear_neurons``: how many neurons almost never clip;
            ``near_linear_single_frequency``: how many of those still pass the 85% test;
            ``single_frequency_fraction_of_clipping_neurons``: the test on the other neurons;
            ``multi_frequency_output_share``: share of the total output energy carried by the
            neurons that fail it.
        """
        single, linear = self.cluster > 0, self.near_linear
        clipping = ~linear
        total = float(self.output_energy.sum())
        return {
            "near_linear_neurons": int(linear.sum()),
            "near_linear_single_frequency": int((linear & single).sum()),
            "single_frequency_fraction_of_clipping_neurons":
                float(single[clipping].mean()) if clipping.any() else 0.0,
            "multi_frequency_output_share":
                float(self.output_energy[~single].sum() / total) if total > 0 else 0.0,
        }

    def cluster_sizes(self) -> dict[str, int]:
        counts = np.bincount(self.cluster, minlength=self.fractions.shape[0] + 1)
        return {str(k): int(counts[k]) for k in self.key_freqs} | {"none": int(counts[0])}


def analyse_neurons(model: models.GPT2, params: Params, data: ModAddData) -> NeuronAnalysis:
    """Key frequencies of a trained model from its MLP neurons (``calculate_key_freqs``)."""
    _, acts = grid_logits_and_neurons(model, params, data)
    acts = acts.astype(np.float64)
    fractions = fourier.neuron_frequency_fractions(acts, data.p)
    keys, cluster = fourier.key_frequencies(fractions)
    W_out = np.asarray(params["blocks"]["mlp"]["W_out"][0], np.float64)  # d_mlp d_model
    energy = np.sum(W_out**2, axis=1) * acts.var(axis=0)
    return NeuronAnalysis(key_freqs=keys, fractions=fractions, cluster=cluster,
                          firing_rate=np.mean(acts > 0, axis=0), output_energy=energy)


def progress_measures(model: models.GPT2, snapshots: list[Params], data: ModAddData,
                      key_freqs) -> dict[str, np.ndarray]:
    """Every progress measure at every snapshot (one seed). Returns arrays ``[n_snap]``."""
    if not key_freqs:
        raise ValueError("no key frequencies: the final model has no single-frequency neuron "
                         "clusters (has it generalised?); restricted/excluded loss are undefined.")
    _, _, labels = data.grid()
    rows = []
    for params in snapshots:
        logits, _ = grid_logits_and_neurons(model, params, data)
        restricted, excluded = restricted_and_excluded(logits, data, key_freqs)
        W_L = neuron_logit_map(params, data.p)
        W_E = np.asarray(params["embed"]["W_E"])
        rows.append({
            "train_loss": mean_loss(logits[data.train_idx], labels[data.train_idx]),
            "test_loss": mean_loss(logits[data.test_idx], labels[data.test_idx]),
            "restricted_loss": restricted,
            "excluded_loss": excluded,
            "gini_W_E": fourier.gini(fourier.embed_fourier_norms(W_E, data.p)),
            "gini_W_L": fourier.gini(fourier.neuron_logit_fourier_norms(W_L, data.p)),
            "sum_squared_weights": sum_squared_weights(params),
        })
    return {k: np.asarray([r[k] for r in rows]) for k in rows[0]}
