"""Memory plans of pod-sized presets (``python -m jinterp.plan``), from shapes alone.

Parameter counts against published ones; per-device bytes of single arrays on a 16 x 16 mesh
worked out by hand; the CLI's table, JSON and errors; and the compile check (a narrowed
Llama 3 70B compiled on 16 fake CPU devices) whose argument and output bytes must equal the
plan's exactly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from jinterp.plan import memory
from jinterp.plan.__main__ import main
from jinterp.plan.presets import lookup, registered

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MESH = {"data": 16, "model": 16}

# Published counts: HF's for GPT-2 XL (tied embedding counted once), Meta's Llama 3 70B and
# Google's Gemma 2 27B model cards (exact numbers from HF's `num_parameters()`). Gemma 3 27B's
# text model has no separately published count: 27,009,346,304 is derived from the released
# text_config (62 layers, 5376, 32 / 16 heads of 128, 21504, vocab 262208): 262208 * 5376 +
# 62 * (5376 * 128 * (2 * 32 + 2 * 16) + 3 * 5376 * 21504 + 4 * 5376 + 2 * 128) + 5376; with
# the ~0.42B SigLIP vision tower it gives HF's "27.4B params" for google/gemma-3-27b-pt.
COUNTS = {"gpt2-xl": 1_557_611_200, "llama-3-70b": 70_553_706_496,
          "gemma-2-27b": 27_227_128_320, "gemma-3-27b": 27_009_346_304}


def model(name: str, **overrides):
    return lookup(name, registered())(**overrides)


def row(plan: memory.MemoryPlan, section: str, name: str) -> memory.Row:
    return next(r for r in plan.section(section).rows if r.name == name)


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jinterp.plan", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=300, env=env)


@pytest.mark.parametrize("name", list(COUNTS))
def test_parameter_counts_match_the_published_ones(name):
    plan = memory.plan(model(name), MESH, replicate_indivisible=True)
    assert plan.param_count == COUNTS[name]
    # GPT-2 XL's 25 heads and 50257 tokens, Llama 3 70B's 8 kv heads cannot be split 16 ways
    want = {"gpt2-xl": {"n_heads", "n_kv_heads", "d_vocab"},
            "llama-3-70b": {"n_kv_heads"}}.get(name, set())
    assert {axis for axis, _ in plan.replicated} == want


def test_both_spellings_and_close_matches():
    table = registered()
    assert lookup("gemma2-27b", table) is lookup("gemma-2-27b", table)
    assert lookup("llama3-70b", table) is lookup("llama-3-70b", table)
    with pytest.raises(ValueError, match="Did you mean .*gemma-2-27b"):
        lookup("gemma2-72b", table)


def test_per_device_bytes_by_hand():
    gemma = memory.plan(model("gemma-2-27b", dtype="bfloat16"), MESH, seq_len=1024, batch=16,
                        chunk=8)
    # W_E [256000, 4608] bf16 split by vocab over model=16
    assert row(gemma, "params", "embed.W_E").device_bytes == 256000 // 16 * 4608 * 2
    # W_gate [46, 4608, 36864]: d_mlp over model
    assert row(gemma, "params", "blocks.mlp.W_gate").device_bytes == 46 * 4608 * 2304 * 2
    assert row(gemma, "params", "ln_final.w").device_bytes == 4608 * 2  # replicated
    # SAE at hook_resid_post: W_enc [4608, 16 * 4608] float32, d_sae over model; Adam mu too
    assert row(gemma, "optimizer", "mu.W_enc").device_bytes == 4608 * 4608 * 4
    assert row(gemma, "SAE step", "latents [batch d_sae]").device_bytes == \
        4096 // 16 * 73728 // 16 * 4
    # hook_pattern [16, 32, 1024, 1024] bf16 x 8 forwards: batch over data, heads over model
    assert row(gemma, "patching chunk", "block.attn.hook_pattern").device_bytes == \
        8 * 1 * 2 * 1024 * 1024 * 2
    fsdp = memory.plan(model("gemma-2-27b", dtype="bfloat16"), MESH, fsdp=True)
    assert row(fsdp, "params", "embed.W_E").spec == ("model", "data")
    assert row(fsdp, "params", "embed.W_E").device_bytes == 16000 * 288 * 2
    assert row(fsdp, "params", "blocks.attn.W_K").device_bytes == 46 * 1 * 288 * 128 * 2
    llama = memory.plan(model("llama-3-70b", dtype="bfloat16"), MESH,
                        replicate_indivisible=True)
    assert row(llama, "params", "unembed.W_U").device_bytes == 8192 * 8016 * 2
    # 8 kv heads on model=16: W_K [80, 8, 8192, 128] held whole on every device
    assert row(llama, "params", "blocks.attn.W_K").device_bytes == 80 * 8 * 8192 * 128 * 2
    with pytest.raises(ValueError, match="blocks.attn.W_K .*n_kv_heads"):
        memory.plan(model("llama-3-70b"), MESH)  # strict by default in Python, as shard_params
    total = llama.section("params").device_bytes()
    assert total == sum(r.device_bytes for r in llama.section("params").rows)
    kv = 2 * 80 * 8 * 8192 * 128  # W_K, W_V: whole on every device
    norms = 80 * 2 * 8192 + 8192  # replicated
    assert total == (COUNTS["llama-3-70b"] - kv - norms) * 2 // 16 + (kv + norms) * 2


def test_bad_mesh_and_indivisible_parameters():
    with pytest.raises(ValueError, match="axis=size"):
        memory.parse_mesh("data:16")
    with pytest.raises(ValueError, match="unknown to the sharding table"):
        memory.parse_mesh("data=16,tensor=4")
    bad = memory.indivisible(model("gpt2-xl"), memory.abstract_mesh(MESH))
    assert set(bad) == {"n_heads", "n_kv_heads", "d_vocab"}
    assert memory.parse_bytes("16GiB") == 16 * 2**30


def test_cli_prints_the_table_as_a_subprocess():
    out = cli("--model", "gemma2-27b", "--mesh", "data=16,model=16", "--device-memory", "16GiB")
    assert out.returncode == 0, out.stderr
    assert "27,227,128,320 parameters" in out.stdout
    for section in ("[params]", "[optimizer]", "[patching chunk]", "[SAE step]"):
        assert section in out.stdout
    assert "SAE training" in out.stdout and "fits" in out.stdout


def run_main(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_json_notes_and_errors(capsys):
    code, out, _ = run_main(capsys, "--model", "llama3-70b", "--mesh", "data=16,model=16",
                            "--json", "--device-memory", "16GiB")
    data = json.loads(out)
    assert code == 0 and data["param_count"] == COUNTS["llama-3-70b"]
    assert data["n_devices"] == 256 and list(data["replicated_axes"]) == ["n_kv_heads"]
    assert data["totals"]["SAE training"] == (data["sections"]["params"]["device_bytes"]
                                              + data["sections"]["SAE step"]["device_bytes"])
    code, _, err = run_main(capsys, "--model", "gpt2-xl", "--mesh", "data=16,model=16",
                            "--strict")
    assert code == 2 and "blocks.attn.W_Q" in err
    assert "--replicate d_vocab,n_heads,n_kv_heads" in err
    code, out, _ = run_main(capsys, "--model", "gpt2-xl", "--mesh", "data=16,model=16")
    assert code == 0 and "1,557,611,200 parameters" in out and "note: n_heads replicated" in out
    code, _, err = run_main(capsys, "--model", "gemma2-27b", "--mesh", "data=16;model=16")
    assert code == 2 and "axis=size" in err
    code, _, err = run_main(capsys, "--model", "gemma2-72b")
    assert code == 2 and "gemma-2-27b" in err


def test_compile_check_matches_the_plan_on_16_fake_devices():
    # Llama 3 70B's layout at 2 layers and narrowed widths (256 wide, 16 query / 8 kv heads of
    # 16, MLP 512, vocab 1024) so that the check compiles in seconds on a CPU.
    shrink = ["--override", "d_model=256", "--override", "n_heads=16", "--override",
              "n_kv_heads=8", "--override", "d_head=16", "--override", "d_mlp=512",
              "--override", "d_vocab=1024"]
    out = cli("--model", "llama3-70b", "--mesh", "data=4,model=4", *shrink, "--json",
              "--check-compile", "--check-mesh", "data=4,model=4", "--check-layers", "2",
              "--check-seq-len", "64")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)["compile_check"]
    xla, est = report["xla"], report["plan"]
    assert report["n_layers"] == 2 and report["mesh"] == {"data": 4, "model": 4}
    assert xla["argument_size_in_bytes"] == est["params"] + est["tokens"]
    assert xla["output_size_in_bytes"] == est["logits"]
    assert xla["temp_size_in_bytes"] > 0
