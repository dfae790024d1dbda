"""The README's tour runs as written (on a small random GPT-2 saved in HF format)."""

import os
import re

import matplotlib

matplotlib.use("Agg")
import numpy as np
import torch
import transformers

import jinterp

README = os.path.join(os.path.dirname(__file__), "..", "..", "README.md")


def test_readme_tour_runs(tmp_path, monkeypatch):
    text = open(README).read()
    tour = re.search(r"## A 30-second tour\n\n```python\n(.*?)```", text, re.S).group(1)
    cfg = transformers.GPT2Config(n_layer=8, n_embd=48, n_head=12, vocab_size=8100, n_positions=16,
                                  bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(tmp_path / "gpt2")
    monkeypatch.chdir(tmp_path)
    namespace = {}
    source = tour.replace("path/to/gpt2", str(tmp_path / "gpt2"))
    exec(compile(source, "README tour", "exec"), namespace)
    assert namespace["sweep"].shape == (12,)
    assert namespace["grad"].shape == (48,) and np.abs(namespace["grad"]).max() > 0
    assert (tmp_path / "patching.png").stat().st_size > 0
    # Patching head 1 with the clean values equals the sweep's entry for head 1.
    np.testing.assert_allclose(namespace["patched"][0, -1].max(), namespace["sweep"][1], rtol=1e-5)
    # Stopping at a layer and starting from its residual reproduce the full forward.
    np.testing.assert_allclose(namespace["logits_again"], namespace["logits"], rtol=1e-5,
                               atol=1e-6)
    assert namespace["resid"].shape == (1, 6, 48) and "blocks.4.hook_resid_pre" not in namespace[
        "early"]
    # One cell of the layer x position sweep equals the same patch given by name.
    grid, cache = namespace["grid"], namespace["cache"]
    assert grid.shape == (8, 6)
    direct = jinterp.run_with_hooks(namespace["model"], namespace["params"], namespace["corrupt"], {
        "blocks.3.hook_resid_pre": jinterp.Patch(cache["blocks.3.hook_resid_pre"], pos=2)})
    np.testing.assert_allclose(grid[3, 2], direct[0, -1].max(), rtol=1e-5)
    assert namespace["atp"].shape == (8, 1, 6) and np.abs(namespace["atp"]).max() > 0
    # The patching and reading sections' examples run on after the tour, in its namespace.
    for heading in ("## Localising", "## Reading and steering"):
        block = re.search(re.escape(heading) + r".*?```python\n(.*?)```", text, re.S).group(1)
        exec(compile(block, heading, "exec"), namespace)
    assert namespace["grid"].shape == (8, 6) and namespace["est"].shape == (8, 6, 12)
    assert namespace["paths"].shape == (8, 12)
    np.testing.assert_allclose(namespace["dla"].sum(0), (
        namespace["logits"][:, -1, 262] - namespace["logits"][:, -1, 318]), rtol=1e-4, atol=1e-4)
    assert namespace["per_layer"].shape == (8, 1, 6, 8100)
    assert namespace["steered"].shape == (1, 6, 8100)
