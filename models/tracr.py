"""Tracr-compiled transformers as GPT-2-family ports: models whose circuits are known.

Tracr (Lindner et al. 2023, "Tracr: Compiled Transformers as a Laboratory for
Interpretability") compiles a RASP program into transformer weights, so every head and MLP has
a known job. ``model, params, io = models.from_tracr(assembled)`` turns what
``tracr.compiler.compiling.compile_rasp_to_model`` returns into a :class:`GPT2` port, so every
jinterp method (caches, patching, attribution, SAEs) can be scored against that ground truth.

**How Tracr's weights map onto the port.** Tracr's assembled model is a plain transformer with
one-hot embeddings; every haiku tensor lands in one GPT-2 tensor, nothing is refit:

- ``token_embed.embeddings [n_tokens, d_model]`` -> ``embed.W_E`` (rows ``n_tokens..`` zero).
  Token ids are Tracr's (the input encoder's map, BOS and PAD included), and each token also
  writes the constant ``one`` direction, which Tracr's MLPs use as their bias.
- ``pos_embed.embeddings [max_seq_len + 1, d_model]`` -> ``pos_embed.W_pos`` (learned
  positions, ``n_ctx = max_seq_len + 1``). Row 0, the BOS position, is zero; row ``p`` writes
  ``indices:{p - 1}``, so the RASP index of a token does not count the BOS.
- Tracr's ``layer_{l}`` is one attention sublayer then one MLP sublayer, each added to the
  residual without LayerNorm: exactly one jinterp block (``resid_mid = resid_pre + attn_out``,
  ``resid_post = resid_mid + mlp_out``). A layer whose attention (or MLP) Tracr left unused has
  all-zero weights there, and heads beyond a layer's own are zero too (see :attr:`TracrIO.layers`).
- ``attn/{query,key,value}.w [d_model, n_heads * key_size]`` -> ``W_Q/W_K/W_V`` ``[n_heads,
  d_model, d_head]`` (haiku splits the output axis head-major); ``attn/linear.w`` ->
  ``W_O [n_heads, d_head, d_model]``; the haiku biases (zero as compiled) -> ``b_Q/b_K/b_V/b_O``.
  Scores scale by ``1 / sqrt(key_size)`` in both. Tracr's attention is non-causal unless
  compiled with ``causal=True``; the port follows (``GPT2Config.causal``).
- ``mlp/linear_1`` -> ``W_in/b_in``, ``mlp/linear_2`` -> ``W_out/b_out``, ReLU between.
- Tracr's unembedding is a projection of the residual onto the output variable's directions,
  built inside haiku (no parameter); it becomes ``unembed.W_U [d_model, d_vocab]`` (columns
  ``n_outputs..`` zero, no bias). A categorical program's prediction is the argmax over the
  first ``n_outputs`` logits, a numerical one's value is logit 0.

The port has one ``d_vocab`` for its embedding and unembedding (the axis vocabulary has no
second vocabulary), so it is ``max(n_tokens, n_outputs)`` and the unused rows / columns are
zero; :meth:`TracrIO.decode` reads only the real ones.

**Correspondence of activations** (Tracr's ``apply(...)`` fields, per layer ``l``):
``input_embeddings`` = ``hook_embed + hook_pos_embed``; ``residuals[2l]`` =
``blocks.l.hook_resid_mid``; ``residuals[2l + 1]`` = ``blocks.l.hook_resid_post``;
``layer_outputs[2l]`` / ``[2l + 1]`` = ``hook_attn_out`` / ``hook_mlp_out``; ``attn_logits[l]``
= ``attn.hook_attn_scores`` (Tracr writes ``-1e30`` where jinterp writes ``-inf`` on masked
keys); ``transformer_output`` = the final residual.

**Caveats.** Tracr's compiled model does not mask its PAD token (``compile_rasp_to_model``
leaves ``CompiledTransformerModel.pad_token`` unset), so in Tracr a padded row attends to its
pads and computes something else. The port masks padding when given ``attention_mask``
(:meth:`TracrIO.attention_mask`): pass it for ragged batches, and then each real position
computes what Tracr computes on the unpadded input; padded positions mean nothing. Tracr's
MLPs for numerical programs approximate (its ``mlp_exactness``), so numerical outputs can
differ from the RASP evaluator by a little; the port reproduces Tracr's model, not the
evaluator. Tracr is needed only to compile a program: this module reads the assembled model's
attributes, and imports haiku (a Tracr dependency) only inside :func:`from_tracr`, to read the
unembedding, and Tracr only inside :func:`compile_tracr`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from jinterp.models.gpt2 import GPT2, GPT2Config, Norm, Positional
from jinterp.models.layers import Activation


@dataclasses.dataclass(frozen=True)
class HeadInfo:
    """One non-empty attention head and the residual directions (Tracr labels) it touches.

    ``query`` / ``key`` / ``value`` are the directions with a non-zero row in ``W_Q`` / ``W_K``
    / ``W_V``; ``writes`` those with a non-zero column in ``W_O``.
    """

    layer: int
    head: int
    query: tuple[str, ...]
    key: tuple[str, ...]
    value: tuple[str, ...]
    writes: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class MLPInfo:
    """One non-empty MLP: the directions it reads and writes and its used hidden units."""

    layer: int
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    d_hidden: int  # hidden units with a non-zero input or output weight (the rest are padding)


@dataclasses.dataclass(frozen=True)
class LayerInfo:
    """Which parts of one block Tracr uses: its non-empty heads and its MLP (None if empty)."""

    heads: tuple[HeadInfo, ...]
    mlp: MLPInfo | None


@dataclasses.dataclass(frozen=True)
class TracrIO:
    """Encoding, decoding and ground-truth metadata of one compiled program.

    Attributes:
        input_values: the input value of each token id (Tracr's input encoder), BOS and PAD
            included.
        output_values: the output value of each output logit for a categorical program; None
            for a numerical one (its value is logit 0).
        bos / pad: Tracr's BOS and PAD tokens (values of ``input_values``).
        max_seq_len: the longest input the program was compiled for (BOS not counted).
        residual_labels: ``"variable:value"`` (or ``"variable"`` for numerical variables and
            the constant ``one``) of each residual direction, Tracr's ``residual_labels``.
        layers: per block, which heads and whether the MLP Tracr uses, with what they read
            and write.
    """

    input_values: tuple[Any, ...]
    output_values: tuple[Any, ...] | None
    bos: Any
    pad: Any
    max_seq_len: int
    residual_labels: tuple[str, ...]
    layers: tuple[LayerInfo, ...]

    @property
    def categorical(self) -> bool:
        return self.output_values is not None

    @property
    def vocab(self) -> tuple[Any, ...]:
        """The values an input may hold (the program's vocabulary: no BOS, no PAD)."""
        return tuple(v for v in self.input_values if v not in (self.bos, self.pad))

    def encode(self, inputs: Sequence[Any] | Sequence[Sequence[Any]]) -> Int[Array, "batch pos"]:
        """Token ids ``[batch, 1 + longest]``: BOS, the inputs, PAD after shorter rows.

        Args:
            inputs: one input sequence (``[1, 2, 3]``) or a list of them; no BOS (it is added).
                ``[]`` is one empty input (BOS alone).

        Raises:
            ValueError: a value outside the vocabulary, or an input longer than ``max_seq_len``.
        """
        rows = [list(x) for x in inputs] if _is_batch(inputs) else [list(inputs)]
        ids = {v: i for i, v in enumerate(self.input_values)}
        vocab = set(self.vocab)
        for row in rows:
            if len(row) > self.max_seq_len:
                raise ValueError(
                    f"Input of length {len(row)} is longer than the program's max_seq_len="
                    f"{self.max_seq_len} (the model has {self.max_seq_len + 1} positions with "
                    f"BOS); shorten it or compile with max_seq_len >= {len(row)}.")
            bad = [v for v in row if v not in vocab or not _same_type(v, self.vocab)]
            if bad:
                raise ValueError(
                    f"Input value {bad[0]!r} is not in the program's vocabulary "
                    f"{sorted(vocab, key=repr)}; BOS and PAD are added by encode. Compile with "
                    "a vocab that contains it, or drop it.")
        width = 1 + max(len(row) for row in rows)
        tokens = np.full((len(rows), width), ids[self.pad], np.int32)
        for i, row in enumerate(rows):
            tokens[i, : 1 + len(row)] = [ids[self.bos]] + [ids[v] for v in row]
        return jnp.asarray(tokens)

    def attention_mask(self, tokens: Int[Array | np.ndarray, "batch pos"]
                       ) -> Bool[Array, "batch pos"]:
        """True at real tokens (BOS included), False at PAD: what Tracr masks as keys."""
        return jnp.asarray(tokens) != self.input_values.index(self.pad)

    def decode(self, logits: Float[Array | np.ndarray, "*lead d_vocab"],
               tokens: Int[Array | np.ndarray, "batch pos"] | None = None) -> list[list[Any]]:
        """The program's output at each position, as Tracr's ``apply(...).decoded`` gives it.

        Position 0 decodes as BOS (Tracr's convention); a categorical position as the output
        value of its largest logit, a numerical one as logit 0. With ``tokens``, PAD positions
        are dropped, so each row is as long as its input plus one.
        """
        logits = np.asarray(logits)
        if logits.ndim != 3:
            raise ValueError(f"decode takes logits [batch, pos, d_vocab], got shape "
                             f"{logits.shape}; add a batch axis with logits[None].")
        if self.categorical:
            best = np.argmax(logits[..., : len(self.output_values)], axis=-1)  # batch pos
            rows = [[self.output_values[i] for i in row] for row in best.tolist()]
        else:
            rows = logits[..., 0].tolist()
        rows = [[self.bos] + row[1:] for row in rows]
        if tokens is None:
            return rows
        keep = np.asarray(self.attention_mask(tokens))
        return [[v for v, k in zip(row, mask) if k] for row, mask in zip(rows, keep)]


def from_tracr(assembled: Any) -> tuple[GPT2, dict, TracrIO]:
    """``(model, params, io)`` of a Tracr ``AssembledTransformerModel`` (see the module doc).

    Args:
        assembled: what ``tracr.compiler.compiling.compile_rasp_to_model`` returns.

    Raises:
        TypeError: ``assembled`` is not a compiled Tracr model.
        ValueError: its configuration or parameters are not the layout this port reads
            (LayerNorm, another activation, missing or unexpected tensors).
    """
    _check_assembled(assembled)
    tc = assembled.model_config
    hk_params = {k: {n: np.asarray(v, np.float32) for n, v in d.items()}
                 for k, d in assembled.params.items()}
    _check_keys(hk_params, tc.num_layers)
    w_e = hk_params["token_embed"]["embeddings"]  # n_tokens d_model
    w_pos = hk_params["pos_embed"]["embeddings"]  # n_ctx d_model
    w_u, categorical = _unembedding(assembled)  # d_model n_outputs
    n_tokens, d_model = w_e.shape
    d_vocab = max(n_tokens, w_u.shape[1])
    config = GPT2Config(
        n_layers=tc.num_layers, d_model=d_model, n_heads=tc.num_heads, d_head=tc.key_size,
        d_mlp=tc.mlp_hidden_size, d_vocab=d_vocab, n_ctx=w_pos.shape[0],
        activation=Activation.RELU, normalization=Norm.NONE, positional=Positional.LEARNED,
        tied_embeddings=False, attn_bias=True, mlp_bias=True, unembed_bias=False,
        causal=bool(tc.causal), dtype="float32")
    blocks = [_block_params(hk_params, l, tc.num_heads, tc.key_size)
              for l in range(tc.num_layers)]
    params = {
        "embed": {"W_E": _pad_axis(w_e, 0, d_vocab)},
        "pos_embed": {"W_pos": w_pos},
        "blocks": _stack(blocks),
        "unembed": {"W_U": _pad_axis(w_u, 1, d_vocab)},
    }
    params = _to_jax(params)
    model = GPT2(config)
    _check_shapes(model, params)
    labels = tuple(str(label) for label in assembled.residual_labels)
    enc = assembled.input_encoder
    inputs = sorted(enc.encoding_map, key=enc.encoding_map.get)
    outputs = None
    if categorical:
        out_map = assembled.output_encoder.encoding_map
        outputs = tuple(sorted(out_map, key=out_map.get))
    io = TracrIO(input_values=tuple(inputs), output_values=outputs, bos=enc.bos_token,
                 pad=enc.pad_token, max_seq_len=w_pos.shape[0] - 1, residual_labels=labels,
                 layers=tuple(_layer_info(b, l, labels) for l, b in enumerate(blocks)))
    return model, params, io


# ------------------------------------------------------------------------------- conversion
def _check_assembled(assembled: Any) -> None:
    needed = ("params", "model_config", "residual_labels", "input_encoder", "output_encoder",
              "get_compiled_model")
    missing = [a for a in needed if not hasattr(assembled, a)]
    if missing:
        raise TypeError(
            f"from_tracr takes a compiled Tracr model (tracr.compiler.assemble."
            f"AssembledTransformerModel), got {type(assembled).__name__} without "
            f"{missing}. Compile the RASP program first: tracr.compiler.compiling."
            "compile_rasp_to_model(program, vocab, max_seq_len, compiler_bos=...).")
    tc = assembled.model_config
    if getattr(tc, "layer_norm", False):
        raise ValueError("This Tracr model has LayerNorm (model_config.layer_norm=True); "
                         "compiled Tracr models have none, and the port reads only that layout.")
    if tc.activation_function is not jax.nn.relu:
        raise ValueError(f"Tracr model's MLP activation is {tc.activation_function!r}; the port "
                         "reads compiled models, whose MLPs use jax.nn.relu.")
    enc = assembled.input_encoder
    if enc is None or not hasattr(enc, "encoding_map") or enc.bos_token is None \
            or enc.pad_token is None:
        raise ValueError("This Tracr model has no categorical input encoder with BOS and PAD "
                         "tokens; compile it with compile_rasp_to_model, which adds them.")


def _expected_keys(n_layers: int) -> dict[str, set[str]]:
    keys = {"token_embed": {"embeddings"}, "pos_embed": {"embeddings"}}
    for l in range(n_layers):
        for part in ("attn/query", "attn/key", "attn/value", "attn/linear", "mlp/linear_1",
                     "mlp/linear_2"):
            keys[f"transformer/layer_{l}/{part}"] = {"w", "b"}
    return keys


def _check_keys(hk_params: dict, n_layers: int) -> None:
    """Every Tracr tensor is read, and only those: the two key sets match exactly."""
    want = {f"{m}/{n}" for m, names in _expected_keys(n_layers).items() for n in names}
    have = {f"{m}/{n}" for m, names in hk_params.items() for n in names}
    if want != have:
        raise ValueError(f"Tracr parameters do not match the compiled layout of {n_layers} "
                         f"layers: missing {sorted(want - have)}, unexpected "
                         f"{sorted(have - want)}.")


def _unembedding(assembled: Any) -> tuple[np.ndarray, bool]:
    """Tracr's output projection ``[d_model, n_outputs]``, read by unembedding the identity.

    Tracr builds it from vector spaces inside haiku rather than storing it, so the port asks
    the compiled model's own unembed module for its matrix (haiku comes with Tracr).
    """
    import haiku as hk

    d_model = np.asarray(assembled.params["token_embed"]["embeddings"]).shape[1]
    flags = []

    def project(x):
        compiled = assembled.get_compiled_model()
        flags.append(bool(compiled.use_unembed_argmax))
        out = compiled.unembed(x, use_unembed_argmax=False)
        return out[:, None] if out.ndim == 1 else out  # numerical outputs come squeezed

    w_u = hk.transform(project).apply({}, None, jnp.eye(d_model, dtype=jnp.float32))
    return np.asarray(w_u, np.float32), flags[0]


def _block_params(hk: dict, layer: int, n_heads: int, d_head: int) -> dict:
    p = lambda part: hk[f"transformer/layer_{layer}/{part}"]
    d_model = p("attn/query")["w"].shape[0]

    def heads_in(part):  # [d_model, n_heads * d_head] -> [n_heads, d_model, d_head]
        return p(part)["w"].reshape(d_model, n_heads, d_head).transpose(1, 0, 2)

    attn = {"W_Q": heads_in("attn/query"), "W_K": heads_in("attn/key"),
            "W_V": heads_in("attn/value"),
            "W_O": p("attn/linear")["w"].reshape(n_heads, d_head, d_model),  # n_heads d_head d_m
            "b_Q": p("attn/query")["b"].reshape(n_heads, d_head),
            "b_K": p("attn/key")["b"].reshape(n_heads, d_head),
            "b_V": p("attn/value")["b"].reshape(n_heads, d_head),
            "b_O": p("attn/linear")["b"]}
    mlp = {"W_in": p("mlp/linear_1")["w"], "b_in": p("mlp/linear_1")["b"],
           "W_out": p("mlp/linear_2")["w"], "b_out": p("mlp/linear_2")["b"]}
    return {"attn": attn, "mlp": mlp}


def _stack(blocks: list[dict]) -> dict:
    return {part: {name: np.stack([b[part][name] for b in blocks]) for name in blocks[0][part]}
            for part in blocks[0]}


def _pad_axis(x: np.ndarray, axis: int, size: int) -> np.ndarray:
    pad = [(0, 0)] * x.ndim
    pad[axis] = (0, size - x.shape[axis])
    return np.pad(x, pad)


def _to_jax(tree: dict) -> dict:
    return {k: _to_jax(v) if isinstance(v, dict) else jnp.asarray(v, jnp.float32)
            for k, v in tree.items()}


def _check_shapes(model: GPT2, params: dict) -> None:
    want = jax.tree.map(lambda s: s.shape, model.param_shapes())
    have = jax.tree.map(lambda a: a.shape, params)
    if want != have:
        raise ValueError(f"Converted Tracr parameters {have} do not match the port's {want}.")


# ------------------------------------------------------------------------------- metadata
def _layer_info(block: dict, layer: int, labels: tuple[str, ...]) -> LayerInfo:
    rows = lambda w: tuple(labels[i] for i in np.flatnonzero(np.any(w != 0, axis=1)))
    attn, mlp = block["attn"], block["mlp"]
    heads = []
    for h in range(attn["W_Q"].shape[0]):
        weights = [attn[n][h] for n in ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V")]
        if not any(np.any(w != 0) for w in weights):
            continue
        heads.append(HeadInfo(layer=layer, head=h, query=rows(attn["W_Q"][h]),
                              key=rows(attn["W_K"][h]), value=rows(attn["W_V"][h]),
                              writes=rows(attn["W_O"][h].T)))
    used = np.any(mlp["W_in"] != 0, axis=0) | np.any(mlp["W_out"] != 0, axis=1)  # d_mlp
    mlp_info = None
    if used.any() or np.any(mlp["b_in"] != 0) or np.any(mlp["b_out"] != 0):
        mlp_info = MLPInfo(layer=layer, reads=rows(mlp["W_in"]), writes=rows(mlp["W_out"].T),
                           d_hidden=int(used.sum()))
    return LayerInfo(heads=tuple(heads), mlp=mlp_info)


def _is_batch(inputs: Sequence[Any]) -> bool:
    """A list of sequences (a batch) rather than one sequence of values; strings are values."""
    return len(inputs) > 0 and all(isinstance(x, (list, tuple, np.ndarray)) for x in inputs)


def _same_type(value: Any, vocab: tuple[Any, ...]) -> bool:
    """``True == 1`` in Python: a bool is in a vocabulary of ints only if bools are in it."""
    return not isinstance(value, bool) or any(isinstance(v, bool) for v in vocab)


def compile_tracr(program: Any, vocab: set, max_seq_len: int, *, causal: bool = False,
                  bos: str = "BOS", mlp_exactness: int = 100) -> Any:
    """Tracr's ``compile_rasp_to_model`` with errors that say what to change.

    Args:
        program: a RASP ``SOp`` (``tracr.rasp.rasp``), e.g. ``lib.make_reverse(rasp.tokens)``.
        vocab: the input values the program accepts.
        max_seq_len: the longest input (BOS not counted).
        causal: compile a causally masked model (only programs that never read later tokens).
        bos: Tracr's BOS token (the examples' ``"BOS"``; must not be in ``vocab``).
        mlp_exactness: Tracr's discretisation of numerical MLPs (higher is more exact).

    Returns:
        Tracr's ``AssembledTransformerModel``; pass it to :func:`from_tracr`.

    Raises:
        ImportError: Tracr is not installed.
        NotImplementedError: the program uses RASP that Tracr cannot compile.
        ValueError: an empty vocabulary, a non-positive length or a reserved token in vocab.
    """
    try:
        from tracr.compiler import compiling
    except ImportError as e:
        raise ImportError("compile_tracr needs Tracr: pip install tracr-pypi (it is in "
                          "jinterp's test extra).") from e
    if not vocab:
        raise ValueError("compile_tracr needs a non-empty vocab (the input values).")
    if not isinstance(max_seq_len, int) or max_seq_len <= 0:
        raise ValueError(f"max_seq_len must be a positive int, got {max_seq_len!r}.")
    if bos in vocab:
        raise ValueError(f"The BOS token {bos!r} is also in vocab; pass another bos=.")
    try:
        return compiling.compile_rasp_to_model(program, set(vocab), max_seq_len, causal=causal,
                                               compiler_bos=bos, mlp_exactness=mlp_exactness)
    except NotImplementedError as e:
        raise NotImplementedError(
            f"Tracr cannot compile this RASP program: {e}\nRewrite the unsupported "
            "expressions (tracr.compiler.validating lists what Tracr supports).") from e
