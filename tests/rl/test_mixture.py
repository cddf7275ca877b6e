import pytest

from opens1.envs import get_env
from opens1.rl.mixture import MixtureOfRewards

CFG = {
    "sources": {
        "gsm8k": {"verifier": "number", "options": {"rel_tol": 1e-6}, "weight": 2.0},
        "chem/*": {"verifier": "env"},
        "chem/formula": "formula",
        "logic/*": "env",
    },
    "normalize": "zscore",
    "format_penalty": -0.5,
}


def test_routing_weights_and_format_penalty():
    mor = MixtureOfRewards.from_dict(CFG)
    gsm = get_env("math/gsm8k").case(0)
    assert mor.score("gsm8k", f"Answer: {gsm.reference}", gsm) == 2.0
    assert mor.score("gsm8k", "Answer: -1", gsm) == 0.0
    assert mor.score("gsm8k", "<think>never closed", gsm) == -0.5  # no answer at all
    # Exact source beats the prefix pattern; the prefix routes to the environment's verifier.
    assert mor.rule("chem/formula").verifier == "formula"
    assert mor.rule("chem/ring_count").verifier == "env"
    sudoku = get_env("logic/sudoku_mini").case(3, difficulty="easy")
    assert mor.score("logic/sudoku_mini", f"Answer: {sudoku.reference}", sudoku) == 1.0


def test_unknown_source_is_a_clear_error():
    mor = MixtureOfRewards.from_dict(CFG)
    with pytest.raises(ValueError, match="no reward rule for data source 'bio/translate'"):
        mor.rule("bio/translate")


@pytest.mark.parametrize("bad,msg", [
    ({}, "non-empty 'sources'"),
    ({"sources": {"x": {"verifier": "vibes"}}}, "unknown verifier"),
    ({"sources": {"x": "math"}, "normalize": "softmax"}, "normalize"),
    ({"sources": {"x": {"verifier": "math", "weight": -1}}}, "weight"),
    ({"sources": {"x": "math"}, "temperature": 1}, "unknown mixture config keys"),
])
def test_bad_configs(bad, msg):
    with pytest.raises(ValueError, match=msg):
        MixtureOfRewards.from_dict(bad)


def test_per_source_normalisation():
    mor = MixtureOfRewards.from_dict(CFG)
    out = mor.normalize_batch(["a", "a", "b", "b", "b"], [0.0, 2.0, 1.0, 1.0, 1.0])
    assert out[:2] == [-1.0, 1.0] and out[2:] == [0.0, 0.0, 0.0]
    mm = MixtureOfRewards.from_dict({**CFG, "normalize": "minmax"})
    assert mm.normalize_batch(["a", "a", "a"], [1.0, 3.0, 2.0]) == [0.0, 1.0, 0.5]
