"""A self-contained HTML attention-pattern viewer: one file, no network, data embedded as JSON.

The page (inline CSS and JavaScript, nothing fetched) shows every head of every layer as a
thumbnail labelled ``L{layer}H{head}``; clicking one, or the layer / head menus, draws that
head's destination x source pattern large. Hovering a cell shows the token pair and its
weight; hovering a token of the prompt colours every earlier token by how much the selected
head attends to it from there. The page builds all of this from the embedded data when it
loads (nothing is pre-rendered), and marks ``<body data-ready="true">`` when done, which is what
the tests look for in headless Chromium.

Size: the file holds every weight (rounded to 4 decimals), about 7 bytes each:
``n_layers * n_heads * pos**2`` weights, e.g. 2 x 4 x 48 x 48 -> 130 kB, GPT-2 small at 64
tokens -> 4 MB. Slice layers or heads first for big models.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path

import numpy as np
from jaxtyping import ArrayLike, Float

from jinterp.viz._common import token_strings
from jinterp.viz.patterns import check_patterns

DECIMALS = 4

_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<style>
body { font-family: sans-serif; margin: 16px; color: #222; }
h1 { font-size: 18px; margin: 0 0 10px 0; }
#controls label { margin-right: 14px; font-size: 14px; }
#heads { margin: 10px 0; }
.layer-row { display: flex; align-items: center; margin-bottom: 6px; }
.layer-name { width: 60px; font-size: 13px; color: #555; }
.head { display: inline-flex; flex-direction: column; align-items: center; margin-right: 6px;
        padding: 3px; border: 2px solid transparent; cursor: pointer; }
.head.selected { border-color: #d62728; }
.head-label { font-size: 12px; font-family: monospace; }
#main { display: flex; align-items: flex-start; gap: 16px; }
#pattern { border: 1px solid #ccc; cursor: crosshair; }
#info { font-family: monospace; font-size: 13px; min-height: 2.6em; white-space: pre; }
#tokens { margin-top: 10px; line-height: 2; max-width: 900px; }
.tok { display: inline-block; font-family: monospace; padding: 0 3px; margin: 1px;
       border: 1px solid #ddd; border-radius: 3px; cursor: pointer; line-height: 1.6; }
.thumb { border: 1px solid #eee; }
#axes { font-size: 12px; color: #555; margin-bottom: 4px; }
.tok.dest { outline: 2px solid #d62728; }
</style></head>
<body data-ready="false">
<h1>__TITLE__</h1>
<div id="controls">
  <label>layer <select id="layer-select"></select></label>
  <label>head <select id="head-select"></select></label>
  <span id="selected-name"></span>
</div>
<div id="heads"></div>
<div id="axes">rows: destination (query) position, top to bottom; columns: source (key)
position, left to right</div>
<div id="main"><canvas id="pattern"></canvas><div id="info"></div></div>
<div id="tokens"></div>
<script id="pattern-data" type="application/json">__DATA__</script>
<script>
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("pattern-data").textContent);
  var P = data.patterns, toks = data.tokens, L = data.n_layers, H = data.n_heads;
  var n = toks.length, state = {layer: data.selected[0], head: data.selected[1]};
  var layerSel = document.getElementById("layer-select");
  var headSel = document.getElementById("head-select");
  var canvas = document.getElementById("pattern"), info = document.getElementById("info");
  function name(l, h) { return "L" + l + "H" + h; }
  function colour(w) {
    var c = Math.round(255 * (1 - Math.max(0, Math.min(1, w))));
    return "rgb(" + c + "," + Math.round(128 + c / 2) + ",255)";
  }
  function draw(target, m, cell) {
    target.width = n * cell; target.height = n * cell;
    var ctx = target.getContext("2d");
    ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, target.width, target.height);
    for (var q = 0; q < n; q++) for (var k = 0; k < n; k++) {
      ctx.fillStyle = colour(m[q][k]); ctx.fillRect(k * cell, q * cell, cell, cell);
    }
  }
  function option(sel, value, text) {
    var o = document.createElement("option"); o.value = value; o.textContent = text;
    sel.appendChild(o);
  }
  for (var l = 0; l < L; l++) option(layerSel, l, "layer " + l);
  for (var h = 0; h < H; h++) option(headSel, h, "head " + h);
  var heads = document.getElementById("heads"), thumbs = [];
  for (l = 0; l < L; l++) {
    var row = document.createElement("div"); row.className = "layer-row";
    var ln = document.createElement("span"); ln.className = "layer-name";
    ln.textContent = "layer " + l; row.appendChild(ln);
    for (h = 0; h < H; h++) {
      var box = document.createElement("div"); box.className = "head";
      box.setAttribute("data-layer", l); box.setAttribute("data-head", h);
      var thumb = document.createElement("canvas"); thumb.className = "thumb";
      draw(thumb, P[l][h], Math.max(2, Math.floor(96 / n)));
      var label = document.createElement("span"); label.className = "head-label";
      label.textContent = name(l, h);
      box.appendChild(thumb); box.appendChild(label); row.appendChild(box);
      box.addEventListener("click", (function (l2, h2) {
        return function () { select(l2, h2); }; })(l, h));
      thumbs.push(box);
    }
    heads.appendChild(row);
  }
  var tokBox = document.getElementById("tokens"), spans = [];
  toks.forEach(function (t, i) {
    var s = document.createElement("span"); s.className = "tok";
    s.setAttribute("data-pos", i); s.textContent = t; s.title = "position " + i;
    s.addEventListener("mouseenter", function () { fromDest(i); });
    tokBox.appendChild(s); spans.push(s);
  });
  var cell = Math.max(4, Math.min(24, Math.floor(560 / n)));
  function fromDest(q) {
    var m = P[state.layer][state.head], best = 0;
    spans.forEach(function (s, k) {
      var w = k <= q ? m[q][k] : 0; if (w > m[q][best]) best = k;
      s.style.background = k <= q ? colour(w) : "#fff";
      s.classList.toggle("dest", k === q);
    });
    info.textContent = name(state.layer, state.head) + ": from " + JSON.stringify(toks[q]) +
      " (" + q + "), most to " + JSON.stringify(toks[best]) + " (" + best + "): " +
      m[q][best].toFixed(3);
  }
  canvas.addEventListener("mousemove", function (e) {
    var r = canvas.getBoundingClientRect();
    var k = Math.floor((e.clientX - r.left) / cell), q = Math.floor((e.clientY - r.top) / cell);
    if (q < 0 || k < 0 || q >= n || k >= n) return;
    var w = P[state.layer][state.head][q][k];
    info.textContent = name(state.layer, state.head) + "\\ndest " + JSON.stringify(toks[q]) +
      " (" + q + ") <- src " + JSON.stringify(toks[k]) + " (" + k + "): " + w.toFixed(4);
  });
  function select(l, h) {
    state.layer = l; state.head = h; layerSel.value = l; headSel.value = h;
    draw(canvas, P[l][h], cell);
    thumbs.forEach(function (b) {
      b.classList.toggle("selected", +b.getAttribute("data-layer") === l &&
                                     +b.getAttribute("data-head") === h);
    });
    document.getElementById("selected-name").textContent = "showing " + name(l, h);
    info.textContent = "hover the pattern or a token";
  }
  layerSel.addEventListener("change", function () { select(+layerSel.value, state.head); });
  headSel.addEventListener("change", function () { select(state.layer, +headSel.value); });
  select(state.layer, state.head);
  document.body.setAttribute("data-ready", "true");
})();
</script>
</body></html>
"""


def attention_viewer_html(patterns: Float[ArrayLike, "..."], tokens, *, tokenizer=None,
                          title: str = "Attention patterns",
                          selected: tuple[int, int] = (0, 0)) -> str:
    """The viewer page for one prompt's patterns, as an HTML string.

    Args:
        patterns: ``[layer, n_heads, q_pos, k_pos]`` (or ``[n_heads, q_pos, k_pos]``).
        tokens: the prompt's ``pos`` tokens: strings, or ids (decoded with ``tokenizer``).
        title: the page's title and heading.
        selected: ``(layer, head)`` drawn large when the page opens.
    """
    x = check_patterns(patterns, "attention_viewer_html")
    n_layers, n_heads, n_pos, _ = x.shape
    strings = token_strings(tokens, tokenizer)
    if len(strings) != n_pos:
        raise ValueError(f"attention_viewer_html: {len(strings)} tokens for patterns over "
                         f"{n_pos} positions; pass the tokens of the prompt the patterns are of.")
    layer, head = (int(i) for i in selected)
    if not (0 <= layer < n_layers and 0 <= head < n_heads):
        raise ValueError(f"selected={selected} is not a head of patterns with {n_layers} layers "
                         f"and {n_heads} heads.")
    data = {"tokens": strings, "n_layers": n_layers, "n_heads": n_heads,
            "selected": [layer, head], "patterns": np.round(x, DECIMALS).tolist()}
    # "<" escaped inside the JSON, so no token can close the <script> element it sits in.
    payload = json.dumps(data, separators=(",", ":")).replace("<", "\\u003c")
    return _TEMPLATE.replace("__TITLE__", html.escape(title)).replace("__DATA__", payload)


def write_attention_viewer(patterns: Float[ArrayLike, "..."], tokens, out: str | os.PathLike,
                           **kwargs) -> Path:
    """Writes :func:`attention_viewer_html` to ``out`` (an ``.html`` file) and returns its path.

    ``kwargs`` are those of :func:`attention_viewer_html` (``tokenizer``, ``title``,
    ``selected``).
    """
    path = Path(out)
    if path.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"The viewer is an HTML page; give a path ending in .html, got {out!r}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(attention_viewer_html(patterns, tokens, **kwargs), encoding="utf-8")
    return path
