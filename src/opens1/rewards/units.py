"""A small physical-unit table and parser for numeric answers with units.

Why not pint: the verifier must be fast (10k answers/s scale), install-free and
tolerant of how models and textbooks *write* units (`\\mathrm{~kJ} \\mathrm{~mol}^{-1}`,
`J/(mol K)`, `m·s^-1`, `ft-lb`, `10^6 m`). A unit is a (factor to SI, dimension)
pair; dimensions are exponent tuples over (m, kg, s, A, K, mol, cd). Parsing is a
linear tokenizer over a short string, so a hostile unit string costs microseconds.

Limits, on purpose: affine units (°C, °F) are treated as their kelvin-sized degree
with no offset, so "25 °C" does not equal "298 K"; angles and % are dimensionless.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

Dim = tuple[int, int, int, int, int, int, int]  # exponents of m, kg, s, A, K, mol, cd
_ZERO: Dim = (0, 0, 0, 0, 0, 0, 0)


def _d(m=0, kg=0, s=0, A=0, K=0, mol=0, cd=0) -> Dim:
    return (m, kg, s, A, K, mol, cd)


@dataclass(frozen=True)
class Unit:
    """`factor` converts a value in this unit to SI; `dim` is its dimension."""

    factor: float
    dim: Dim

    def __mul__(self, other: "Unit") -> "Unit":
        return Unit(self.factor * other.factor, tuple(a + b for a, b in zip(self.dim, other.dim)))

    def __pow__(self, n: int) -> "Unit":
        return Unit(self.factor ** n, tuple(a * n for a in self.dim))

    @property
    def dimensionless(self) -> bool:
        return self.dim == _ZERO


DIMENSIONLESS = Unit(1.0, _ZERO)

_J = Unit(1.0, _d(m=2, kg=1, s=-2))
# Base symbols that take SI prefixes. "g" is the prefixable mass unit (kg = k + g).
_PREFIXABLE: dict[str, Unit] = {
    "m": Unit(1.0, _d(m=1)), "g": Unit(1e-3, _d(kg=1)), "s": Unit(1.0, _d(s=1)),
    "A": Unit(1.0, _d(A=1)), "K": Unit(1.0, _d(K=1)), "mol": Unit(1.0, _d(mol=1)),
    "cd": Unit(1.0, _d(cd=1)), "N": Unit(1.0, _d(m=1, kg=1, s=-2)), "J": _J,
    "W": Unit(1.0, _d(m=2, kg=1, s=-3)), "Pa": Unit(1.0, _d(m=-1, kg=1, s=-2)),
    "C": Unit(1.0, _d(s=1, A=1)), "V": Unit(1.0, _d(m=2, kg=1, s=-3, A=-1)),
    "Ω": Unit(1.0, _d(m=2, kg=1, s=-3, A=-2)), "ohm": Unit(1.0, _d(m=2, kg=1, s=-3, A=-2)),
    "F": Unit(1.0, _d(m=-2, kg=-1, s=4, A=2)), "Hz": Unit(1.0, _d(s=-1)),
    "T": Unit(1.0, _d(kg=1, s=-2, A=-1)), "Wb": Unit(1.0, _d(m=2, kg=1, s=-2, A=-1)),
    "H": Unit(1.0, _d(m=2, kg=1, s=-2, A=-2)), "L": Unit(1e-3, _d(m=3)),
    "l": Unit(1e-3, _d(m=3)), "eV": Unit(1.602176634e-19, _J.dim),
    "cal": Unit(4.184, _J.dim), "bar": Unit(1e5, _d(m=-1, kg=1, s=-2)),
    "M": Unit(1e3, _d(m=-3, mol=1)),  # molar, mol/L
    "Da": Unit(1.66053906660e-27, _d(kg=1)), "u": Unit(1.66053906660e-27, _d(kg=1)),
    "Bq": Unit(1.0, _d(s=-1)), "Gy": Unit(1.0, _d(m=2, s=-2)), "S": Unit(1.0, _d(m=-2, kg=-1, s=3, A=2)),
}
# Symbols matched exactly, before prefix splitting ("min" is not milli-inch).
_EXACT: dict[str, Unit] = {
    "min": Unit(60.0, _d(s=1)), "h": Unit(3600.0, _d(s=1)), "hr": Unit(3600.0, _d(s=1)),
    "day": Unit(86400.0, _d(s=1)), "d": Unit(86400.0, _d(s=1)), "yr": Unit(3.15576e7, _d(s=1)),
    "year": Unit(3.15576e7, _d(s=1)), "Å": Unit(1e-10, _d(m=1)), "angstrom": Unit(1e-10, _d(m=1)),
    "atm": Unit(101325.0, _d(m=-1, kg=1, s=-2)), "Torr": Unit(133.322368, _d(m=-1, kg=1, s=-2)),
    "torr": Unit(133.322368, _d(m=-1, kg=1, s=-2)), "mmHg": Unit(133.322387, _d(m=-1, kg=1, s=-2)),
    "psi": Unit(6894.757, _d(m=-1, kg=1, s=-2)), "ft": Unit(0.3048, _d(m=1)),
"mi": Unit(1609.344, _d(m=1)), "lb": Unit(0.45359237, _d(kg=1)),
    "lbf": Unit(4.4482216, _d(m=1, kg=1, s=-2)), "amu": Unit(1.66053906660e-27, _d(kg=1)),
    "D": Unit(3.33564e-30, _d(m=1, s=1, A=1)),  # debye
    "Eh": Unit(4.3597447222071e-18, _J.dim), "hartree": Unit(4.3597447222071e-18, _J.dim),
    "au": Unit(4.3597447222071e-18, _J.dim), "Ha": Unit(4.3597447222071e-18, _J.dim),
    "%": Unit(0.01, _ZERO), "rad": DIMENSIONLESS, "deg": Unit(math.pi / 180, _ZERO),
    "°": Unit(math.pi / 180, _ZERO), "°C": Unit(1.0, _d(K=1)), "°F": Unit(5 / 9, _d(K=1)),
    "degC": Unit(1.0, _d(K=1)), "kg": Unit(1.0, _d(kg=1)), "cc": Unit(1e-6, _d(m=3)),
    "mph": Unit(0.44704, _d(m=1, s=-1)), "gal": Unit(3.785411784e-3, _d(m=3)),
    "kWh": Unit(3.6e6, _J.dim), "bohr": Unit(5.29177210903e-11, _d(m=1)),
}
# Spelled-out units (matched case-insensitively, singular or plural).
_WORDS: dict[str, Unit] = {
    "second": Unit(1.0, _d(s=1)), "sec": Unit(1.0, _d(s=1)), "minute": Unit(60.0, _d(s=1)),
    "hour": Unit(3600.0, _d(s=1)), "day": Unit(86400.0, _d(s=1)), "week": Unit(604800.0, _d(s=1)),
    "month": Unit(2.629746e6, _d(s=1)), "year": Unit(3.15576e7, _d(s=1)),
    "meter": Unit(1.0, _d(m=1)), "metre": Unit(1.0, _d(m=1)), "gram": Unit(1e-3, _d(kg=1)),
    "slug": Unit(14.5939029, _d(kg=1)), "inch": Unit(0.0254, _d(m=1)), "au": Unit(1.495978707e11, _d(m=1)),
    "electron": DIMENSIONLESS, "photon": DIMENSIONLESS, "particle": DIMENSIONLESS, "atom": DIMENSIONLESS,
    "molecule": DIMENSIONLESS, "percent": Unit(0.01, _ZERO), "degree": Unit(math.pi / 180, _ZERO),
}
_PREFIXES = {
    "Y": 1e24, "Z": 1e21, "E": 1e18, "P": 1e15, "T": 1e12, "G": 1e9, "M": 1e6, "k": 1e3,
    "h": 1e2, "da": 1e1, "d": 1e-1, "c": 1e-2, "m": 1e-3, "µ": 1e-6, "μ": 1e-6, "u": 1e-6,
    "n": 1e-9, "p": 1e-12, "f": 1e-15, "a": 1e-18,
}

# LaTeX -> plain: `\mathrm{~kJ} \mathrm{~mol}^{-1}` -> ` kJ  mol^-1`.
_LATEX_SUBS = [
    (re.compile(r"\\(?:mathrm|text|textrm|operatorname|mathit|rm)\s*"), ""),
    (re.compile(r"\\(?:cdot|times|bullet)"), "*"),
    (re.compile(r"\\(?:mu|micro)\b"), "µ"),
    (re.compile(r"\\Omega\b"), "Ω"),
    (re.compile(r"\\(?:AA|mathring\{A\}|angstrom)"), "Å"),
    (re.compile(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ|\\degree"), "°"),
    (re.compile(r"\\%"), "%"),
    (re.compile(r"\\[,;:! ]|~"), " "),
    (re.compile(r"\\(?:left|right)"), ""),
]
_TOKEN_RE = re.compile(r"(°[CF]?|%|[A-Za-zµμΩÅ]+)\s*(?:\^\s*\(?\s*([-+−]?\d+)\s*\)?|([-−]?\d+))?")
_POW10_RE = re.compile(r"^\s*10\s*\^\s*\{?\s*([-+−]?\d+)\s*\}?")


def clean_latex(text: str) -> str:
    """Strip math-mode markup that wraps units and numbers."""
    s = text.replace("$", " ")
    for pat, rep in _LATEX_SUBS:
        s = pat.sub(rep, s)
    s = s.replace("{", "").replace("}", "").replace("−", "-")
    s = re.sub(r"°\s+(?=[CF]\b)", "°", s)  # "^{\circ} \mathrm{C}" -> "°C"
    return re.sub(r"([µμ])\s+(?=[A-Za-z])", r"\1", s).strip()  # "\mu \mathrm{C}" -> "µC"


def lookup(symbol: str) -> Unit | None:
    """One unit symbol, exact first, then SI prefix + prefixable base."""
    if symbol in _EXACT:
        return _EXACT[symbol]
    word = symbol.lower()
    for w in (word, word[:-1] if word.endswith("s") else word, word[:-2] if word.endswith("es") else word):
        if w in _WORDS and (len(symbol) > 2 or symbol == "AU"):
            return _WORDS[w]
    if symbol in _PREFIXABLE:
        return _PREFIXABLE[symbol]
    for plen in (2, 1):
        pre, base = symbol[:plen], symbol[plen:]
        if pre in _PREFIXES and base in _PREFIXABLE:
            return Unit(_PREFIXES[pre] * _PREFIXABLE[base].factor, _PREFIXABLE[base].dim)
    return None


# Bounds on exponents inside a unit expression: beyond them the text is not a unit
# (and the float power would overflow on answers such as "3 km^99999").
MAX_UNIT_EXP = 12
MAX_POW10 = 100


def _parse_product(text: str, sign: int) -> Unit | None:
    """`kJ mol^-1`, `N*m`, `ft-lb` -> Unit; None if any piece is unknown."""
    unit = DIMENSIONLESS
    text = text.replace("(", " ").replace(")", " ")
    m = _POW10_RE.match(text)
    if m:  # a scale written into the unit, e.g. SciBench's "10^6 m"
        p10 = int(m.group(1).replace("−", "-"))
        if abs(p10) > MAX_POW10:
            return None  # not a physical scale (and 10.0 ** 400 overflows)
        unit = Unit(10.0 ** p10, _ZERO)
        text = text[m.end():]
    if "ft-lb" in text:  # the foot-pound is energy, not a product of length and mass
        text = text.replace("ft-lb", " ")
        unit = unit * Unit(1.3558179483, _J.dim)
    pos = 0
    for m in _TOKEN_RE.finditer(text):
        gap = text[pos:m.start()]
        if gap.strip(" *·.-"):
            return None  # something that is not a unit or a separator
        sym = m.group(1)
        exp = m.group(2) or m.group(3) or "1"
        u = lookup(sym)
        if u is None:
            return None
        n = int(exp.replace("−", "-"))
        if abs(n) > MAX_UNIT_EXP:
            return None  # "m^99999" is model noise, not a unit (its factor would overflow)
        unit = unit * (u ** (sign * n))
        pos = m.end()
    if text[pos:].strip(" *·.-"):
        return None
    return unit


def parse_unit(text: str) -> Unit | None:
    """Parse a unit expression (LaTeX or plain); None if it is not one. '' -> dimensionless."""
    s = clean_latex(text)
    if len(s) > 80:
        return None
    if not s:
        return DIMENSIONLESS
    parts = s.split("/")
    num = _parse_product(parts[0], 1) if parts[0].strip() else DIMENSIONLESS
    if num is None:
        return None
    for den in parts[1:]:
        u = _parse_product(den, -1)
        if u is None:
            return None
        num = num * u
    return num
