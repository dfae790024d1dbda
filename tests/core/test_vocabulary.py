"""One axis vocabulary, declared once; one package namespace; the core never imports ports.

Static checks over the repository's sources and the ports' declarations.
"""

import collections
import os
import pathlib
import re
import subprocess
import sys

import pytest
from families import FAMILIES, family

from jinterp.names import AXES, LOCAL_AXES

ROOT = pathlib.Path(__file__).resolve().parents[2]
SOURCES = [p for p in ROOT.rglob("*.py")  # the project's own files: no venv, build or dot dir
           if not any(part.startswith(".") or part == "build"
                      for part in p.relative_to(ROOT).parts)]
ANNOTATION = re.compile(r"\b(?:Float|Int|Bool|Shaped|Num|Integer|Real|UInt|Key)\[\s*"
                        r"[^\[\],]+(?:\[[^\]]*\])?\s*,\s*\"([^\"]*)\"")


def test_every_axis_name_in_an_annotation_is_declared():
    unknown = collections.defaultdict(set)
    for path in SOURCES:
        for match in ANNOTATION.finditer(path.read_text()):
            for name in match.group(1).split():
                name = name.lstrip("*#").split("=")[0]
                if name not in ("...", "_") and not name.isdigit() and name not in AXES \
                        and name not in LOCAL_AXES:
                    unknown[name].add(str(path.relative_to(ROOT)))
    assert not unknown, f"undeclared axis names (add them to jinterp.names): {dict(unknown)}"


@pytest.mark.parametrize("name", FAMILIES)
def test_ports_use_only_vocabulary_axes_and_their_dims_match_the_params(name):
    model, params = family(name)
    for axes in model.points.values():
        assert set(axes) <= set(AXES), axes
    import jax

    axes_tree = model.param_axes()
    pairs = jax.tree.leaves(jax.tree.map(lambda a, p: (a, p.shape), axes_tree, params,
                                         is_leaf=lambda x: isinstance(x, tuple)),
                            is_leaf=lambda x: isinstance(x, tuple) and len(x) == 2
                            and isinstance(x[1], tuple))
    for axes, shape in pairs:
        assert set(axes) <= set(AXES), axes
        assert shape == tuple(model.dims[a] for a in axes), (axes, shape)
    shapes = jax.tree.map(lambda s: s.shape, model.param_shapes())
    assert shapes == jax.tree.map(lambda p: p.shape, params)


def test_the_core_never_imports_the_ports_or_the_studies():
    pattern = re.compile(r"^\s*((from|import)\s+(jinterp\.(models|experiments)|models|experiments)"
                         r"\b|from\s+jinterp\s+import\s+.*\b(models|experiments)\b)", re.M)
    core = [p for p in (ROOT / "jinterp").rglob("*.py")]
    offenders = [str(p.relative_to(ROOT)) for p in core if pattern.search(p.read_text())]
    assert not offenders, offenders
    bare = re.compile(r"^\s*(from|import)\s+(models|experiments)(\.|\s|$)", re.M)
    stale = [str(p.relative_to(ROOT)) for p in SOURCES if bare.search(p.read_text())]
    assert not stale, f"import jinterp.models / jinterp.experiments instead: {stale}"


def test_a_users_own_models_py_does_not_shadow_the_ports(tmp_path):
    (tmp_path / "models.py").write_text("x = 1\n")
    (tmp_path / "experiments.py").write_text("y = 2\n")
    code = ("import models, experiments\nfrom jinterp import models as m\n"
            "import jinterp.experiments.grokking as g\n"
            "print(models.x, experiments.y, callable(m.load_pretrained), g.__name__)")
    env = {**os.environ, "JINTERP_COMPILATION_CACHE": "0"}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["1", "2", "True", "jinterp.experiments.grokking"]
