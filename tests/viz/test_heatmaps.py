"""Every heatmap function writes a PNG of its shape and refuses other shapes by name."""

import numpy as np
import pytest
from jaxtyping import TypeCheckError
from matplotlib import image

from jinterp import viz
from jinterp.patching import SITES

L, P, H = 2, 5, 3
TOKENS = ["a", " b", "c\n", "d", "e"]


class FakeTokenizer:
    """What viz needs of a tokenizer: ``to_str_tokens`` of ids (jinterp's and TL's name)."""

    def to_str_tokens(self, ids):
        return [f"<{int(i)}>" for i in ids]


CASES = [  # (function, shape, keyword arguments)
    (viz.plot_layer_pos, (L, P), {"tokens": TOKENS}),
    (viz.plot_layer_head, (L, H), {}),
    (viz.plot_layer_pos_head, (L, P, H), {"tokens": np.arange(P), "tokenizer": FakeTokenizer()}),
    (viz.plot_layer_head_dest, (L, H, P), {"tokens": TOKENS}),
    (viz.plot_layer_head_dest_src, (L, H, P, P), {}),
    (viz.plot_block_every, (3, L, P), {"tokens": TOKENS}),
    (viz.plot_head_every, (5, L, H), {}),
    (viz.plot_head_by_pos_every, (5, L, P, H), {}),
]


def _read_png(path) -> np.ndarray:
    assert path.stat().st_size > 2000
    return image.imread(path)


@pytest.mark.parametrize("fn, shape, kwargs", CASES, ids=[c[0].__name__ for c in CASES])
def test_each_shape_writes_a_png_and_other_shapes_are_refused(tmp_path, fn, shape, kwargs):
    values = np.random.default_rng(0).normal(size=shape)
    pixels = _read_png(fn(values, tmp_path / "fig.png", title="t", **kwargs))
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert pixels[..., :3].std() > 0.05  # not a blank canvas
    wrong = np.zeros(shape + (2,))
    # under pytest the jaxtyping annotation refuses the shape first (it names the axes) ...
    with pytest.raises(TypeCheckError, match="values"):
        fn(wrong, tmp_path / "bad.png")
    # ... and without the type checker (as users run it) the function's own check does
    unchecked = fn.__wrapped__
    axes = {"plot_block_every": "[3, layer, pos]", "plot_head_every": "[5, layer, head]"}
    with pytest.raises(ValueError, match=rf"{fn.__name__} takes values of shape \[") as err:
        unchecked(wrong, tmp_path / "bad.png")
    assert f"got shape {wrong.shape}" in str(err.value)
    if fn.__name__ in axes:
        assert axes[fn.__name__] in str(err.value)
        bad_stack = np.zeros((4,) + shape[1:])  # 4 rows where the stack has a fixed count
        with pytest.raises(ValueError, match=r"got shape \(4,"):
            unchecked(bad_stack, tmp_path / "bad.png")


def test_values_drive_the_pixels(tmp_path):
    # one hot cell in a [layer, head] map: the picture of it differs from the all-zero map's
    zero, hot = np.zeros((L, H)), np.zeros((L, H))
    hot[1, 2] = 1.0
    a = _read_png(viz.plot_layer_head(zero, tmp_path / "z.png", center=None))
    b = _read_png(viz.plot_layer_head(hot, tmp_path / "h.png", center=None))
    assert a.shape == b.shape and np.abs(a - b).max() > 0.3


def test_plot_sweep_picks_the_figure_from_the_site_table(tmp_path):
    by_shape = {("pos",): viz.plot_layer_pos, ("head",): viz.plot_layer_head,
                ("pos", "head"): viz.plot_layer_pos_head,
                ("head", "dest"): viz.plot_layer_head_dest,
                ("head", "dest", "src"): viz.plot_layer_head_dest_src}
    rename = {"pos": "pos", "n_heads": "head", "n_kv_heads": "head", "q_pos": "dest",
              "k_pos": "src"}
    for name, site in SITES.items():
        want = by_shape[tuple(rename[a] for a in site.node_axes)]
        assert viz.figure_for(name) is want, name
        assert viz.figure_for(f"get_act_patch_{name}") is want
        assert viz.figure_for(f"get_attr_patch_{name}") is want
    assert viz.figure_for("block_every") is viz.plot_block_every
    assert viz.figure_for("attn_head_all_pos_every") is viz.plot_head_every
    assert viz.figure_for("attn_head_by_pos_every") is viz.plot_head_by_pos_every
    out = viz.plot_sweep(np.ones((L, P)), "get_act_patch_resid_pre", tmp_path / "r.png",
                         tokens=TOKENS)
    assert out.stat().st_size > 2000
    with pytest.raises(ValueError, match="Unknown sweep 'resid_post'"):
        viz.figure_for("resid_post")


def test_token_labels_and_output_errors(tmp_path):
    with pytest.raises(ValueError, match="tokens has 4 entries but the values have 5"):
        viz.plot_layer_pos(np.zeros((L, P)), tmp_path / "a.png", tokens=TOKENS[:4])
    with pytest.raises(TypeError, match="not one string"):
        viz.plot_layer_pos(np.zeros((L, P)), tmp_path / "a.png", tokens="abcde")
    with pytest.raises(ValueError, match="ending in .png"):
        viz.plot_layer_head(np.zeros((L, H)), tmp_path / "a.pdf")
    with pytest.raises(ValueError, match="2 names for 3 maps"):
        viz.plot_head_stack.__wrapped__(np.zeros((3, L, H)), ["a", "b"], tmp_path / "s.png")
    from jinterp.viz._common import token_labels
    assert token_labels([" the", "\n"], 2) == ["\u00b7the 0", "\\n 1"]
    assert token_labels(np.array([7, 9]), 2, FakeTokenizer()) == ["<7> 0", "<9> 1"]
    assert token_labels(None, 3) == ["0", "1", "2"]
