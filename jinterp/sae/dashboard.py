"""A static HTML dashboard of an SAE's features: one self-contained page, no server.

``python -m jinterp.sae.dashboard --model DIR --sae DIR --tokens FILE --out page.html`` (or
:func:`build` from Python) runs :func:`jinterp.sae.features.analyze` on a token dataset and
writes one HTML file: the data embedded as JSON, the CSS and JavaScript inline, nothing fetched
from the network (it opens from disk, in a mail attachment, on an air-gapped machine). The
script draws, per feature: its density, maximum and mean activation; a histogram of its
non-zero activations (inline SVG bars); the tokens its decoder direction boosts and suppresses
most (logit weights, for residual-stream SAEs); and its top-activating contexts, each token
shaded by the feature's activation, the activating token outlined. A list on the left jumps to
a feature and filters by id.

Token strings are written with ``textContent`` (never parsed as HTML) and the JSON is escaped
so that no string can close the ``<script>`` element that holds it.
"""

from __future__ import annotations

import argparse
import html
import importlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from jinterp.model import HookedModel
from jinterp.sae.config import SAEConfig
from jinterp.sae.features import FeatureAnalysis, analyze

TokenStrings = Callable[[Sequence[int]], list[str]]


def _token_strings(tokenizer) -> TokenStrings:
    """A function ``ids -> strings`` from a tokenizer (``to_str_tokens``), a callable, or None
    (ids shown as ``#17``)."""
    if tokenizer is None:
        return lambda ids: [f"#{int(i)}" for i in ids]
    if hasattr(tokenizer, "to_str_tokens"):
        return lambda ids: list(tokenizer.to_str_tokens(np.asarray(ids, np.int64)))
    if callable(tokenizer):
        return tokenizer
    raise TypeError(f"tokenizer must have to_str_tokens(ids) (jinterp.models.load_tokenizer) or "
                    f"be a function ids -> strings; got {type(tokenizer).__name__}.")


def page_data(analysis: FeatureAnalysis, token_strings: TokenStrings | None = None, *,
              title: str = "SAE features", info: dict[str, Any] | None = None) -> dict:
    """The JSON the page embeds: features (contexts with ``value > 0`` only) and a table of
    the token strings they use."""
    strings = token_strings or _token_strings(None)
    c = analysis.contexts
    used: set[int] = set()
    features = []
    for row, fid in enumerate(analysis.features.tolist()):
        contexts = []
        for j in np.flatnonzero(np.asarray(c.value[row]) > 0):
            toks = np.asarray(c.tokens[row, j])
            inside = toks >= 0
            used.update(toks[inside].tolist())
            contexts.append({"value": float(c.value[row, j]), "seq": int(c.seq[row, j]),
                             "pos": int(c.pos[row, j]), "tokens": toks[inside].tolist(),
                             "acts": np.round(np.asarray(c.acts[row, j])[inside], 5).tolist(),
                             "centre": int(inside[:analysis.left].sum())})
        feature = {"id": int(fid), "density": float(analysis.density[row]),
                   "max": float(analysis.hist_max[row]), "mean": float(analysis.mean_act[row]),
                   "hist": np.asarray(analysis.hist_counts[row]).tolist(), "contexts": contexts}
        if analysis.top_ids is not None:
            for key, ids, vals in (("boost", analysis.top_ids, analysis.top_values),
                                   ("suppress", analysis.bottom_ids, analysis.bottom_values)):
                feature[key] = [[int(i), round(float(v), 5)] for i, v in zip(ids[row], vals[row])]
                used.update(int(i) for i in ids[row])
        features.append(feature)
    ids = sorted(used)
    table = dict(zip((str(i) for i in ids), strings(ids))) if ids else {}
    return {"title": title, "info": info or {}, "n_tokens": int(c.n_tokens),
            "features": features, "strings": table}


def render(data: dict) -> str:
    """The page: :data:`_TEMPLATE` with the title and the JSON filled in."""
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    payload = payload.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return (_TEMPLATE.replace("__TITLE__", html.escape(data.get("title", "SAE features")))
            .replace("__DATA__", payload))


def build(model: HookedModel, params, cfg: SAEConfig, sae_params: dict, hook: str,
          tokens, tokenizer=None, *, out: str | os.PathLike | None = None,
          title: str | None = None, info: dict[str, Any] | None = None,
          **analyze_kwargs) -> str:
    """Analyses the features and returns (and with ``out``, writes) the dashboard's HTML.

    Args:
        model / params / cfg / sae_params / hook / tokens: as
            :func:`jinterp.sae.features.analyze`, which gets ``analyze_kwargs`` too
            (``features``, ``k``, ``left``, ``right``, ``n_bins``, ``exclude_ids``, ...).
        tokenizer: turns ids into strings: ``jinterp.models.load_tokenizer(dir)``, a function
            ``ids -> strings``, or None (ids shown as ``#17``).
        out: where to write the page.
        title / info: the page's heading and the key-value facts shown under it.
    """
    analysis = analyze(model, params, cfg, sae_params, hook, tokens, **analyze_kwargs)
    facts = {"hook": hook, "architecture": cfg.architecture.value, "d_in": cfg.d_in,
             "d_sae": cfg.d_sae, **({"k": cfg.k} if cfg.k is not None else {}),
             "sequences": int(np.shape(tokens)[0]), **(info or {})}
    page = render(page_data(analysis, _token_strings(tokenizer),
                            title=title or f"SAE features at {hook}", info=facts))
    if out is not None:
        with open(out, "w", encoding="utf-8") as fh:
            fh.write(page)
    return page


# ------------------------------------------------------------------------- command line
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jinterp.sae.dashboard",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a HuggingFace checkpoint directory")
    p.add_argument("--sae", required=True, help="an SAE directory in SAELens format")
    p.add_argument("--tokens", required=True, help=".npy token file, [n_seq, pos] or flat")
    p.add_argument("--out", required=True, help="the HTML file to write")
    p.add_argument("--hook", default=None, help="activation name (default: the SAE's)")
    p.add_argument("--seq-len", type=int, default=None, help="cut a flat token file into rows")
    p.add_argument("--features", type=int, nargs="+", default=None, help="feature ids")
    p.add_argument("--n-features", type=int, default=32, help="without --features: 0..N-1")
    p.add_argument("--k", type=int, default=10, help="top contexts per feature")
    p.add_argument("--left", type=int, default=16, help="context tokens before")
    p.add_argument("--right", type=int, default=4, help="context tokens after")
    p.add_argument("--bins", type=int, default=32, help="histogram bins")
    p.add_argument("--batch-size", type=int, default=8, help="sequences per forward")
    p.add_argument("--exclude-bos", action="store_true", help="skip BOS / pad positions")
    p.add_argument("--dtype", default=None, help="model dtype (default: the checkpoint's)")
    return p


def _tokens(path: str, seq_len: int | None) -> np.ndarray:
    toks = np.load(path, mmap_mode="r", allow_pickle=False)
    if toks.dtype.kind not in "iu":
        raise ValueError(f"{path} holds {toks.dtype}, not integer token ids.")
    if toks.ndim == 1:
        if seq_len is None:
            raise ValueError(f"{path} is a flat stream of {len(toks)} tokens: pass --seq-len.")
        toks = toks[:len(toks) // seq_len * seq_len].reshape(-1, seq_len)
    elif toks.ndim != 2:
        raise ValueError(f"{path} has shape {toks.shape}; expected [n_seq, pos] or flat.")
    elif seq_len is not None:
        toks = toks[:, :seq_len]
    return np.asarray(toks, np.int32)


def main(argv: Sequence[str] | None = None) -> str:
    """Runs the command; returns the path written."""
    args = parser().parse_args(argv)
    ports = importlib.import_module("jinterp.models")  # the app reads checkpoints; the
    # library never imports the ports (tests/core/test_vocabulary.py)
    from jinterp.sae.io import load_saelens

    loaded = load_saelens(args.sae)
    hook = args.hook or loaded.hook_name
    if hook is None:
        raise ValueError(f"{args.sae} does not say which activation it reads (no hook_name in "
                         "its cfg.json metadata): pass --hook.")
    model, params = ports.load_pretrained(args.model, dtype=args.dtype)
    try:
        tok = ports.load_tokenizer(args.model)
    except FileNotFoundError:
        print(f"{args.model} has no tokenizer.json: tokens are shown as ids.", file=sys.stderr)
        tok = None
    exclude = []
    if args.exclude_bos:
        if tok is None:
            raise ValueError("--exclude-bos needs the model directory's tokenizer.")
        exclude = sorted({i for i in (tok.bos_id, tok.pad_id) if i is not None})
    features = args.features if args.features is not None else list(
        range(min(args.n_features, loaded.cfg.d_sae)))
    head = loaded.metadata.get("hook_head_index")
    build(model, params, loaded.cfg, loaded.params, hook, _tokens(args.tokens, args.seq_len),
          tok, out=args.out, info={"model": os.path.basename(os.path.normpath(args.model)),
                                   "sae": os.path.basename(os.path.normpath(args.sae))},
          features=features, k=args.k, left=args.left, right=args.right, n_bins=args.bins,
          batch_size=args.batch_size, exclude_ids=exclude, head=head,
          normalize=loaded.metadata.get("normalize_activations", "none") or "none")
    return args.out


_TEMPLATE = r"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>
body{margin:0;font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1d2430;
background:#f4f5f7;display:flex;height:100vh}
nav{width:190px;flex:none;overflow-y:auto;background:#fff;border-right:1px solid #dde1e6;
padding:10px}
nav input{width:100%;box-sizing:border-box;padding:4px 6px;margin-bottom:8px}
nav a{display:flex;justify-content:space-between;padding:2px 6px;color:#1d2430;
text-decoration:none;border-radius:4px;font-variant-numeric:tabular-nums}
nav a:hover{background:#eef2f8}nav a .d{color:#7a8491;font-size:12px}
main{flex:1;overflow-y:auto;padding:14px 22px}
header h1{font-size:20px;margin:0 0 4px}header .facts{color:#59636e;font-size:13px}
header .facts b{color:#1d2430;font-weight:600}
section.feature{background:#fff;border:1px solid #dde1e6;border-radius:8px;margin:14px 0;
padding:12px 16px}
section.feature h2{font-size:16px;margin:0 0 2px}.stats{color:#59636e;font-size:13px}
.row{display:flex;gap:28px;flex-wrap:wrap;margin:8px 0}
.panel h3{font-size:12px;text-transform:uppercase;letter-spacing:.04em;color:#7a8491;
margin:0 0 4px}
svg.hist rect.bar{fill:#e8833a}svg.hist text{font-size:10px;fill:#7a8491}
ul.logits{list-style:none;margin:0;padding:0;min-width:170px}
ul.logits li{display:flex;justify-content:space-between;gap:14px;font-size:13px}
li.pos .v{color:#1a7f37}li.neg .v{color:#cf222e}
.tokstr{font-family:ui-monospace,Menlo,Consolas,monospace;white-space:pre;background:#f1f3f5;
border-radius:3px;padding:0 3px}
.contexts{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12.5px}
.contexts h3{font-family:system-ui,sans-serif}
.context{display:flex;gap:10px;align-items:baseline;padding:2px 0;border-top:1px solid #f0f1f3}
.context .val{flex:none;width:58px;text-align:right;color:#7a8491}
.context .text{white-space:pre-wrap;word-break:break-all}
span.tok{border-radius:2px}span.tok.peak{outline:1.5px solid #b3470f;font-weight:600}
.empty{color:#7a8491;font-style:italic}
</style></head>
<body>
<nav><input id="filter" placeholder="feature id..." aria-label="filter features">
<div id="list"></div></nav>
<main><header><h1 id="title"></h1><div class="facts" id="facts"></div></header>
<div id="features"></div></main>
<script id="data" type="application/json">__DATA__</script>
<script>
"use strict";
const DATA = JSON.parse(document.getElementById("data").textContent);
const str = id => (DATA.strings[String(id)] ?? ("#" + id));
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}
const fmt = v => Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 1 ? v.toFixed(2)
  : v.toPrecision(2);
function shown(s) { return s.replace(/\n/g, "\u21b5").replace(/\t/g, "\u2192"); }

function histogram(f) {
  const NS = "http://www.w3.org/2000/svg", W = 260, H = 90, n = f.hist.length;
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("class", "hist"); svg.setAttribute("width", W);
  svg.setAttribute("height", H + 14);
  const top = Math.max(1, ...f.hist), bw = W / n;
  f.hist.forEach((c, i) => {
    const r = document.createElementNS(NS, "rect"), h = c ? Math.max(1, H * c / top) : 0;
    r.setAttribute("class", "bar"); r.setAttribute("data-count", c);
    r.setAttribute("x", i * bw + 0.5); r.setAttribute("width", Math.max(bw - 1, 0.5));
    r.setAttribute("y", H - h); r.setAttribute("height", h);
    const t = document.createElementNS(NS, "title");
    t.textContent = `${fmt(f.max * i / n)} - ${fmt(f.max * (i + 1) / n)}: ${c}`;
    r.appendChild(t); svg.appendChild(r);
  });
  [[0, "0", "start"], [W, fmt(f.max), "end"]].forEach(([x, s, a]) => {
    const t = document.createElementNS(NS, "text");
    t.setAttribute("x", x); t.setAttribute("y", H + 12); t.setAttribute("text-anchor", a);
    t.textContent = s; svg.appendChild(t);
  });
  return svg;
}

function logits(f, key, cls) {
  const ul = el("ul", "logits");
  for (const [id, v] of f[key]) {
    const li = el("li", "logit " + cls);
    li.appendChild(el("span", "tokstr", shown(str(id))));
    li.appendChild(el("span", "v", (v > 0 ? "+" : "") + v.toFixed(3)));
    ul.appendChild(li);
  }
  return ul;
}

function context(f, c) {
  const div = el("div", "context");
  div.dataset.seq = c.seq; div.dataset.pos = c.pos;
  div.appendChild(el("span", "val", fmt(c.value)));
  const text = el("span", "text");
  c.tokens.forEach((id, i) => {
    const s = el("span", i === c.centre ? "tok peak" : "tok", shown(str(id)));
    const a = c.acts[i], alpha = f.max > 0 ? Math.max(0, a) / f.max : 0;
    if (a > 0) s.style.background = `rgba(232,131,58,${(0.12 + 0.88 * alpha).toFixed(3)})`;
    s.dataset.act = a; s.title = `${JSON.stringify(str(id))}: ${fmt(a)}`;
    text.appendChild(s);
  });
  div.appendChild(text);
  return div;
}

function feature(f) {
  const sec = el("section", "feature");
  sec.id = "feature-" + f.id; sec.dataset.feature = f.id;
  sec.appendChild(el("h2", null, "Feature " + f.id));
  sec.appendChild(el("div", "stats", `density ${(100 * f.density).toPrecision(3)}% \u00b7 ` +
    `max ${fmt(f.max)} \u00b7 mean when active ${fmt(f.mean)} \u00b7 ` +
    `${f.contexts.length} contexts`));
  const row = el("div", "row");
  const ph = el("div", "panel"); ph.appendChild(el("h3", null, "activations (non-zero)"));
  ph.appendChild(histogram(f)); row.appendChild(ph);
  if (f.boost) {
    for (const [key, cls, name] of [["boost", "pos", "boosted tokens"],
                                    ["suppress", "neg", "suppressed tokens"]]) {
      const p = el("div", "panel"); p.appendChild(el("h3", null, name));
      p.appendChild(logits(f, key, cls)); row.appendChild(p);
    }
  }
  sec.appendChild(row);
  const box = el("div", "contexts"); box.appendChild(el("h3", null, "top activations"));
  if (!f.contexts.length) box.appendChild(el("div", "empty", "never fires on these tokens"));
  f.contexts.forEach(c => box.appendChild(context(f, c)));
  sec.appendChild(box);
  return sec;
}

document.getElementById("title").textContent = DATA.title;
const facts = document.getElementById("facts");
Object.entries({...DATA.info, tokens: DATA.n_tokens}).forEach(([k, v], i) => {
  if (i) facts.appendChild(document.createTextNode(" \u00b7 "));
  facts.appendChild(document.createTextNode(k + " ")); facts.appendChild(el("b", null, v));
});
const list = document.getElementById("list"), host = document.getElementById("features");
for (const f of DATA.features) {
  host.appendChild(feature(f));
  const a = el("a", "feat-link"); a.href = "#feature-" + f.id; a.dataset.feature = f.id;
  a.appendChild(el("span", null, String(f.id)));
  a.appendChild(el("span", "d", (100 * f.density).toPrecision(2) + "%"));
  list.appendChild(a);
}
document.getElementById("filter").addEventListener("input", e => {
  const q = e.target.value.trim();
  for (const node of document.querySelectorAll("[data-feature]"))
    node.style.display = !q || node.dataset.feature.startsWith(q) ? "" : "none";
});
</script></body></html>
"""


if __name__ == "__main__":
    main(sys.argv[1:])
