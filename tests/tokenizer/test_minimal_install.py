"""`import opens1.tokenizer` (and encoding, decoding, the chat template) works with only torch,
safetensors, tokenizers, sentencepiece and regex installed: a subprocess whose import system
refuses every other third-party module, as a tokenizer-only install would."""

import subprocess
import sys
import textwrap
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"

ALLOWED = ("torch", "safetensors", "tokenizers", "sentencepiece", "regex")


def _closure(dists) -> set[str]:
    """The distributions `dists` install (their requirements, recursively; extras left out)."""
    import re
    from importlib import metadata

    seen, todo = set(), [d.lower() for d in dists]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            reqs = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for r in reqs:
            if "extra ==" in r:
                continue
            todo.append(re.match(r"[A-Za-z0-9_.\-]+", r).group(0).lower().replace("_", "-"))
    return seen


def allowed_modules() -> set[str]:
    """Top-level module names of the allowed distributions and what they install."""
    from importlib import metadata

    dists = _closure(ALLOWED)
    return {mod for mod, owners in metadata.packages_distributions().items()
            if any(o.lower().replace("_", "-") in dists for o in owners)}

SCRIPT = textwrap.dedent('''
    import sys, sysconfig

    ALLOWED = set(sys.argv[1].split(","))
    STDLIB = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib")}

    class Refuse:
        """A third-party top-level package outside ALLOWED is 'not installed'."""

        def find_spec(self, name, path=None, target=None):
            top = name.partition(".")[0]
            if path is not None or top in ALLOWED or top == "opens1" or top in sys.builtin_module_names:
                return None
            if top in sys.stdlib_module_names:
                return None
            refused.add(top)
            raise ModuleNotFoundError(f"No module named {name!r} (refused)", name=name)

    refused = set()
    sys.meta_path.insert(0, Refuse())
    import opens1
    import opens1.tokenizer
    from opens1.tokenizer import chat

    tok = opens1.load_tokenizer()
    ids = tok.encode("Aspirin is <SMILES>CC(=O)Oc1ccccc1C(=O)O</SMILES>.")
    assert tok.decode(ids) == "Aspirin is <SMILES>CC(=O)Oc1ccccc1C(=O)O</SMILES>."
    segments = chat.render([{"role": "user", "content": "Hi"}], add_generation_prompt=True)
    assert any(s.value == "Hi" for s in segments)
    heavy = {"numpy", "rdkit", "PIL", "matplotlib", "fastapi", "pyarrow", "transformers", "llguidance"}
    print("refused:", sorted(refused), "loaded heavy:", sorted(heavy & {m.partition(".")[0] for m in sys.modules}))
''')


def test_tokenizer_imports_with_only_its_dependencies():
    allowed = allowed_modules()
    assert {"torch", "regex", "sentencepiece"} <= allowed and "numpy" not in allowed and "rdkit" not in allowed
    out = subprocess.run([sys.executable, "-c", SCRIPT, ",".join(sorted(allowed))], capture_output=True, text=True,
                         env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "loaded heavy: []" in out.stdout, out.stdout
