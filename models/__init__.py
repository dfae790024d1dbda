"""Flax/JAX ports of language models, with HuggingFace checkpoint loading.

``model, params = models.load_pretrained(path)`` or ``models.from_hf(hf_model)``; build a
random one with ``models.GPT2(models.GPT2Config(...))`` and ``model.init(key)``.
A Tracr-compiled RASP program becomes a GPT-2 port with
``model, params, io = models.from_tracr(assembled)``.
"""

from jinterp.models import gpt2_hf as _gpt2_hf
from jinterp.models.gemma import Gemma, GemmaConfig
from jinterp.models.gemma2 import Gemma2, Gemma2Config
from jinterp.models.gemma3 import Gemma3, Gemma3Config
from jinterp.models.gemma3 import multimodal_params_from_hf as _gemma3_mm_params
from jinterp.models.gpt2 import GPT2, GPT2Config, Norm, Positional
from jinterp.models.layers import Activation
from jinterp.models.llama import Llama, LlamaConfig
from jinterp.models.llamalike import LlamaLike, LlamaLikeConfig
from jinterp.models.llamalike_hf import params_from_hf as _llamalike_params
from jinterp.models.loading import Family, from_hf, load_pretrained, register_family
from jinterp.models.rope import Rope, RopeType
from jinterp.models.tokenizer import Tokenizer, load_tokenizer
from jinterp.models.tracr import TracrIO, compile_tracr, from_tracr

register_family("gpt2", Family(lambda hf: GPT2(_gpt2_hf.config_from_hf(hf)),
                               _gpt2_hf.params_from_hf))
for _type, _model, _config in [("llama", Llama, LlamaConfig), ("gemma", Gemma, GemmaConfig),
                               ("gemma2", Gemma2, Gemma2Config),
                               ("gemma3_text", Gemma3, Gemma3Config)]:
    register_family(_type, Family(
        lambda hf, m=_model, c=_config: m(c.from_hf(hf)),
        lambda model, tensors, dtype=None: _llamalike_params(model.core, tensors, dtype)))
register_family("gemma3", Family(lambda hf: Gemma3(Gemma3Config.from_hf(hf)), _gemma3_mm_params))

__all__ = ["GPT2", "GPT2Config", "Norm", "Positional", "Activation", "Family", "from_hf",
           "load_pretrained", "register_family", "Llama", "LlamaConfig", "Gemma", "GemmaConfig",
           "Gemma2", "Gemma2Config", "Gemma3", "Gemma3Config", "LlamaLike", "LlamaLikeConfig",
           "Rope", "RopeType", "Tokenizer", "load_tokenizer", "TracrIO", "compile_tracr",
           "from_tracr"]
