"""Causal interventions as compiled programs: activation patching and ablation sweeps.

TransformerLens's ``get_act_patch_*`` functions with its arguments and result shapes (plus
``params``), each one program per start layer vmapped over the patches
(:mod:`jinterp.patching.activation`, :mod:`jinterp.patching.sweep`); ablation sweeps over the
same sites (:mod:`jinterp.patching.ablation`); the site table the sweeps and the attribution
methods share (:mod:`jinterp.patching.sites`). Metrics live in :mod:`jinterp.metrics`.
"""

from jinterp.patching.ablation import ablation_sweep
from jinterp.patching.activation import (
    act_patch,
    get_act_patch_attn_head_all_pos_every,
    get_act_patch_attn_head_by_pos_every,
    get_act_patch_attn_head_k_all_pos,
    get_act_patch_attn_head_k_by_pos,
    get_act_patch_attn_head_out_all_pos,
    get_act_patch_attn_head_out_by_pos,
    get_act_patch_attn_head_pattern_all_pos,
    get_act_patch_attn_head_pattern_by_pos,
    get_act_patch_attn_head_pattern_dest_src_pos,
    get_act_patch_attn_head_q_all_pos,
    get_act_patch_attn_head_q_by_pos,
    get_act_patch_attn_head_v_all_pos,
    get_act_patch_attn_head_v_by_pos,
    get_act_patch_attn_out,
    get_act_patch_block_every,
    get_act_patch_mlp_out,
    get_act_patch_resid_mid,
    get_act_patch_resid_pre,
)
from jinterp.patching.attr_api import *  # noqa: F403 (get_attr_patch_*, path patching, EAP)
from jinterp.patching.circuit_api import *  # noqa: F403 (Circuit, run_circuit, acdc, ...)
from jinterp.patching.sites import EVERY, SITES, Replace, Site, get_site, stack_every
from jinterp.patching.sweep import run_sweep

__all__ = [
    "EVERY", "SITES", "Replace", "Site", "ablation_sweep", "act_patch",
    "get_act_patch_attn_head_all_pos_every",
    "get_act_patch_attn_head_by_pos_every", "get_act_patch_attn_head_k_all_pos",
    "get_act_patch_attn_head_k_by_pos", "get_act_patch_attn_head_out_all_pos",
    "get_act_patch_attn_head_out_by_pos", "get_act_patch_attn_head_pattern_all_pos",
    "get_act_patch_attn_head_pattern_by_pos", "get_act_patch_attn_head_pattern_dest_src_pos",
    "get_act_patch_attn_head_q_all_pos", "get_act_patch_attn_head_q_by_pos",
    "get_act_patch_attn_head_v_all_pos", "get_act_patch_attn_head_v_by_pos",
    "get_act_patch_attn_out", "get_act_patch_block_every", "get_act_patch_mlp_out",
    "get_act_patch_resid_mid", "get_act_patch_resid_pre", "get_site", "run_sweep",
    "stack_every",
]
