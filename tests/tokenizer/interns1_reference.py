"""A reference for transformers' InternS1Tokenizer, written for the tests from its behaviour.

transformers 5.23 (the installed version) does not ship `models/interns1`, and the hub's
remote code needs a download, so the real class cannot be instantiated here. This module
re-states the behaviour of `InternS1Tokenizer` (huggingface/transformers
src/transformers/models/interns1/tokenization_interns1.py, the hub's tokenization_interns1.py)
step by step and in the same shape as that class: NFC (its Qwen2 base's
`prepare_for_tokenization`), a split on added tokens with AddedToken lstrip/rstrip/single_word,
an auto-detection pass (SMILES then FASTA `re_split`, with its unbounded regex and no length
limit for RDKit), a tokenize pass producing token strings with a stack of domain models, a
slow byte-level BPE (GPT-2's `bpe` over Qwen2's pre-tokenizer regex, from vocab.json and
merges.txt), and `convert_tokens_to_ids` with its own stack. The domain tags' ids are
computed with the class's `new_sp_token_offset` bookkeeping.

It shares nothing with opens1.tokenizer: no code, no tables, no fast library (the BPE is
pure Python), so the tests compare two independent implementations of one specification.
It is slow and meant for test corpora only.
"""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import regex
import sentencepiece as spm

PRETOKENIZE = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)


def bytes_to_unicode() -> dict[int, str]:
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


class SmilesModule:
    min_length, truncation = 10, False
    wrappers = ("<SMILES_AUTO_DETECT>", "</SMILES_AUTO_DETECT>")

    def __init__(self, rdkit: bool = True):
        two = (
            "Ac Ag Al Am Ar As At Au Ba Be Bh Bi Bk Br Ca Cd Ce Cf Cl Cm Cn Co Cr Cs Cu Db Ds Dy Er Es Eu Fe "
            "Fl Fm Fr Ga Gd Ge He Hf Hg Ho Hs In Ir Kr La Li Lr Lu Lv Mc Md Mg Mn Mo Mt Na Nb Nd Ne Nh Ni No "
            "Np Og Os Pa Pb Pd Pm Po Pr Pt Pu Ra Rb Re Rf Rg Rh Rn Ru Sb Sc Se Sg Si Sm Sn Sr Ta Tb Tc Te Th "
            "Ti Tl Tm Ts Xe Yb Zn Zr"
        ).split()
        one = ["B", "C", "F", "H", "I", "K", "N", "O", "P", "S", "U", "V", "W", "Y", "b", "c", "n", "o", "p", "s"]
        elements = "|".join(sorted(two + one, key=lambda x: (-len(x), x)))
        unit = r"(?:" + r"\[[^\]]+\]" + "|" + elements + "|" + r"[\(\)\.=\-#@\d\$\%\*:\+\-\/\\]" + ")"
        self.regex = regex.compile(rf"((?![:.=])(?>{unit}){{10,}}(?<![:.=]))")
        self.rdkit = rdkit

    def legit(self, s: str) -> bool:
        if sum(1 for ch in s if ch.encode("utf-8").isalpha()) < 5:
            return False
        if self.rdkit:
            from rdkit import Chem, RDLogger

            RDLogger.DisableLog("rdApp.*")
            return Chem.MolFromSmiles(s) is not None
        return rule_check(s)


class FastaModule:
    min_length, truncation = 27, True
    wrappers = ("<FASTA_AUTO_DETECT>", "</FASTA_AUTO_DETECT>")
    regex = regex.compile(r"([A-Z]{27,})")

    def legit(self, s: str) -> bool:
        return True


def re_split(module, texts: list[str]) -> list[str]:
    out = []
    for text in texts:
        pos = 0
        for m in module.regex.finditer(text):
            cand = m.group(1)
            if len(cand) < module.min_length:
                continue
            a, b = m.span(1)
            if not module.legit(cand):
                continue
            if not module.truncation:
                if a > 0 and text[a - 1].encode("utf-8").isalpha():
                    continue
                if b < len(text) and text[b].encode("utf-8").isalpha():
                    continue
            if a > pos:
                out.append(text[pos:a])
            out += [module.wrappers[0], cand, module.wrappers[1]]
            pos = b
        if pos < len(text):
            out.append(text[pos:])
    return out


def rule_check(text: str) -> bool:
    """The rule-based legitimacy check used when RDKit is missing (check_rings_and_brackets)."""
    bonds = ["-", "=", "#", ":", "/", "\\", ".", "$"]
    organic = ["B", "C", "N", "O", "P", "S", "F", "Cl", "Br", "I"]
    aromatic = ["b", "c", "n", "o", "s", "p"]
    allowed = organic + aromatic + bonds + ["[", "]", "(", ")", ";"]
    elements = ["H", "B", "C", "N", "O", "F", "P", "S", "K", "V", "Y", "I", "W", "U"]
    from rdkit import Chem

    pt = Chem.GetPeriodicTable()
    elements += [pt.GetElementSymbol(z) for z in range(1, 119) if len(pt.GetElementSymbol(z)) == 2]
    ban1, ban2 = regex.compile(r"(?:[A-GI-Z]|[a-z]){3,}"), regex.compile(r"\d{4,}")
    rings: dict = {}
    lsq = rsq = lpt = rpt = 0
    all_lower, digits, pos = True, 0, 0
    while pos < len(text):
        step, c = 0, text[pos]
        if 65 <= ord(c) <= 90:
            all_lower = False
        if (pos == len(text) - 1 or pos == 0) and c in bonds:
            return False
        if pos > 0 and text[pos - 1] in bonds and text[pos] in bonds:
            return False
        if c == "[":
            step = 1
            lsq += 1
            if lsq > rsq + 1 or pos == len(text) - 1 or "]" not in text[pos + 1 :]:
                return False
            span = text[pos + 1 : text.find("]")]
            if ban1.search(span) or ban2.search(span) or len(regex.findall(r"\d+", span)) > 2:
                return False
        if c == "]":
            step = 1
            rsq += 1
            if rsq > lsq:
                return False
        if c == "(":
            step = 1
            lpt += 1
        if c == ")":
            step = 1
            rpt += 1
            if rpt > lpt:
                return False
        if lsq == rsq:
            if c.isdigit():
                digits += 1
                step = 1
                if pos == 0 or (pos == 1 and text[pos - 1] != "%") or (pos > 1 and text[pos - 1] != "%" and text[pos - 2] != "%"):
                    rings[c] = "closed" if rings.get(c) == "unclosed" else "unclosed"
            if c == "%":
                if pos >= len(text) - 2 or not text[pos + 1].isdigit() or not text[pos + 2].isdigit():
                    return False
                step = 3
                digits += 1
                num = text[pos + 1 : pos + 3]
                rings[num] = "closed" if rings.get(num) == "unclosed" else "unclosed"
            if step == 0:
                if pos < len(text) - 1 and text[pos : pos + 2] in allowed:
                    step = 2
                elif c in allowed:
                    step = 1
                else:
                    return False
        if step == 0:
            step = 1
        pos += step
    if lsq != rsq or any(v == "unclosed" for v in rings.values()):
        return False
    if all_lower and digits < 2:
        return False
    for part in regex.findall(r"\[([^\[\]]*)\]", text):
        if "(" in part or ")" in part or len(part) == 0:
            return False
        if part[0] in elements or part[0] in aromatic or part[:2] in elements:
            return True
    return True


class ReferenceInternS1:
    EXTRA = [  # name, file, begin tags, end tags, auto begin, auto end
        ("tokenizer_SMILES", "tokenizer_SMILES.model", ["<SMILES>", "<SELFIES>"], ["</SMILES>", "</SELFIES>"],
         ["<SMILES_AUTO_DETECT>"], ["</SMILES_AUTO_DETECT>"]),
        ("tokenizer_IUPAC", "tokenizer_IUPAC.model", ["<IUPAC>"], ["</IUPAC>"], [], []),
        ("tokenizer_FASTA", "tokenizer_FASTA.model", ["<FASTA>"], ["</FASTA>"],
         ["<FASTA_AUTO_DETECT>"], ["</FASTA_AUTO_DETECT>"]),
    ]
    PROTECT_BEGIN, PROTECT_END = ["<MOLFORMULA>"], ["</MOLFORMULA>"]

    def __init__(self, directory, rdkit: bool = True):
        d = Path(directory)
        self.encoder = json.loads((d / "vocab.json").read_text(encoding="utf-8"))
        lines = [ln for ln in (d / "merges.txt").read_text(encoding="utf-8").splitlines() if ln and not ln.startswith("#version")]
        self.bpe_ranks = {tuple(ln.split(" ")): i for i, ln in enumerate(lines)}
        self.byte_encoder = bytes_to_unicode()
        self.pat = regex.compile(PRETOKENIZE)
        self.cache: dict[str, str] = {}
        # added tokens of the config: content -> id, content -> (lstrip, rstrip, single_word)
        self.added: dict[str, int] = {}
        self.flags: dict[str, tuple] = {}
        cfg = d / "tokenizer_config.json"
        if cfg.is_file():
            for k, v in json.loads(cfg.read_text(encoding="utf-8")).get("added_tokens_decoder", {}).items():
                self.added[v["content"]] = int(k)
                self.flags[v["content"]] = (v.get("lstrip", False), v.get("rstrip", False), v.get("single_word", False))
        # the class's bookkeeping of extra tokenizers and their special tokens
        self.models: dict[str, spm.SentencePieceProcessor] = {}
        self.start_map: dict[str, str] = {}
        self.end_map: dict[str, str] = {}
        self.auto_begin: list[str] = []
        self.auto_end: list[str] = []
        self.new_sp_token_offset = [26]
        for name, fname, begins, ends, abegins, aends in self.EXTRA:
            sp = spm.SentencePieceProcessor()
            sp.Load(str(d / fname))
            self.models[name] = sp
            for b, e in zip(begins + abegins, ends + aends):
                self.start_map[b], self.end_map[e] = name, name
            offset = sum(self.new_sp_token_offset[1:]) + len(self.auto_begin) + len(self.auto_end)
            new = 0
            for sk, ek in zip(list(self.start_map)[offset // 2 :], list(self.end_map)[offset // 2 :]):
                if sk not in abegins:
                    self.added[sk] = self.vocab_size + new
                    self.flags[sk] = (False, False, False)
                    new += 1
                if ek not in aends:
                    self.added[ek] = self.vocab_size + new
                    self.flags[ek] = (False, False, False)
                    new += 1
            self.new_sp_token_offset.append(new)
            self.auto_begin += abegins
            self.auto_end += aends
        self.trie = sorted(set(self.added) | set(self.auto_begin + self.auto_end + self.PROTECT_BEGIN + self.PROTECT_END),
                           key=len, reverse=True)
        self.smiles, self.fasta = SmilesModule(rdkit), FastaModule()

    @property
    def vocab_size(self) -> int:
        return len(self.encoder) + sum(sp.get_piece_size() for sp in self.models.values()) + sum(self.new_sp_token_offset)

    def model_offset(self, name: str) -> int:
        offset = 0
        for index, key in enumerate(["tokenizer_original"] + list(self.models)):
            if key == name:
                return offset
            size = len(self.encoder) if key == "tokenizer_original" else self.models[key].get_piece_size()
            offset += size + self.new_sp_token_offset[index]
        raise KeyError(name)

    # ---------------------------------------------------------------- BPE (GPT-2's algorithm)

    def bpe(self, token: str) -> str:
        if token in self.cache:
            return self.cache[token]
        word = tuple(token)
        while len(word) > 1:
            pairs = {(word[i], word[i + 1]) for i in range(len(word) - 1)}
            best = min(pairs, key=lambda p: self.bpe_ranks.get(p, float("inf")))
            if best not in self.bpe_ranks:
                break
            first, second = best
            new, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                    new.append(first + second)
                    i += 2
                else:
                    new.append(word[i])
                    i += 1
            word = tuple(new)
        self.cache[token] = " ".join(word)
        return self.cache[token]

    def bpe_tokenize(self, text: str) -> list[str]:
        text = text.replace("\u2581", " ")
        out = []
        for piece in self.pat.findall(text):
            out.extend(self.bpe("".join(self.byte_encoder[b] for b in piece.encode("utf-8"))).split(" "))
        return out

    # ---------------------------------------------------------------- tokenize / convert

    def split(self, text: str) -> list[str]:
        out, pos, start = [], 0, 0
        while pos < len(text):
            hit = next((t for t in self.trie if text.startswith(t, pos)), None)
            if hit is None:
                pos += 1
                continue
            if pos > start:
                out.append(text[start:pos])
            out.append(hit)
            pos += len(hit)
            start = pos
        if start < len(text):
            out.append(text[start:])
        return out

    def tokenize(self, text: str, split_special_tokens: bool = False) -> list[str]:
        text = unicodedata.normalize("NFC", text)
        if split_special_tokens:
            no_split, tokens = set(), [text]
        else:
            no_split, tokens = set(self.added), self.split(text)
        for i, token in enumerate(tokens):
            if token in no_split:
                lstrip, rstrip, single = self.flags.get(token, (False, False, False))
                left = tokens[i - 1] if i > 0 else None
                right = tokens[i + 1] if i < len(tokens) - 1 else None
                if rstrip and right:
                    tokens[i + 1] = right.lstrip()
                if lstrip and left:
                    tokens[i - 1] = left.rstrip()
                if single and left and left[-1] != " ":
                    tokens[i - 1] += token
                    tokens[i] = ""
                elif single and right and right[0] != " ":
                    tokens[i + 1] = token + tokens[i + 1]
                    tokens[i] = ""
        protect = self.PROTECT_BEGIN + self.PROTECT_END
        new, flag = [], 0
        for token in tokens:
            if not token:
                continue
            if token in no_split or token in protect:
                new.append(token)
                if token in self.start_map or token in self.PROTECT_BEGIN:
                    flag += 1
                elif token in self.end_map or token in self.PROTECT_END:
                    flag = max(0, flag - 1)
            elif flag:
                new.append(token)
            else:
                new.extend(re_split(self.fasta, re_split(self.smiles, [token])))
        out, stack = [], []
        for token in new:
            if not token:
                continue
            if token in protect:
                out.extend(self.bpe_tokenize(token))
            elif token in no_split:
                out.append(token)
                if token in self.start_map:
                    stack.append(self.start_map[token])
                elif token in self.end_map and stack:
                    stack.pop()
            elif token in self.auto_begin:
                out.append(token)
                stack.append(self.start_map[token])
            elif token in self.auto_end:
                out.append(token)
                if stack:
                    stack.pop()
            elif stack:
                sp = self.models[stack[-1]]
                for piece, pid in zip(sp.encode(token, out_type=str), sp.encode(token, out_type=int)):
                    out.extend(self.bpe_tokenize(piece) if pid == 0 else [piece])
            else:
                out.extend(self.bpe_tokenize(token))
        return out

    def convert_tokens_to_ids(self, tokens: list[str]) -> list[int]:
        ids, stack = [], []
        for token in tokens:
            if token not in self.auto_begin + self.auto_end:
                if token in self.added:
                    ids.append(self.added[token])
                elif stack:
                    sp = self.models[stack[-1]]
                    j = sp.piece_to_id(token)
                    ids.append(self.encoder.get(token) if j == sp.unk_id() else j + self.model_offset(stack[-1]))
                else:
                    ids.append(self.encoder.get(token))
            if token in self.start_map:
                stack.append(self.start_map[token])
            elif token in self.end_map and stack:
                stack.pop()
        return ids

    def encode(self, text: str, split_special_tokens: bool = False) -> list[int]:
        return self.convert_tokens_to_ids(self.tokenize(text, split_special_tokens))
