"""Attention-pattern grid, the HTML viewer rendered in headless Chromium, the circuit graph."""

import json
import re

import numpy as np
import pytest
from browser import render, screenshot
from matplotlib import image

from jinterp import viz
from jinterp.patching import Node
from jinterp.viz import pattern_html

L, H, P = 2, 3, 6
TOKENS = ["<s>", "A", " b", "</script>", "A", " b"]  # a token that must not close the script


def _patterns(seed: int = 0) -> np.ndarray:
    """Causal, row-normalised [layer, head, q, k] patterns."""
    x = np.tril(np.random.default_rng(seed).random((L, H, P, P)) + 0.01)
    return x / x.sum(-1, keepdims=True)


def test_pattern_grid_png_and_shape_errors(tmp_path):
    out = viz.plot_attention_patterns(_patterns(), tmp_path / "p.png", tokens=TOKENS)
    pixels = image.imread(out)
    assert out.stat().st_size > 5000 and pixels[..., :3].std() > 0.05
    one_layer = viz.plot_attention_patterns(_patterns()[0], tmp_path / "one.png")
    assert one_layer.stat().st_size > 2000
    with pytest.raises(ValueError, match=r"\[layer, n_heads, q_pos, k_pos\].*one prompt"):
        viz.plot_attention_patterns(np.zeros((L, 4, H, P, P)), tmp_path / "b.png")
    with pytest.raises(ValueError, match="q_pos == k_pos"):
        viz.plot_attention_patterns(np.zeros((L, H, P, P + 1)), tmp_path / "b.png")


def _embedded(page: str) -> dict:
    match = re.search(r'<script id="pattern-data" type="application/json">(.*?)</script>',
                      page, re.S)
    return json.loads(match.group(1))


def test_viewer_page_is_self_contained_and_embeds_the_data():
    patterns = _patterns()
    page = pattern_html.attention_viewer_html(patterns, TOKENS, title="t <&>")
    data = _embedded(page)
    assert data["tokens"] == [t.replace(" ", "\u00b7") for t in TOKENS]
    np.testing.assert_allclose(data["patterns"], patterns, atol=1e-4)
    assert "</script>" not in page.split('type="application/json">')[1].split("</script>")[0]
    assert "<title>t &lt;&amp;&gt;</title>" in page
    for remote in ("http://", "https://", "src=", "<link"):
        assert remote not in page  # nothing is fetched
    # the heads, the tokens and the selects are built by the script, not written in the file
    assert 'data-head="' not in page and 'class="tok"' not in page and "<option" not in page
    with pytest.raises(ValueError, match="5 tokens for patterns over 6 positions"):
        pattern_html.attention_viewer_html(patterns, TOKENS[:5])
    with pytest.raises(ValueError, match=r"selected=\(2, 0\) is not a head"):
        pattern_html.attention_viewer_html(patterns, TOKENS, selected=(2, 0))


def test_viewer_renders_every_head_and_token_in_chromium(tmp_path):
    page = viz.write_attention_viewer(_patterns(), TOKENS, tmp_path / "viewer.html",
                                      selected=(1, 2))
    dom = render(page)
    assert 'data-ready="true"' in dom  # the script ran to its end
    labels = re.findall(r'<span class="head-label">(L\d+H\d+)</span>', dom)
    assert labels == [f"L{l}H{h}" for l in range(L) for h in range(H)]
    boxes = re.findall(r'<div class="head( selected)?" data-layer="(\d+)" data-head="(\d+)"', dom)
    assert [b[0] for b in boxes].count(" selected") == 1 and (" selected", "1", "2") in boxes
    tokens = re.findall(r'<span class="tok" data-pos="(\d+)"[^>]*>([^<]*)</span>', dom)
    assert [int(p) for p, _ in tokens] == list(range(P))
    assert tokens[3][1] == "&lt;/script&gt;" and tokens[2][1] == "\u00b7b"
    assert dom.count("<option") == L + H
    assert "showing L1H2" in dom
    shot = screenshot(page, tmp_path / "viewer.png", width=900, height=700)
    pixels = image.imread(shot)
    assert shot.stat().st_size > 5000 and pixels.shape[:2] == (700, 900)
    assert pixels[..., :3].std() > 0.02  # something was drawn


def test_circuit_graph_png_and_edge_errors(tmp_path):
    edges = [(Node.head(0, 0), Node.k(1, 1), 0.8), (Node.embed(), Node.q(1, 1), 0.3),
             (Node.embed(), Node.v(1, 1), -0.2), (Node.head(1, 1), Node.final(), 1.0)]
    out = viz.plot_circuit(edges, tmp_path / "c.png", n_layers=2, n_heads=H, title="planted")
    assert out.stat().st_size > 5000
    as_mapping = viz.plot_circuit({(u, d): w for u, d, w in edges}, tmp_path / "m.png")
    assert as_mapping.stat().st_size > 5000

    class Circuit:  # anything with edges() passes
        def edges(self):
            return [(u, d) for u, d, _ in edges]

    assert viz.plot_circuit(Circuit(), tmp_path / "o.png").stat().st_size > 5000
    with pytest.raises(ValueError, match="first node must be an output node"):
        viz.plot_circuit([(Node.k(1, 0), Node.final())], tmp_path / "b.png")
    with pytest.raises(ValueError, match="second node must be an input node"):
        viz.plot_circuit([(Node.head(0, 0), Node.head(1, 0))], tmp_path / "b.png")
    with pytest.raises(ValueError, match="outside a model of 2 layers and 3 heads"):
        viz.plot_circuit([(Node.head(0, 5), Node.final())], tmp_path / "b.png", n_layers=2,
                         n_heads=3)
    with pytest.raises(ValueError, match="not finite"):
        viz.plot_circuit([(Node.head(0, 0), Node.final(), float("nan"))], tmp_path / "b.png")
    top = viz.edges_from_scores({(u, d): w for u, d, w in edges}, top=2)
    assert [w for _, _, w in top] == [1.0, 0.8]
    pos = viz.node_positions(2, H, has_mlp=False)
    assert pos[Node.head(1, 2)] == (2.0, 2.0) and pos[Node.final()][1] == 3.0
