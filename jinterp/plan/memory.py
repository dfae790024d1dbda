"""Per-device memory of a model on a ``data x model`` mesh, from shapes alone.

Before renting a pod one wants to know whether a 27B or 70B model, its patching sweep or an SAE
at one of its hooks fits in each chip's memory. This module answers with shapes only: the
parameters come from ``jax.eval_shape`` (``model.param_shapes()``), the SAE's training state
from ``jax.eval_shape`` of :func:`jinterp.sae.train_state`, and every array's layout from the
one sharding table (:mod:`jinterp.sharding`) on a :class:`jax.sharding.AbstractMesh`, so no
weight is allocated and no device has to exist. An array dimension split over a mesh axis of
size ``n`` costs ``1 / n`` of its bytes on each device; a replicated one costs them in full.

Four sections, then one total per use (:data:`SCENARIOS`), each checked against a budget:

* ``params``: every parameter, laid out as :func:`jinterp.sharding.shard_params` places it
  (``fsdp=True`` also splits ``d_model`` over ``data``). Exact.
* ``optimizer``: Adam's two moments of an SAE at the chosen hook (``d_sae`` split over
  ``model``) and of one linear probe per layer (replicated: it is tiny). Exact.
* ``patching chunk``: one chunk of a patching sweep, ``chunk`` patched forwards vmapped at
  once (:mod:`jinterp.patching.sweep`): per forward every activation of one block (all block
  points but the optional ``attn.hook_result``) plus the logits in float32 (a metric that names
  positions reads fewer), plus, shared by the chunk, the clean cache of the patched site and
  the corrupted run's residual at every layer (what each start layer starts from), and one
  layer's weights as the scan slices them from the stacked parameters (XLA copies the slice;
  under FSDP it is the all-gathered layer, ``n_data`` times its stored share).
  Activations are laid out as :func:`jinterp.sharding.constrain` lays them out (``batch`` over
  ``data``, heads, ``d_mlp`` and ``d_vocab`` over ``model``; a dimension its mesh axis does
  not divide stays replicated). An estimate: XLA frees a block's intermediates as it goes,
  so this is an upper bound for the block and ignores fusion buffers.
* ``SAE step``: SAE parameters, gradients, Adam's moments and dead-latent counters, plus a
  batch of ``sae_batch`` tokens' activations ``[batch d_in]``, pre-activations and latents
  ``[batch d_sae]`` and the reconstruction (float32, as the training step computes them).

Caveat: the totals leave out XLA's temporary buffers beyond those listed and the runtime's own
reserve (a few hundred MiB per chip); keep a margin. ``python -m jinterp.plan --check-compile``
compares these numbers with XLA's ``memory_analysis()`` of a reduced-depth model.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import AbstractMesh, PartitionSpec

from jinterp import sharding
from jinterp.sae import SAEConfig, train_state
from jinterp.sae import sharding as sae_sharding

MeshShape = Mapping[str, int]

#: Which sections (and which tagged rows of them) each total adds up.
SCENARIOS: dict[str, tuple[tuple[str, str | None], ...]] = {
    "patching sweep": (("params", None), ("patching chunk", None)),
    "SAE training": (("params", None), ("SAE step", None)),
    "probe training": (("params", None), ("optimizer", "probe")),
}

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_mesh(text: str) -> dict[str, int]:
    """``"data=16,model=16"`` -> ``{"data": 16, "model": 16}``.

    Raises:
        ValueError: not ``axis=size`` pairs, an axis other than ``data`` / ``model``, a repeated
            axis or a size below 1.
    """
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        match = re.fullmatch(r"(\w+)\s*=\s*(\d+)", part)
        if match is None:
            raise ValueError(f"bad mesh {text!r}: write axis=size pairs such as "
                             f"'{sharding.DATA}=16,{sharding.MODEL}=16' (got {part!r})")
        axis, size = match.group(1), int(match.group(2))
        if axis not in (sharding.DATA, sharding.MODEL):
            raise ValueError(f"bad mesh {text!r}: axis {axis!r} is unknown to the sharding "
                             f"table; use {sharding.DATA!r} and/or {sharding.MODEL!r}")
        if axis in out or size < 1:
            raise ValueError(f"bad mesh {text!r}: axis {axis!r} repeated or of size < 1")
        out[axis] = size
    if not out:
        raise ValueError(f"bad mesh {text!r}: give at least one axis, e.g. 'model=8'")
    return out


def parse_bytes(text: str) -> int:
    """``"16GiB"`` -> 17179869184 (B, kB/MB/GB/TB powers of 1000, KiB/MiB/GiB/TiB of 1024)."""
    match = re.fullmatch(r"\s*([\d.]+)\s*([A-Za-z]*)\s*", text)
    if match is None or match.group(2).lower() not in _UNITS:
        raise ValueError(f"bad memory size {text!r}: write e.g. '16GiB', '80GB' or '512MiB'")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def format_bytes(n: float) -> str:
    """Binary units: ``1.50 GiB``."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


def abstract_mesh(shape: MeshShape) -> AbstractMesh:
    """A device-free mesh with these axis sizes (the sharding table reads only its shape)."""
    return AbstractMesh(tuple(shape.values()), tuple(shape.keys()))


@dataclasses.dataclass(frozen=True)
class Row:
    """One array (or ``count`` equal arrays) and where its dimensions lie on the mesh.

    Attributes:
        name: what it is (``blocks.attn.W_Q``, ``mu.W_enc``, ``attn.hook_pattern``).
        shape: its global shape.
        dtype: its dtype name.
        spec: per dimension, the mesh axis that splits it, or None (replicated).
        mesh: the mesh's axis sizes.
        count: how many such arrays are live (e.g. the ``chunk`` patched forwards).
        tag: a sub-group within a section (``sae`` or ``probe`` in ``optimizer``).
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    spec: tuple[str | None, ...]
    mesh: tuple[tuple[str, int], ...]
    count: int = 1
    tag: str | None = None

    @property
    def global_bytes(self) -> int:
        return self.count * math.prod(self.shape) * jnp.dtype(self.dtype).itemsize

    @property
    def device_shape(self) -> tuple[int, ...]:
        sizes = dict(self.mesh)
        return tuple(-(-n // sizes[a]) if a else n for n, a in zip(self.shape, self.spec))

    @property
    def device_bytes(self) -> int:
        return self.count * math.prod(self.device_shape) * jnp.dtype(self.dtype).itemsize

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype,
                "spec": list(self.spec), "count": self.count, "tag": self.tag,
                "device_shape": list(self.device_shape), "device_bytes": self.device_bytes,
                "global_bytes": self.global_bytes}


@dataclasses.dataclass(frozen=True)
class Section:
    """A named group of rows (``params``, ``optimizer``, ``patching chunk``, ``SAE step``)."""

    name: str
    rows: tuple[Row, ...]
    note: str = ""

    def device_bytes(self, tag: str | None = None) -> int:
        return sum(r.device_bytes for r in self.rows if tag is None or r.tag == tag)

    def global_bytes(self) -> int:
        return sum(r.global_bytes for r in self.rows)


@dataclasses.dataclass(frozen=True)
class MemoryPlan:
    """Every section for one model on one mesh, and the totals of :data:`SCENARIOS`."""

    model: str
    mesh: tuple[tuple[str, int], ...]
    fsdp: bool
    param_count: int
    sections: tuple[Section, ...]
    settings: tuple[tuple[str, Any], ...] = ()
    replicated: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def section(self, name: str) -> Section:
        return next(s for s in self.sections if s.name == name)

    def totals(self) -> dict[str, int]:
        """Per-device bytes of each use, :data:`SCENARIOS`."""
        return {use: sum(self.section(s).device_bytes(tag) for s, tag in parts)
                for use, parts in SCENARIOS.items()}

    def to_dict(self, capacity: int | None = None) -> dict[str, Any]:
        totals = self.totals()
        return {
            "model": self.model, "mesh": dict(self.mesh), "n_devices": math.prod(
                dict(self.mesh).values()), "fsdp": self.fsdp, "param_count": self.param_count,
            "settings": dict(self.settings),
            "replicated_axes": {a: list(ps) for a, ps in self.replicated},
            "sections": {s.name: {"device_bytes": s.device_bytes(),
                                  "global_bytes": s.global_bytes(), "note": s.note,
                                  "rows": [r.to_dict() for r in s.rows]} for s in self.sections},
            "totals": totals, "peak": max(totals.values()), "device_memory": capacity,
            "fits": None if capacity is None else {k: v <= capacity for k, v in totals.items()},
        }


def _mesh_items(mesh: AbstractMesh) -> tuple[tuple[str, int], ...]:
    return tuple((a, int(mesh.shape[a])) for a in mesh.axis_names)


def _spec_tuple(pspec: PartitionSpec, ndim: int) -> tuple[str | None, ...]:
    out = tuple(pspec) + (None,) * (ndim - len(pspec))
    return tuple(a if isinstance(a, str) or a is None else a[0] for a in out)


def _path(path) -> str:
    return jax.tree_util.keystr(path, simple=True, separator=".")


def activation_spec(axes: Sequence[str | None], shape: Sequence[int],
                    mesh: AbstractMesh) -> tuple[str | None, ...]:
    """The layout :func:`jinterp.sharding.constrain` gives an activation (indivisible dims
    replicated)."""
    pspec = _spec_tuple(sharding.spec(axes, mesh), len(axes))
    return tuple(a if a is not None and n % mesh.shape[a] == 0 else None
                 for n, a in zip(shape, pspec))


def effective_rules(model: Any, mesh: AbstractMesh, rules: sharding.Rules | None = None, *,
                    fsdp: bool = False, replicate_indivisible: bool = False
                    ) -> tuple[dict, dict[str, list[str]]]:
    """The parameters' table, and ``{axis: [parameters]}`` it had to replicate.

    With ``replicate_indivisible`` every logical axis that some parameter's mesh axis does
    not divide is replicated (what ``shard_params(..., rules=...)`` with those axes set to
    None does; e.g. Llama 3 70B's 8 key/value heads on a ``model`` axis of 16 are held whole
    by every device, as tensor-parallel GQA usually does); otherwise nothing changes and
    :func:`param_rows` raises on them.
    """
    table = _param_rules(rules, fsdp)
    bad = indivisible(model, mesh, table) if replicate_indivisible else {}
    return {**table, **{a: None for a in bad}}, bad


def indivisible(model: Any, mesh: AbstractMesh, rules: sharding.Rules | None = None, *,
                fsdp: bool = False) -> dict[str, list[str]]:
    """``{logical axis: [parameters]}`` whose dimension that axis's mesh axis does not divide.

    Empty when :func:`jinterp.sharding.param_shardings` would accept the mesh.
    """
    rules = _param_rules(rules, fsdp)
    axes_leaves = jax.tree_util.tree_flatten_with_path(
        model.param_axes(), is_leaf=lambda x: isinstance(x, tuple))[0]
    shapes = jax.tree.leaves(model.param_shapes())
    bad: dict[str, list[str]] = {}
    for (path, axes), leaf in zip(axes_leaves, shapes):
        pspec = _spec_tuple(sharding.spec(axes, mesh, rules), len(axes))
        for axis, n, mesh_axis in zip(axes, leaf.shape, pspec):
            if mesh_axis is not None and n % mesh.shape[mesh_axis]:
                bad.setdefault(axis, []).append(f"{_path(path)} ({axis}={n} over "
                                                f"{mesh_axis}={mesh.shape[mesh_axis]})")
    return bad


def param_rows(model: Any, mesh: AbstractMesh, rules: sharding.Rules | None = None, *,
               fsdp: bool = False) -> tuple[Row, ...]:
    """One row per parameter, laid out by :func:`jinterp.sharding.param_shardings`.

    Raises:
        ValueError: a mesh axis does not divide a parameter (the message names it and the fix).
    """
    # param_shardings' own per-leaf call (it is annotated for a concrete Mesh, this is abstract)
    rules = _param_rules(rules, fsdp)
    axes_leaves = jax.tree_util.tree_flatten_with_path(
        model.param_axes(), is_leaf=lambda x: isinstance(x, tuple))[0]
    shapes = jax.tree.leaves(model.param_shapes())
    if len(shapes) != len(axes_leaves):
        raise ValueError(f"{type(model).__name__}.param_axes() has {len(axes_leaves)} leaves, "
                         f"its params {len(shapes)}")
    items = _mesh_items(mesh)
    rows = []
    for (path, axes), leaf in zip(axes_leaves, shapes):
        s = sharding.named_sharding(axes, leaf.shape, mesh, rules, name=f"parameter {_path(path)}")
        rows.append(Row(_path(path), tuple(leaf.shape), str(leaf.dtype),
                        _spec_tuple(s.spec, len(leaf.shape)), items))
    return tuple(rows)


def _param_rules(rules: sharding.Rules | None, fsdp: bool) -> dict:
    """The parameters' table: ``rules`` (default RULES), with ``d_model -> data`` under FSDP."""
    out = dict(sharding.RULES if rules is None else rules)
    if fsdp:
        out["d_model"] = sharding.DATA
    return out


def _point_shape(model: Any, axes: Sequence[str], batch: int, seq_len: int) -> tuple[int, ...]:
    sizes = {**model.dims, "batch": batch, "pos": seq_len, "q_pos": seq_len, "k_pos": seq_len}
    return tuple(1 if a.isdigit() else sizes[a] for a in axes)


def point_width(model: Any, point: str) -> int:
    """The flattened width of one token's activation at ``point`` (an SAE's ``d_in``).

    Raises:
        ValueError: the model has no such point.
    """
    if point not in model.points:
        raise ValueError(f"{type(model).__name__} has no point {point!r}; its points are "
                         f"{sorted(model.points)}")
    axes = [a for a in model.points[point] if a not in ("batch", "pos", "q_pos")]
    return math.prod(_point_shape(model, axes, 1, 1))


def layer_slice_rows(params: Sequence[Row], *, fsdp: bool) -> tuple[Row, ...]:
    """One layer's weights as the scan over layers slices them out of the stacks (XLA copies
    the slice of each ``blocks.*`` parameter); under FSDP all-gathered over ``data``."""
    out = []
    for r in params:
        if not r.name.startswith("blocks."):
            continue
        spec = tuple(None if fsdp and a == sharding.DATA else a for a in r.spec[1:])
        out.append(Row("layer slice " + r.name, r.shape[1:], r.dtype, spec, r.mesh))
    return tuple(out)


def patching_rows(model: Any, mesh: AbstractMesh, *, batch: int, seq_len: int, chunk: int,
                  site: str, dtype: str, layer_slice: Sequence[Row] = ()) -> tuple[Row, ...]:
    """One patching chunk: ``chunk`` forwards' block activations and logits, plus the clean
    site cache and the corrupted residual at every layer and one layer's weight slice
    ``layer_slice`` (see the module docstring)."""
    items = _mesh_items(mesh)
    optional = set(getattr(model, "optional_points", ()))
    rows = list(layer_slice)
    for point, axes in model.block_point_axes.items():
        if point in optional:
            continue
        shape = _point_shape(model, axes, batch, seq_len)
        rows.append(Row(f"block.{point}", shape, dtype, activation_spec(axes, shape, mesh),
                        items, count=chunk))
    logit_axes = ("batch", "pos", "d_vocab")
    shape = _point_shape(model, logit_axes, batch, seq_len)
    rows.append(Row("logits", shape, "float32", activation_spec(logit_axes, shape, mesh), items,
                    count=chunk))
    n_layers = model.n_layers
    for name, point in (("clean cache", site), ("corrupted", "hook_resid_pre")):
        axes = ("layer", *model.block_point_axes[point])
        shape = _point_shape(model, axes, batch, seq_len)
        rows.append(Row(f"{name} {point} [layer]", (n_layers, *shape[1:]), dtype,
                        activation_spec(axes, shape, mesh), items))
    return tuple(rows)


def sae_state_shapes(cfg: SAEConfig) -> Any:
    """The SAE training state (:func:`jinterp.sae.train_state`) as shapes, nothing allocated."""
    return jax.eval_shape(lambda: train_state(cfg, 0, lr=1e-3))


def sae_rows(cfg: SAEConfig, mesh: AbstractMesh, *, sae_batch: int,
             adam_only: bool = False) -> tuple[Row, ...]:
    """Rows of an SAE training step: params, grads, Adam moments, counters and a batch's
    activations, pre-activations, latents and reconstruction (``adam_only``: the moments)."""
    items = _mesh_items(mesh)
    state = sae_state_shapes(cfg)
    shardings = sae_sharding.state_shardings(state, mesh)
    flat = jax.tree_util.tree_flatten_with_path(state)[0]
    specs = jax.tree.leaves(shardings)
    rows = []
    for (path, leaf), s in zip(flat, specs):
        name = _path(path).replace("opt_state.", "")
        if leaf.ndim == 0 or name == "key":
            continue  # step, key, scales, Adam's count: a few bytes
        is_moment = name.startswith(("mu.", "nu."))
        if adam_only and not is_moment:
            continue
        spec = _spec_tuple(s.spec, leaf.ndim)
        rows.append(Row(name, tuple(leaf.shape), str(leaf.dtype), spec, items, tag="sae"))
        if name.startswith("params."):
            rows.append(Row("grad." + name[len("params."):], tuple(leaf.shape), str(leaf.dtype),
                            spec, items, tag="sae"))
    if adam_only:
        return tuple(rows)
    tokens = {"x [batch d_in]": ("batch", "d_in"), "pre_acts [batch d_sae]": ("batch", "d_sae"),
              "latents [batch d_sae]": ("batch", "d_sae"),
              "x_hat [batch d_target]": ("batch", "d_target")}
    sizes = {"batch": sae_batch, "d_in": cfg.d_in, "d_sae": cfg.d_sae, "d_target": cfg.d_target}
    for name, axes in tokens.items():
        shape = tuple(sizes[a] for a in axes)
        rows.append(Row(name, shape, "float32", activation_spec(axes, shape, mesh), items,
                        tag="sae"))
    return tuple(rows)


def probe_rows(model: Any, mesh: AbstractMesh, *, d_in: int, n_classes: int) -> tuple[Row, ...]:
    """Adam moments of one linear probe per layer, ``W [layer d_in n_out]`` and ``b``,
    replicated (``n_out`` = 1 for two classes, as :mod:`jinterp.probes` fits them)."""
    items = _mesh_items(mesh)
    n_out = 1 if n_classes == 2 else n_classes
    shapes = {"W": (model.n_layers, d_in, n_out), "b": (model.n_layers, n_out)}
    return tuple(Row(f"probe.{m}.{k}", s, "float32", (None,) * len(s), items, tag="probe")
                 for m in ("mu", "nu") for k, s in shapes.items())


def plan(model: Any, mesh_shape: MeshShape, *, name: str | None = None, fsdp: bool = False,
         rules: sharding.Rules | None = None, batch: int = 16, seq_len: int = 1024,
         chunk: int = 8, site: str = "attn.hook_z", hook: str = "hook_resid_post",
         d_sae: int | None = None, sae_arch: str = "topk", sae_k: int = 64,
         sae_batch: int = 4096, probe_classes: int = 2,
         replicate_indivisible: bool = False) -> MemoryPlan:
    """The memory plan of ``model`` on a mesh of ``mesh_shape`` (no devices needed).

    Args:
        model: a port (``param_axes``, ``param_shapes``, ``block_point_axes``, ``dims``).
        mesh_shape: ``{"data": n, "model": m}`` (either may be absent).
        name: what to call the model in the report.
        fsdp: also split parameters' ``d_model`` over ``data``.
        rules: the sharding table (default :data:`jinterp.sharding.RULES`).
        batch, seq_len: the patched prompts.
        chunk: patched forwards vmapped at once (a sweep's ``chunk_size``).
        site: the block point being patched (its clean cache is held for every layer).
        hook: the block point an SAE or probe reads (its width is ``d_in``).
        d_sae: SAE latents; None = 16 * d_model.
        sae_arch, sae_k: the SAE architecture and its k (top-k families).
        sae_batch: tokens per SAE training step.
        probe_classes: classes of the linear probe.
        replicate_indivisible: replicate the logical axes that the mesh does not divide
            instead of raising (see :func:`effective_rules`; listed in ``plan.replicated``).

    Raises:
        ValueError: a mesh axis does not divide a parameter (names it and the fix), an unknown
            point, or ``d_sae`` not divisible by the ``model`` size.
    """
    mesh = abstract_mesh(mesh_shape)
    table, replicated = effective_rules(model, mesh, rules, fsdp=fsdp,
                                        replicate_indivisible=replicate_indivisible)
    params = param_rows(model, mesh, table)
    dtype = params[0].dtype if params else "float32"
    d_in = point_width(model, hook)
    point_width(model, site)
    d_sae = 16 * model.d_model if d_sae is None else d_sae
    needs_k = sae_arch in ("topk", "batchtopk", "matryoshka", "switch")
    cfg = SAEConfig(sae_arch, d_in=d_in, d_sae=d_sae, k=sae_k if needs_k else None)
    sections = (
        Section("params", params, "exact: shard_params layout"),
        Section("optimizer", sae_rows(cfg, mesh, sae_batch=sae_batch, adam_only=True)
                + probe_rows(model, mesh, d_in=d_in, n_classes=probe_classes),
                f"Adam mu, nu: SAE at {hook} (d_in {d_in}, d_sae {d_sae}); a probe per layer"),
        Section("patching chunk", patching_rows(
            model, mesh, batch=batch, seq_len=seq_len, chunk=chunk, site=site, dtype=dtype,
            layer_slice=layer_slice_rows(params, fsdp=fsdp)),
                f"estimate: {chunk} patched forwards x one block's activations + logits"),
        Section("SAE step", sae_rows(cfg, mesh, sae_batch=sae_batch),
                f"{sae_arch} SAE params, grads, Adam, counters + {sae_batch} tokens"),
    )
    count = sum(math.prod(r.shape) for r in params)
    settings = dict(dtype=dtype, batch=batch, seq_len=seq_len, chunk=chunk, site=site, hook=hook,
                    d_in=d_in, d_sae=d_sae, sae_arch=sae_arch, sae_batch=sae_batch,
                    probe_classes=probe_classes)
    return MemoryPlan(name or type(model).__name__, _mesh_items(mesh), fsdp, int(count),
                      sections, tuple(settings.items()),
                      tuple((a, tuple(ps)) for a, ps in replicated.items()))


def spec_string(row: Row) -> str:
    """``(model, -)``: the mesh axis of each dimension, ``-`` for replicated."""
    return "(" + ", ".join(a or "-" for a in row.spec) + ")"


def format_plan(p: MemoryPlan, capacity: int | None = None, *, min_share: float = 0.002) -> str:
    """The plan as a text table; rows under ``min_share`` of their section are folded."""
    mesh = " x ".join(f"{a}={n}" for a, n in p.mesh)
    n_dev = math.prod(dict(p.mesh).values())
    s = dict(p.settings)
    lines = [f"{p.model}: {p.param_count:,} parameters ({s['dtype']}), mesh {mesh} "
             f"({n_dev} devices), fsdp {'on' if p.fsdp else 'off'}",
             f"{'array':<44} {'global shape':<22} {'spec':<22} {'per device':>12}"]
    for axis, params in p.replicated:
        lines.insert(1, f"note: {axis} replicated (the mesh does not divide {', '.join(params)});"
                        f" shard_params needs rules {{**RULES, {axis!r}: None}}")
    for section in p.sections:
        total = section.device_bytes()
        lines.append(f"[{section.name}] {format_bytes(total)} per device"
                     f" ({format_bytes(section.global_bytes())} global) -- {section.note}")
        small = [r for r in section.rows if r.device_bytes < min_share * total]
        for r in section.rows:
            if r in small:
                continue
            name = r.name if r.count == 1 else f"{r.name} x{r.count}"
            shape = "[" + ", ".join(map(str, r.shape)) + "]"
            lines.append(f"  {name:<42} {shape:<22} {spec_string(r):<22} "
                         f"{format_bytes(r.device_bytes):>12}")
        if small:
            lines.append(f"  {f'({len(small)} smaller arrays)':<42} {'':<22} {'':<22} "
                         f"{format_bytes(sum(r.device_bytes for r in small)):>12}")
    lines.append("totals per device" + ("" if capacity is None else
                                        f" (budget {format_bytes(capacity)})"))
    for use, parts in SCENARIOS.items():
        value = p.totals()[use]
        what = " + ".join(sec if tag is None else f"{sec}[{tag}]" for sec, tag in parts)
        verdict = "" if capacity is None else (
            "  fits" if value <= capacity
            else f"  DOES NOT FIT ({format_bytes(value - capacity)} over)")
        lines.append(f"  {use:<16} {format_bytes(value):>12}  = {what}{verdict}")
    return "\n".join(lines)


__all__ = ["SCENARIOS", "MemoryPlan", "Row", "Section", "abstract_mesh", "activation_spec",
           "format_bytes", "format_plan", "indivisible", "param_rows", "parse_bytes",
           "parse_mesh", "patching_rows", "plan", "point_width", "probe_rows", "sae_rows",
           "sae_state_shapes"]
