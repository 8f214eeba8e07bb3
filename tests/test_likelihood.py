"""Known answers for the likelihood layer's public functions (chronoflow.inference.likelihood)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from chronoflow.errors import ChronoflowError, DomainError
from chronoflow.flows.artifact import load_model
from chronoflow.inference.likelihood import (
    DEFAULT_BACKGROUND,
    background_logpdf,
    membership_probabilities,
    mixture_terms,
    star_flags,
)


def test_mixture_terms_known_answer():
    """L = w p_flow + (1 - w) p_bg with w = p_member (1 - f_out), by hand: p_flow = 2, p_bg = 0.25,
    p_member = 0.8, f_out = 0.05 -> w = 0.76, L = 1.52 + 0.06 = 1.58."""
    log_member, log_total = mixture_terms(np.log(2.0), 0.8, 0.05, np.log(0.25))
    assert math.exp(log_member) == pytest.approx(1.52, rel=1e-12)
    assert math.exp(log_total) == pytest.approx(1.58, rel=1e-12)
    # a star of zero membership is all background; a certain member with f_out = 0 all flow
    assert math.exp(mixture_terms(np.log(2.0), 0.0, 0.05, np.log(0.25))[1]) == pytest.approx(0.25)
    assert math.exp(mixture_terms(np.log(2.0), 1.0, 0.0, np.log(0.25))[1]) == pytest.approx(2.0)


def test_background_is_uniform_in_log_period_on_its_range():
    lo, hi = DEFAULT_BACKGROUND
    v = background_logpdf(DEFAULT_BACKGROUND, np.array([lo - 0.1, lo, 0.0, hi, hi + 0.1]))
    assert np.allclose(v[1:4], -math.log(hi - lo)) and np.isneginf(v[[0, 4]]).all()
    assert np.array_equal(background_logpdf(lambda y: -y**2, np.array([1.0, 2.0])), [-1.0, -4.0])
    with pytest.raises(DomainError, match="lo < hi"):
        background_logpdf((1.0, 1.0), np.array([0.0]))


def test_membership_probabilities_values_and_refusals():
    df = pd.DataFrame({"p": [0.0, 0.5, 1.0]})
    assert np.array_equal(membership_probabilities(df, "p"), [0.0, 0.5, 1.0])
    assert np.array_equal(membership_probabilities(df, None), [1.0, 1.0, 1.0])
    with pytest.raises(ChronoflowError, match="missing membership column 'q'"):
        membership_probabilities(df, "q")
    bad = pd.DataFrame({"p": [0.5, 1.2, np.nan]}, index=[10, 11, 12])
    with pytest.raises(ChronoflowError, match=r"2 used stars .*\(first at row 11: 1.2\)"):
        membership_probabilities(bad, "p")


def test_star_flags_on_constructed_rows():
    """One row per rule, against the shipped model's domain (0.031-172 d, -0.001-4.28 mag, colour
    errors 0.0142-0.447 mag): each row gets exactly the flags its values call for."""
    model = load_model()
    df = pd.DataFrame({
        "Prot": [8.0, np.nan, -1.0, 500.0, 8.0, 8.0, 8.0, 8.0],
        "BPRP_0": [1.2, 1.2, 1.2, 1.2, 4.5, 9.0, 1.2, 1.2],
        "e_BPRP_0": [0.02, 0.02, 0.02, 0.02, 0.02, 0.02, 0.9, 0.005],
    }, index=list("abcdefgh"))  # fmt: skip
    flags = star_flags(df, model)
    assert flags.index.equals(df.index)
    assert flags.tolist() == ["", "missing_value", "nonpositive", "period_outside_domain", "colour_outside_domain",
                              "colour_outside_domain;colour_impossible", "error_above_domain", "error_below_domain"]  # fmt: skip
