"""Generation with interventions: a KV cache, a compiled decode loop, hooks at every step.

- :func:`generate`: prompts ``[batch, pos]`` -> ``[batch, pos + max_new_tokens]``; greedy or
  sampled (temperature, top-k, top-p with an explicit key); hooks as ``run_with_hooks``'s on
  every step, the prompt only or generated positions only (``hooks_on``); padded prompts with
  ``attention_mask``.
- :func:`stream`: the same tokens in chunks, as they are produced.
- :func:`generate_text`: a string in, a string out, through a tokenizer (with a callback per
  decoded piece).

See ``docs/generation.md`` for the design (the attention context, the cache layout, padding).
"""

from jinterp.generation.decode import HOOKS_ON, DecodeState, generate, stream
from jinterp.generation.sampling import Sampler, filter_logits, sample
from jinterp.generation.text import generate_text

__all__ = ["HOOKS_ON", "DecodeState", "Sampler", "filter_logits", "generate", "generate_text",
           "sample", "stream"]
