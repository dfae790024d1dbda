"""The README's SAE workflow (model -> SAE -> evaluation -> splice -> dashboard) runs as written.

On the 3-layer test GPT-2 saved as a HuggingFace checkpoint with a word-level tokenizer; the
block's numbers are then checked against the library called directly, and a rerun resumes from
the checkpoints to the same parameters.
"""

import re
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))
from families import family  # noqa: E402
from test_dashboard import WORDS, _word_tokenizer  # noqa: E402
from test_model_train import _write_hf_gpt2  # noqa: E402

import jinterp  # noqa: E402
from jinterp import sae  # noqa: E402

README = Path(__file__).resolve().parents[2] / "README.md"


def _block() -> str:
    text = README.read_text()
    return re.search(r"\*\*The whole loop in one example\*\*.*?```python\n(.*?)```", text,
                     re.S).group(1)


def _train_numbers(source: str) -> dict[str, int]:
    """The README call's ``steps``, ``batch_size`` and ``checkpoint_every`` (the rerun repeats
    them, so the README's numbers can change without this test)."""
    return {k: int(re.search(rf"\b{k}=(\d+)", source).group(1))
            for k in ("steps", "batch_size", "checkpoint_every")}


def test_readme_sae_workflow_runs_and_resumes(tmp_path, monkeypatch):
    model, params = family("gpt2")
    _write_hf_gpt2(tmp_path / "gpt2", model, params)
    _word_tokenizer(tmp_path / "gpt2")
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, len(WORDS), (96, 12))
    tokens[:, 0] = 0
    np.save(tmp_path / "tokens.npy", tokens)
    monkeypatch.chdir(tmp_path)
    source = _block().replace("path/to/gpt2", str(tmp_path / "gpt2"))
    ns: dict = {}
    with pytest.warns(UserWarning, match="dead_after_tokens"):  # a short run
        exec(compile(source, "README SAE workflow", "exec"), ns)

    scores, cfg, p, hook, held = ns["scores"], ns["cfg"], ns["sae_params"], ns["hook"], ns["held"]
    assert held.shape == (32, 12)
    assert 0.0 < scores["ce_loss_recovered"] <= 1.2 and scores["kl_div"] > 0
    assert 0 < scores["l0"] <= cfg.k and 0 < scores["fvu"] < 1
    # the splice is the SAE's reconstruction at the hook, nothing else
    _, cache = jinterp.run_with_cache(model, params, held, [hook])
    x_hat, _ = sae.forward(cfg, p, cache[hook])
    want = jinterp.run_with_hooks(model, params, held, {hook: jinterp.Patch(x_hat)})
    np.testing.assert_allclose(ns["spliced"], want, rtol=1e-5, atol=1e-5)
    page = (tmp_path / "runs" / "sae_l2" / "dashboard.html").read_text()
    assert "Feature 15" in page or '"id": 15' in page or '"id":15' in page
    loaded = sae.load_saelens(tmp_path / "runs" / "sae_l2" / "sae")
    assert loaded.hook_name == hook
    for k, v in p.items():
        np.testing.assert_allclose(np.asarray(loaded.params[k]), v, rtol=1e-6)

    # rerun: everything is checkpointed, so it resumes at the last step and changes nothing
    numbers = _train_numbers(source)
    assert numbers["steps"] % numbers["checkpoint_every"] == 0  # a checkpoint at the end
    again = sae.train_on_model(model, params, cfg, hook, ns["source"], **numbers,
                               out_dir="runs/sae_l2", progress=False)
    for k, v in p.items():
        np.testing.assert_array_equal(again.params[0][k], v)
