"""``python -m jinterp.plan``: per-device memory of a named model on a mesh, without devices.

Examples::

    python -m jinterp.plan --model gemma2-27b --mesh data=16,model=16 --device-memory 16GiB
    python -m jinterp.plan --model llama3-70b --mesh data=16,model=16 --fsdp --json
    python -m jinterp.plan --model gemma3-27b --mesh data=16,model=16 --check-compile

Models are the presets registered in the ``jinterp.presets`` entry-point group (see
:mod:`jinterp.plan.presets`). ``--check-compile`` also AOT-compiles the sharded forward of the
same widths at ``--check-layers`` depth on a ``--check-mesh`` of fake CPU devices (in a
subprocess when this process has too few) and prints XLA's ``memory_analysis()`` next to the
plan (:mod:`jinterp.plan.compile_check`). Exit status 2 means bad arguments (unknown model,
bad mesh, or, with ``--strict``, a mesh axis that does not divide a parameter); the message says
what to change. Without ``--strict`` such a logical axis is replicated and a ``note:`` line
names its parameters and the ``shard_params`` rules that give the same layout.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

from jinterp import sharding
from jinterp.plan import compile_check, memory
from jinterp.plan.presets import lookup, registered


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jinterp.plan", description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True, help="preset name, e.g. gemma2-27b, llama3-70b")
    p.add_argument("--mesh", default="data=16,model=16", help="mesh axis sizes")
    p.add_argument("--fsdp", action="store_true", help="also split params' d_model over data")
    p.add_argument("--replicate", default="", metavar="AXES",
                   help="logical axes to replicate instead of splitting, e.g. n_heads,d_vocab")
    p.add_argument("--strict", action="store_true",
                   help="fail (exit 2) when the mesh does not divide a parameter, instead of "
                        "replicating that logical axis with a note")
    p.add_argument("--dtype", default="bfloat16", help="parameter (and activation) dtype")
    p.add_argument("--batch", type=int, default=16, help="patching: prompts per forward")
    p.add_argument("--seq-len", type=int, default=1024, help="patching: tokens per prompt")
    p.add_argument("--chunk", type=int, default=8, help="patching: forwards vmapped at once")
    p.add_argument("--site", default="attn.hook_z", help="patching: the patched block point")
    p.add_argument("--hook", default="hook_resid_post", help="SAE / probe input block point")
    p.add_argument("--d-sae", type=int, default=None, help="SAE latents (default 16 * d_model)")
    p.add_argument("--sae-arch", default="topk", help="SAE architecture")
    p.add_argument("--sae-k", type=int, default=64, help="k of top-k SAEs")
    p.add_argument("--sae-batch", type=int, default=4096, help="tokens per SAE training step")
    p.add_argument("--probe-classes", type=int, default=2, help="classes of the linear probe")
    p.add_argument("--device-memory", default=None, help="per-device budget, e.g. 16GiB")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.add_argument("--check-compile", action="store_true",
                   help="also AOT-compile the sharded forward at reduced depth")
    p.add_argument("--check-layers", type=int, default=2, help="depth of the compile check")
    p.add_argument("--check-mesh", default="data=4,model=4", help="mesh of the compile check")
    p.add_argument("--check-batch", type=int, default=8, help="prompts of the compile check")
    p.add_argument("--check-seq-len", type=int, default=128, help="tokens of the compile check")
    p.add_argument("--check-dtype", default="float32",
                   help="dtype of the compile check (XLA:CPU upcasts bfloat16 matmul operands "
                        "to float32 copies, which would swamp its temporaries)")
    p.add_argument("--override", action="append", default=[], metavar="FIELD=INT",
                   help="config override (repeatable), e.g. d_model=256 to shrink a check")
    p.add_argument("--compile-only", action="store_true", help=argparse.SUPPRESS)
    return p


def _overrides(args) -> dict:
    out: dict = {"dtype": args.dtype}
    for item in args.override:
        field, _, value = item.partition("=")
        if not value.lstrip("-").isdigit():
            raise ValueError(f"--override {item!r}: write FIELD=INT, e.g. n_layers=2")
        out[field.strip()] = int(value)
    return out


def _rules(args) -> sharding.Rules | None:
    axes = [a.strip() for a in args.replicate.split(",") if a.strip()]
    unknown = [a for a in axes if a not in sharding.RULES]
    if unknown:
        raise ValueError(f"--replicate {unknown}: unknown logical axes; the table knows "
                         f"{sorted(sharding.RULES)}")
    return {**sharding.RULES, **{a: None for a in axes}} if axes else None


def _divisibility_error(model, mesh_shape, rules, fsdp, err: ValueError) -> ValueError:
    bad = memory.indivisible(model, memory.abstract_mesh(mesh_shape), rules, fsdp=fsdp)
    if not bad:
        return err
    lines = [f"the mesh {mesh_shape} does not divide these parameters:"]
    for params in bad.values():
        lines += [f"  {p}" for p in params[:4]] + ([f"  ... {len(params) - 4} more"]
                                                    if len(params) > 4 else [])
    fixes = ",".join(sorted(bad))
    lines.append(f"fix: a mesh whose axis sizes divide those dimensions, or --replicate {fixes} "
                 f"(shard_params with rules {{**jinterp.sharding.RULES, axis: None}})")
    return ValueError("\n".join(lines))


def _plan(model, args, mesh_shape, rules) -> memory.MemoryPlan:
    try:
        return memory.plan(model, mesh_shape, name=args.model, fsdp=args.fsdp, rules=rules,
                           batch=args.batch, seq_len=args.seq_len, chunk=args.chunk,
                           site=args.site, hook=args.hook, d_sae=args.d_sae,
                           sae_arch=args.sae_arch, sae_k=args.sae_k, sae_batch=args.sae_batch,
                           probe_classes=args.probe_classes,
                           replicate_indivisible=not args.strict)
    except ValueError as err:
        if "does not divide" in str(err) and "parameter" in str(err):
            raise _divisibility_error(model, mesh_shape, rules, args.fsdp, err) from None
        raise


def _compile_report(args, builder, rules) -> dict:
    check_mesh = memory.parse_mesh(args.check_mesh)
    n = math.prod(check_mesh.values())
    import jax

    if args.compile_only or jax.device_count() >= n:
        model = builder(**{**_overrides(args), "n_layers": args.check_layers,
                           "dtype": args.check_dtype})
        return compile_check.check(model, check_mesh, batch=args.check_batch,
                                   seq_len=args.check_seq_len, fsdp=args.fsdp, rules=rules,
                                   replicate_indivisible=not args.strict)
    argv = [a for a in sys.argv[1:] if a not in ("--json", "--check-compile")]
    return compile_check.check_in_subprocess(argv, n)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        mesh_shape = memory.parse_mesh(args.mesh)
        builder = lookup(args.model, registered())
        rules = _rules(args)
        capacity = None if args.device_memory is None else memory.parse_bytes(args.device_memory)
        if args.compile_only:
            report = _compile_report(args, builder, rules)
            print(compile_check.REPORT_PREFIX + json.dumps(report), flush=True)
            return 0
        model = builder(**_overrides(args))
        result = _plan(model, args, mesh_shape, rules)
        report = _compile_report(args, builder, rules) if args.check_compile else None
    except (ValueError, TypeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        out = result.to_dict(capacity)
        if report is not None:
            out["compile_check"] = report
        print(json.dumps(out, indent=1))
    else:
        print(memory.format_plan(result, capacity))
        if report is not None:
            print(compile_check.format_check(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
