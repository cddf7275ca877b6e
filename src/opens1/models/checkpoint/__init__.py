"""HF-format checkpoints in, Intern-S1-layout checkpoints out.

    load_model(path, *, dtype=None, device=None) -> S1ForConditionalGeneration
    save_model(model, path, *, max_shard_size="4GB", layout="interns1")
    export_checkpoint(src, out, *, layout="internvl")   (`opens1 model export`)

One module per layout (config.json `model_type` picks one), each owning its whole table:
    qwen3.py          Qwen3ForCausalLM, Qwen3MoeForCausalLM: model.*, lm_head.*; also the
                      Qwen3 decoder's tensor transforms every layout shares
    interns1.py       InternS1ForConditionalGeneration: model.language_model.*, lm_head.*,
                      model.vision_tower.*, model.multi_modal_projector.* (OpenS1 saves this,
                      plus its S1Config under "opens1_config")
    internvl.py       transformers' InternVLForConditionalGeneration (read and written)
    internvl_chat.py  legacy InternVL-chat (read)
    fp8.py            FP8 block-quantised weights, dequantised while loading
The rest: layout.py (what a layout is), registry.py (all layouts, parse_config),
configs.py (HF config dicts, defaults, limits, generation_config.json), files.py
(safetensors reading and sharded atomic writing), load.py, save.py.

Only safetensors are read; pickled files (*.bin, *.pt) are refused, never unpickled. A
checkpoint is untrusted input: shard names are confined to the model directory and a config
is checked against CONFIG_LIMITS before anything is built.
"""

from opens1.models.checkpoint.configs import (CONFIG_LIMITS, GENERATION_CONFIG, HF_DEFAULTS, OPENS1_KEY,
                                              check_config_limits, generation_defaults, parse_text_config,
                                              parse_vision_config, read_generation_config, text_config_to_hf,
                                              vision_config_to_hf, with_defaults)
from opens1.models.checkpoint.files import INDEX_NAME, SINGLE_NAME, TensorSource
from opens1.models.checkpoint.fp8 import dequantize_fp8
from opens1.models.checkpoint.internvl_chat import legacy_image_token_id
from opens1.models.checkpoint.layout import Layout, Piece
from opens1.models.checkpoint.load import convert_state_dict, load_model, tokenizer_size
from opens1.models.checkpoint.registry import LAYOUTS, parse_config
from opens1.models.checkpoint.save import export_checkpoint, export_state_dict, hf_config, save_model

__all__ = [
    "CONFIG_LIMITS", "GENERATION_CONFIG", "HF_DEFAULTS", "INDEX_NAME", "LAYOUTS", "OPENS1_KEY", "SINGLE_NAME",
    "Layout", "Piece", "TensorSource", "check_config_limits", "convert_state_dict", "dequantize_fp8",
    "export_checkpoint", "export_state_dict", "generation_defaults", "hf_config", "legacy_image_token_id",
    "load_model", "parse_config", "parse_text_config", "parse_vision_config", "read_generation_config",
    "save_model", "text_config_to_hf", "tokenizer_size", "vision_config_to_hf", "with_defaults",
]
