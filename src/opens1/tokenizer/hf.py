"""Optional transformers integration (`pip install opens1[hf]`).

* `OpenS1HFTokenizer`: a `transformers.PreTrainedTokenizer` whose tokenization IS the
  dynamic tokenizer (same ids, same domain detection), for code that expects an HF
  tokenizer (trainers, evaluation harnesses). Control tokens are registered as HF
  special tokens (so `eos_token_id`, `skip_special_tokens` and `all_special_ids`
  work), but `split_special_tokens=True`: their strings in user text stay text, as in
  OpenS1. `apply_chat_template` uses OpenS1's renderer, so control tokens in the
  template are real ids even though user text cannot produce them.
  Every id has a unique token string: base tokens as in the byte-level vocabulary,
  domain pieces as `<|smiles|>CC` etc.
* `export_fast_tokenizer`: a plain `tokenizer.json` (HF `tokenizers`) for engines that
  need one (vLLM, TGI, llama.cpp conversion). It holds the base BPE and the special
  tokens at their ids, so it is exact on text without domain spans; it cannot detect
  or switch domains (the same limitation as Intern-S1's GGUF export, reference §4.8),
  and, being an ordinary HF tokenizer, it matches special-token strings in text.

transformers is imported only here; nothing else in OpenS1 needs it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from transformers import AddedToken, PreTrainedTokenizer

from opens1.tokenizer.dynamic import LAYOUT_FILE, DynamicTokenizer, _atomic_write, load_tokenizer


def _token_strings(tok: DynamicTokenizer) -> list[str]:
    """One unique string per id."""
    names = [f"<|unused_{i}|>" for i in range(len(tok))]
    for s, i in tok.base.get_vocab(with_added_tokens=False).items():
        names[i] = s
    for s, i in tok.special_tokens.items():
        names[i] = s
    for d, sp in tok.sp.items():
        off = tok.offsets[d]
        for j in range(sp.get_piece_size()):
            names[off + j] = f"<|{d}|>{sp.id_to_piece(j)}"
    return names


class OpenS1HFTokenizer(PreTrainedTokenizer):
    vocab_files_names = {"layout_file": LAYOUT_FILE}
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(self, layout_file: str | None = None, opens1_tokenizer: DynamicTokenizer | None = None, **kwargs):
        if opens1_tokenizer is None:
            opens1_tokenizer = load_tokenizer(Path(layout_file).parent if layout_file else None)
        self.opens1 = opens1_tokenizer
        self._names = _token_strings(opens1_tokenizer)
        self._ids = {s: i for i, s in enumerate(self._names)}
        sp = opens1_tokenizer.special_tokens
        kwargs.setdefault("added_tokens_decoder", {i: AddedToken(s, special=True, normalized=False) for s, i in sp.items()})
        kwargs.setdefault("eos_token", "<|im_end|>")
        kwargs.setdefault("pad_token", "<|endoftext|>")
        kwargs["split_special_tokens"] = True  # special-token strings in text stay text
        super().__init__(**kwargs)
        from opens1.tokenizer.chat import CHAT_TEMPLATE

        self.chat_template = CHAT_TEMPLATE  # saved for tools that read it; rendering uses ours

    @property
    def vocab_size(self) -> int:
        return len(self.opens1)

    def __len__(self) -> int:
        return len(self.opens1)

    def get_vocab(self) -> dict[str, int]:
        return dict(self._ids)

    def _tokenize(self, text: str, **kwargs) -> list[str]:
        return [self._names[i] for i in self.opens1.encode(text)]

    def _convert_token_to_id(self, token: str) -> int:
        return self._ids[token]

    def _convert_id_to_token(self, index: int) -> str:
        return self._names[index]

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return self.opens1.decode([self._ids[t] for t in tokens])

    def _decode(self, token_ids, skip_special_tokens: bool = False, clean_up_tokenization_spaces=None, **kwargs) -> str:
        ids = [token_ids] if isinstance(token_ids, int) else list(token_ids)
        return self.opens1.decode(ids, skip_special_tokens=skip_special_tokens)

    def apply_chat_template(self, conversation, tools=None, add_generation_prompt: bool = False, tokenize: bool = True,
                            enable_thinking: bool = True, return_dict: bool = False, **kwargs):
        """OpenS1's chat renderer (text-only messages); `enable_thinking` as in Intern-S1."""
        from opens1.tokenizer.chat import render_ids, render_text

        if not tokenize:
            return render_text(conversation, tools, enable_thinking, add_generation_prompt)
        ids, _ = render_ids(self.opens1, conversation, tools, enable_thinking, add_generation_prompt)
        return {"input_ids": ids, "attention_mask": [1] * len(ids)} if return_dict else ids

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str, ...]:
        out = self.opens1.save_pretrained(save_directory)
        files = [out / LAYOUT_FILE, out / "base.json"] + [out / f"{d}.model" for d in self.opens1.sp]
        return tuple(str(f) for f in files)


def save_hf_wrapper(tok: DynamicTokenizer, directory: str | os.PathLike) -> Path:
    """Write `tok` so that `OpenS1HFTokenizer.from_pretrained(directory)` loads it."""
    OpenS1HFTokenizer(opens1_tokenizer=tok).save_pretrained(str(directory))
    return Path(directory)


def fast_tokenizer_json(tok: DynamicTokenizer) -> str:
    """The base BPE with the special tokens at their ids, as a `tokenizer.json` string."""
    data = json.loads(tok.base.to_str())
    data["added_tokens"] = [
        {"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True}
        for s, i in sorted(tok.special_tokens.items(), key=lambda kv: kv[1])
    ]  # fmt: skip
    return json.dumps(data, ensure_ascii=False)


def export_fast_tokenizer(tok: DynamicTokenizer, directory: str | os.PathLike) -> Path:
    """Write tokenizer.json, a tokenizer_config.json for `PreTrainedTokenizerFast` and the
    Jinja chat template (see the module docstring for what it can and cannot do)."""
    from opens1.tokenizer.chat import CHAT_TEMPLATE

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    _atomic_write(out / "tokenizer.json", fast_tokenizer_json(tok).encode("utf-8"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "clean_up_tokenization_spaces": False,
        "model_max_length": 1 << 20,
    }
    _atomic_write(out / "tokenizer_config.json", json.dumps(config, indent=1).encode("utf-8"))
    _atomic_write(out / "chat_template.jinja", CHAT_TEMPLATE.encode("utf-8"))
    return out / "tokenizer.json"
