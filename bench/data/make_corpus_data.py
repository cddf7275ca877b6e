"""Regenerate the real non-science and mixed web-like text used by bench/corpus.py and tests/corpus.

Run once on a machine with the sources installed; the outputs are committed beside this script,
so tests and benchmarks never need the installs:

    apt-get install fortunes dict-devil dict-gcide
    pip download gensim==4.4.0 --no-deps -d /tmp/gensim_whl     # only its bundled test data is read
    python bench/data/make_corpus_data.py --gensim-wheel /tmp/gensim_whl/gensim-4.4.0-*.whl

Outputs (gzip JSONL, one document per line: text, source, id, plus `group` where known):
- nonscience.jsonl.gz: real non-science prose for the classifier's negative side: Debian `fortunes`
  (minus the science/medicine/goedel files), Ambrose Bierce's Devil's Dictionary (`dict-devil`,
  1911, public domain), ABC news articles (gensim's Lee corpus), Python's language reference
  topics (`pydoc_data.topics`, PSF licence) and Debian package READMEs (/usr/share/doc).
- newsgroups.jsonl.gz: 176 Usenet posts from 20 Newsgroups as shipped in gensim's test data
  (sci.space, alt.atheism, ...); `group` is the newsgroup (a silver label, like the paper's).
  The file in the wheel is a pickle: we never unpickle it, we walk its opcodes with pickletools
  and keep the string constants, which cannot execute anything.
- newsgroups_silver.jsonl.gz: the posts not in the eval set, `label` 1 for sci.* groups (silver).
- wiki.jsonl.gz: the lead of each real article (redirects dropped) in gensim's shortened
  enwiki-latest-pages-articles1 dump: the unlabelled pool that was hand-labelled into
  corpus_eval.jsonl.
- gcide.jsonl.gz: glossary-like documents of 6 senses each from GCIDE (Webster 1913 + WordNet,
  GPL), labelled by the sense's own field tag ("(Chem.)", "(Geol.)", "(Law)", ...), see GCIDE_FIELDS.
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import json
import pickletools
import re
import zipfile
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
GENSIM_DATA = "gensim/test/test_data/"
SKIP_FORTUNES = {"science", "medicine", "goedel", "ascii-art", "translate-me"}


def fortunes(root: Path = Path("/usr/share/games/fortunes")) -> list[dict]:
    docs = []
    for path in sorted(root.iterdir()):
        if path.suffix or path.name in SKIP_FORTUNES or path.is_dir():
            continue
        for i, text in enumerate(path.read_text(encoding="utf-8", errors="replace").split("\n%\n")):
            if len(text.strip()) >= 200:  # one-liners are too short to be documents
                docs.append({"text": text.strip(), "source": f"fortunes/{path.name}", "id": f"{path.name}:{i}"})
    return docs


def devils_dictionary(path: Path = Path("/usr/share/dictd/devil.dict.dz")) -> list[dict]:
    text = gzip.open(path, "rt", encoding="utf-8", errors="replace").read()  # dictzip is gzip
    # An entry starts at a line "WORD, pos.  definition" or "WORD." at the start of a line.
    parts = re.split(r"\n\n(?=[A-Z][A-Z' \-]+[,.])", text)
    return [{"text": p.strip(), "source": "devils_dictionary", "id": f"devil:{i}"}
            for i, p in enumerate(parts) if len(p.strip()) >= 200 and not p.startswith("00database")]


def pydoc_topics() -> list[dict]:
    import pydoc_data.topics as t
    return [{"text": v.strip(), "source": "python_docs", "id": f"pydoc:{k}"} for k, v in sorted(t.topics.items())
            if len(v.strip()) >= 200]


def debian_readmes(root: Path = Path("/usr/share/doc"), limit: int = 120) -> list[dict]:
    docs = []
    for path in sorted(root.glob("*/README*")):
        if path.suffix in (".gz", ".html", ".xz") or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace").strip()
        if len(text) >= 300:
            docs.append({"text": text[:6000], "source": "debian_doc", "id": f"{path.parent.name}/{path.name}"})
    return docs[:limit]


def gensim_files(wheel: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(wheel) as z:
        names = ["lee_background.cor", "lee.cor", "mini_newsgroup",
                 "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"]
        return {n: z.read(GENSIM_DATA + n) for n in names}


def lee_news(files: dict[str, bytes]) -> list[dict]:
    docs = []
    for name in ("lee_background.cor", "lee.cor"):
        for i, line in enumerate(files[name].decode("utf-8", "replace").splitlines()):
            if len(line.strip()) >= 200:
                docs.append({"text": line.strip(), "source": f"news/{name}", "id": f"{name}:{i}"})
    return docs


def newsgroups(files: dict[str, bytes]) -> list[dict]:
    raw = zlib.decompress(files["mini_newsgroup"])
    strings = [arg for op, arg, _ in pickletools.genops(raw) if isinstance(arg, str)]
    docs = []
    for i, s in enumerate(x for x in strings if "Newsgroups:" in x[:400]):
        group = re.search(r"Newsgroups: ?([^\n,]+)", s).group(1).strip()
        head, _, body = s.partition("\n\n")  # drop the Usenet header block: keep Subject only
        subject = re.search(r"^Subject: (.*)$", head, re.M)
        text = ((subject.group(1) + "\n\n") if subject else "") + body.strip()
        docs.append({"text": text, "source": "newsgroups", "id": f"ng:{i}", "group": group})
    return docs


def wiki(files: dict[str, bytes], max_chars: int = 2500) -> list[dict]:
    xml = bz2.decompress(files["enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"]).decode()
    docs = []
    for page in re.findall(r"<page>(.*?)</page>", xml, re.S):
        title = re.search(r"<title>(.*?)</title>", page).group(1)
        m = re.search(r"<text[^>]*>(.*?)</text>", page, re.S)
        body = m.group(1) if m else ""
        if body.lstrip().upper().startswith("#REDIRECT") or len(body) < 800:
            continue
        docs.append({"text": clean_wikitext(body)[:max_chars], "source": "wikipedia", "id": f"wiki:{title}"})
    return docs


def clean_wikitext(s: str) -> str:
    """Light wikitext to plain text: enough to read and label, the rest is left as web noise."""
    import html
    s = html.unescape(s)
    s = re.sub(r"\{\{[^{}]*\}\}", "", s)  # templates (one level)
    s = re.sub(r"\{\{[^{}]*\}\}", "", s)
    s = re.sub(r"<ref[^>]*/>|<ref[^>]*>.*?</ref>", "", s, flags=re.S)
    s = re.sub(r"\[\[(?:[^|\]]*\|)?([^\]]*)\]\]", r"\1", s)  # [[target|label]] -> label
    s = re.sub(r"'{2,}", "", s)
    s = re.sub(r"<[^>]+>", "", s)
    return re.sub(r"\n{3,}", "\n\n", s).strip()


# GCIDE (Webster 1913 + WordNet) marks senses with a field label: a real, free silver label that
# covers all six sciences (earth and materials science too) and many non-science fields.
GCIDE_FIELDS = {
    "math": ["Math.", "Geom.", "Alg.", "Arith.", "Trig.", "Calc."],
    "physics": ["Physics", "Astron.", "Opt.", "Elec.", "Acoustics", "Magnetism", "Hydraulics", "Pneumatics"],
    "chemistry": ["Chem.", "Old Chem.", "Org. Chem."],
    "life": ["Zool.", "Bot.", "Anat.", "Biol.", "Physiol.", "Paleon.", "Med.", "Physiol. Chem.", "Embryol."],
    "earth": ["Geol.", "Min.", "Meteor.", "Phys. Geog.", "Geog."],
    "materials": ["Metal.", "Crystallog."],
    "none": ["Law", "Naut.", "Mus.", "Arch.", "Mil.", "Her.", "Gram.", "Eccl.", "Print.", "Theol.", "Fort.",
             "Com.", "Rhet.", "Rom. Antiq.", "Cookery", "Far.", "Fine Arts", "Scots Law", "Baseball", "Carp.",
             "Eng. Law", "Eccl. Hist.", "Astrol.", "Shipbuilding", "Class. Myth.", "Paint.", "Card Playing",
             "Script.", "Golf", "Masonry", "Weaving", "Cricket", "Football", "Gr. Antiq.", "Pros.", "Metaph.",
             "Philos.", "Logic", "Rhet.", "Falconry", "Hunting", "Sports", "Theater", "Poetry", "Manege"],
}


def gcide(path: Path = Path("/usr/share/dictd/gcide.dict.dz"), per_doc: int = 6, seed: int = 0) -> list[dict]:
    """Field-labelled GCIDE senses grouped `per_doc` at a time into glossary-like documents."""
    import random

    label_of = {lab: dom for dom, labs in GCIDE_FIELDS.items() for lab in labs}
    text = gzip.open(path, "rt", encoding="utf-8", errors="replace").read()
    senses: dict[str, list[str]] = {d: [] for d in GCIDE_FIELDS}
    for block in re.split(r"\n\s*\n", text):
        m = re.match(r"\s*(?:\d+\.\s+)?(?:\{[^}]*\}\s*)?\(([A-Z][\w. ]*?)\),?\s+(.*)", block, re.S)
        if not m or m.group(1) not in label_of:
            continue
        sense = re.sub(r"\[(?:1913 Webster|Webster 1913 Suppl\.|WordNet[^\]]*|PJC|RDH|[A-Z]+)\]", "", m.group(2))
        sense = re.sub(r"--\s*[A-Z][\w. ]+\.?$", "", sense.strip())
        sense = re.sub(r"\s+", " ", sense.replace("{", "").replace("}", "")).strip()
        if len(sense) >= 40:
            senses[label_of[m.group(1)]].append(sense)
    rng = random.Random(seed)
    docs = []
    for dom, items in senses.items():
        rng.shuffle(items)
        for i in range(0, len(items) - per_doc + 1, per_doc):
            docs.append({"text": "\n".join(items[i : i + per_doc]), "source": "gcide", "id": f"gcide:{dom}:{i // per_doc}",
                         "domain": dom})
    return docs


def write(name: str, docs: list[dict]) -> None:
    path = HERE / name
    tmp = path.with_suffix(".tmp")
    with gzip.open(tmp, "wt", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps(d, ensure_ascii=False) + "\n")
    tmp.replace(path)
    print(f"{name}: {len(docs)} documents")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gensim-wheel", type=Path, required=True)
    args = ap.parse_args()
    files = gensim_files(args.gensim_wheel)
    write("nonscience.jsonl.gz", fortunes() + devils_dictionary() + lee_news(files) + pydoc_topics() + debian_readmes())
    posts = newsgroups(files)
    write("newsgroups.jsonl.gz", posts)
    # Every third post is in the hand-labelled eval set; the others, with the newsgroup as a silver
    # label (sci.* = science), are the calibration set that picks the classifier's threshold.
    write("newsgroups_silver.jsonl.gz", [dict(d, label=int(d["group"].startswith(("sci.", "alt.sci"))))
                                         for i, d in enumerate(posts) if i % 3])
    write("wiki.jsonl.gz", wiki(files))
    write("gcide.jsonl.gz", gcide())


if __name__ == "__main__":
    main()
