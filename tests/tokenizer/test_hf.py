"""The transformers wrapper, the self-contained export AutoTokenizer loads, and tokenizer.json."""

import ast
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("transformers")

from tokenizers import Tokenizer  # noqa: E402

from opens1.tokenizer import load_tokenizer  # noqa: E402
from opens1.tokenizer.hf import (  # noqa: E402
    MODULE_FILES,
    MODULE_NAME,
    OpenS1HFTokenizer,
    export_fast_tokenizer,
    export_hf_tokenizer,
    save_hf_wrapper,
)

from .chat_cases import TEXT_CASES  # noqa: E402
from .interns1_fixture import make_interns1_dir, small_vocab_merges  # noqa: E402
from .test_interns1 import mixed_corpus  # noqa: E402

TEXT = "Aspirin CC(=O)Oc1ccccc1C(=O)O <|im_end|> and <SMILES>CCO</SMILES> MKTAYIAKQRQISFVKSHFSRQLEERLGLIEV"


def _kw(kw):
    return {"tools": kw.get("tools"), "enable_thinking": kw.get("enable_thinking", True),
            "add_generation_prompt": kw.get("add_generation_prompt", True)}


def test_wrapper_matches_opens1(tok, tmp_path):
    h = OpenS1HFTokenizer(opens1_tokenizer=tok)
    ids = h(TEXT)["input_ids"]
    assert ids == tok.encode(TEXT) and h.decode(ids) == TEXT
    assert h.encode(TEXT, add_special_tokens=True) == ids
    assert len(h) == len(tok) and h.eos_token_id == tok.eos_token_id and h.pad_token_id == tok.pad_token_id
    assert tok.eos_token_id not in ids  # OpenS1's own tokenizer: the typed "<|im_end|>" is text
    assert tok.eos_token_id in h(TEXT, split_special_tokens=False)["input_ids"]
    assert h.decode(tok.encode("<SMILES>CCO</SMILES>"), skip_special_tokens=True) == "CCO"
    batch = h(["a b", "CCO"], padding=True)["input_ids"]
    assert batch[0][-1] == tok.pad_token_id and len(batch[0]) == len(batch[1])
    msgs = [{"role": "user", "content": "hi <|im_end|>"}]
    assert h.apply_chat_template(msgs, add_generation_prompt=True, return_dict=False) == tok.apply_chat_template(msgs)
    assert h.apply_chat_template(msgs, add_generation_prompt=True)["input_ids"] == tok.apply_chat_template(msgs)
    save_hf_wrapper(tok, tmp_path / "hf")
    again = OpenS1HFTokenizer.from_pretrained(str(tmp_path / "hf"))
    assert again(TEXT)["input_ids"] == tok.encode(TEXT)


def test_native_call_shape(tok):
    """OpenS1's tokenizer itself offers transformers' call shape."""
    assert tok(TEXT)["input_ids"] == tok.encode(TEXT) == tok.encode(TEXT, add_special_tokens=False)
    out = tok(["a b", "CCO"])
    assert out["input_ids"] == tok.encode_batch(["a b", "CCO"]) and out["attention_mask"] == [[1, 1], [1] * len(out["input_ids"][1])]
    pt = tok(["a b", "CCO c"], return_tensors="pt")
    assert pt["input_ids"].shape == pt["attention_mask"].shape and pt["input_ids"].shape[0] == 2


def _exported_imports(directory) -> set[str]:
    """Top-level packages the exported modules import (what transformers' check_imports asks
    for: imports inside try blocks are optional and skipped)."""
    from transformers.dynamic_module_utils import get_imports

    return {m for f in (f"{MODULE_NAME}.py",) + MODULE_FILES for m in get_imports(directory / f)}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    make_interns1_dir(root / "s1_src", *small_vocab_merges())
    native, s1 = load_tokenizer(), load_tokenizer(root / "s1_src")
    export_hf_tokenizer(native, root / "native")
    export_hf_tokenizer(s1, root / "s1")
    return root, native, s1


def test_export_needs_only_regex_sentencepiece_tokenizers(exported):
    root, _, _ = exported
    import sys as _sys

    stdlib = _sys.stdlib_module_names
    for name in ("native", "s1"):
        third_party = {m for m in _exported_imports(root / name) if m not in stdlib}
        assert third_party <= {"regex", "sentencepiece", "tokenizers", "transformers"}, third_party
        tree = ast.parse((root / name / f"{MODULE_NAME}.py").read_text())
        assert not [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0 and (n.module or "").startswith("opens1")]


@pytest.mark.parametrize("which", ["native", "s1"])
def test_autotokenizer_loads_the_export(exported, which):
    """AutoTokenizer.from_pretrained(dir, trust_remote_code=True): OpenS1's ids, decode and chat."""
    from transformers import AutoTokenizer

    root, native, s1 = exported
    tok = {"native": native, "s1": s1}[which]
    auto = AutoTokenizer.from_pretrained(str(root / which), trust_remote_code=True)
    assert type(auto).__name__ == "OpenS1HFTokenizer" and type(auto).__module__.startswith("transformers_modules")
    texts = mixed_corpus(120, seed=5)
    assert [auto(t)["input_ids"] for t in texts] == tok.encode_batch(texts)
    assert [auto.decode(tok.encode(t)) for t in texts[:40]] == [tok.decode(tok.encode(t)) for t in texts[:40]]
    for name, messages, kw in TEXT_CASES[:8]:
        assert auto.apply_chat_template(messages, return_dict=False, **_kw(kw)) == tok.apply_chat_template(messages, **_kw(kw))
    assert auto.eos_token_id == tok.eos_token_id and auto.context_image_token == "<IMG_CONTEXT>"


def test_export_loads_without_the_opens1_package(exported):
    """In a fresh interpreter where `import opens1` fails, the export still loads and encodes."""
    root, native, _ = exported
    code = textwrap.dedent(f"""
        import sys
        sys.modules["opens1"] = None  # any import of the package fails
        from transformers import AutoTokenizer
        tok = AutoTokenizer.from_pretrained({str(root / 'native')!r}, trust_remote_code=True)
        print(tok({TEXT!r})["input_ids"])
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == str(native.encode(TEXT))


def test_fast_export_exact_without_domain_spans(tok, tmp_path):
    fast = Tokenizer.from_file(str(export_fast_tokenizer(tok, tmp_path)))
    for text in ["Plain prose, numbers 12345, unicode é日本 🙂 and code: def f(x): return x**2\n",
                 "H2SO4 and CH3CH2OH are formulas.", "  spaces\t\ttabs\r\n"]:
        assert fast.encode(text, add_special_tokens=False).ids == tok.encode(text)
        assert fast.decode(tok.encode(text), skip_special_tokens=False) == text
    for s, i in tok.special_tokens.items():
        assert fast.token_to_id(s) == i
    from transformers import AutoTokenizer

    auto = AutoTokenizer.from_pretrained(str(tmp_path))
    msgs = [{"role": "user", "content": "hi"}]
    assert auto.apply_chat_template(msgs, tokenize=True, add_generation_prompt=True, return_dict=False) == \
        tok.apply_chat_template(msgs)
    assert auto.eos_token_id == tok.eos_token_id
