"""OpenS1 models: the Qwen3 decoder (dense/MoE), the S1 multimodal wrapper and
checkpoint loading/saving for every HF layout.

    S1ForConditionalGeneration(config)        models/s1.py
    count_parameters(name, *, active=False)   models/s1.py
    Qwen3Model(text_config)                   models/language.py
    load_model(path, *, dtype, device)        models/checkpoint/
    save_model(model, path)                   models/checkpoint/
"""

from opens1.models.checkpoint import load_model, save_model
from opens1.models.language import Qwen3Model
from opens1.models.s1 import ModelOutput, S1ForConditionalGeneration, count_parameters

__all__ = ["ModelOutput", "Qwen3Model", "S1ForConditionalGeneration", "count_parameters", "load_model", "save_model"]
