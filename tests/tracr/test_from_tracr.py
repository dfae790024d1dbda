"""``models.from_tracr``: Tracr-compiled programs run as jinterp GPT-2 ports, exactly.

Each program's whole input domain runs as one padded batch through jinterp's own forward
(``run_with_cache``, jitted) and through Tracr's haiku model on the same tokens. The checks are
independent of the conversion: Tracr's own activations, Tracr's ``apply(...).decoded``, the RASP
evaluator, and logits read straight off Tracr's final residual by the output variable's labels.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import numpy as np
import pytest

import jinterp
from jinterp import models
from jinterp.experiments.tracr.programs import FULL_PROGRAMS, PROGRAMS, compiled

pytest.importorskip("tracr.compiler.compiling")  # tests/tracr itself would pass as "tracr"

ATOL, RTOL = 1e-4, 1e-5  # float32 sums of a few dozen terms up to ~100 (Tracr's MLP scales)
NUMERIC_VS_RASP = 0.02  # Tracr's numerical MLPs approximate; the evaluator is exact


@pytest.fixture(scope="module")
def program():
    """``name -> Compiled``: each program compiled once (see ``programs.compiled``)."""
    return compiled


@dataclasses.dataclass(frozen=True)
class Run:
    """A program's domain through both models: tokens, masks, jinterp's and Tracr's outputs."""

    inputs: list
    tokens: np.ndarray
    valid: np.ndarray  # batch pos
    logits: np.ndarray
    cache: dict
    tracr: object  # Tracr's CompiledTransformerModelOutput


@functools.cache
def run_domain(name: str) -> Run:
    c = compiled(name)
    inputs = c.spec.domain()
    tokens = c.io.encode(inputs)
    mask = c.io.attention_mask(tokens)
    logits, cache = jinterp.run_with_cache(c.model, c.params, tokens, attention_mask=mask)
    ref = tracr_forward(c)(c.assembled.params, tokens)
    cache = {k: np.asarray(v) for k, v in cache.items()}
    return Run(inputs, np.asarray(tokens), np.asarray(mask), np.asarray(logits), cache, ref)


def tracr_forward(c):
    """Tracr's own haiku model, jitted, with its PAD masking switched on.

    ``compile_rasp_to_model`` leaves the model's ``pad_token`` unset, so Tracr as compiled
    attends to PAD like any token and a padded row computes something else; Tracr's model
    masks PAD keys (with -1e30) once the field is set, which is what the port's
    ``attention_mask`` does.
    """
    import haiku as hk

    pad = c.io.input_values.index(c.io.pad)

    def forward(tokens):
        model = c.assembled.get_compiled_model()
        model.pad_token = pad
        return model(tokens, use_dropout=False)

    return jax.jit(hk.without_apply_rng(hk.transform(forward)).apply)


def tracr_logits(c, resid: np.ndarray) -> np.ndarray:
    """Tracr's unembedding from its definition: the output variable's residual directions."""
    label = c.program.label
    names = ([f"{label}:{v}" for v in c.io.output_values] if c.io.categorical else [label])
    cols = [c.io.residual_labels.index(n) for n in names]
    return resid[..., cols]


def tracr_decoded(c, run: Run) -> list[list]:
    """What Tracr's ``apply`` decodes, for every row of the batched Tracr forward."""
    out = np.asarray(run.tracr.unembedded_output).tolist()
    rows = [c.assembled.output_encoder.decode(r) for r in out]
    return [[c.io.bos] + r[1:] for r in rows]


#: One program per kind of compiled structure the port must convert: categorical attention
#: (reverse), a numerical MLP feeding a categorical head (sort), a selector width (hist),
#: numerical attention compiled causal (frac_prevs_causal) and a multi-layer program mixing
#: both (shuffle_dyck). These are the programs the other tests here run anyway; the rest of
#: :data:`PROGRAMS` (sort_unique, frac_prevs, pair_balance: the same kinds again) run under
#: ``full``.
DEFAULT = ("reverse", "sort", "hist", "frac_prevs_causal", "shuffle_dyck")
ALL = [n if n in DEFAULT else pytest.param(n, marks=pytest.mark.full) for n in PROGRAMS]


def close(a, b, valid, what):
    a, b = np.asarray(a), np.asarray(b)
    np.testing.assert_allclose(a[valid], b[valid], rtol=RTOL, atol=ATOL, err_msg=what)


# ------------------------------------------------------------------------------ exactness
@pytest.mark.parametrize("name", ALL)
def test_activations_and_logits_match_tracrs_model(program, name):
    c, run = program(name), run_domain(name)
    out = run.tracr.transformer_output
    v = run.valid
    close(run.cache["hook_embed"] + run.cache["hook_pos_embed"], out.input_embeddings, v,
          "embeddings")
    for l in range(c.model.n_layers):
        close(run.cache[f"blocks.{l}.hook_attn_out"], out.layer_outputs[2 * l], v, f"attn {l}")
        close(run.cache[f"blocks.{l}.hook_resid_mid"], out.residuals[2 * l], v, f"mid {l}")
        close(run.cache[f"blocks.{l}.hook_mlp_out"], out.layer_outputs[2 * l + 1], v, f"mlp {l}")
        close(run.cache[f"blocks.{l}.hook_resid_post"], out.residuals[2 * l + 1], v, f"post {l}")
        pair = v[:, None, :, None] & v[:, None, None, :]  # batch 1 q_pos k_pos
        pair = np.broadcast_to(pair, out.attn_logits[l].shape)
        masked = np.where(out.attn_logits[l] <= -1e29, -np.inf, out.attn_logits[l])  # Tracr's
        close(run.cache[f"blocks.{l}.attn.hook_attn_scores"], masked, pair, f"scores {l}")
    final = np.asarray(out.output)
    close(run.cache[f"blocks.{c.model.n_layers - 1}.hook_resid_post"], final, v, "final")
    n_out = len(c.io.output_values) if c.io.categorical else 1
    close(run.logits[..., :n_out], tracr_logits(c, final), v, "logits")
    assert not np.any(run.logits[..., n_out:]), "padding logits must be zero"
    if not c.io.categorical:  # Tracr's unembedded output is the value itself
        close(run.logits[..., 0], run.tracr.unembedded_output, v, "numerical output")


@pytest.mark.parametrize("name", ALL)
def test_decodes_as_tracr_and_the_rasp_evaluator(program, name):
    from tracr.rasp import rasp

    c, run = program(name), run_domain(name)
    ours = c.io.decode(run.logits, run.tokens)
    theirs = tracr_decoded(c, run)
    for x, row, ref in zip(run.inputs, ours, theirs):
        assert len(row) == len(x) + 1 and row[0] == c.io.bos
        expected = rasp.evaluate(c.program, x)
        if c.io.categorical:
            assert row == ref[: len(x) + 1], x
            assert row[1:] == expected, x
        else:
            np.testing.assert_allclose(row[1:], ref[1: len(x) + 1], rtol=RTOL, atol=ATOL)
            np.testing.assert_allclose(row[1:], expected, atol=NUMERIC_VS_RASP, err_msg=str(x))
    # Tracr's own apply() (eager, slow to warm up) on the domain's last, longest input.
    x = run.inputs[-1]
    decoded = c.assembled.apply([c.io.bos, *x]).decoded
    if c.io.categorical:
        assert ours[-1] == decoded, x
    else:
        np.testing.assert_allclose(ours[-1][1:], decoded[1:], rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name", ["reverse", "frac_prevs_causal", "shuffle_dyck"])
def test_unpadded_rows_give_the_padded_batchs_logits(program, name):
    """Without padding there is no attention mask: the plain (non-causal) path of the port."""
    c, run = program(name), run_domain(name)
    full = np.flatnonzero(run.valid.all(axis=1))
    logits = c.model(c.params, run.tokens[full])
    np.testing.assert_allclose(np.asarray(logits), run.logits[full], rtol=RTOL, atol=ATOL)


def test_causal_flag_follows_tracr_and_bites(program):
    """Tracr's reverse reads later tokens: a causal copy of the port gets it wrong."""
    assert program("frac_prevs_causal").model.config.causal
    c = program("reverse")
    assert not c.model.config.causal
    x = [[1, 2, 3, 3]]
    causal = dataclasses.replace(c.model, config=dataclasses.replace(c.model.config,
                                                                    causal=True))
    assert c.io.decode(c.model(c.params, c.io.encode(x)))[0] == ["BOS", 3, 3, 2, 1]
    assert c.io.decode(causal(c.params, c.io.encode(x)))[0] != ["BOS", 3, 3, 2, 1]


# ------------------------------------------------------------------------------ hooks, metadata
def test_every_jinterp_hook_name_runs_on_the_port(program):
    c, run = program("sort"), run_domain("sort")  # the domain's cache: every default name
    m = c.model.config
    batch, pos = run.tokens.shape
    assert set(run.cache.keys()) == set(c.model.default_names())
    assert run.cache["blocks.0.attn.hook_z"].shape == (batch, pos, m.n_heads, m.d_head)
    assert run.cache["blocks.0.attn.hook_pattern"].shape == (batch, m.n_heads, pos, pos)
    assert run.cache[f"blocks.{m.n_layers - 1}.hook_resid_post"].shape == (batch, pos,
                                                                           m.d_model)
    tokens = c.io.encode([[3, 1, 2]])
    _, result = jinterp.run_with_cache(c.model, c.params, tokens,
                                       names=["blocks.0.attn.hook_result"])
    assert result["blocks.0.attn.hook_result"].shape == (1, 4, m.n_heads, m.d_model)


def test_residual_labels_and_layer_info(program):
    c = program("reverse")
    io = c.io
    assert io.residual_labels == tuple(c.assembled.residual_labels)
    assert len(io.residual_labels) == c.model.config.d_model
    assert len(io.layers) == c.model.n_layers == c.assembled.model_config.num_layers
    label = c.program.label
    writers = [h for layer in io.layers for h in layer.heads
               if any(w.startswith(f"{label}:") for w in h.writes)]
    assert len(writers) == 1  # one head moves the token to its mirrored position
    head = writers[0]
    assert set(head.value) == {"tokens:1", "tokens:2", "tokens:3"}
    assert set(head.writes) == {f"{label}:1", f"{label}:2", f"{label}:3"}


@pytest.mark.parametrize("name", ["reverse", "hist", "sort"])
def test_listed_components_are_the_ones_that_matter(program, name):
    """Zeroing a listed head or MLP changes some output of the domain; every unlisted head and
    MLP is all zeros (so the list is exactly Tracr's non-empty sublayers)."""
    c, run = program(name), run_domain(name)
    want = c.io.decode(run.logits, run.tokens)
    forward = jax.jit(lambda p: c.model(p, run.tokens, attention_mask=run.valid))
    blocks = c.params["blocks"]
    for l, layer in enumerate(c.io.layers):
        listed = {h.head for h in layer.heads}
        for h in range(c.model.config.n_heads):
            zeroed = {k: w.at[l, h].set(0) if k != "b_O" else w for k, w in blocks["attn"].items()}
            if h not in listed:
                assert all(not np.any(np.asarray(w[l, h])) for k, w in blocks["attn"].items()
                           if k != "b_O")
                continue
            p = {**c.params, "blocks": {**blocks, "attn": zeroed}}
            assert c.io.decode(forward(p), run.tokens) != want, (l, h)
        if layer.mlp is None:
            assert all(not np.any(np.asarray(w[l])) for w in blocks["mlp"].values())
            continue
        zeroed = {k: w.at[l].set(0) for k, w in blocks["mlp"].items()}
        p = {**c.params, "blocks": {**blocks, "mlp": zeroed}}
        assert c.io.decode(forward(p), run.tokens) != want, (l, "mlp")


# ------------------------------------------------------------------------------ bad input
def test_from_tracr_rejects_what_is_not_a_compiled_model(program):
    with pytest.raises(TypeError, match="compile_rasp_to_model"):
        models.from_tracr(program("hist").program)  # the RASP program, not its compilation
    with pytest.raises(TypeError, match="AssembledTransformerModel"):
        models.from_tracr({"params": {}})


def test_compile_tracr_names_what_tracr_cannot_compile():
    from tracr.rasp import rasp

    select = rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.EQ)
    bad = rasp.Aggregate(select, rasp.tokens, default=0)  # categorical default must be None
    with pytest.raises(NotImplementedError, match="only supports None as default"):
        models.compile_tracr(bad, {1, 2}, 3)
    with pytest.raises(ValueError, match="BOS token 'BOS' is also in vocab"):
        models.compile_tracr(rasp.tokens, {"BOS", 1}, 3)


def test_encode_names_a_value_outside_the_vocabulary(program):
    io = program("hist").io
    with pytest.raises(ValueError, match=r"Input value 7 is not in .*vocabulary \[1, 2, 3\]"):
        io.encode([[1, 2], [7]])
    with pytest.raises(ValueError, match="'BOS' is not in"):
        io.encode(["BOS", 1])  # encode adds BOS itself


def test_encode_names_both_lengths_of_a_too_long_input(program):
    io = program("hist").io
    with pytest.raises(ValueError, match=r"length 5 is longer than .*max_seq_len=4.*>= 5"):
        io.encode([1, 2, 3, 1, 2])


def test_encode_pads_ragged_batches_and_takes_one_sequence(program):
    io = program("hist").io
    ids = {v: i for i, v in enumerate(io.input_values)}
    tokens = np.asarray(io.encode([[1], [2, 3, 1]]))
    assert tokens.tolist() == [[ids["BOS"], ids[1], ids[io.pad], ids[io.pad]],
                               [ids["BOS"], ids[2], ids[3], ids[1]]]
    assert np.asarray(io.encode([2, 3])).tolist() == [[ids["BOS"], ids[2], ids[3]]]
    with pytest.raises(ValueError, match=r"logits \[batch, pos, d_vocab\]"):
        io.decode(np.zeros((3, 5), np.float32))


# ------------------------------------------------------------------------------ larger domains
@pytest.mark.full
@pytest.mark.parametrize("name", list(FULL_PROGRAMS))
def test_full_programs_match_tracr_and_rasp(name):
    from tracr.rasp import rasp

    c = compiled(name)
    inputs = c.spec.domain()
    tokens = c.io.encode(inputs)
    logits, cache = jinterp.run_with_cache(c.model, c.params, tokens,
                                           attention_mask=c.io.attention_mask(tokens))
    ref = tracr_forward(c)(c.assembled.params, tokens)
    valid = np.asarray(c.io.attention_mask(tokens))
    for l in range(c.model.n_layers):
        close(cache[f"blocks.{l}.hook_resid_post"], ref.transformer_output.residuals[2 * l + 1],
              valid, f"post {l}")
    for x, row in zip(inputs, c.io.decode(logits, tokens)):
        assert row == c.assembled.apply([c.io.bos, *x]).decoded, x
        assert row[1:] == rasp.evaluate(c.program, x), x
