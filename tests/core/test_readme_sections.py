"""The README's generation, padding and DAS examples run as written, on small models."""

import os
import re

import jax
import jax.numpy as jnp
import numpy as np

import jinterp
from jinterp import metrics, models, patching
from jinterp.das import tasks, toy

README = os.path.join(os.path.dirname(__file__), "..", "..", "README.md")


def block(heading: str) -> str:
    """The first python block after ``heading``."""
    text = open(README).read()
    return re.search(re.escape(heading) + r".*?```python\n(.*?)```", text, re.S).group(1)


def gpt2(n_layers: int):
    model = models.GPT2(models.GPT2Config(n_layers=n_layers, d_model=16, n_heads=2, d_head=8,
                                          d_mlp=32, d_vocab=40, n_ctx=48))
    return model, model.init(jax.random.key(0))


def test_generation_example_runs_as_written():
    model, params = gpt2(7)  # it steers block 6
    rng = np.random.default_rng(0)
    prompt = rng.integers(1, 40, (2, 6))
    v = jnp.asarray(rng.normal(size=(7, 16)), jnp.float32)
    ns = {"jinterp": jinterp, "jax": jax, "model": model, "params": params, "prompt": prompt,
          "v": v}
    exec(compile(block("### Generation with interventions"), "README generation", "exec"), ns)
    assert ns["out"].shape == ns["sampled"].shape == (2, 38)
    plain = jinterp.generate(model, params, prompt, 32)
    np.testing.assert_array_equal(ns["out"][:, :7], plain[:, :7])  # first token: unhooked
    assert (np.asarray(ns["out"]) != np.asarray(plain)).any()  # the steer changed later ones


def test_padding_example_runs_as_written():
    model, params = gpt2(2)
    rng = np.random.default_rng(0)
    tokens = np.where(np.arange(6) < np.array([[0], [2]]), 0, rng.integers(1, 40, (2, 6)))
    clean, corrupt = tokens, np.where(tokens == 0, 0, rng.integers(1, 40, (2, 6)))
    metric = metrics.logit_diff(jnp.array([3, 4]), jnp.array([5, 6]))
    ns = {"jinterp": jinterp, "patching": patching, "model": model, "params": params,
          "tokens": tokens, "pad_id": 0, "clean": clean, "corrupt": corrupt, "metric": metric}
    exec(compile(block("### Padding"), "README padding", "exec"), ns)
    assert ns["sweep"].shape == (2, 6)
    assert ns["mask"].tolist()[1] == [0, 0, 1, 1, 1, 1]


def test_das_example_runs_as_written():
    config = toy.ToyConfig(n_slots=4, n_values=4, n_layers=1, d_model=18, d_mlp=16,
                           n_classes=4)
    model = toy.ToyMLP(config)
    rng = np.random.default_rng(0)
    x = tasks.sample_inputs(rng, 1024, 4)
    params, _ = toy.train_toy(model, np.asarray(toy.encode(x, config)),
                              tasks.causal_model(x, tasks.Readout.BOTH)[2],
                              toy.ToyTrainConfig(steps=600))
    ns = {"model": model, "params": params}
    for suffix, n in (("", 1024), ("_eval", 512)):
        cf = tasks.interchange_data(rng, n, 4, "V1", tasks.Readout.BOTH)
        ns |= {f"base{suffix}": np.asarray(toy.encode(cf.base, config)),
               f"source{suffix}": np.asarray(toy.encode(cf.source, config)),
               ("labels" if not suffix else "labels_eval"): cf.label}
    code = block("### Distributed alignment search")  # its last call's value is the IIA
    exec(compile(code.replace("\ndas.iia(", "\n_ = das.iia("), "README DAS", "exec"), ns)
    assert ns["_"] >= 0.9
