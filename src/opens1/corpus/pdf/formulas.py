"""Display formulas to LaTeX: the glyphs of a standalone maths line become LaTeX
(Unicode maths to commands, smaller raised/lowered glyphs to ^{..}/_{..}, a trailing
"(n)" to \\tag{n}). Inline maths in prose stays Unicode text."""

from __future__ import annotations

import re
import unicodedata

from opens1.corpus.pdf.fragments import Frag, clean_text

# Unicode math -> LaTeX for display formulas (the common subset; others pass through).
LATEX = {
    "α": r"\alpha", "β": r"\beta", "γ": r"\gamma", "δ": r"\delta", "ε": r"\epsilon", "ϵ": r"\epsilon",
    "ζ": r"\zeta", "η": r"\eta", "θ": r"\theta", "ι": r"\iota", "κ": r"\kappa", "λ": r"\lambda",
    "μ": r"\mu", "ν": r"\nu", "ξ": r"\xi", "π": r"\pi", "ρ": r"\rho", "σ": r"\sigma", "τ": r"\tau",
    "υ": r"\upsilon", "φ": r"\phi", "ϕ": r"\phi", "χ": r"\chi", "ψ": r"\psi", "ω": r"\omega",
    "Γ": r"\Gamma", "Δ": r"\Delta", "Θ": r"\Theta", "Λ": r"\Lambda", "Ξ": r"\Xi", "Π": r"\Pi",
    "Σ": r"\Sigma", "Φ": r"\Phi", "Ψ": r"\Psi", "Ω": r"\Omega", "∑": r"\sum", "∏": r"\prod",
    "∫": r"\int", "∮": r"\oint", "√": r"\sqrt", "∞": r"\infty", "∂": r"\partial", "∇": r"\nabla",
    "≤": r"\leq", "≥": r"\geq", "≠": r"\neq", "≈": r"\approx", "≡": r"\equiv", "∼": r"\sim",
    "∝": r"\propto", "±": r"\pm", "∓": r"\mp", "×": r"\times", "÷": r"\div", "·": r"\cdot",
    "⋅": r"\cdot", "∗": r"\ast", "∈": r"\in", "∉": r"\notin", "⊂": r"\subset", "⊆": r"\subseteq",
    "∪": r"\cup", "∩": r"\cap", "∀": r"\forall", "∃": r"\exists", "→": r"\rightarrow",
    "←": r"\leftarrow", "⇒": r"\Rightarrow", "⇔": r"\Leftrightarrow", "↔": r"\leftrightarrow",
    "−": "-", "′": "'", "…": r"\ldots", "⋯": r"\cdots", "∥": r"\|", "⟨": r"\langle", "⟩": r"\rangle",
    "ℓ": r"\ell", "∆": r"\Delta", "Ω": r"\Omega", "µ": r"\mu", "∅": r"\emptyset", "⊗": r"\otimes",
    "⊕": r"\oplus", "∘": r"\circ",
}


def display_latex(frags: list[Frag]) -> str:
    """Glyphs of a display formula -> LaTeX. Smaller glyphs above/below the line's
    baseline become ^{..}/_{..}; a trailing "(n)" becomes \\tag{n}."""
    parts = []
    for f in frags:
        chars = [c for w in f.words for c in w.get("chars", [])]
        base = f.bottom
        out, mode = "", ""
        for c in sorted(chars, key=lambda c: c["x0"]):
            t = c["text"]
            small = c["size"] < 0.85 * f.size
            m = ""
            if small:  # raised above the baseline: superscript; sunk below: subscript
                m = "^" if c["bottom"] < base - 0.2 * f.size else "_" if c["bottom"] > base + 0.1 * f.size else ""
            if m != mode:
                if mode:
                    out += "}"
                if m:
                    out += m + "{"
                mode = m
            if "\U0001d400" <= t <= "\U0001d7ff":  # math italic/bold letters -> plain letters
                t = unicodedata.normalize("NFKC", t)
            cmd = LATEX.get(t, t)
            out += (cmd + " ") if cmd.startswith("\\") and len(cmd) > 2 else cmd
        if mode:
            out += "}"
        parts.append(re.sub(r"\(cid:\d+\)", "", out).strip())  # unmapped glyphs carry no text
    tex = clean_text(" ".join(parts))
    tex = re.sub(r"\s*\((\d{1,3}[a-z]?)\)\s*$", r" \\tag{\1}", tex)
    return re.sub(r"\s+", " ", tex).strip()
