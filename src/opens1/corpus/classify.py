"""Science-domain classifier (fastText-like) and the domain-level keep/drop judge.

Intern-S1 recalls scientific web text with fastText and small-LM classifiers trained on LLM silver
labels over a six-science taxonomy (maths, physics, chemistry, life, earth, materials science),
then decides *per URL domain* from samples whether to keep, rewrite or drop it (Intern-S1 report, Figs. 8-9).

The classifier here is fastText's supervised model without the hidden layer: hashed word unigrams,
word bigrams and character 4-grams of words (subword information, so "thermodynamic" and
"thermodynamics" share weight), averaged per document, one linear layer to K classes, softmax.
Classes are "none" plus the science domains that labelled data exists for; P(science) = 1 - P(none)
and the domain is the argmax over the science classes.

Design choices:
- Hashing (FNV-1a-free: zlib.crc32, stable across processes unlike Python's `hash`) keeps the model
  a fixed [buckets, K] matrix: no vocabulary file, unseen words still land somewhere.
- Training uses torch (EmbeddingBag + cross-entropy, class-balanced weights, AdamW); inference is
  numpy (gather rows, mean, softmax) so the filter stage needs no torch threads per worker.
- Weights ship as safetensors (fp16) + JSON meta under corpus/assets/; nothing is pickled.
- The judge for domain-level decisions is pluggable: `ClassifierJudge` (this model) or `LLMJudge`
  (any OpenAI-compatible /v1/chat/completions endpoint, e.g. `opens1 serve` or vLLM).

CLI (`opens1 data train-classifier`, src/opens1/cli/data.py):

    opens1 data train-classifier --data ../shared/data --negatives bench/data/nonscience.jsonl.gz \\
        --train bench/data/gcide.jsonl.gz --calibrate bench/data/newsgroups_silver.jsonl.gz \\
        -o src/opens1/corpus/assets/science_classifier [--buckets 65536] [--epochs 8]
    opens1 data train-classifier --train labelled.jsonl -o model_dir   # rows: text, label (class name)
    opens1 data train-classifier --eval bench/data/corpus_eval.jsonl --model default   # P/R only
"""

from __future__ import annotations

import json
import random
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import regex as re

from opens1.common.atomic import atomic_write
from opens1.common.jsonl import read_documents
from opens1.common.paths import has_data, open_data

ASSETS = Path(__file__).resolve().parent / "assets"
DEFAULT_MODEL = ASSETS / "science_classifier"
SCIENCE_DOMAINS = ("math", "physics", "chemistry", "life", "earth", "materials")
_TOKEN = re.compile(r"\\[a-zA-Z]+|\p{L}[\p{L}\p{M}'-]*|\p{N}+|[^\s\p{L}\p{N}]")


@dataclass
class ClassifierConfig:
    buckets: int = 1 << 16
    char_ngram: int = 4  # 0 disables subword features
    epochs: int = 8
    lr: float = 1.0
    weight_decay: float = 0.0
    batch_size: int = 64
    max_tokens: int = 1024  # tokens read per document; classification needs the lead, not all of it
    seed: int = 0


def tokenize(text: str, max_tokens: int = 1024) -> list[str]:
    """Lowercased words, numbers, LaTeX commands and single symbols (kept: '$', '=' signal maths)."""
    toks = _TOKEN.findall(text[: max_tokens * 8])
    return [t.lower() for t in toks[:max_tokens]]


def features(text: str, buckets: int, char_ngram: int = 4, max_tokens: int = 1024) -> np.ndarray:
    """Hashed feature ids of one document: int64[F] (unigrams, bigrams, char n-grams)."""
    toks = tokenize(text, max_tokens)
    grams = list(toks)
    grams += [a + " " + b for a, b in zip(toks, toks[1:])]
    if char_ngram:
        n = char_ngram
        for t in set(toks):
            if len(t) > n:
                w = "<" + t + ">"
                grams += ["#" + w[i : i + n] for i in range(len(w) - n + 1)]
    if not grams:
        grams = ["<empty>"]
    ids = np.fromiter((zlib.crc32(g.encode()) for g in grams), dtype=np.int64, count=len(grams))
    return ids % buckets


@dataclass
class Prediction:
    science: float  # P(any science domain)
    domain: str  # argmax science domain if science >= 0.5 else "none"
    probs: dict[str, float] = field(default_factory=dict)


class ScienceClassifier:
    """Hashed-ngram linear classifier: weight [buckets, K] float32, bias [K]."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray, classes: Sequence[str], cfg: ClassifierConfig,
                 *, threshold: float = 0.5):
        if weight.shape != (cfg.buckets, len(classes)) or bias.shape != (len(classes),):
            raise ValueError(f"weight {weight.shape} / bias {bias.shape} do not match "
                             f"{cfg.buckets} buckets x {len(classes)} classes")
        if classes[0] != "none":
            raise ValueError(f"class 0 must be 'none', got {classes[0]!r}")
        self.weight = weight.astype(np.float32)
        self.bias = bias.astype(np.float32)
        self.classes = list(classes)
        self.cfg = cfg
        # P(science) cut-off for `predict`: 0.5 after training, or picked on a silver calibration set.
        self.threshold = threshold

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """[N, K] class logits."""
        out = np.empty((len(texts), len(self.classes)), dtype=np.float32)
        for i, t in enumerate(texts):
            ids = features(t, self.cfg.buckets, self.cfg.char_ngram, self.cfg.max_tokens)
            out[i] = self.weight[ids].mean(0)  # [F, K] -> [K], fastText's averaged bag
        return out + self.bias

    def proba(self, texts: Sequence[str]) -> np.ndarray:
        z = self.logits(texts)
        z -= z.max(1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(1, keepdims=True)

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        preds = []
        for row in self.proba(texts):
            sci = float(1.0 - row[0])
            dom = self.classes[1 + int(np.argmax(row[1:]))] if sci >= self.threshold else "none"
            preds.append(Prediction(sci, dom, {c: float(p) for c, p in zip(self.classes, row)}))
        return preds

    def save(self, path: str | Path) -> None:
        """`path.safetensors` (fp16 weight, fp32 bias) + `path.json` (classes, config); atomic."""
        from safetensors.numpy import save_file

        p = Path(path)
        tensors = {"weight": self.weight.astype(np.float16), "bias": self.bias}
        atomic_write(p.with_suffix(".safetensors"), write=lambda tmp: save_file(tensors, tmp))
        atomic_write(p.with_suffix(".json"), json.dumps({"classes": self.classes, "config": asdict(self.cfg),
                                                         "threshold": self.threshold}, indent=1))

    @classmethod
    def load(cls, path: str | Path) -> "ScienceClassifier":
        from safetensors.numpy import load_file

        p = Path(path)
        st, meta = p.with_suffix(".safetensors"), p.with_suffix(".json")
        if not st.is_file() or not meta.is_file():
            raise FileNotFoundError(f"classifier needs {st} and {meta}")
        info = json.loads(meta.read_text())
        t = load_file(str(st))
        return cls(t["weight"], t["bias"], info["classes"], ClassifierConfig(**info["config"]),
                   threshold=float(info.get("threshold", 0.5)))

    def calibrate(self, texts: Sequence[str], labels: Sequence[int]) -> float:
        """Set `threshold` to the P(science) cut-off with the best F1 on a (silver) labelled set.

        Training data (exam problems, glossaries) is cleaner than web prose, so scores on real
        pages run low; a calibration set from the target distribution fixes the operating point
        without touching the hand-labelled evaluation set."""
        if not any(labels) or all(labels):
            raise ValueError("calibration needs both science and non-science examples")
        scores = 1.0 - self.proba(texts)[:, 0]
        best = max((precision_recall(list(scores >= t), list(labels))["f1"], -abs(t - 0.5), t)
                   for t in np.arange(0.05, 0.951, 0.025))
        self.threshold = float(round(best[2], 3))
        return self.threshold


def load_classifier(path: str | Path | None = None) -> ScienceClassifier:
    """The shipped classifier (path None) or one saved by `train-classifier`."""
    return ScienceClassifier.load(DEFAULT_MODEL if path is None else Path(path))


# ------------------------------------------------------------------------------------ training


def train(texts: Sequence[str], labels: Sequence[str], cfg: ClassifierConfig | None = None,
          classes: Sequence[str] | None = None) -> ScienceClassifier:
    """Fit the classifier; `labels` are class names, one of which must be 'none'."""
    import torch

    cfg = cfg or ClassifierConfig()
    if len(texts) != len(labels) or not texts:
        raise ValueError(f"need equal, non-zero numbers of texts and labels ({len(texts)} vs {len(labels)})")
    classes = list(classes) if classes else ["none"] + sorted(set(labels) - {"none"})
    if "none" not in labels:
        raise ValueError("training data needs negative ('none') examples")
    index = {c: i for i, c in enumerate(classes)}
    unknown = set(labels) - set(index)
    if unknown:
        raise ValueError(f"labels {sorted(unknown)} not in classes {classes}")
    torch.manual_seed(cfg.seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # [B, K] with K < 10: thread fan-out costs more than it saves
    try:
        return _fit(texts, labels, cfg, classes=classes, index=index)
    finally:
        torch.set_num_threads(threads)


def _fit(texts, labels, cfg: ClassifierConfig, *, classes: list[str], index: dict[str, int]) -> ScienceClassifier:
    import torch

    feats = [torch.from_numpy(features(t, cfg.buckets, cfg.char_ngram, cfg.max_tokens)) for t in texts]
    y = torch.tensor([index[l] for l in labels])
    # Balanced loss: half the weight on "none", half shared equally by the science domains, so the
    # science-vs-not prior is 50/50 and maths (GSM8K alone is 7.5k) does not swamp life science.
    counts = torch.bincount(y, minlength=len(classes)).float().clamp(min=1)
    share = torch.full((len(classes),), 0.5 / max(len(classes) - 1, 1))
    share[0] = 0.5
    weight_c = (share * counts.sum() / counts).clamp(max=20.0)
    bag = torch.nn.EmbeddingBag(cfg.buckets, len(classes), mode="mean")
    torch.nn.init.zeros_(bag.weight)  # fastText starts the output layer at zero as well
    bias = torch.nn.Parameter(torch.zeros(len(classes)))
    params = [bag.weight, bias]
    # Adagrad by hand (per-feature step sizes suit sparse hashed features, like fastText's SGD);
    # torch.optim's first step imports torch._dynamo, which costs seconds per process.
    accum = [torch.zeros_like(p) for p in params]
    order = list(range(len(texts)))
    rng = random.Random(cfg.seed)
    for _ in range(cfg.epochs):
        rng.shuffle(order)
        for s in range(0, len(order), cfg.batch_size):
            idx = order[s : s + cfg.batch_size]
            flat = torch.cat([feats[i] for i in idx])
            offsets = torch.tensor([0] + [len(feats[i]) for i in idx[:-1]]).cumsum(0)
            logits = bag(flat, offsets) + bias  # [B, K]
            loss = torch.nn.functional.cross_entropy(logits, y[idx], weight=weight_c)
            if cfg.weight_decay:
                loss = loss + cfg.weight_decay * bag.weight.pow(2).sum()
            for p in params:
                p.grad = None
            loss.backward()
            with torch.no_grad():
                for p, acc in zip(params, accum):
                    acc.add_(p.grad * p.grad)
                    p.sub_(cfg.lr * p.grad / (acc.sqrt() + 1e-10))
    return ScienceClassifier(bag.weight.detach().numpy(), bias.detach().numpy(), classes, cfg)


def precision_recall(pred: Sequence[int], gold: Sequence[int]) -> dict[str, float]:
    """Binary precision, recall, F1 and accuracy with the counts."""
    tp = sum(p and g for p, g in zip(pred, gold))
    fp = sum(p and not g for p, g in zip(pred, gold))
    fn = sum(g and not p for p, g in zip(pred, gold))
    tn = len(gold) - tp - fp - fn
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    return {"precision": prec, "recall": rec, "f1": f1, "accuracy": (tp + tn) / max(len(gold), 1),
            "tp": tp, "fp": fp, "fn": fn, "tn": tn}


# ------------------------------------------------------------- labelled data from ../shared/data

# MMLU-STEM subjects per science domain; computer science, security, EE and ML stay out: they are
# not among the six sciences and would teach "technical" instead of "scientific".
MMLU_DOMAIN = {
    "elementary_mathematics": "math", "high_school_mathematics": "math", "college_mathematics": "math",
    "high_school_statistics": "math", "abstract_algebra": "math",
    "conceptual_physics": "physics", "high_school_physics": "physics", "college_physics": "physics",
    "astronomy": "physics",
    "high_school_chemistry": "chemistry", "college_chemistry": "chemistry",
    "high_school_biology": "life", "college_biology": "life", "anatomy": "life",
}
SCIBENCH_DOMAIN = {"atkins": "chemistry", "chemmc": "chemistry", "matter": "chemistry", "quan": "chemistry",
                   "thermo": "chemistry", "class": "physics", "fund": "physics",
                   "calculus": "math", "diff": "math", "stat": "math"}


def science_examples(root: str | Path | None, per_domain: int = 1500, seed: int = 0) -> list[tuple[str, str]]:
    """(text, domain) pairs from the real QA/protein data in the ../shared/data layout.

    Sources: GSM8K, MATH-500, college_math, OlympiadBench (maths); MMLU-STEM by subject; SciBench
    problems and worked solutions by textbook; Swiss-Prot entry descriptions (life science).
    Missing files are skipped, so the embedded subset (GSM8K, MATH-500 only) still works.
    """
    out: list[tuple[str, str]] = []

    def jsonl(rel):
        if not has_data(root, rel):
            return []
        with open_data(root, rel) as f:
            return [json.loads(l) for l in f if l.strip()]

    for rel, key in (("qa/gsm8k_train.jsonl", "question"), ("qa/math500_test.jsonl", "problem"),
                     ("qa/qwen25math_college_math.jsonl", "question")):
        for r in jsonl(rel):
            text = r.get(key) or r.get("problem") or ""
            sol = r.get("solution") or r.get("answer") or ""
            out.append((f"{text}\n{sol}".strip(), "math"))
    for r in jsonl("qa/qwen25math_olympiadbench.jsonl"):
        out.append((f"{r.get('context') or ''}\n{r['question']}\n{' '.join(r.get('solution') or [])}".strip(), "math"))
    for r in jsonl("qa/qwen25math_mmlu_stem.jsonl"):
        dom = MMLU_DOMAIN.get(r.get("type", ""))
        if dom:
            out.append((r["question"] + "\n" + "\n".join(map(str, r.get("choices", []))), dom))
    for book, dom in SCIBENCH_DOMAIN.items():
        for suffix in ("", "_sol"):
            rel = f"qa/scibench/{book}{suffix}.json"
            if has_data(root, rel):
                with open_data(root, rel) as f:
                    for r in json.load(f):
                        out.append((f"{r['problem_text']}\n{r.get('solution', '')}".strip(), dom))
    if has_data(root, "sequences/swissprot_100.dat"):
        with open_data(root, "sequences/swissprot_100.dat") as f:
            out += [(t, "life") for t in swissprot_texts(f.read())]
    # Cap each domain so maths (GSM8K alone is 7.5k) does not swamp the rest.
    rng = random.Random(seed)
    rng.shuffle(out)
    seen: dict[str, int] = {}
    capped = []
    for text, dom in out:
        if seen.get(dom, 0) < per_domain:
            seen[dom] = seen.get(dom, 0) + 1
            capped.append((text, dom))
    return capped


def swissprot_texts(flat: str) -> list[str]:
    """Readable prose of each Swiss-Prot entry: name (DE), organism (OS), comments (CC), titles (RT)."""
    texts = []
    for entry in flat.split("\n//"):
        parts = []
        for line in entry.splitlines():
            code, rest = line[:2], line[5:].strip()
            if code in ("DE", "OS", "CC", "RT") and not rest.startswith("-----") and "Copyrighted" not in rest \
                    and "Distributed under" not in rest:
                parts.append(rest.replace("RecName: Full=", "").replace("AltName: Full=", "").strip('";'))
        if parts:
            texts.append(" ".join(parts))
    return texts


def read_labelled(path: str | Path) -> list[tuple[str, str]]:
    """(text, class) from JSONL rows with `text` and `label` (a class name, or 0/1 with the class in
    `domain`); rows with only `domain` use it as the class."""
    out = []
    for r in read_documents(path):
        lab = r.get("label", r.get("domain"))
        if lab is None:
            raise ValueError(f"{path}: row {r.get('id', '?')} has neither 'label' nor 'domain'")
        if isinstance(lab, (int, bool)) or lab in ("0", "1"):
            lab = r.get("domain") if int(lab) and r.get("domain") not in (None, "none") else ("science" if int(lab) else "none")
        out.append((r["text"], str(lab)))
    return out


# ---------------------------------------------------------------------- domain-level judging


class ClassifierJudge:
    """Judges a document scientific when the classifier's P(science) >= threshold."""

    def __init__(self, clf: ScienceClassifier | None = None, threshold: float = 0.5):
        self.clf = clf or load_classifier()
        self.threshold = threshold

    def __call__(self, texts: Sequence[str]) -> list[bool]:
        return [p.science >= self.threshold for p in self.clf.predict(texts)]


class LLMJudge:
    """Asks an OpenAI-compatible chat endpoint whether each sample is scientific text.

    `endpoint` is the server base URL (".../v1" appended if missing). One request per sample; the
    answer's first word "science"/"yes" counts as scientific. Errors raise: a silent fallback would
    make domain decisions depend on network luck.
    """

    PROMPT = ("You label web text for a scientific pre-training corpus. Scientific means its main content "
              "is knowledge of mathematics, physics, chemistry, life science, earth science or materials "
              "science. Answer with exactly one word: science or other.\n\nText:\n{text}")

    def __init__(self, endpoint: str, model: str = "default", *, timeout: float = 60.0, max_chars: int = 2000):
        import httpx

        base = endpoint.rstrip("/")
        self.url = (base if base.endswith("/v1") else base + "/v1") + "/chat/completions"
        self.model, self.max_chars = model, max_chars
        self.client = httpx.Client(timeout=timeout)

    def __call__(self, texts: Sequence[str]) -> list[bool]:
        out = []
        for t in texts:
            body = {"model": self.model, "temperature": 0.0, "max_tokens": 4,
                    "messages": [{"role": "user", "content": self.PROMPT.format(text=t[: self.max_chars])}]}
            r = self.client.post(self.url, json=body)
            r.raise_for_status()
            answer = r.json()["choices"][0]["message"]["content"].strip().lower()
            out.append(answer.startswith(("science", "yes", "scientific")))
        return out


@dataclass
class DomainDecision:
    source: str
    n_docs: int
    n_judged: int
    science_frac: float
    keep: bool


def decide_domains(sources: Sequence[str], judge_rows: Callable[[list[int]], list[bool]], *, k: int = 20,
                   threshold: float = 0.3, seed: int = 0) -> dict[str, DomainDecision]:
    """Group row indices by source (a URL domain or data source), judge k random rows of each and
    keep the source when the judged science fraction >= threshold (Intern-S1's per-domain decision;
    its "rewrite" outcome needs an LLM rewriter and counts as keep here). `judge_rows` gets row
    indices, so a pipeline can judge from stored scores without re-reading text."""
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(sources):
        groups.setdefault(str(s), []).append(i)
    rng = random.Random(seed)
    out = {}
    for src, rows in sorted(groups.items()):
        sample = rows if len(rows) <= k else sorted(rng.sample(rows, k))
        votes = judge_rows(sample)
        frac = sum(votes) / max(len(votes), 1)
        out[src] = DomainDecision(src, len(rows), len(sample), frac, frac >= threshold)
    return out


def judge_domains(docs: Sequence[dict], judge: Callable[[Sequence[str]], list[bool]], *, k: int = 20,
                  threshold: float = 0.3, seed: int = 0) -> dict[str, DomainDecision]:
    """`decide_domains` over documents with `source` and `text`, judged by text."""
    return decide_domains([d.get("source", "") for d in docs], lambda rows: judge([docs[i]["text"] for i in rows]),
                          k=k, threshold=threshold, seed=seed)
