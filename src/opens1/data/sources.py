"""Readers of real training data from every modality, and their conversion to token documents.

Every reader takes a data root in the ../shared/data layout (None = the embedded real
subset shipped in the package, see data/embedded/README.md) and yields `Sample`s:

    name             modality      what (all real data)
    gsm8k            prose+maths   GSM8K train: question, worked answer
    latex            LaTeX         arXiv LaTeX sources under text/ (when the root has them)
    smiles           SMILES        MOSES drug-like molecules, in <SMILES> tags
    qm9              SMILES+props  QM9 molecules with their DFT properties stated in prose
    reactions        reactions     USPTO (validation split) product <- reactants
    protein          FASTA         a predicted bacterial proteome, in <FASTA> tags
    dna              DNA           bacterial genes with their product names, in <DNA> tags
    molecule_images  image-text    RDKit drawings of QM9/MOSES molecules with SMILES, formula, mass
    microscopy       image-text    scikit-image's real microscopy images (when installed)
    ecg              time series   MIT-BIH record 100, 360 Hz, windows with their beat annotations
    seismic          time series   a day of seismometer data (when the root has it)
    envs             chat          task environments (opens1.envs), train split, with reference answers

Samples hold either `text` (pretraining: loss on every token) or `messages`
(OpenAI-style chat; images and series inside, rendered by the Processor).
`to_document` turns a sample into a packing.Document for a stage:
    pretrain     text -> ids + EOS, labels = ids
    multimodal   messages rendered without a generation prompt; loss on every text token,
                 none on image / time-series placeholders (as Intern-S1 pretrains on interleaved data)
    sft          messages through Processor.for_training: loss on assistant tokens only

No contamination of the evaluation: evaluation files (GSM8K test, MATH-500, USPTO test,
MOSES test) are never read here, and where an environment (opens1.envs) holds out part
of a file by hashing an item key, the readers skip exactly those items with the same
rule and key (QM9 molecules by canonical SMILES, proteins by sequence, genes by id, ECG
windows that touch a held-out minute of record 100).
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch

from opens1.common.paths import data_root, has_data, open_data, read_fasta
from opens1.data.packing import IGNORE, Document
from opens1.envs import get_env, list_envs
from opens1.envs.base import is_heldout
from opens1.rewards.chem import canonical_smiles


@dataclass
class Sample:
    source: str
    text: str | None = None
    messages: list[dict] | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.text is None) == (self.messages is None):
            raise ValueError("a Sample holds exactly one of text or messages")


# ---------------------------------------------------------------- text and science formats


def read_gsm8k(root=None) -> Iterator[Sample]:
    with open_data(root, "qa/gsm8k_train.jsonl") as f:
        for line in f:
            r = json.loads(line)
            yield Sample("gsm8k", text=f"Question: {r['question']}\nAnswer: {r['answer']}")


def read_latex(root=None, chunk_chars: int = 4000) -> Iterator[Sample]:
    """LaTeX sources of arXiv papers (text/latex_*/*.tex), in paragraph-aligned chunks."""
    base = data_root(root) / "text"
    if not base.is_dir():
        return
    for tex in sorted(base.glob("*/*.tex")):
        body = tex.read_text(encoding="utf-8", errors="replace")
        paras, cur = body.split("\n\n"), ""
        for p in paras:
            if cur and len(cur) + len(p) > chunk_chars:
                yield Sample("latex", text=cur.strip(), meta={"file": tex.name})
                cur = ""
            cur += p + "\n\n"
        if cur.strip():
            yield Sample("latex", text=cur.strip(), meta={"file": tex.name})


def _csv_rows(root, relpath: str) -> Iterator[dict]:
    with open_data(root, relpath) as f:
        yield from csv.DictReader(f)


def read_smiles(root=None) -> Iterator[Sample]:
    for r in _csv_rows(root, "smiles/train.csv"):
        yield Sample("smiles", text=f"<SMILES>{r['SMILES']}</SMILES>")


def _qm9_sentence(r: dict) -> str:
    return (
        f"The molecule <SMILES>{r['SMILES']}</SMILES> ({r['InChi']}) has {r['N_atoms']} atoms. "
        f"DFT (B3LYP/6-31G(2df,p)): HOMO {float(r['HOMO_au']):.4f} Ha, LUMO {float(r['LUMO_au']):.4f} Ha, "
        f"gap {float(r['HOMO_LUMO_gap_au']):.4f} Ha, dipole moment {float(r['Dipole_debye']):.3f} D, "
        f"polarizability {float(r['Polarizability_bohr3']):.2f} bohr^3, "
        f"heat capacity {float(r['Heatcapacity_Cv_cal_mol_K']):.3f} cal/(mol K)."
    )


def read_qm9(root=None) -> Iterator[Sample]:
    for r in _csv_rows(root, "smiles/qm9.csv"):
        key = canonical_smiles(r["SMILES"])
        if key is None or is_heldout(key):  # chem/qm9_* environments evaluate these
            continue
        yield Sample("qm9", text=_qm9_sentence(r), meta={"smiles": r["SMILES"]})


def _unmap(smiles: str) -> str:
    """Drop atom-map numbers ([CH3:15] -> C) with RDKit; the raw string if RDKit cannot parse it."""
    from rdkit import Chem

    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return smiles
    for a in mol.GetAtoms():
        a.SetAtomMapNum(0)
    return Chem.MolToSmiles(mol)


def read_reactions(root=None) -> Iterator[Sample]:
    """USPTO validation split (the test split is the evaluation's): product <- reactants."""
    from rdkit import RDLogger

    RDLogger.DisableLog("rdApp.*")
    for r in _csv_rows(root, "reactions/uspto_valT.csv"):
        reactants = ".".join(_unmap(s) for s in r["target"].split("."))
        product = _unmap(r["input"])
        yield Sample("reactions", text=f"Reaction: <SMILES>{reactants}</SMILES> >> <SMILES>{product}</SMILES>")


def _fasta(root, relpath: str) -> Iterator[tuple[str, str]]:
    with open_data(root, relpath) as f:
        yield from read_fasta(f)


def read_proteins(root=None, max_len: int = 1200) -> Iterator[Sample]:
    for header, seq in _fasta(root, "sequences/938293.PRJEB85.HG003687.faa"):
        seq = seq.rstrip("*")  # the stop codon
        if 0 < len(seq) <= max_len and not is_heldout(seq):  # bio/protein_* hold out by sequence
            yield Sample("protein", text=f"Protein {header.split()[0]}: <FASTA>{seq}</FASTA>")


def read_dna(root=None, max_len: int = 3000) -> Iterator[Sample]:
    for header, seq in _fasta(root, "sequences/CP040672.1.genes_100.fna"):
        name = header.split("[protein=")[1].split("]")[0] if "[protein=" in header else "unknown protein"
        if 0 < len(seq) <= max_len and not is_heldout(header.split()[0]):  # bio/* DNA tasks: by gene id
            yield Sample("dna", text=f"Gene encoding {name}: <DNA>{seq}</DNA>")


# ---------------------------------------------------------------- images


def molecule_caption(smiles: str) -> str | None:
    """Formula, exact mass and ring count of a molecule from RDKit, or None if unparsable."""
    from rdkit import Chem
    from rdkit.Chem import Descriptors, rdMolDescriptors

    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return None
    return (
        f"<SMILES>{Chem.MolToSmiles(mol)}</SMILES>, formula {rdMolDescriptors.CalcMolFormula(mol)}, "
        f"molecular weight {Descriptors.MolWt(mol):.2f} g/mol, {rdMolDescriptors.CalcNumRings(mol)} rings, "
        f"{rdMolDescriptors.CalcNumHBD(mol)} H-bond donors, {rdMolDescriptors.CalcNumHBA(mol)} H-bond acceptors."
    )


def read_molecule_images(root=None, size: int = 224) -> Iterator[Sample]:
    """RDKit 2-D drawings beside their SMILES and computed properties (real image-text pairs)."""
    from rdkit import Chem, RDLogger
    from rdkit.Chem import Draw

    RDLogger.DisableLog("rdApp.*")
    for r in _csv_rows(root, "smiles/train.csv"):
        mol = Chem.MolFromSmiles(r["SMILES"])
        caption = molecule_caption(r["SMILES"]) if mol is not None else None
        if caption is None:
            continue
        image = Draw.MolToImage(mol, size=(size, size)).convert("RGB")
        yield Sample("molecule_images", messages=[
            {"role": "user", "content": [{"type": "image", "image": image},
                                         {"type": "text", "text": "Identify this molecule."}]},
            {"role": "assistant", "content": f"This is {caption}"},
        ])


def read_microscopy(root=None) -> Iterator[Sample]:
    """scikit-image's bundled real microscopy images (optional dependency)."""
    try:
        from PIL import Image
        from skimage import data as skdata
    except ImportError:
        return
    items = [
        ("cells3d", "Fluorescence microscopy of cells (membranes and nuclei), a slice of a 3-D confocal stack."),
        ("human_mitosis", "Fluorescence microscopy of human cell nuclei, several of them in mitosis."),
        ("immunohistochemistry", "Immunohistochemistry (IHC) staining of a tissue section, colon."),
        ("retina", "A fundus photograph of a human retina, showing the optic disc and blood vessels."),
        ("hubble_deep_field", "The Hubble eXtreme Deep Field: thousands of distant galaxies."),
        ("cell", "Phase-contrast microscopy of a single cell."),
        ("protein_transport", "Time-lapse fluorescence microscopy of protein transport in cells."),
    ]
    for name, caption in items:
        try:
            arr = getattr(skdata, name)()
        except Exception:  # noqa: BLE001 - some skimage images need pooch downloads; skip those
            continue
        while arr.ndim > 3 or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
            arr = arr[arr.shape[0] // 2]
        arr = arr.astype("float32")
        arr = (255 * (arr - arr.min()) / max(float(arr.max() - arr.min()), 1e-6)).astype("uint8")
        image = Image.fromarray(arr).convert("RGB")
        yield Sample("microscopy", messages=[
            {"role": "user", "content": [{"type": "image", "image": image},
                                         {"type": "text", "text": "Describe this scientific image."}]},
            {"role": "assistant", "content": caption},
        ])


# ---------------------------------------------------------------- time series

BEAT_NAMES = {"N": "normal", "A": "atrial premature", "V": "premature ventricular", "L": "left bundle branch block",
              "R": "right bundle branch block", "/": "paced", "F": "fusion", "j": "junctional escape",
              "a": "aberrated atrial premature", "J": "junctional premature", "E": "ventricular escape"}


def read_ecg(root=None, window_s: float = 4.0, max_windows: int = 2000) -> Iterator[Sample]:
    """MIT-BIH record 100 (2 leads, 360 Hz) in windows, each with its annotated beats."""
    import wfdb

    base = data_root(root) / "timeseries"
    rec = wfdb.rdrecord(str(base / "100"))
    ann = wfdb.rdann(str(base / "100"), "atr")
    fs = float(rec.fs)
    sig = rec.p_signal  # [n, 2] millivolts
    n = int(window_s * fs)
    block = int(60 * fs)  # ecg/beat_label holds out whole minutes of this record
    kept = 0
    for start in range(0, sig.shape[0] - n + 1, n):
        if kept >= max_windows:
            break
        if any(is_heldout(f"mitdb100|block{b}") for b in range(start // block, (start + n - 1) // block + 1)):
            continue
        idx = [i for i in range(len(ann.sample))
               if start <= ann.sample[i] < start + n and ann.symbol[i] in BEAT_NAMES]
        if not idx:
            continue  # rhythm or noise annotations only
        kept += 1
        beats = [ann.symbol[i] for i in idx]
        kinds = sorted({BEAT_NAMES[b] for b in beats})
        rate = ""
        if len(idx) > 1:  # mean R-R interval -> heart rate
            rr = (ann.sample[idx[-1]] - ann.sample[idx[0]]) / fs / (len(idx) - 1)
            rate = f", heart rate about {60.0 / rr:.0f} bpm"
        text = (f"{len(beats)} beats in {window_s:g} s ({', '.join(kinds)}){rate}; "
                f"leads {', '.join(rec.sig_name)} sampled at {fs:g} Hz.")
        yield Sample("ecg", messages=[
            {"role": "user", "content": [
                {"type": "time_series", "time_series": {"values": sig[start : start + n].tolist(), "sampling_rate": fs}},
                {"type": "text", "text": "Describe this ECG segment."}]},
            {"role": "assistant", "content": text},
        ], meta={"start": start})


def read_seismic(root=None, window_s: float = 120.0) -> Iterator[Sample]:
    """A day of vertical seismometer data (BW.KW1 EHZ, 2011 day 090), when the root has it."""
    rel = "timeseries/BW.KW1._.EHZ.D.2011.090_downsampled.asc"
    if not has_data(root, rel):
        return
    import numpy as np

    with open_data(root, rel) as f:
        vals = [float(x) for x in f.read().split() if _is_number(x)]
    x = np.asarray(vals, dtype=np.float32)
    fs = (len(x) - 1) / 86400.0  # one full day of samples
    n = int(window_s * fs)
    for start in range(0, len(x) - n + 1, n):
        w = x[start : start + n]
        hour = start / fs / 3600.0
        text = (f"Seismometer BW.KW1 vertical channel, 2011 day 90 from {hour:.2f} h UTC, {fs:.2f} Hz: "
                f"peak amplitude {np.abs(w).max():.0f} counts, RMS {np.sqrt((w ** 2).mean()):.0f} counts.")
        yield Sample("seismic", messages=[
            {"role": "user", "content": [
                {"type": "time_series", "time_series": {"values": w[:, None].tolist(), "sampling_rate": fs}},
                {"type": "text", "text": "Summarise this seismogram."}]},
            {"role": "assistant", "content": text},
        ])


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


# ---------------------------------------------------------------- task environments (chat)


def read_envs(root=None, per_env: int = 10_000, names: list[str] | None = None) -> Iterator[Sample]:
    """Chat SFT samples from the task environments' train split: the prompt and the
    environment's reference response. Round-robin over environments (case 0 of every
    environment, then case 1, ...) so that any prefix of the stream is a balanced mix."""
    live = []
    for name in names or list_envs():
        try:
            env = get_env(name, data_root=root)
            n = min(per_env, env.num_cases("train"))
        except (FileNotFoundError, ValueError):
            if names:  # asked for by name: its data must be there
                raise
            continue  # an environment whose data this root lacks (e.g. scibench in the embedded subset)
        if hasattr(env, "sft_response"):
            live.append((name, env, n))
    for i in range(max((n for _, _, n in live), default=0)):
        for name, env, n in live:
            if i >= n:
                continue
            case = env.case(i, split="train")
            response = env.sft_response(case)
            if not response:
                continue
            prompt = case.prompt
            msgs = list(prompt) if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
            yield Sample(f"env:{name}", messages=msgs + [{"role": "assistant", "content": response}],
                         meta={"id": case.id})


READERS: dict[str, Callable[..., Iterator[Sample]]] = {
    "gsm8k": read_gsm8k, "latex": read_latex, "smiles": read_smiles, "qm9": read_qm9,
    "reactions": read_reactions, "protein": read_proteins, "dna": read_dna,
    "molecule_images": read_molecule_images, "microscopy": read_microscopy,
    "ecg": read_ecg, "seismic": read_seismic, "envs": read_envs,
}


def parse_mixture(spec: str) -> dict[str, float]:
    """"gsm8k:2,smiles" -> {"gsm8k": 2.0, "smiles": 1.0}; unknown names are an error."""
    out: dict[str, float] = {}
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        name, _, w = item.partition(":")
        if name not in READERS:
            raise ValueError(f"unknown data source {name!r}; known: {', '.join(READERS)}")
        out[name] = float(w) if w else 1.0
        if out[name] < 0:
            raise ValueError(f"negative weight for source {name!r}")
    if not out:
        raise ValueError("empty data mixture")
    return out


def load_mixture(spec: str, root=None, samples_per_unit: int = 200, seed: int = 0) -> list[Sample]:
    """round(weight * samples_per_unit) samples from each source (fewer if it has fewer),
    taken from the start of each reader in its file order, then shuffled together."""
    mix = parse_mixture(spec)
    out: list[Sample] = []
    for name, w in mix.items():
        want = int(round(w * samples_per_unit))
        for i, s in enumerate(READERS[name](root)):
            if i >= want:
                break
            out.append(s)
    random.Random(seed).shuffle(out)
    return out


# ---------------------------------------------------------------- samples -> token documents


def to_document(sample: Sample, stage: str, tokenizer=None, processor=None, *, enable_thinking: bool = True):
    """Tokenize a sample for a training stage -> packing.Document (None if it yields no loss).
    `enable_thinking` renders chats with the thinking system prompt (the chat template's
    default); a model evaluated without it (the speedrun's) is trained without it too."""
    if sample.text is not None:
        if tokenizer is None:
            raise ValueError("a tokenizer is needed for text samples")
        ids = list(tokenizer.encode(sample.text))
        eos = getattr(tokenizer, "eos_token_id", None)
        if eos is not None:
            ids.append(eos)
        t = torch.tensor(ids, dtype=torch.long)
        return Document(t, t.clone(), source=sample.source) if len(ids) >= 2 else None
    if processor is None:
        raise ValueError("a Processor is needed for chat samples")
    if stage == "sft":
        enc = processor.for_training(sample.messages, tools=sample.meta.get("tools"), enable_thinking=enable_thinking)
        ids, labels = enc["input_ids"][0], enc["labels"][0]
    else:
        # pretraining on image-text: loss on every text token, none on placeholders
        enc = processor(sample.messages, enable_thinking=enable_thinking, add_generation_prompt=False)
        ids = enc["input_ids"][0]
        labels = ids.clone()
        cfg = processor.config
        for tok in (cfg.image_token_id, cfg.ts_token_id):
            labels[ids == tok] = IGNORE
    if not (labels[1:] != IGNORE).any():
        return None
    ts = enc.get("time_series")
    return Document(ids, labels, pixel_values=enc.get("pixel_values"), time_series=list(ts) if ts else None,
                    sampling_rates=list(enc.get("sampling_rates") or []) or None, source=sample.source)


def build_documents(samples: list[Sample], stage: str, tokenizer=None, processor=None, *,
                    enable_thinking: bool = True) -> list:
    docs = []
    for s in samples:
        d = to_document(s, stage, tokenizer, processor, enable_thinking=enable_thinking)
        if d is not None:
            docs.append(d)
    return docs


__all__ = ["Sample", "READERS", "parse_mixture", "load_mixture", "to_document", "build_documents", "molecule_caption"]
