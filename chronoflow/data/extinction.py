"""De-reddening of Gaia EDR3/DR3 BP-RP colours, and extinction from dust maps.

The Gaia EDR3 extinction law gives k_X = A_X / A0 (A0 = extinction at 550 nm) for G, BP and RP.
It is the DPAC fit to Kurucz spectra reddened by the Fitzpatrick et al. (2019) curve, published
with Riello et al. (2021, A&A 649, A3) at https://www.cosmos.esa.int/web/gaia/edr3-extinction-law
(file ``Fitz19_EDR3_MainSequence.csv``, rows with ``Xname = BPRP``; ``dustapprox`` ships the same
file). With X = (BP-RP)0 [mag] it has ten terms::

    k = a1 + a2 X + a3 X^2 + a4 X^3 + a5 A0 + a6 A0^2 + a7 A0^3 + a8 X A0 + a9 A0 X^2 + a10 X A0^2

The seven-term form (no A0^3, A0 X^2 or X A0^2 terms) is the Gaia DR2 law (Gaia Collaboration,
Babusiaux et al. 2018); its coefficients are for other passbands, so do not mix the two. We use
the main-sequence table because gyrochronology deals with dwarfs. The fit grid covers
Teff = 3500-10000 K and A0 = 0.01-20 mag, and the colour relation is used over
(BP-RP)0 = -0.06 to 2.5 mag. Outside that range we clamp X and A0 to the nearest edge (holding k
constant) rather than extrapolate the cubic, and we flag those stars.

Conventions: A0 = R_V E(B-V) with R_V = 3.1, and E(BP-RP) = A0 (k_BP - k_RP).
"""

from __future__ import annotations

import contextlib
import enum
import importlib
import io
import os
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ..errors import ChronoflowError, DomainError

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "A0_RANGE", "BPRP0_RANGE", "R_V", "DeredFlag", "DeredResult", "DustMapMissingError",
    "ExtinctionConvergenceWarning", "ExtinctionRangeWarning",
    "deredden_bprp", "deredden_table", "extinction_coefficients", "extinction_from_dustmap",
]  # fmt: skip

R_V = 3.1  #: R_V used for A0 = R_V E(B-V)
BPRP0_RANGE = (-0.06, 2.5)  #: validity of the BP-RP main-sequence law [mag]
A0_RANGE = (0.0, 20.0)  #: fit grid in A0 [mag]; A0 -> 0 is a smooth limit, only the top is cut

# a1..a10 in the file's column order: Intercept, X, X2, X3, A, A2, A3, XA, AX2, XA2.
_COEFFS: dict[str, tuple[float, ...]] = {
    "BP": (1.15363197483424, -0.0814012991657388, -0.036013023976704, 0.0192143585568966,
           -0.022397548243016, 0.000840562680547171, -1.31018008013549e-05,
           0.00660124080271006, -0.000882247501989453, -0.000111215755291684),
    "RP": (0.66320787941067, -0.0179847164933981, 0.000493769449961458, -0.00267994405695751,
           -0.00651422146709376, 3.30179903473159e-05, 1.57894227641527e-06,
           -7.9800898337247e-05, 0.000255679812110045, 1.10476584967393e-05),
    "G": (0.995969721536602, -0.159726460302015, 0.0122380738156057, 0.00090726555099859,
          -0.0377160263914123, 0.00151347495244888, -2.52364537395142e-05,
          0.0114522658102451, -0.000936914989014318, -0.000260296774134201),
}  # fmt: skip


class DustMapMissingError(ChronoflowError):
    """A dust map's data files are not on disk; the message gives the command that fetches them."""


class ExtinctionConvergenceWarning(UserWarning):
    """The de-reddening solve did not converge for some stars (flagged ``NOT_CONVERGED``)."""


class ExtinctionRangeWarning(UserWarning):
    """Some stars are outside the validity range of the extinction law."""


class DeredFlag(enum.IntFlag):
    """Quality bits for each star, as returned by :func:`deredden_bprp`."""

    OK = 0
    BAD_INPUT = 1  #: colour or A0 not finite, negative error (deredden_table: colour error <= 0 or NaN) -> NaN
    NEGATIVE_A0 = 2  #: A0 < 0 -> NaN output
    COLOUR_OUT_OF_RANGE = 4  #: (BP-RP)0 outside BPRP0_RANGE; k from the nearest edge
    A0_OUT_OF_RANGE = 8  #: A0 > 20 mag; k from A0 = 20 mag
    NOT_CONVERGED = 16  #: the solve for this star did not converge in max_iter iterations -> NaN output


@dataclass(frozen=True)
class DeredResult:
    """Result of :func:`deredden_bprp`, shaped like the broadcast inputs (scalar in, scalar out).

    ``bprp0`` (BP-RP)0 [mag], ``e_bprp0`` its 1-sigma error [mag], ``excess`` E(BP-RP) [mag],
    ``a0`` A0 used [mag], ``flags`` :class:`DeredFlag` bitmask, ``n_iter`` solver iterations.
    """

    bprp0: Any
    e_bprp0: Any
    excess: Any
    a0: Any
    flags: Any
    n_iter: int


def _values(x: Any, name: str, unit: str = "mag") -> np.ndarray:
    """Float array from a number, an array or an astropy Quantity (converted once to ``unit``)."""
    if hasattr(x, "unit") and hasattr(x, "to_value"):  # a Quantity; pandas objects have no to_value
        import astropy.units as u

        try:
            x = x.to_value(u.Unit(unit))
        except u.UnitsError as exc:
            raise DomainError(f"{name} must be in {unit}, got unit '{x.unit}'") from exc
    try:
        return np.asarray(x, dtype=float)
    except (TypeError, ValueError) as exc:
        raise DomainError(f"{name} must be numeric ({unit}), got {type(x).__name__}") from exc


def _poly(band: str, x: np.ndarray, a0: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """k, dk/dX and dk/dA0 for one band, with X and A0 clamped to the fit range."""
    c = _COEFFS[band]
    x_in, a_in = (x >= BPRP0_RANGE[0]) & (x <= BPRP0_RANGE[1]), a0 <= A0_RANGE[1]
    x, a = np.clip(x, *BPRP0_RANGE), np.minimum(a0, A0_RANGE[1])
    k = (c[0] + c[1] * x + c[2] * x**2 + c[3] * x**3 + c[4] * a + c[5] * a**2 + c[6] * a**3
         + c[7] * x * a + c[8] * a * x**2 + c[9] * x * a**2)  # fmt: skip
    dk_dx = c[1] + 2 * c[2] * x + 3 * c[3] * x**2 + c[7] * a + 2 * c[8] * a * x + c[9] * a**2
    dk_da = c[4] + 2 * c[5] * a + 3 * c[6] * a**2 + c[7] * x + c[8] * x**2 + 2 * c[9] * x * a
    # k is flat where clamped, so the derivatives are zero there.
    return k, np.where(x_in, dk_dx, 0.0), np.where(a_in, dk_da, 0.0)


def extinction_coefficients(bprp0: Any, a0: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gaia EDR3 extinction coefficients k = A_band / A0 (Fitzpatrick 2019 law, main sequence).

    Parameters
    ----------
    bprp0 : float, array_like or Quantity
        Intrinsic colour (BP-RP)0 [mag]; clamped to ``BPRP0_RANGE`` (k constant beyond).
    a0 : float, array_like or Quantity
        Extinction at 550 nm [mag], >= 0; values above 20 mag are clamped to 20.

    Returns
    -------
    k_bp, k_rp, k_g : numpy.ndarray
        A_BP/A0, A_RP/A0, A_G/A0 (dimensionless), broadcast together; NaN where an input is NaN
        or A0 < 0.
    """
    try:
        x, a = np.broadcast_arrays(_values(bprp0, "bprp0"), _values(a0, "a0"))
    except ValueError as exc:
        raise DomainError(f"bprp0 and a0 shapes do not broadcast: {exc}") from exc
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(x) | ~np.isfinite(a) | (a < 0)
        k_bp, k_rp, k_g = (np.where(bad, np.nan, _poly(b, x, a)[0]) for b in ("BP", "RP", "G"))
    return k_bp, k_rp, k_g


def deredden_bprp(
    bprp_obs: Any,
    a0: Any = None,
    ebv: Any = None,
    e_bprp_obs: Any = None,
    e_a0: Any = None,
    *,
    e_ebv: Any = None,
    r_v: float = R_V,
    tol: float = 1e-9,
    max_iter: int = 50,
) -> DeredResult:
    """Intrinsic colour (BP-RP)0 from the observed colour and A0 (or E(B-V)).

    Solves ``X0 = X_obs - A0 [k_BP - k_RP](X0, A0)`` for every star at once. Plain fixed-point
    substitution contracts only while A0 |d(k_BP - k_RP)/dX| < 1: that factor is 0.5 at
    A0 ~ 3 mag and passes 1 near 6 mag. We therefore iterate the Newton form of the same
    fixed point. The solution is unique while 1 + A0 d(k_BP - k_RP)/dX > 0, which holds up to
    A0 ~ 5 mag.

    Parameters
    ----------
    bprp_obs : float, array_like or Quantity
        Observed BP-RP [mag].
    a0, ebv : float, array_like or Quantity
        Pass exactly one: A0 [mag], or E(B-V) [mag] (then A0 = r_v E(B-V)).
    e_bprp_obs, e_a0, e_ebv : float, array_like or Quantity, optional
        1-sigma errors [mag]; an error not given counts as zero.
    r_v : float
        R_V for converting E(B-V) to A0.
    tol, max_iter : float, int
        A star is solved once its Newton update is <= ``tol`` [mag], which leaves the equation
        satisfied to far better than 1e-6 mag. A star still unsolved after ``max_iter``
        iterations gets NaN outputs and the flag ``NOT_CONVERGED``; the other stars are kept.

    Returns
    -------
    DeredResult

    Notes
    -----
    A problem with one star never raises. A non-finite colour or A0, or a negative error, gives
    NaN with flag ``BAD_INPUT``; A0 < 0 gives NaN with ``NEGATIVE_A0``. Stars outside the law's
    range are solved with clamped k and flagged, and one :class:`ExtinctionRangeWarning` reports
    them. Stars whose solve does not converge (in practice A0 >~ 14 mag with a very red observed
    colour, where Newton's method cycles) get NaN with ``NOT_CONVERGED``, and one
    :class:`ExtinctionConvergenceWarning` gives their number. Mistakes in the call itself raise
    :class:`~chronoflow.errors.DomainError`: both or neither of a0/ebv, wrong units, or shapes
    that do not broadcast.
    The error is the first-order propagation through the implicit equation (dk = k_BP - k_RP)::

        sigma0^2 = [sigma_obs^2 + ((dk + A0 d(dk)/dA0) sigma_A0)^2] / (1 + A0 d(dk)/dX0)^2
    """
    if (a0 is None) == (ebv is None):
        raise DomainError("deredden_bprp needs exactly one of a0= or ebv=")
    if ebv is not None:
        a0 = r_v * _values(ebv, "ebv")
        e_a0 = None if e_ebv is None else r_v * _values(e_ebv, "e_ebv")
    elif e_ebv is not None:
        raise DomainError("e_ebv was given without ebv; give e_a0 together with a0")
    if max_iter < 1:
        raise DomainError("max_iter must be >= 1")
    names = ("bprp_obs", "a0", "e_bprp_obs", "e_a0")
    raw = [np.zeros(()) if v is None else _values(v, n)
           for v, n in zip((bprp_obs, a0, e_bprp_obs, e_a0), names)]  # fmt: skip
    try:
        xo, a, so, sa = (np.array(v, dtype=float) for v in np.broadcast_arrays(*raw))
    except ValueError as exc:
        shapes = {n: np.shape(v) for n, v in zip(names, raw)}
        raise DomainError(f"input shapes do not broadcast: {shapes}") from exc

    flags = np.zeros(xo.shape, dtype=np.int16)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(xo) | ~np.isfinite(a) | (so < 0) | (sa < 0)
        negative = np.isfinite(a) & (a < 0)
    flags[bad] |= DeredFlag.BAD_INPUT
    flags[negative] |= DeredFlag.NEGATIVE_A0
    good = ~(bad | negative)
    xo, a = np.where(good, xo, 0.0), np.where(good, a, 0.0)  # keep NaN out of the solver

    x, active = xo.copy(), good.copy()  # active: stars not solved yet
    for n_iter in range(1, max_iter + 1):
        (kb, kb_x, _), (kr, kr_x, _) = _poly("BP", x, a), _poly("RP", x, a)
        with np.errstate(divide="ignore", invalid="ignore"):
            step = (x + a * (kb - kr) - xo) / (1.0 + a * (kb_x - kr_x))
        x = np.where(active, x - step, x)
        active &= ~(np.abs(step) <= tol)  # a NaN update counts as not converged
        if not active.any():
            break
    flags[active] |= DeredFlag.NOT_CONVERGED
    if active.any():
        warnings.warn(f"{int(active.sum())} star(s) did not converge in max_iter={max_iter} iterations "
                      f"(A0 up to {a[active].max():.2f} mag, past the range A0 <~ 5 mag where "
                      "(BP-RP)0 is unique): NaN output, flag NOT_CONVERGED",
                      ExtinctionConvergenceWarning, stacklevel=2)  # fmt: skip
    solved = good & ~active

    (kb, kb_x, kb_a), (kr, kr_x, kr_a) = _poly("BP", x, a), _poly("RP", x, a)
    dk = kb - kr
    sigma0 = np.hypot(so, (dk + a * (kb_a - kr_a)) * sa) / np.abs(1.0 + a * (kb_x - kr_x))

    out_x = solved & ((x < BPRP0_RANGE[0]) | (x > BPRP0_RANGE[1]))
    out_a = good & (a > A0_RANGE[1])
    flags[out_x] |= DeredFlag.COLOUR_OUT_OF_RANGE
    flags[out_a] |= DeredFlag.A0_OUT_OF_RANGE
    if out_x.any() or out_a.any():
        warnings.warn(f"{out_x.sum()} star(s) with (BP-RP)0 outside {BPRP0_RANGE} mag and "
                      f"{out_a.sum()} with A0 > {A0_RANGE[1]} mag: Gaia EDR3 extinction "
                      "coefficients taken at the edge of the law (see flags)",
                      ExtinctionRangeWarning, stacklevel=2)  # fmt: skip

    def nan_bad(v: np.ndarray) -> Any:
        return np.where(solved, v, np.nan)[()]  # [()] turns a 0-d array into a scalar

    return DeredResult(bprp0=nan_bad(x), e_bprp0=nan_bad(sigma0), excess=nan_bad(a * dk),
                       a0=nan_bad(a), flags=flags[()], n_iter=n_iter)  # fmt: skip


def deredden_table(
    df: pd.DataFrame,
    bprp_col: str = "BPRP",
    a0_col: str | None = None,
    ebv_col: str | None = None,
    e_bprp_col: str | None = None,
    e_a0_col: str | None = None,
    e_ebv_col: str | None = None,
    *,
    r_v: float = R_V,
) -> pd.DataFrame:
    """Copy of ``df`` with ``BPRP_0``, ``e_BPRP_0``, ``E_BPRP`` [mag] and ``DERED_FLAG`` added.

    Parameters
    ----------
    df : pandas.DataFrame
        Input table. It is left unchanged; output columns that already exist are replaced in
        the copy.
    bprp_col : str
        Column with the observed BP-RP [mag].
    a0_col, ebv_col : str, optional
        Column with A0 or with E(B-V) [mag]; give at most one. With neither, ``A0`` is used.
    e_bprp_col : str
        Column with the 1-sigma error of the observed colour [mag]. Required: ``e_BPRP_0`` is
        this error propagated through the extinction law (plus the A0 error, if given), and a
        table without it would get ``e_BPRP_0 = 0``, which the ageing code rejects. A star whose
        colour error is zero, negative or missing gets NaN outputs and the flag ``BAD_INPUT``,
        so ``e_BPRP_0`` is always > 0 mag or NaN.
    e_a0_col, e_ebv_col : str, optional
        Column with the 1-sigma error of A0 or of E(B-V) [mag]; if not given, A0 counts as
        exact and only the colour error is propagated.
    r_v : float
        R_V for converting E(B-V) to A0.

    Returns
    -------
    pandas.DataFrame
        The new table. :func:`deredden_bprp` documents the method and the flag bits.

    Raises
    ------
    DomainError
        Both ``a0_col`` and ``ebv_col``, no ``e_bprp_col``, or a named column not in ``df``.
    """
    if a0_col is not None and ebv_col is not None:
        raise DomainError("deredden_table takes a0_col or ebv_col, not both")
    if a0_col is None and ebv_col is None:
        a0_col = "A0"
    if e_bprp_col is None:
        raise DomainError(f"deredden_table needs the colour error: pass e_bprp_col= naming the column "
                          f"with the 1-sigma error of {bprp_col!r} [mag] (without it e_BPRP_0 would be 0)")
    wanted = [c for c in (bprp_col, a0_col, ebv_col, e_bprp_col, e_a0_col, e_ebv_col) if c]
    missing = [c for c in wanted if c not in df.columns]
    if missing:
        raise DomainError(f"column(s) {missing} not in the table (it has {list(df.columns)})")

    import pandas as pd

    def col(name: str | None) -> np.ndarray | None:
        # text that is not a number becomes NaN, so that row is flagged BAD_INPUT, not the table refused
        return None if name is None else pd.to_numeric(df[name], errors="coerce").to_numpy(dtype=float)

    e_bprp = col(e_bprp_col)
    res = deredden_bprp(col(bprp_col), a0=col(a0_col), ebv=col(ebv_col), e_bprp_obs=e_bprp,
                        e_a0=col(e_a0_col), e_ebv=col(e_ebv_col), r_v=r_v)  # fmt: skip
    with np.errstate(invalid="ignore"):
        no_error = ~(np.isfinite(e_bprp) & (e_bprp > 0))  # a zero or missing colour error
    out = df.copy()
    out["BPRP_0"], out["e_BPRP_0"], out["E_BPRP"] = (np.where(no_error, np.nan, v)
                                                     for v in (res.bprp0, res.e_bprp0, res.excess))
    out["DERED_FLAG"] = np.where(no_error, res.flags | DeredFlag.BAD_INPUT, res.flags).astype(np.int16)
    return out


@dataclass(frozen=True)
class _MapSpec:
    label: str
    module: str  # dustmaps submodule; it also holds that map's fetch()
    query: str  # dustmaps query class
    files: tuple[str, ...]  # under the dustmaps data_dir; () = shipped inside dustmaps
    to_ebv: float  # E(B-V) = to_ebv * map value
    three_d: bool


# Factors that put each map on the E(B-V) scale with A0 = 3.1 E(B-V):
#  sfd 0.86: Schlafly & Finkbeiner (2011, ApJ 737, 103) recalibration of SFD98.
#  bayestar 0.884: E(B-V) = 0.884 x Bayestar19, http://argonaut.skymaps.info/usage
#    (Green et al. 2019, ApJ 887, 93).
#  edenhofer2023: A_V = 2.8 E_ZGR23 (Edenhofer et al. 2024, A&A 685, A82); we take A0 ~ A_V.
#  bh 1.0: Burstein & Heiles (1982, AJ 87, 1165) is already E(B-V); no data for |b| < 10 deg.
_MAPS: dict[str, _MapSpec] = {
    "sfd": _MapSpec("SFD98", "sfd", "SFDQuery",
                    ("sfd/SFD_dust_4096_ngp.fits", "sfd/SFD_dust_4096_sgp.fits"), 0.86, False),
    "bayestar": _MapSpec("Bayestar2019", "bayestar", "BayestarQuery",
                         ("bayestar/bayestar2019.h5",), 0.884, True),
    "edenhofer2023": _MapSpec("Edenhofer et al. (2023)", "edenhofer2023", "Edenhofer2023Query",
                              ("edenhofer_2023/mean_and_std_healpix.fits",), 2.8 / R_V, True),
    "bh": _MapSpec("Burstein & Heiles (1982)", "bh", "BHQuery", (), 1.0, False),
}  # fmt: skip
_QUERIES: dict[tuple[str, str], Any] = {}  # loaded maps, so repeated calls skip the file read


def _dustmaps(module: str) -> Any:
    """Import ``dustmaps.<module>`` lazily (it is slow), without its missing-config warning."""
    with warnings.catch_warnings():  # importing dustmaps reads ~/.dustmapsrc (never writes it)
        warnings.filterwarnings("ignore", "Configuration file not found", module="dustmaps")
        return importlib.import_module(f"dustmaps.{module}")


def _load_query(name: str, data_dir: str | os.PathLike[str] | None) -> Any:
    """The dustmaps query object for ``name``; DustMapMissingError if its files are absent."""
    spec = _MAPS[name]
    root = os.fspath(data_dir) if data_dir is not None else _dustmaps("std_paths").data_dir()
    key = (name, root if spec.files else "")
    if key not in _QUERIES:
        paths = [os.path.join(root, f) for f in spec.files]
        absent = [p for p in paths if not os.path.isfile(p)]
        if absent:  # checked here so that dustmaps never prints its multi-line notice
            fetch = f"import dustmaps.{spec.module}; dustmaps.{spec.module}.fetch()"
            if data_dir is not None:  # fetch() downloads into dustmaps' configured data_dir
                config = f"from dustmaps.config import config; config['data_dir'] = {root!r}; "
                fetch = config + fetch
            raise DustMapMissingError(f"{spec.label} dust map not found ({absent[0]} is missing); "
                                      f'download it once with: python -c "{fetch}"')  # fmt: skip
        first = paths[0] if paths else ""
        kwargs = {"sfd": {"map_dir": os.path.dirname(first)}, "bayestar": {"map_fname": first},
                  "edenhofer2023": {"map_fname": first, "integrated": True}}.get(name, {})
        try:  # the map readers print progress messages; keep the caller's output clean
            module = _dustmaps(spec.module)
            sink = io.StringIO()
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                _QUERIES[key] = getattr(module, spec.query)(**kwargs)
        except ImportError as exc:
            raise ChronoflowError(f"the {spec.label} map needs a missing package: {exc}") from exc
        except (OSError, ValueError, KeyError) as exc:
            raise ChronoflowError(f"could not read the {spec.label} dust map: {exc}") from exc
    return _QUERIES[key]


def extinction_from_dustmap(
    ra: Any,
    dec: Any,
    distance_pc: Any = None,
    map_name: Literal["bayestar", "edenhofer2023", "sfd", "bh"] = "bayestar",
    *,
    output: Literal["ebv", "a0", "raw"] = "ebv",
    data_dir: str | os.PathLike[str] | None = None,
) -> Any:
    """Reddening E(B-V), or extinction A0, towards stars, read from a ``dustmaps`` map.

    Parameters
    ----------
    ra, dec : float, array_like or Quantity
        ICRS coordinates [deg].
    distance_pc : float, array_like or Quantity, optional
        Distance [pc]. The 3D maps (bayestar, edenhofer2023) need it; the 2D maps ignore it.
    map_name : {'bayestar', 'edenhofer2023', 'sfd', 'bh'}
        * ``bayestar``: Bayestar2019, dec > -30 deg, median over samples;
          E(B-V) = 0.884 x the map value.
        * ``edenhofer2023``: integrated E in the units of Zhang, Green & Rix (2023), out to
          1.25 kpc; A0 = 2.8 E. The first call integrates the map, which takes minutes.
        * ``sfd``: SFD98 E(B-V) x 0.86 (Schlafly & Finkbeiner 2011).
        * ``bh``: Burstein & Heiles (1982) E(B-V), shipped inside dustmaps; NaN for |b| < 10 deg.

        The 2D maps (sfd, bh) give the whole Galactic column, so they overestimate the
        reddening of nearby stars.
    output : {'ebv', 'a0', 'raw'}
        E(B-V) [mag], A0 = 3.1 E(B-V) [mag], or the map's own value with no conversion.
    data_dir : str or os.PathLike, optional
        Directory laid out as dustmaps' ``fetch()`` leaves it. Default: dustmaps' configured
        ``data_dir``. This function never writes the dustmaps config.

    Returns
    -------
    numpy.ndarray or float
        Same shape as the broadcast inputs. NaN where the coordinates or the distance are
        invalid, or where the map has no coverage.

    Raises
    ------
    DustMapMissingError
        The map's files are absent; the one-line message gives the exact fetch command.
    """
    if map_name not in _MAPS:
        raise DomainError(f"unknown dust map '{map_name}'; choose from {sorted(_MAPS)}")
    if output not in ("ebv", "a0", "raw"):
        raise DomainError(f"output must be 'ebv', 'a0' or 'raw', not {output!r}")
    spec = _MAPS[map_name]
    if spec.three_d and distance_pc is None:
        raise DomainError(f"the {spec.label} map is 3D: pass distance_pc")
    dist = _values(distance_pc if spec.three_d else 1.0, "distance_pc", "pc")
    try:
        ra_, dec_, dist = np.broadcast_arrays(
            _values(ra, "ra", "deg"), _values(dec, "dec", "deg"), dist)
    except ValueError as exc:
        raise DomainError("ra, dec and distance_pc shapes do not broadcast") from exc
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(ra_) & (np.abs(dec_) <= 90) & np.isfinite(dist) & (dist > 0)

    query = _load_query(map_name, data_dir)
    out = np.full(ra_.shape, np.nan)
    if ok.any():
        import astropy.units as u
        from astropy.coordinates import SkyCoord

        extra = {"distance": dist[ok] * u.pc} if spec.three_d else {}
        coords = SkyCoord(ra=ra_[ok] * u.deg, dec=dec_[ok] * u.deg, frame="icrs", **extra)
        mode = {"bayestar": {"mode": "median"}, "edenhofer2023": {"mode": "mean"}}.get(map_name, {})
        out[ok] = np.asarray(query.query(coords, **mode), dtype=float)
    if output != "raw":
        out = out * spec.to_ebv * (R_V if output == "a0" else 1.0)
    return out[()]
