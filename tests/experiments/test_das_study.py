"""The DAS study's command at its fast size: its checks hold, its figure and summary exist.

The study's numbers come from ``jinterp.das`` (itself checked against planted directions in
``tests/das``); here the chance level is recomputed from the held-out pairs' labels and the
summary's structure is what the README figure is drawn from. The fast size aligns at the
block's output only (the checked rows); the embedding hook runs in the full study.
"""

import json
import os

import numpy as np

from jinterp.das import tasks
from jinterp.experiments.das import cli
from jinterp.experiments.das.study import BLOCK, StudyConfig, _pairs


def test_fast_study_aligns_at_the_block_and_random_subspaces_stay_near_chance(tmp_path):
    summary = cli.main(["--out", str(tmp_path), "--fast"])
    assert all(summary["checks"].values()), summary["checks"]
    assert summary["toy"]["accuracy_all_inputs"] > 0.99
    config = StudyConfig.fast()
    assert {(r["hook"], r["k"]) for r in summary["rows"]} == {
        (h, k) for h in config.hooks for k in config.sizes}
    block = [r for r in summary["rows"] if r["hook"] == BLOCK]
    assert min(r["iia"] for r in block) >= 0.9
    assert max(r["iia_random"] for r in block) <= 0.7
    # the chance level is the null intervention's: labels equal to the base's own
    rng = np.random.default_rng(config.seed + 1)
    _pairs(rng, config.n_pairs, "V1", config)
    *_, chance = _pairs(rng, config.n_eval_pairs, "V1", config)
    assert summary["rows"][0]["chance"] == chance
    assert 0.4 < chance < 0.6 and tasks.VARIABLES[0] == "V1"
    assert os.path.getsize(tmp_path / "iia.png") > 10_000
    with open(tmp_path / "summary.json") as f:
        assert json.load(f)["boundless"]["V1"]["n_dims"] <= 3
