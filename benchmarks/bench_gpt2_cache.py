"""GPT-2-small-shaped forward on CPU: plain, cache everything, cache one name; vs HF PyTorch.

Prints one JSON object. Random weights (12 layers, d_model 768, batch 8 x 128 tokens). Times
are medians after warm-up through the public API (``model(...)``, ``jinterp.run_with_cache``);
compile time is measured apart; memory is XLA's account of each compiled program (arguments +
outputs + temporaries), which is what "caching one name costs only that activation" is about.
References, same machine and run: HuggingFace's PyTorch GPT-2 (plain, and with
``output_hidden_states`` + ``output_attentions``), and TransformerLens's ``HookedTransformer``
(plain, ``run_with_cache`` of everything and of one name) when ``--tl-python`` names a Python
that has transformer_lens (it runs in a subprocess, so TransformerLens needs not be installed in
jinterp's environment; e.g. ``python3 -m venv /tmp/tl && /tmp/tl/bin/pip install torch==2.13.0
transformer-lens``).

Usage: python benchmarks/bench_gpt2_cache.py [--repeats 5] [--batch 8] [--pos 128] [--tl-python PY]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import numpy as np

import jinterp
from jinterp import models
from benchmarks.common import compile_seconds, machine, process_peak_rss_mb, time_calls, xla_memory
from jinterp.hook_points import HookPoints
from jinterp.run import _forward

ONE_NAME = "blocks.6.hook_resid_post"


def _lowerable(model, params, tokens, names):
    """The jitted program run_with_cache would run, for compile-time and memory accounting."""
    capture = frozenset(model.default_names() if names is None else [names] if isinstance(names, str) else names)
    treedef = jax.tree.structure({})
    layout = HookPoints.layout(model.n_layers, capture)  # run_with_cache's default policy
    unroll = any(len(layers) == model.n_layers for layers in layout.values())
    return lambda: compile_seconds(_forward, params, tokens, [], model=model, capture=capture,
                                   treedef=treedef, static_leaves=(), unroll=unroll)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--pos", type=int, default=128)
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
    parser.add_argument("--tl-python", default=os.environ.get("JINTERP_TL_PYTHON"),
                        help="a Python interpreter with transformer_lens, for the TL reference")
    args = parser.parse_args()

    model = models.GPT2(models.GPT2Config.preset("gpt2"))
    params = model.init(jax.random.key(0))
    tokens = jax.numpy.asarray(np.random.default_rng(0).integers(0, model.d_vocab, (args.batch, args.pos)))

    cases = {
        "plain_forward": (lambda: model(params, tokens), ()),
        "cache_everything": (lambda: jinterp.run_with_cache(model, params, tokens), None),
        "cache_one_name": (lambda: jinterp.run_with_cache(model, params, tokens, names=ONE_NAME), ONE_NAME),
    }
    result = {"benchmark": "gpt2_small_forward_cache", "batch": args.batch, "pos": args.pos,
              "machine": machine(), "jinterp": {}}
    for name, (fn, names) in cases.items():
        seconds, compiled = _lowerable(model, params, tokens, names)()
        entry = {"compile_s": seconds, **time_calls(fn, repeats=args.repeats), "memory": xla_memory(compiled)}
        result["jinterp"][name] = entry
    j = result["jinterp"]
    activation_mb = args.batch * args.pos * 768 * 4 / 2**20
    result["ratios"] = {
        "cache_everything_time_over_plain": j["cache_everything"]["median_s"] / j["plain_forward"]["median_s"],
        "cache_one_name_time_over_plain": j["cache_one_name"]["median_s"] / j["plain_forward"]["median_s"],
    }
    if j["plain_forward"]["memory"]:
        result["ratios"]["cache_one_name_extra_peak_mb"] = (
            j["cache_one_name"]["memory"]["peak_mb"] - j["plain_forward"]["memory"]["peak_mb"])
        result["ratios"]["one_activation_mb"] = activation_mb
    result["targets"] = {"cache_everything_time_over_plain_max": 1.15,
                         "cache_one_name_extra_peak_mb_max": activation_mb}
    if not args.no_torch:
        result["reference_hf_torch"] = _torch_reference(model, params, np.asarray(tokens), args.repeats)
        ref = result["reference_hf_torch"]
        result["ratios"]["jinterp_plain_over_torch_plain"] = j["plain_forward"]["median_s"] / ref["plain_forward"]["median_s"]
        result["ratios"]["jinterp_cache_everything_over_torch_all_outputs"] = (
            j["cache_everything"]["median_s"] / ref["hidden_states_and_attentions"]["median_s"])
    if args.tl_python:
        tl = _transformer_lens_reference(args.tl_python, args.batch, args.pos, args.repeats)
        result["reference_transformer_lens"] = tl
        if "plain_forward" in tl:
            for case in ("plain_forward", "cache_everything", "cache_one_name"):
                result["ratios"][f"jinterp_over_transformer_lens_{case}"] = j[case]["median_s"] / tl[case]["median_s"]
    result["process_peak_rss_mb"] = process_peak_rss_mb()
    print(json.dumps(result, indent=2))


def _torch_reference(model, params, tokens, repeats) -> dict:
    import torch
    import transformers

    torch.set_num_threads(os.cpu_count() or 1)
    cfg = transformers.GPT2Config(attn_implementation="eager")
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    ids = torch.tensor(tokens)

    def run(**kw):
        with torch.inference_mode():
            return hf(ids, **kw).logits

    out = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    out["plain_forward"] = time_calls(lambda: run(), repeats=repeats)
    out["hidden_states_and_attentions"] = time_calls(
        lambda: run(output_hidden_states=True, output_attentions=True), repeats=repeats)
    return out


_TL_SCRIPT = r"""
import json, os, resource, statistics, sys, tempfile, time
import torch, transformers
import transformer_lens
batch, pos, repeats, one_name = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
torch.set_num_threads(os.cpu_count() or 1)
try:  # TransformerLens >= 4: the HookedTransformer API lives on TransformerBridge.
    from transformer_lens.model_bridge import TransformerBridge
    from tokenizers import Tokenizer, models as tokenizer_models
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(attn_implementation="eager")).eval()
    word_level = Tokenizer(tokenizer_models.WordLevel({"<unk>": 0}, unk_token="<unk>"))
    tok_dir = tempfile.mkdtemp()  # an offline stand-in tokenizer: TL insists on one
    transformers.PreTrainedTokenizerFast(tokenizer_object=word_level, eos_token="<unk>", bos_token="<unk>",
                                         pad_token="<unk>").save_pretrained(tok_dir)
    model = TransformerBridge.boot_transformers("gpt2", hf_model=hf,
                                                tokenizer=transformers.AutoTokenizer.from_pretrained(tok_dir))
    api = "TransformerBridge.boot_transformers(hf_model=GPT2LMHeadModel)"
except ImportError:
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    cfg = HookedTransformerConfig(n_layers=12, d_model=768, n_heads=12, d_head=64, d_mlp=3072, d_vocab=50257,
                                  n_ctx=1024, act_fn="gelu_new", normalization_type="LN", device="cpu")
    model, api = HookedTransformer(cfg).eval(), "HookedTransformer"
tokens = torch.randint(0, 50257, (batch, pos))
def timed(fn):
    with torch.inference_mode():
        fn()
        times = []
        for _ in range(repeats):
            t = time.perf_counter(); fn(); times.append(time.perf_counter() - t)
    return {"median_s": statistics.median(times), "min_s": min(times), "repeats": repeats}
out = {"torch": torch.__version__, "threads": torch.get_num_threads(), "api": api,
       "transformer_lens": getattr(transformer_lens, "__version__", "?")}
out["plain_forward"] = timed(lambda: model(tokens))
out["cache_everything"] = timed(lambda: model.run_with_cache(tokens))
out["cache_one_name"] = timed(lambda: model.run_with_cache(tokens, names_filter=one_name))
out["cached_names_everything"] = len(model.run_with_cache(tokens[:1, :4])[1])
out["process_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


def _transformer_lens_reference(python: str, batch: int, pos: int, repeats: int) -> dict:
    import subprocess

    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
    proc = subprocess.run([python, "-c", _TL_SCRIPT, str(batch), str(pos), str(repeats), ONE_NAME],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return {"error": proc.stderr[-2000:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
