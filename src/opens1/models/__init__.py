"""OpenS1 models: the Qwen3 decoder (dense/MoE), the S1 multimodal wrapper and
checkpoint loading/saving for every HF layout.

    S1ForConditionalGeneration(config)   models/s1.py
    Qwen3Model(text_config)              models/language.py
    load_model(path, dtype, device)      models/checkpoint/
"""

from opens1.models.language import Qwen3Model
from opens1.models.s1 import ModelOutput, S1ForConditionalGeneration


def load_model(path, dtype=None, device=None):
    from opens1.models.checkpoint import load_model as _load

    return _load(path, dtype=dtype, device=device)


__all__ = ["ModelOutput", "Qwen3Model", "S1ForConditionalGeneration", "load_model"]
