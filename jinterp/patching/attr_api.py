"""The public names of attribution patching, path patching and edge attribution patching.

Re-exported by :mod:`jinterp.patching` (``from jinterp.patching import get_attr_patch_resid_pre``).
"""

from jinterp.patching.attr_graph import Node, downstream_nodes, upstream_nodes
from jinterp.patching.attribution import (
    METHODS,
    attr_patch,
    get_attr_patch_attn_head_all_pos_every,
    get_attr_patch_attn_head_by_pos_every,
    get_attr_patch_attn_head_k_all_pos,
    get_attr_patch_attn_head_k_by_pos,
    get_attr_patch_attn_head_out_all_pos,
    get_attr_patch_attn_head_out_by_pos,
    get_attr_patch_attn_head_pattern_all_pos,
    get_attr_patch_attn_head_pattern_by_pos,
    get_attr_patch_attn_head_pattern_dest_src_pos,
    get_attr_patch_attn_head_q_all_pos,
    get_attr_patch_attn_head_q_by_pos,
    get_attr_patch_attn_head_v_all_pos,
    get_attr_patch_attn_head_v_by_pos,
    get_attr_patch_attn_out,
    get_attr_patch_block_every,
    get_attr_patch_mlp_out,
    get_attr_patch_resid_mid,
    get_attr_patch_resid_pre,
)
from jinterp.patching.eap import EdgeScores, eap, eap_ig, edge_index
from jinterp.patching.path import (
    get_path_patch_head_to_final_resid_post,
    get_path_patch_head_to_heads,
    get_path_patch_head_to_receivers,
    path_patch,
)

__all__ = [
    "METHODS", "EdgeScores", "Node", "attr_patch", "downstream_nodes", "eap", "eap_ig",
    "edge_index", "get_attr_patch_attn_head_all_pos_every",
    "get_attr_patch_attn_head_by_pos_every", "get_attr_patch_attn_head_k_all_pos",
    "get_attr_patch_attn_head_k_by_pos", "get_attr_patch_attn_head_out_all_pos",
    "get_attr_patch_attn_head_out_by_pos", "get_attr_patch_attn_head_pattern_all_pos",
    "get_attr_patch_attn_head_pattern_by_pos", "get_attr_patch_attn_head_pattern_dest_src_pos",
    "get_attr_patch_attn_head_q_all_pos", "get_attr_patch_attn_head_q_by_pos",
    "get_attr_patch_attn_head_v_all_pos", "get_attr_patch_attn_head_v_by_pos",
    "get_attr_patch_attn_out", "get_attr_patch_block_every", "get_attr_patch_mlp_out",
    "get_attr_patch_resid_mid", "get_attr_patch_resid_pre",
    "get_path_patch_head_to_final_resid_post", "get_path_patch_head_to_heads",
    "get_path_patch_head_to_receivers", "path_patch", "upstream_nodes",
]
