"""Per-star flags for what rotation cannot tell about a single star's age.

A rotation period dates a star only where stars spin down along one sequence: cool enough to
brake (redder than the Kraft break), partly convective (bluer than the fully-convective
boundary), not yet past the onset of weakened magnetic braking, on the slow sequence rather
than far below it, and single. :func:`rotation_flags` names the stars that break one of these
conditions. The flags never drop a row and never change an age: they are names attached to rows,
beside the flags of :func:`~chronoflow.inference.likelihood.star_flags` (which say whether a row
can be aged at all). The page ``docs/flags.md`` lists every flag and what to do about it.

Colours are Gaia (BP-RP)0 [mag]; effective temperatures come from the colour through the mean
dwarf sequence of Pecaut & Mamajek (2013, ApJS 208, 9, Table 5), as updated online by E. Mamajek
("A Modern Mean Dwarf Stellar Color and Effective Temperature Sequence", version 2024.05.15,
``EEM_dwarf_UBVIJHK_colors_Teff.txt``; its Bp-Rp column is Gaia DR2 photometry, which differs
from DR3 by about 0.01-0.02 mag).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import ChronoflowError
from ..flows.flow import RotationModel, make_context

__all__ = [
    "FLAG_HELP",
    "FULLY_CONVECTIVE_BPRP0",
    "HOT_STAR_BPRP0",
    "KRAFT_BREAK_TEFF_K",
    "OFF_SEQUENCE_AGE_MYR",
    "OFF_SEQUENCE_QUANTILE",
    "ROTATION_FLAGS",
    "RO_CRIT_SOLAR",
    "RUWE_BINARY",
    "SUN_PROT_D",
    "SUN_TEFF_K",
    "TAU_C_TEFF_RANGE_K",
    "binarity_columns",
    "rotation_flags",
]

#: The names of the rotation flags, in the order :func:`rotation_flags` returns them.
ROTATION_FLAGS: tuple[str, ...] = ("off_sequence", "hot_star", "fully_convective", "weakened_braking", "likely_binary")

# The mean dwarf sequence (spectral type, Teff [K], Gaia Bp-Rp [mag]), A0V to M7V, copied from
# E. Mamajek's table, version 2024.05.15 (Pecaut & Mamajek 2013, Table 5, updated online). Teff
# falls and Bp-Rp rises monotonically along these rows (later rows turn back in Bp-Rp).
_DWARF_SEQUENCE: tuple[tuple[str, float, float], ...] = (
    ("A0V", 9700, -0.037), ("A1V", 9300, 0.005), ("A2V", 8840, 0.068), ("A3V", 8600, 0.110),
    ("A4V", 8250, 0.166), ("A5V", 8100, 0.194), ("A6V", 7910, 0.222), ("A7V", 7760, 0.263),
    ("A8V", 7590, 0.320), ("A9V", 7400, 0.327), ("F0V", 7220, 0.377), ("F1V", 7020, 0.434),
    ("F2V", 6820, 0.490), ("F3V", 6750, 0.518), ("F4V", 6670, 0.546), ("F5V", 6550, 0.587),
    ("F6V", 6350, 0.640), ("F7V", 6280, 0.670), ("F8V", 6180, 0.694), ("F9V", 6050, 0.719),
    ("F9.5V", 5990, 0.767), ("G0V", 5930, 0.784), ("G1V", 5860, 0.803), ("G2V", 5770, 0.823),
    ("G3V", 5720, 0.832), ("G4V", 5680, 0.841), ("G5V", 5660, 0.850), ("G6V", 5600, 0.869),
    ("G7V", 5550, 0.880), ("G8V", 5480, 0.900), ("G9V", 5380, 0.950), ("K0V", 5290, 0.983),
    ("K1V", 5170, 1.01), ("K2V", 5100, 1.10), ("K3V", 4870, 1.19), ("K4V", 4600, 1.34),
    ("K5V", 4440, 1.43), ("K6V", 4300, 1.53), ("K7V", 4090, 1.70), ("K8V", 3990, 1.73),
    ("K9V", 3930, 1.79), ("M0V", 3850, 1.84), ("M0.5V", 3770, 1.97), ("M1V", 3660, 2.09),
    ("M1.5V", 3620, 2.13), ("M2V", 3560, 2.23), ("M2.5V", 3470, 2.39), ("M3V", 3430, 2.50),
    ("M3.5V", 3270, 2.78), ("M4V", 3210, 2.94), ("M4.5V", 3110, 3.16), ("M5V", 3060, 3.35),
    ("M5.5V", 2930, 3.71), ("M6V", 2810, 4.16), ("M6.5V", 2740, 4.50), ("M7V", 2680, 4.65),
)  # fmt: skip
_SEQ_TEFF = np.array([row[1] for row in _DWARF_SEQUENCE], dtype=float)
_SEQ_BPRP = np.array([row[2] for row in _DWARF_SEQUENCE], dtype=float)

#: Effective temperature of the Kraft break [K]: the drop of mean rotational velocity of
#: main-sequence stars near mid-F type (Kraft 1967, ApJ 150, 551), usually quoted at about
#: 6200-6300 K. 6250 K is also where the turnover time of Cranmer & Saar (2011, eq. 36) collapses
#: (its ``(Teff / 6250 K)^18`` term), so the two rules of this module agree on where braking ends.
KRAFT_BREAK_TEFF_K = 6250.0

#: (BP-RP)0 of the Kraft break [mag]: 6250 K interpolated linearly between F7V (6280 K,
#: Bp-Rp 0.670) and F8V (6180 K, 0.694) of the Pecaut & Mamajek dwarf sequence: 0.677 mag.
HOT_STAR_BPRP0 = float(np.interp(KRAFT_BREAK_TEFF_K, _SEQ_TEFF[::-1], _SEQ_BPRP[::-1]))

#: (BP-RP)0 of the fully-convective boundary [mag]: M3V in the Pecaut & Mamajek dwarf sequence
#: (Bp-Rp 2.50, M_G 10.05, 3430 K, 0.36 Msun). Jao et al. (2018, ApJL 861, L11) found a narrow
#: gap in the Gaia DR2 main sequence near M_G = 10, near spectral type M3.0V, and proposed that
#: it marks the onset of full convection. Stellar models put that onset near 0.35 Msun (the value
#: usually quoted from Chabrier & Baraffe 1997, A&A 327, 1039; not checked in the paper here).
FULLY_CONVECTIVE_BPRP0 = 2.50

#: Sidereal rotation period of the Sun [d] used for the solar Rossby number.
SUN_PROT_D = 25.4
#: Effective temperature of the Sun [K] (IAU 2015 nominal value, 5772 K).
SUN_TEFF_K = 5772.0

#: Teff range [K] over which the turnover-time fit of Cranmer & Saar (2011, eq. 36) is stated to
#: hold, 3300-7000 K. The range is quoted from a code comment that cites eq. 36, not checked
#: against the paper.
TAU_C_TEFF_RANGE_K = (3300.0, 7000.0)

#: Onset of weakened magnetic braking, as a fraction of the solar Rossby number: Ro_crit =
#: 0.91 Ro_sun (Saunders et al. 2024, ApJ 962, 138). The value is quoted from a secondary source
#: that cites that paper; its uncertainty was not checked. It agrees with the long-period pile-up
#: of Kepler stars at Ro_crit <~ Ro_sun (David et al. 2022, ApJ 933, 114) and with weakened braking
#: near the solar Rossby number (van Saders et al. 2016, Nature 529, 181).
RO_CRIT_SOLAR = 0.91

#: Reference age [Myr] of the slow sequence for ``off_sequence``: younger than the youngest
#: converged calibrators of the training set (Praesepe 718 Myr, NGC 6866 735 Myr, the Hyades
#: 775 Myr), so a star of their age on the sequence is never flagged; by 650 Myr FGK stars have
#: converged: in the catalogue (training cuts, 0.6 <= (BP-RP)0 <= 1.5), the flag fires on 2.0 %
#: (13 of 659) of the stars of clusters older than 500 Myr against 25 % (292 of 1,171) of those
#: of clusters younger than 300 Myr (13-90 % per cluster).
OFF_SEQUENCE_AGE_MYR = 650.0
#: Quantile of the model's period distribution at :data:`OFF_SEQUENCE_AGE_MYR` below which a
#: star is ``off_sequence``.
OFF_SEQUENCE_QUANTILE = 0.05

#: RUWE at or above which a star is a likely binary: the training cut of the catalogue
#: (:func:`~chronoflow.data.catalogue.training_sample`), after Lindegren et al. (2018, Gaia
#: technical note GAIA-C3-TN-LU-LL-124-01), who found RUWE < 1.4 for well-behaved single-star
#: astrometric solutions.
RUWE_BINARY = 1.4

#: What each flag means and what to do about it (see also ``docs/flags.md``).
FLAG_HELP: dict[str, str] = {
    "off_sequence": (
        f"Prot lies below the model's {OFF_SEQUENCE_QUANTILE:.0%} quantile at the star's colour and colour error at "
        f"{OFF_SEQUENCE_AGE_MYR:.0f} Myr, when FGK stars have converged on the slow sequence (threshold checked on the "
        "catalogue's clusters). The star is young or a tidally synchronized close binary: read its age as an upper "
        "limit at most, and look for binarity (RUWE, radial velocities) before trusting it."
    ),
    "hot_star": (
        f"(BP-RP)0 < {HOT_STAR_BPRP0:.3f} mag, bluer than the Kraft break ({KRAFT_BREAK_TEFF_K:.0f} K; Kraft 1967; "
        "colour from the Pecaut & Mamajek 2013 dwarf table), where magnetic braking is weak and the period says little "
        "about age. Prefer an age from isochrones or cluster membership."
    ),
    "fully_convective": (
        f"(BP-RP)0 > {FULLY_CONVECTIVE_BPRP0:.2f} mag (M3V, ~0.35 Msun; the Gaia M-dwarf gap of Jao et al. 2018), "
        "where stars stay fast for a long time and then spin down quickly. An age from rotation is coarse: treat a fast "
        "rotator as young-or-unknown and a slow one as old (Gyr), and prefer other clocks (activity, kinematics)."
    ),
    "weakened_braking": (
        f"Rossby number Prot / tau_c (tau_c of Cranmer & Saar 2011, eq. 36) above {RO_CRIT_SOLAR:.2f} of the Sun's "
        "(Saunders et al. 2024; van Saders et al. 2016), where spin-down stalls. Prot stops growing with age, so the age "
        "is at best a lower limit; prefer asteroseismic or isochrone ages."
    ),
    "likely_binary": (
        f"Gaia RUWE >= {RUWE_BINARY:.1f} (the training cut; Lindegren et al. 2018) or Gaia DR3 non_single_star > 0. "
        "A companion can spin the star up by tides or blend its light and period: check the system before using the age."
    ),
}


def _floats(df: pd.DataFrame, column: str) -> np.ndarray | None:
    """``df[column]`` as a float array (text that is not a number, and missing values, -> NaN)."""
    if column not in df.columns:
        return None
    return pd.to_numeric(df[column], errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def binarity_columns(df: pd.DataFrame) -> tuple[np.ndarray | None, np.ndarray | None]:
    """RUWE (from a ``ruwe`` column, else the catalogue's ``dr3_ruwe``) and Gaia DR3
    ``non_single_star`` of each row, as float arrays (None where the table has no such column;
    text that is not a number -> NaN).

    Parameters
    ----------
    df
        A table of stars, e.g. a Gaia DR3 query (``ruwe``, ``non_single_star``) or the rotator
        catalogue (``dr3_ruwe``).

    Returns
    -------
    ruwe : numpy.ndarray or None
        Renormalised unit weight error of the astrometric solution [dimensionless], one per row.
    non_single_star : numpy.ndarray or None
        Gaia DR3 ``non_single_star`` flag [dimensionless; 0 when Gaia found no non-single-star
        solution], one per row.

    Examples
    --------
    >>> ruwe, nss = binarity_columns(pd.DataFrame({"dr3_ruwe": [1.0, "x"]}))
    >>> ruwe.tolist(), nss
    ([1.0, nan], None)
    """
    ruwe = _floats(df, "ruwe")
    if ruwe is None:
        ruwe = _floats(df, "dr3_ruwe")
    return ruwe, _floats(df, "non_single_star")


def _teff_from_bprp0(colour: np.ndarray) -> np.ndarray:
    """Teff [K] of dwarfs of colour (BP-RP)0 [mag], linear in the dwarf table; NaN outside it."""
    teff = np.interp(colour, _SEQ_BPRP, _SEQ_TEFF)
    with np.errstate(invalid="ignore"):
        inside = (colour >= _SEQ_BPRP[0]) & (colour <= _SEQ_BPRP[-1])
    return np.where(inside, teff, np.nan)


def _turnover_time_d(teff: np.ndarray | float) -> np.ndarray:
    """Convective turnover time [d] of Cranmer & Saar (2011, eq. 36), Teff in K."""
    teff = np.asarray(teff, dtype=float)
    return 314.24 * np.exp(-(teff / 1952.5) - (teff / 6250.0) ** 18) + 0.002


def _per_star(name: str, values, n: int | None) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1 or (n is not None and len(arr) != n):
        want = "a 1-D array" if n is None else f"a 1-D array of {n} values (one per star)"
        raise ChronoflowError(f"{name} must be {want}, got shape {arr.shape}")
    return arr


def rotation_flags(log_prot: np.ndarray, colour: np.ndarray, log_err: np.ndarray, model, *,
                   ruwe: np.ndarray | None = None, non_single_star: np.ndarray | None = None) -> dict[str, np.ndarray]:  # fmt: skip
    """Boolean mask per flag name (every name of ROTATION_FLAGS present as a key), one entry per star.

    The rules (thresholds are module constants; their sources are in their descriptions):

    * ``off_sequence``: the model's CDF of log10 Prot at the star's colour and colour error and
      at :data:`OFF_SEQUENCE_AGE_MYR` (650 Myr) is below :data:`OFF_SEQUENCE_QUANTILE` (0.05):
      the period lies far below the slow sequence. One batched ``model.cdf`` call for all stars.
      Only for stars inside the model's colour and colour-error domain (the colour error raised
      to the domain's floor, as :class:`~chronoflow.inference.likelihood.StarInputs` does);
      the model extrapolates elsewhere, and those rows carry ``colour_outside_domain`` /
      ``error_above_domain`` already.
    * ``hot_star``: (BP-RP)0 < :data:`HOT_STAR_BPRP0` (0.677 mag, the Kraft break at 6250 K).
    * ``fully_convective``: (BP-RP)0 > :data:`FULLY_CONVECTIVE_BPRP0` (2.50 mag, M3V).
    * ``weakened_braking``: Ro / Ro_sun > :data:`RO_CRIT_SOLAR` (0.91), with Ro = Prot / tau_c,
      tau_c [d] from Cranmer & Saar (2011, eq. 36):
      ``314.24 exp[-(Teff / 1952.5 K) - (Teff / 6250 K)^18] + 0.002``, Teff from (BP-RP)0 by
      linear interpolation in the Pecaut & Mamajek dwarf table, and Ro_sun = 25.4 d / tau_c(5772 K)
      = 25.4 d / 12.88 d = 1.97 on the same scale. Only for Teff within
      :data:`TAU_C_TEFF_RANGE_K` (3300-7000 K, about 0.44 < (BP-RP)0 < 2.73 mag). The period at
      the threshold is 23 d for the Sun's colour, 43 d at 5000 K, 73 d at 4000 K, and only 8 d at
      6250 K and 2.7 d at 6500 K, where tau_c collapses: hot stars reach it young.
    * ``likely_binary``: RUWE >= :data:`RUWE_BINARY` (1.4) or ``non_single_star`` > 0.

    Parameters
    ----------
    log_prot : numpy.ndarray, shape ``[stars]``
        log10 rotation period [log10 d].
    colour : numpy.ndarray, shape ``[stars]``
        De-reddened Gaia colour (BP-RP)0 [mag].
    log_err : numpy.ndarray, shape ``[stars]``
        log10 of the colour error e_(BP-RP)0 [log10 mag].
    model : RotationModel
        A chronoflow rotation model (the shipped one: :func:`chronoflow.flows.artifact.load_model`).
    ruwe : numpy.ndarray, shape ``[stars]``, optional
        Gaia RUWE [dimensionless] (see :func:`binarity_columns`); None: no star is flagged by it.
    non_single_star : numpy.ndarray, shape ``[stars]``, optional
        Gaia DR3 ``non_single_star`` [dimensionless]; None: no star is flagged by it.

    Returns
    -------
    dict[str, numpy.ndarray]
        For each name of :data:`ROTATION_FLAGS`, in that order, a boolean array ``[stars]``. A
        NaN (or infinite) input gives False for every flag that needs it.

    Raises
    ------
    ChronoflowError
        An input is not a 1-D array with one value per star.

    Examples
    --------
    >>> from chronoflow.flows.artifact import load_model
    >>> flags = rotation_flags(np.log10([11.5, 25.4]), np.array([0.82, 0.82]), np.log10([0.02, 0.02]), load_model())
    >>> {name: mask.tolist() for name, mask in flags.items() if mask.any()}
    {'weakened_braking': [False, True]}
    """
    log_prot = _per_star("log_prot", log_prot, None)
    n = len(log_prot)
    colour = _per_star("colour", colour, n)
    log_err = _per_star("log_err", log_err, n)
    ruwe = None if ruwe is None else _per_star("ruwe", ruwe, n)
    non_single_star = None if non_single_star is None else _per_star("non_single_star", non_single_star, n)
    if not isinstance(model, RotationModel):
        raise ChronoflowError(f"model must be a chronoflow RotationModel (load_model()), got {type(model).__name__}")

    finite_p, finite_c = np.isfinite(log_prot), np.isfinite(colour)
    flags = {name: np.zeros(n, dtype=bool) for name in ROTATION_FLAGS}
    flags["hot_star"] = finite_c & (np.where(finite_c, colour, np.inf) < HOT_STAR_BPRP0)
    flags["fully_convective"] = finite_c & (np.where(finite_c, colour, -np.inf) > FULLY_CONVECTIVE_BPRP0)

    # Weakened braking: the Rossby number against the Sun's, both on the Cranmer & Saar scale.
    teff = _teff_from_bprp0(np.where(finite_c, colour, np.nan))
    lo, hi = TAU_C_TEFF_RANGE_K
    with np.errstate(invalid="ignore"):
        valid = finite_p & np.isfinite(teff) & (teff >= lo) & (teff <= hi)
    rows = np.flatnonzero(valid)
    if len(rows):
        ro_sun = SUN_PROT_D / float(_turnover_time_d(SUN_TEFF_K))
        ro = 10.0 ** log_prot[rows] / _turnover_time_d(teff[rows])
        flags["weakened_braking"][rows] = ro / ro_sun > RO_CRIT_SOLAR

    # Off the slow sequence: below the model's 5 % point at the reference age, one batched call.
    d = model.domain
    err = np.maximum(log_err, d.log10_e_bprp0[0])  # NaN stays NaN
    ctx = make_context(OFF_SEQUENCE_AGE_MYR, colour, 10.0**err)
    with np.errstate(invalid="ignore"):
        rows = np.flatnonzero(finite_p & np.isfinite(ctx).all(axis=-1) & d.contains(ctx, age=False))
    if len(rows):
        cdf = np.asarray(model.cdf(log_prot[rows], ctx[rows]), dtype=float)
        flags["off_sequence"][rows] = cdf < OFF_SEQUENCE_QUANTILE

    with np.errstate(invalid="ignore"):
        if ruwe is not None:
            flags["likely_binary"] |= np.isfinite(ruwe) & (ruwe >= RUWE_BINARY)
        if non_single_star is not None:
            flags["likely_binary"] |= np.isfinite(non_single_star) & (non_single_star > 0)
    return flags
