"""The speedrun's model and tokenizer: the `tiny` preset's own small tokenizer (bundled in
tokenizer/assets/tiny, trained when missing), the model built from a preset with random
weights, or a saved run's model to continue from."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from opens1.config import get_preset
from opens1.models import count_parameters
from opens1.envs import get_env
from opens1.models.checkpoint import load_model
from opens1.models.s1 import S1ForConditionalGeneration
from opens1.processing.processor import Processor, configure
from opens1.speedrun.config import SpeedrunConfig
from opens1.speedrun.runtime import log
from opens1.speedrun.tasks import TASKS
from opens1.tokenizer import load_tokenizer
from opens1.tokenizer.dynamic import DynamicTokenizer
from opens1.tokenizer.train import TrainConfig as TokenizerTrainConfig
from opens1.tokenizer.train import dna_corpus, prose_corpus, smiles_corpus, train_base_bpe, train_sentencepiece

TINY_TOKENIZER = Path(__file__).resolve().parents[1] / "tokenizer" / "assets" / "tiny"


def tokenizer_corpus(root=None, tasks: list[str] | None = None, per_task: int = 500):
    """Prose for the tiny base BPE: the tokenizer trainer's offline prose, plus the prompts
    and answers of the speedrun tasks' train split (their template words become single
    tokens, which shortens every training example)."""
    yield from prose_corpus(root)
    for name in tasks or TASKS:
        env = get_env(name, data_root=root)
        for i in range(min(per_task, env.num_cases("train"))):
            case = env.case(i, "train")
            for m in case.messages():
                content = m["content"]
                yield content if isinstance(content, str) else " ".join(p.get("text", "") for p in content)
            yield env.sft_response(case) or ""


def train_tiny_tokenizer(out: str | Path, root=None, base_vocab: int = 1024):
    """The `tiny` preset's tokenizer: a small byte-level BPE for prose and one token per
    character for SMILES and DNA (SentencePiece `char` models with byte fallback, trained
    by opens1.tokenizer.train), no protein or IUPAC vocabularies. Returns the tokenizer."""
    t0 = time.perf_counter()
    base = train_base_bpe(list(tokenizer_corpus(root)), base_vocab)
    cfg = TokenizerTrainConfig(n_smiles=20_000, n_qm9=5_000, n_reactions=3_000, n_selfies=0, augment=0.3)
    # a char model's size is its alphabet (+ 256 byte pieces); the size asked for is a bound
    smiles = train_sentencepiece(smiles_corpus(root, cfg), 400, max_piece=1, model_type="char")
    dna = train_sentencepiece(dna_corpus(root), 300, max_piece=1, model_type="char")
    tok = DynamicTokenizer.from_parts(base, {"smiles": smiles, "dna": dna}, provenance={
        "preset": "tiny", "data_root": str(root), "base_vocab": base_vocab, "smiles": "char", "dna": "char",
        "built_by": "opens1 speedrun --build-tokenizer"})
    tok.save_pretrained(out)
    log(f"tokenizer: {tok!r} in {time.perf_counter() - t0:.0f}s -> {out}")
    return tok


def load_or_train_tokenizer(out: Path, data, preset: str = "tiny"):
    """The `tiny` preset's bundled tokenizer (other presets: the default one); if it is
    missing, train it into OUT/tokenizer."""
    if preset != "tiny":
        return load_tokenizer()
    try:
        return load_tokenizer(TINY_TOKENIZER)
    except FileNotFoundError as e:
        log(f"bundled tiny tokenizer missing ({e}); training it")
        return train_tiny_tokenizer(out / "tokenizer", data)


def build_model(preset: str, tok, seed: int):
    """(model with random weights, its Processor) for `preset`, its embedding sized for `tok`."""
    cfg = get_preset(preset)
    rows = (len(tok) + 63) // 64 * 64  # rows for every token id, padded for matmul shapes
    if rows != cfg.text.vocab_size:
        if preset == "tiny":  # the preset is sized for its bundled tokenizer
            log(f"tokenizer has {len(tok)} ids: embedding resized from {cfg.text.vocab_size} to {rows} rows")
        cfg.text.vocab_size = rows
    cfg.text.eos_token_id = tok.eos_token_id
    cfg.text.pad_token_id = tok.pad_token_id
    configure(tok, cfg)
    torch.manual_seed(seed)
    model = S1ForConditionalGeneration(cfg)
    return model, Processor(tok, cfg)


def starting_model(scfg: SpeedrunConfig, out: Path):
    """(tokenizer, model, processor) the run starts from: a saved run's model when
    `scfg.init_from` names one (e.g. RL probes from one SFT model), else a fresh one."""
    if scfg.init_from:
        tok = load_tokenizer(scfg.init_from)
        model = load_model(scfg.init_from)
        proc = Processor(tok, model.config)
        torch.manual_seed(scfg.seed)
        return tok, model, proc
    tok = load_or_train_tokenizer(out, scfg.data, scfg.preset)
    model, proc = build_model(scfg.preset, tok, scfg.seed)
    return tok, model, proc


def model_entry(model, tok, preset: str) -> dict:
    """The report's description of the model: sizes, vocabulary and full config."""
    return {"preset": preset, "parameters": count_parameters(model.config),
            "active_parameters": count_parameters(model.config, active=True),
            "vocab_size": model.config.text.vocab_size, "tokenizer_size": len(tok),
            "tied_embeddings": model.config.text.tie_word_embeddings, "config": model.config.to_dict()}
