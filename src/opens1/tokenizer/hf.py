"""transformers integration: a tokenizer directory the HF ecosystem opens, and a plain tokenizer.json.

* `OpenS1HFTokenizer`: a `transformers.PreTrainedTokenizer` whose tokenization IS OpenS1's
  (same ids, same domain detection, the same chat template and safety rule). Every id has
  a unique token string: base tokens as in the byte-level vocabulary, added tokens as
  themselves, domain pieces as `<|smiles|>CC` etc. Added-token strings in text follow the
  tokenizer's own default (text for OpenS1's tokenizer, tokens for an Intern-S1 one);
  `split_special_tokens=` overrides it as in transformers.
* `export_hf_tokenizer(tok, dir)`: the directory `AutoTokenizer.from_pretrained(dir,
  trust_remote_code=True)` loads, as Intern-S1's own repository ships its tokenizer: the
  tokenizer files, this module as `tokenization_opens1.py` with the modules it imports
  (the MODULE_FILES below: they need only regex, sentencepiece and tokenizers, and RDKit when
  present), `tokenizer_config.json` with an `auto_map`, and `chat_template.jinja`
  (chat.CHAT_TEMPLATE, which renders what OpenS1 renders).
* `export_fast_tokenizer`: a plain `tokenizer.json` (HF `tokenizers`) for engines that need
  one. It holds the base BPE and the special tokens at their ids, so it is exact on text
  without domain spans; it cannot detect or switch domains (the same limitation as
  Intern-S1's GGUF export), and it parses special-token strings in text.

Only relative imports below: this file is copied into exported directories.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from transformers import AddedToken, BatchEncoding, PreTrainedTokenizer

from .atomic import atomic_write
from .chat import CHAT_TEMPLATE, render_ids, render_text
from .dynamic import DynamicTokenizer
from .load import from_directory
from .vocab import LAYOUT_FILE

MODULE_NAME = "tokenization_opens1"
# files of this package the exported module imports (relative imports, copied next to it)
MODULE_FILES = ("load.py", "dynamic.py", "encoding.py", "interns1.py", "interns1_detect.py", "detect.py", "base.py",
                "vocab.py", "atomic.py", "chat.py")
# token-string attributes InternVL-style processors read from the tokenizer
MEDIA_TOKENS = {"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
                "video_token": "<video>"}


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
            if layout_file is None:
                raise ValueError(f"OpenS1HFTokenizer needs a tokenizer directory with {LAYOUT_FILE}")
            opens1_tokenizer = from_directory(Path(layout_file).parent)
        self.opens1 = opens1_tokenizer
        self._names = _token_strings(opens1_tokenizer)
        self._ids = {s: i for i, s in enumerate(self._names)}
        sp = opens1_tokenizer.special_tokens
        kwargs.setdefault("added_tokens_decoder", {i: AddedToken(s, special=True, normalized=False) for s, i in sp.items()})
        kwargs.setdefault("eos_token", "<|im_end|>")
        kwargs.setdefault("pad_token", "<|endoftext|>")
        kwargs.setdefault("clean_up_tokenization_spaces", False)
        kwargs["split_special_tokens"] = opens1_tokenizer.default_mode() != "all"
        super().__init__(**kwargs)
        self.chat_template = CHAT_TEMPLATE  # saved for tools that read it; apply_chat_template uses OpenS1's renderer
        for attr, token in MEDIA_TOKENS.items():
            if token in sp:
                setattr(self, attr, token)
                setattr(self, attr + "_id", sp[token])

    @property
    def vocab_size(self) -> int:
        return len(self.opens1)

    def __len__(self) -> int:
        return len(self.opens1)

    def get_vocab(self) -> dict[str, int]:
        return dict(self._ids)

    def tokenize(self, text: str, **kwargs) -> list[str]:
        """The whole text through OpenS1 (transformers' own added-token split is not used: the
        domain stack, NFC and detection of Intern-S1's rules span added tokens)."""
        split = kwargs.pop("split_special_tokens", None)
        return [self._names[i] for i in self.opens1.encode(text, split_special_tokens=split)]

    def _tokenize(self, text: str, **kwargs) -> list[str]:
        return self.tokenize(text, **kwargs)

    def _convert_token_to_id(self, token: str) -> int:
        return self._ids[token]

    def _convert_id_to_token(self, index: int) -> str:
        return self._names[index]

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return self.opens1.decode([self._ids[t] for t in tokens])

    def _decode(self, token_ids, skip_special_tokens: bool = False, clean_up_tokenization_spaces=None, **kwargs) -> str:
        ids = [token_ids] if isinstance(token_ids, int) else list(token_ids)
        return self.opens1.decode(ids, skip_special_tokens=skip_special_tokens)

    def apply_chat_template(self, conversation, tools=None, *, add_generation_prompt: bool = False, tokenize: bool = True,
                            enable_thinking: bool = True, return_dict: bool = True, return_tensors=None,
                            special_tokens_in_content: bool = False, **kwargs):
        """OpenS1's renderer of Intern-S1's template (text-only messages); the rendered string
        equals what `chat_template.jinja` renders. Message contents keep control-token
        strings as text unless `special_tokens_in_content=True`."""
        if not tokenize:
            return render_text(conversation, tools, enable_thinking=enable_thinking, add_generation_prompt=add_generation_prompt)
        ids, _ = render_ids(self.opens1, conversation, tools, enable_thinking=enable_thinking,
                            add_generation_prompt=add_generation_prompt, special_tokens_in_content=special_tokens_in_content)
        if not return_dict:
            return ids
        return BatchEncoding({"input_ids": ids, "attention_mask": [1] * len(ids)}, tensor_type=return_tensors)

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str, ...]:
        out = self.opens1.save_pretrained(save_directory)
        files = [out / LAYOUT_FILE, out / "base.json"] + [out / f"{d}.model" for d in self.opens1.sp]
        return tuple(str(f) for f in files)


def save_hf_wrapper(tok: DynamicTokenizer, directory: str | os.PathLike) -> Path:
    """Write `tok` so that `OpenS1HFTokenizer.from_pretrained(directory)` loads it (needs opens1)."""
    OpenS1HFTokenizer(opens1_tokenizer=tok).save_pretrained(str(directory))
    return Path(directory)


def export_hf_tokenizer(tok: DynamicTokenizer, directory: str | os.PathLike) -> Path:
    """A self-contained tokenizer directory: AutoTokenizer.from_pretrained(dir, trust_remote_code=True)
    gives OpenS1's ids without the opens1 package installed (see the module docstring)."""
    out = Path(directory)
    OpenS1HFTokenizer(opens1_tokenizer=tok).save_pretrained(str(out))
    here = Path(__file__).resolve().parent
    _copy(here / "hf.py", out / f"{MODULE_NAME}.py")
    for name in MODULE_FILES:
        _copy(here / name, out / name)
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg["tokenizer_class"] = "OpenS1HFTokenizer"
    cfg["auto_map"] = {"AutoTokenizer": [f"{MODULE_NAME}.OpenS1HFTokenizer", None]}
    atomic_write(cfg_path, json.dumps(cfg, indent=2, ensure_ascii=False).encode("utf-8"))
    atomic_write(out / "chat_template.jinja", CHAT_TEMPLATE.encode("utf-8"))
    return out


def _copy(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


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
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "tokenizer.json", fast_tokenizer_json(tok).encode("utf-8"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "clean_up_tokenization_spaces": False,
        "model_max_length": 1 << 20,
    }
    atomic_write(out / "tokenizer_config.json", json.dumps(config, indent=1).encode("utf-8"))
    atomic_write(out / "chat_template.jinja", CHAT_TEMPLATE.encode("utf-8"))
    return out / "tokenizer.json"
