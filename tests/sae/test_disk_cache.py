"""The activation disk cache: the model's kept rows, resumable, truncation and corruption named."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))
from families import family  # noqa: E402

import jinterp  # noqa: E402
from jinterp.sae.data import ArraySource  # noqa: E402
from jinterp.sae.disk_cache import cache_activations, cached_arrays  # noqa: E402
from jinterp.sae.sources import SyntheticTokenSource  # noqa: E402

RESID, Z = "blocks.1.hook_resid_post", "blocks.0.attn.hook_z:2"


def test_cache_holds_the_kept_rows_resumes_and_names_damage(tmp_path):
    model, params = family("gpt2")
    src = SyntheticTokenSource(61, 2, 8, bos_id=0, low=1)
    kw = dict(exclude_ids=(0,), progress=False)
    cache_activations(model, params, [RESID, Z], src, 2, tmp_path / "c", **kw)  # interrupted
    cache_activations(model, params, [RESID, Z], src, 3, tmp_path / "c", **kw)  # resumed
    tokens = np.concatenate([src.batch(i) for i in range(3)])
    _, cache = jinterp.run_with_cache(model, params, tokens, [RESID, "blocks.0.attn.hook_z"])
    files = cached_arrays(tmp_path / "c", RESID, verify=True)
    assert len(files) == 3
    got = np.concatenate([np.load(f) for f in files])
    np.testing.assert_allclose(got, np.asarray(cache[RESID])[:, 1:].reshape(-1, 32), atol=1e-6)
    heads = np.concatenate([np.load(f) for f in cached_arrays(tmp_path / "c", Z)])
    np.testing.assert_allclose(heads, np.asarray(cache["blocks.0.attn.hook_z"])[:, 1:, 2]
                               .reshape(-1, 8), atol=1e-6)
    assert ArraySource(files, 7, chunk_rows=14).n_rows == 42  # what sae.train reads

    with pytest.raises(ValueError, match=r"other settings \(\['exclude_ids'\]\)"):
        cache_activations(model, params, [RESID, Z], src, 3, tmp_path / "c", progress=False)
    with pytest.raises(ValueError, match="not cached.*cached hooks"):
        cached_arrays(tmp_path / "c", "blocks.0.hook_resid_post")
    raw = bytearray(Path(files[1]).read_bytes())
    raw[-8:] = b"\x00" * 8  # flip bits: same size, other content
    Path(files[1]).write_bytes(bytes(raw))
    cached_arrays(tmp_path / "c", RESID)  # size and header still agree ...
    with pytest.raises(ValueError, match=r"chunk_000001.npy is corrupt.*SHA-256.*rerun"):
        cached_arrays(tmp_path / "c", RESID, verify=True)  # ... the checksum does not
    Path(files[2]).write_bytes(Path(files[2]).read_bytes()[:-100])
    with pytest.raises(ValueError, match=r"chunk_000002.npy is truncated or corrupt.*rerun"):
        cached_arrays(tmp_path / "c", RESID)
    assert Path(files[0]).exists()  # nothing already written is lost
