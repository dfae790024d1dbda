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


L, D, H, V = 7, 8, 2, 8032


def test_readme_tour_runs(tmp_path, monkeypatch):
    text = open(README).read()
    tour = re.search(r"## A 30-second tour\n\n```python\n(.*?)```", text, re.S).group(1)
    # The smallest GPT-2 every README line runs on: 7 layers (it stops at 4 and patches/steers
    # blocks 5 and 6), 2 heads (it patches head 1), vocab 8032 (token 8031), 6 positions.
    # The patching section's sweeps compile a program per start layer (x 4 suffix lengths), so
    # it runs on a 2-layer copy (it patches into layer 1): 8 programs instead of 28.
    for n_layer, path in ((L, "gpt2"), (2, "gpt2-2l")):
        cfg = transformers.GPT2Config(n_layer=n_layer, n_embd=D, n_head=H, vocab_size=V,
                                      n_positions=8, bos_token_id=0, eos_token_id=0)
        torch.manual_seed(0)
        transformers.GPT2LMHeadModel(cfg).save_pretrained(tmp_path / path)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    source = tour.replace("path/to/gpt2", str(tmp_path / "gpt2"))
    exec(compile(source, "README tour", "exec"), namespace)
    assert namespace["sweep"].shape == (H,)
    assert namespace["grad"].shape == (D,) and np.abs(namespace["grad"]).max() > 0
    assert (tmp_path / "patching.png").stat().st_size > 0
    # Patching head 1 with the clean values equals the sweep's entry for head 1.
    np.testing.assert_allclose(namespace["patched"][0, -1].max(), namespace["sweep"][1], rtol=1e-5)
    # Stopping at a layer and starting from its residual reproduce the full forward.
    np.testing.assert_allclose(namespace["logits_again"], namespace["logits"], rtol=1e-5,
                               atol=1e-6)
    assert namespace["resid"].shape == (1, 6, D) and "blocks.4.hook_resid_pre" not in namespace[
        "early"]
    # One cell of the layer x position sweep equals the same patch given by name.
    grid, cache = namespace["grid"], namespace["cache"]
    assert grid.shape == (L, 6)
    direct = jinterp.run_with_hooks(namespace["model"], namespace["params"], namespace["corrupt"], {
        "blocks.3.hook_resid_pre": jinterp.Patch(cache["blocks.3.hook_resid_pre"], pos=2)})
    np.testing.assert_allclose(grid[3, 2], direct[0, -1].max(), rtol=1e-5)
    assert namespace["atp"].shape == (L, 1, 6) and np.abs(namespace["atp"]).max() > 0
    # The patching and reading sections' examples run on after the tour, in its namespace
    # (the patching one with the 2-layer model in place of the tour's).
    blocks = {heading: re.search(re.escape(heading) + r".*?```python\n(.*?)```", text,
                                 re.S).group(1)
              for heading in ("## Localising", "## Reading and steering")}
    local = dict(namespace)
    local["model"], local["params"] = jinterp.models.load_pretrained(str(tmp_path / "gpt2-2l"))
    exec(compile(blocks["## Localising"], "## Localising", "exec"), local)
    assert local["grid"].shape == (2, 6) and local["est"].shape == (2, 6, H)
    assert local["paths"].shape == (2, H)
    # The sweep's cell for layer 1, position 3 is the patch given by name, normalised.
    one = jinterp.run_with_hooks(local["model"], local["params"], local["corrupt"], {
        "blocks.1.hook_resid_pre": jinterp.Patch(local["clean_cache"]["blocks.1.hook_resid_pre"],
                                                 pos=3)})
    np.testing.assert_allclose(local["grid"][1, 3], local["metric"](one), rtol=1e-4, atol=1e-5)
    exec(compile(blocks["## Reading and steering"], "## Reading and steering", "exec"),
         namespace)
    np.testing.assert_allclose(namespace["dla"].sum(0), (
        namespace["logits"][:, -1, 262] - namespace["logits"][:, -1, 318]), rtol=1e-4, atol=1e-4)
    assert namespace["per_layer"].shape == (L, 1, 6, V)
    assert namespace["steered"].shape == (1, 6, V)
