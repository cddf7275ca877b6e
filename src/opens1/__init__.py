"""OpenS1: an open, end-to-end implementation of the Intern-S1 scientific
multimodal foundation model system (arXiv 2508.15763).

Public API (imported lazily, so `import opens1` is cheap):
    load_model(path, *, dtype=None, device=None)   HF-format checkpoints of every layout
    save_model(model, path)                        the Intern-S1 HF layout (sharded safetensors)
    load_tokenizer(path=None)                      the dynamic scientific tokenizer
    count_parameters(name)                         a preset's size, counted on the meta device
    get_preset(name)                               typed S1Config presets ("tiny", "intern-s1", ...)
    Processor                                      chat messages with images and series -> model inputs
"""

__version__ = "0.1.0"

_LAZY = {
    "load_model": "opens1.models.checkpoint",
    "save_model": "opens1.models.checkpoint",
    "count_parameters": "opens1.models.s1",
    "get_preset": "opens1.config",
    "S1Config": "opens1.config",
    "load_tokenizer": "opens1.tokenizer",
    "Processor": "opens1.processing.processor",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'opens1' has no attribute {name!r}")


__all__ = sorted(_LAZY) + ["__version__"]
