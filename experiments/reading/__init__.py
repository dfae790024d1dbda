"""Study 4: one figure per reading method, on models with a known structure.

Trains in-process the 2-layer attention-only induction model of
:mod:`jinterp.experiments.induction` (a previous-token head in layer 0, induction heads in
layer 1) and a 4-layer GPT-2 with LayerNorm and MLPs on the same task, then runs every reading
method of jinterp on them and writes one PNG each: direct logit attribution
(:mod:`.attribution`), the logit lens and the tuned lens (:mod:`.lenses`), probes with a control
task (:mod:`.probing`), difference-in-means directional ablation and steering
(:mod:`.directions`), Q/K/V composition scores (:mod:`.circuits`) and weight processing
(:mod:`.processing`). Run ``python -m jinterp.experiments.reading --help``.
"""

from jinterp.experiments.reading.study import STEPS, StudyConfig, run_study
from jinterp.experiments.reading.train import NormTrainConfig

__all__ = ["STEPS", "NormTrainConfig", "StudyConfig", "run_study"]
