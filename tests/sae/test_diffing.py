"""Model diffing with a two-model crosscoder: the shared / exclusive analysis recovers planted
ground truth, and the command on two checkpoints of a model trained here (``--model A B``)
writes a sane summary and figure, while two copies of one checkpoint look all shared."""

import json
import sys
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tiny_lm  # noqa: E402
from test_model_train import _write_hf_gpt2  # noqa: E402

from jinterp import sae  # noqa: E402
from jinterp.sae import diffing  # noqa: E402
from jinterp.sae.cli import main  # noqa: E402

HOOK = "blocks.0.hook_resid_post"


def test_planted_shared_and_exclusive_directions_are_recovered():
    truth = diffing.planted_pair(0, d=16, n_shared=8, n_base_only=4, n_ft_only=4)
    has_base, has_ft = truth.dirs_base.any(-1), truth.dirs_ft.any(-1)
    assert list(has_base) == [True] * 12 + [False] * 4  # shared, base-only, ft-only
    assert list(has_ft) == [True] * 8 + [False] * 4 + [True] * 4
    x = np.asarray(truth.sample(jax.random.key(0), 8192, p_fire=0.08))  # [x_base | x_ft]
    cfg = sae.SAEConfig("relu", d_in=32, d_sae=24, n_blocks=2, l1_coefficient=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # short run: the dead window is scaled down
        res = sae.train(cfg, x, steps=400, lr=3e-3, batch_size=256, steps_per_call=100,
                        progress=False)
    best, cos = diffing.match_features(cfg, res.params, truth)
    rel = np.asarray(diffing.relative_decoder_norms(cfg, res.params))
    # by hand: ||d_base|| / (||d_base|| + ||d_ft||) from the flat W_dec
    w = np.asarray(res.params["W_dec"], np.float64)
    n_base, n_ft = np.linalg.norm(w[:, :16], axis=-1), np.linalg.norm(w[:, 16:], axis=-1)
    np.testing.assert_allclose(rel, n_base / (n_base + n_ft), rtol=1e-5)
    code = np.asarray(diffing.classify(rel))
    found = (cos > 0.9) & (code[best] == truth.kind)
    per_class = [found[truth.kind == k].mean() for k in range(3)]
    # floor: every class at least 3/4 recovered, 14 of the 16 features in all (this seed: 16)
    assert min(per_class) >= 0.75 and found.sum() >= 14, (per_class, cos)
    # a shared latent writes the same direction in both models
    cosines = np.asarray(diffing.decoder_cosines(cfg, res.params))
    assert np.all(cosines[best[truth.kind == diffing.SHARED]] > 0.9)
    # the analysis must see which block is which: the groups swapped, no exclusive feature
    # is recovered (and the test above would fail)
    swapped = np.asarray(diffing.classify(diffing.relative_decoder_norms(
        cfg, res.params, groups=((1,), (0,)))))
    found_swapped = (cos > 0.9) & (swapped[best] == truth.kind)
    assert not found_swapped[truth.kind != diffing.SHARED].any()

    live = diffing.live_latents(cfg, res.params, x)
    summary = diffing.diff_summary(cfg, res.params, live)
    counts = summary["counts"]
    assert sum(counts.values()) == summary["n_live"] == int(live.sum())
    assert counts["base_only"] >= 3 and counts["ft_only"] >= 3 and counts["shared"] >= 6
    assert sum(summary["histogram"]["counts"]) == summary["n_live"]
    assert summary["shared_cosine"]["median"] > 0.9

    with pytest.raises(ValueError, match="two disjoint, non-empty lists"):
        diffing.relative_decoder_norms(cfg, res.params, groups=((0,), (0,)))
    with pytest.raises(ValueError, match="bands must not overlap"):
        diffing.DiffThresholds(exclusive=0.3, shared=0.3)
    with pytest.raises(ValueError, match="n_blocks >= 2"):
        diffing.diff_summary(sae.SAEConfig("relu", d_in=16, d_sae=8), sae.init(
            sae.SAEConfig("relu", d_in=16, d_sae=8), jax.random.key(0)))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A tiny GPT-2 trained on the base bigram world, then fine-tuned on the rewired one,
    written as two HuggingFace checkpoints; and the losses of each on each world."""
    world = tiny_lm.make_world(32, seed=0)
    model = tiny_lm.tiny_gpt2(32, 16)
    base, _ = tiny_lm.train(model, model.init(jax.random.key(0)), world.base, world.p_rule,
                            steps=150, seed=1)
    ft, _ = tiny_lm.train(model, base, world.finetuned, world.p_rule, steps=150, seed=2)
    root = tmp_path_factory.mktemp("diffing")
    for name, p in (("base", base), ("ft", ft)):
        _write_hf_gpt2(root / name, model, jax.device_get(p))
    mixed = np.where(np.arange(32) % 2 == 0, world.base, world.finetuned)  # both worlds
    tokens = np.asarray(tiny_lm.sample(jax.random.key(5), jnp.asarray(mixed), 0.9, 64, 16))
    np.save(root / "tokens.npy", tokens)
    held = {w: tiny_lm.sample(jax.random.key(9), jnp.asarray(table), 0.9, 32, 16)
            for w, table in (("base", world.base), ("ft", world.finetuned))}
    losses = {(name, w): float(tiny_lm.loss(model, p, toks))
              for name, p in (("base", base), ("ft", ft)) for w, toks in held.items()}
    return root, losses


def test_the_fine_tuning_changed_what_the_model_predicts(checkpoints):
    _, loss = checkpoints
    # each model is better on its own world: the two checkpoints differ in a known way
    assert loss["base", "base"] < loss["base", "ft"] - 0.5
    assert loss["ft", "ft"] < loss["ft", "base"] - 0.5


def _diff_run(root: Path, models: list[str], out: str):
    args = ["--model", *[str(root / m) for m in models], "--hook", HOOK, "--arch",
            "crosscoder", "--d-sae", "64", "--l1", "1.0", "--lr", "3e-3", "--steps", "100",
            "--batch-size", "64", "--tokens", str(root / "tokens.npy"), "--seq-len", "16",
            "--forward-batch", "4", "--buffer-batches", "4", "--log-every", "50",
            "--out", str(root / out), "--no-progress"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # short run: the dead window is scaled down
        main(args)
    run = root / out
    return (json.loads((run / "sae" / "diff.json").read_text()),
            json.loads((run / "summary.json").read_text()), run)


def test_two_model_crosscoder_command_writes_a_sane_diff(checkpoints):
    root, _ = checkpoints
    diff, summary, run = _diff_run(root, ["base", "ft"], "ab")
    raw = json.loads((run / "sae" / "cfg.json").read_text())
    assert raw["metadata"]["crosscoder_blocks"] == [[0, HOOK], [1, HOOK]]
    assert raw["metadata"]["model_names"] == [str(root / "base"), str(root / "ft")]
    assert summary["diff"] == [diff] and diff["groups"] == [[0], [1]]
    png = (run / "sae" / "diff.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    counts = diff["counts"]
    assert diff["n_latents"] == 64 and 32 <= diff["n_live"] <= 64
    assert sum(counts.values()) == diff["n_live"] == sum(diff["histogram"]["counts"])
    assert np.isclose(sum(diff["fractions"].values()), 1.0)
    # the fine-tuned model was made from the base: most latents are shared
    assert counts["shared"] > diff["n_live"] / 2
    loaded = sae.load_saelens(run / "sae")
    rel = np.asarray(diffing.relative_decoder_norms(loaded.cfg, loaded.params))
    assert np.all((rel >= 0) & (rel <= 1))

    # control: two copies of one checkpoint. Same tokens, same programs; every latent is
    # shared and writes the same direction in both, unlike base vs fine-tuned, whose
    # residual streams differ (if the store read checkpoint 0 twice, "ab" would look like this)
    same, _, _ = _diff_run(root, ["base", "base"], "aa")
    assert same["counts"]["base_only"] == same["counts"]["ft_only"] == 0
    assert same["counts"]["shared"] == same["n_live"]
    assert same["shared_cosine"]["median"] > 0.95
    assert diff["shared_cosine"]["median"] < same["shared_cosine"]["median"] - 0.1
