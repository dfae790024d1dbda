"""The feature dashboard in headless Chromium: the page's script builds every feature from the
embedded JSON (ids, highlighted activating tokens, histogram bars, logit tokens), the page is
self-contained, and the command line writes it from a checkpoint, an SAE file and a token file.

Set ``JINTERP_DOCS_IMG=1`` to also copy the screenshot to ``docs/img/sae/dashboard.png``.
"""

import json
import os
import re
import shutil
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
from browser import render, screenshot

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))
from families import family  # noqa: E402
from test_features import BINS, CFG, FEATURES, HOOK, LEFT, RIGHT, K, _sae  # noqa: E402
from test_model_train import _write_hf_gpt2  # noqa: E402

from jinterp import sae  # noqa: E402
from jinterp.sae import dashboard  # noqa: E402

WORDS = ("<bos> the a cat dog sat on mat ran after ball in garden sun is warm today we saw big "
         "small red blue bird sang tree near house old man walked to river water cold children "
         "played with and then quietly fast slowly green park morning evening light rain fell "
         "over hills . , she he read book by window night").split()
SENTENCES = ["the cat sat on the mat .", "a dog ran after the red ball in the park .",
             "she read a book by the window at night .", "the old man walked to the river .",
             "children played in the green garden and then ran fast .",
             "rain fell over the hills in the evening .", "we saw a small blue bird .",
             "the bird sang in the tree near the house .", "the sun is warm today .",
             "he walked slowly with the dog , then quietly read .",
             "the river water is cold in the morning light ."]


def _text_tokens(n=10, pos=12):
    """Rows of ``<bos>`` + 11 words of a stream of sentences (ids in the family's 61)."""
    index = {w: i for i, w in enumerate(WORDS)}
    stream = [index.get(w, index["a"]) for s in SENTENCES * 4 for w in s.split()]
    body = np.asarray(stream[:n * (pos - 1)], np.int32).reshape(n, pos - 1)
    return np.concatenate([np.zeros((n, 1), np.int32), body], axis=1)


def _strings(ids):
    return [WORDS[i] if i == 0 else " " + WORDS[i] for i in ids]


class _Dom(HTMLParser):
    """What the script built: per feature section, its contexts' tokens, bars and logits."""

    def __init__(self):
        super().__init__()
        self.features, self.links, self.cur, self.capture = {}, [], None, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        cls = (a.get("class") or "").split()
        if tag == "section" and "feature" in cls:
            self.cur = self.features.setdefault(int(a["data-feature"]), {
                "contexts": [], "bars": [], "logits": [], "text": []})
        elif tag == "a" and "feat-link" in cls:
            self.links.append(int(a["data-feature"]))
        elif self.cur is None:
            return
        elif tag == "div" and "context" in cls:
            self.cur["contexts"].append([])
        elif tag == "span" and "tok" in cls:
            self.capture = ["", "peak" in cls, float(a["data-act"])]
            self.cur["contexts"][-1].append(self.capture)
        elif tag == "span" and "tokstr" in cls:
            self.capture = [""]
            self.cur["logits"].append(self.capture)
        elif tag == "rect" and "bar" in cls:
            self.cur["bars"].append(int(a["data-count"]))

    def handle_endtag(self, tag):
        if tag == "span":
            self.capture = None

    def handle_data(self, data):
        if self.capture is not None:
            self.capture[0] += data
        elif self.cur is not None:
            self.cur["text"].append(data)


def test_page_shows_every_feature_in_chromium(tmp_path):
    model, params = family("gpt2")
    p, toks = _sae(), _text_tokens()
    page = tmp_path / "dashboard.html"
    analysis = sae.features.analyze(model, params, CFG, p, HOOK, toks, features=FEATURES, k=K,
                                    left=LEFT, right=RIGHT, n_bins=BINS, batch_size=4,
                                    exclude_ids=(0,))
    data = dashboard.page_data(analysis, _strings, title=f"SAE features at {HOOK}",
                               info={"model": "random GPT-2 (3 layers)", "SAE": "random TopK",
                                     "d_sae": CFG.d_sae, "k": CFG.k})
    page.write_text(dashboard.render(data), encoding="utf-8")
    source = page.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", source)  # self-contained

    dom = _Dom()
    dom.feed(render(page))
    assert sorted(dom.features) == sorted(FEATURES) and dom.links == FEATURES
    firing = 0
    for row, f in enumerate(FEATURES):
        got = dom.features[f]
        assert got["bars"] == analysis.hist_counts[row].tolist()
        valid = np.flatnonzero(analysis.contexts.value[row] > 0)
        assert len(got["contexts"]) == len(valid)
        for spans, j in zip(got["contexts"], valid):  # largest first, centre token outlined
            peak = [s for s in spans if s[1]]
            centre = toks[analysis.contexts.seq[row, j], analysis.contexts.pos[row, j]]
            assert len(peak) == 1 and peak[0][0] == _strings([centre])[0]
            assert np.isclose(peak[0][2], analysis.contexts.value[row, j], atol=1e-4)
            assert "".join(s[0] for s in spans).strip()  # the window's text is shown
        firing += len(valid) > 0
        want = _strings(analysis.top_ids[row]) + _strings(analysis.bottom_ids[row])
        assert [s[0] for s in got["logits"]] == want
        if not len(valid):
            assert "never fires on these tokens" in "".join(got["text"])
    assert firing >= 5

    png = screenshot(page, tmp_path / "dashboard.png", width=1100, height=760)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    if os.environ.get("JINTERP_DOCS_IMG"):
        docs = Path(__file__).resolve().parents[2] / "docs" / "img" / "sae" / "dashboard.png"
        docs.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(png, docs)


def _word_tokenizer(path: Path) -> None:
    tokenizers = __import__("tokenizers")
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({w: i for i, w in enumerate(WORDS)},
                                                           unk_token="a"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<bos>"}))


def _embedded(page: str) -> dict:
    return json.loads(re.search(r'<script id="data" type="application/json">(.*?)</script>',
                                page, re.S).group(1))


def test_command_line_writes_the_page_from_files(tmp_path):
    model, params = family("gpt2")
    _write_hf_gpt2(tmp_path / "gpt2", model, params)
    _word_tokenizer(tmp_path / "gpt2")
    sae.save_saelens(tmp_path / "sae", CFG, _sae(), metadata={"hook_name": HOOK})
    np.save(tmp_path / "tokens.npy", _text_tokens().reshape(-1))  # flat: cut by --seq-len
    out = tmp_path / "page.html"
    dashboard.main(["--model", str(tmp_path / "gpt2"), "--sae", str(tmp_path / "sae"),
                    "--tokens", str(tmp_path / "tokens.npy"), "--seq-len", "12", "--out",
                    str(out), "--features", *map(str, FEATURES), "--k", str(K), "--left",
                    str(LEFT), "--right", str(RIGHT), "--bins", str(BINS), "--batch-size", "4",
                    "--exclude-bos"])
    text = out.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)
    hostile = dashboard.render({"title": "</script><b>", "info": {}, "features": [],
                                "strings": {"1": "</script>"}})
    assert hostile.count("</script>") == 2 and "<b>" not in hostile  # no string closes a tag
    assert _embedded(hostile)["strings"]["1"] == "</script>"
    data = _embedded(text)
    assert [f["id"] for f in data["features"]] == FEATURES
    assert data["info"]["hook"] == HOOK and data["n_tokens"] == 10 * 11  # BOS excluded
    assert data["strings"]["3"] == "cat"  # the checkpoint's tokenizer named the tokens
    fired = [f for f in data["features"] if f["contexts"]]
    assert fired and all(0 < c["centre"] <= LEFT for f in fired for c in f["contexts"])
