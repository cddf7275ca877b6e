import math

import pytest

from opens1.rewards.units import parse_unit


@pytest.mark.parametrize("a,b,ratio", [
    ("kJ/mol", "J/mol", 1e3), ("$\\mathrm{kJ} \\mathrm{mol}^{-1}$", "J mol^-1", 1e3),
    (" $\\mathrm{~J} \\mathrm{~mol}^{-1} \\mathrm{~K}^{-1}$", "J/(mol K)", 1.0), ("atm", "kPa", 101.325),
    ("$\\mathrm{~m} \\cdot \\mathrm{s}^{-1}$", "km/h", 3.6), ("nm", "Å", 10.0), ("$\\mu \\mathrm{C}$", "nC", 1e3),
    ("ft-lb", "J", 1.3558179483), ("10^6 m", "km", 1e3), ("kcal/mol", "kJ/mol", 4.184), ("$m/s^2$", "m s^-2", 1.0),
])
def test_conversions(a, b, ratio):
    ua, ub = parse_unit(a), parse_unit(b)
    assert ua is not None and ub is not None
    assert ua.dim == ub.dim
    assert math.isclose(ua.factor / ub.factor, ratio, rel_tol=1e-6)


def test_dimension_mismatch_and_garbage():
    assert parse_unit("kJ").dim != parse_unit("kJ/mol").dim
    assert parse_unit("dollars") is None
    assert parse_unit("eggs per day") is None
    assert parse_unit("").dimensionless


def test_spelled_out_units_and_degrees():
    assert math.isclose(parse_unit("inches").factor, 0.0254)
    assert parse_unit("hours").factor == 3600.0 and parse_unit("years").dim == parse_unit("s").dim
    assert parse_unit("$^{\\circ} \\mathrm{C}$").dim == parse_unit("K").dim
    assert parse_unit(" $^{\\circ}$").dimensionless


def test_prose_after_the_unit_is_ignored():
    from opens1.rewards import verify

    assert verify("number", "Answer: 3.2 kJ/mol in total", "3200 J/mol").score == 1.0
    assert verify("number", "Answer: 3.2 kJ mol^-1 at 298 K", "3200 J/mol").score == 1.0
    assert verify("number", "Answer: 2 hours", "7200 s").score == 1.0
    assert verify("number", "Answer: 2 hours", "7200 m").score == 0.0


def test_absurd_exponents_are_not_units_and_never_crash():
    # a tiny model's answer "3 km^99999" made float ** overflow inside the verifier mid-RL
    from opens1.rewards import verify
    from opens1.rewards.units import parse_unit

    assert parse_unit("km^99999") is None and parse_unit("10^400 m") is None
    assert parse_unit("m^2") is not None and parse_unit("10^6 m") is not None
    assert verify("number", "Answer: 3 km^99999", 3.0).score in (0.0, 1.0)
