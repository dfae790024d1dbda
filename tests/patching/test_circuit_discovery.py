"""ACDC and learned edge masks recover the planted induction circuit (K-composition)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from planted_induction import planted_induction, prompts

from jinterp.patching import (
    Circuit,
    Node,
    acdc,
    faithfulness,
    kl_to_clean,
    learn_edge_mask,
    run_circuit,
)

#: What the planted model computes with, given that clean and corrupted prompts share their
#: positions (so the previous-token head's position-reading query and key need no clean edge).
PLANTED = {(Node.embed(), Node.v(0, 0)), (Node.head(0, 0), Node.k(1, 0)),
           (Node.embed(), Node.q(1, 0)), (Node.embed(), Node.v(1, 0)),
           (Node.head(1, 0), Node.final())}


@pytest.fixture(scope="module")
def task():
    model, params = planted_induction()
    clean, corrupt, positions = prompts(batch=8)
    metric = kl_to_clean(model(params, jnp.asarray(clean)), positions)
    return model, params, clean, corrupt, metric


@pytest.mark.parametrize("group", ["node", "layer"])
def test_acdc_recovers_the_planted_circuit(task, group):
    model, params, clean, corrupt, metric = task
    circuit, log = acdc(model, params, clean, corrupt, metric, 0.05, group=group, chunk_size=4)
    assert set(circuit.edges()) == PLANTED, circuit.edges()
    assert circuit.n_total == 29
    value = faithfulness(model, params, circuit, clean, corrupt, metric)  # one plain run
    assert value >= 0.8 and value == pytest.approx(log.faithfulness, abs=1e-5)
    assert log.metric_corrupted > 1.0 and abs(log.metric_clean) < 1e-5
    # The first visit (the final residual) tried every edge against the full circuit in one
    # vmapped call; each logged change equals a plain run without that edge.
    first = log.steps[0]
    assert first.nodes == (Node.final(),) and len(first.edges) == 5
    full = float(metric(run_circuit(model, params, Circuit.full(model), clean, corrupt)))
    for edge, change in zip(first.edges[-2:], first.changes[-2:]):
        alone = run_circuit(model, params, Circuit.full(model).with_edges([edge], 0.0), clean,
                            corrupt)
        assert float(metric(alone)) - full == pytest.approx(float(change), abs=1e-5)
    if group == "node":  # ACDC's order: the final residual, then layer 1's v, k, q, ...
        assert [s.nodes[0] for s in log.steps[:3]] == [Node.final(), Node.v(1, 1), Node.v(1, 0)]


def test_learned_edge_mask_recovers_the_planted_circuit(task):
    model, params, clean, corrupt, metric = task
    circuit, log = learn_edge_mask(model, params, clean, corrupt, metric, sparsity=0.5,
                                   steps=100, lr=0.1, key=jax.random.key(0))
    assert set(circuit.edges()) == PLANTED, circuit.edges()
    value = faithfulness(model, params, circuit, clean, corrupt, metric)
    assert value >= 0.8 and value == pytest.approx(log.faithfulness, abs=1e-5)
    assert np.all(np.isfinite(log.loss)) and log.loss.shape == (100,)
    assert log.expected_edges[0] > 25 and log.expected_edges[-1] < 8  # it starts full, prunes
    assert np.all((log.mask >= 0) & (log.mask <= 1))
