"""Every released shape by name, for tools that only know a string (``--model gemma2-27b``).

``jinterp`` never imports the ports, so its tools (``python -m jinterp.plan``) find these names
through the ``jinterp.presets`` entry-point group (``pyproject.toml``), which points at
:func:`presets`. Each builder takes config overrides (``dtype="bfloat16"``, ``n_layers=2``) and
returns a model; nothing is allocated until ``model.init``.

Spellings are forgiving: ``gemma2-27b``, ``gemma-2-27b`` and ``Gemma_2_27B`` name one preset
(:func:`jinterp.plan.presets.lookup` compares names without case, ``-`` or ``_``).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

from jinterp.model import HookedModel
from jinterp.models import gemma, gemma2, gemma3, llama
from jinterp.models.gemma import Gemma, GemmaConfig
from jinterp.models.gemma2 import Gemma2, Gemma2Config
from jinterp.models.gemma3 import Gemma3, Gemma3Config
from jinterp.models.gpt2 import GPT2, GPT2Config
from jinterp.models.llama import Llama, LlamaConfig
from jinterp.plan.presets import lookup

Builder = Callable[..., HookedModel]

#: OpenAI's GPT-2 sizes (their shapes live in ``GPT2Config.preset``).
GPT2_NAMES = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")


def _gpt2(name: str, **overrides) -> GPT2:
    return GPT2(dataclasses.replace(GPT2Config.preset(name), **overrides))


def _decoder(model_cls: type, config_cls: type, name: str, **overrides) -> HookedModel:
    # preset() applies overrides before __post_init__, so n_layers=2 re-derives local_layers
    return model_cls(config_cls.preset(name, **overrides))


@functools.cache
def presets() -> dict[str, Builder]:
    """``{name: builder}`` for every preset of every family; ``builder(**overrides)`` is a model.

    The entry point of the ``jinterp.presets`` group.
    """
    table: dict[str, Builder] = {n: functools.partial(_gpt2, n) for n in GPT2_NAMES}
    families = ((Gemma, GemmaConfig, gemma._PRESETS), (Gemma2, Gemma2Config, gemma2._PRESETS),
                (Gemma3, Gemma3Config, gemma3._PRESETS), (Llama, LlamaConfig, llama._PRESETS))
    for model_cls, config_cls, shapes in families:
        for name in shapes:
            table[name] = functools.partial(_decoder, model_cls, config_cls, name)
    return table


def resolve(name: str, **overrides) -> HookedModel:
    """The model of preset ``name`` (any spelling), with config ``overrides``.

    Raises:
        ValueError: unknown name; the message lists the closest valid names.
    """
    return lookup(name, presets())(**overrides)
