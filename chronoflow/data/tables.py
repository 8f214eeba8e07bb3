"""astropy Tables at the API boundary: units converted on the way in, the same kind on the way out.

The package computes on pandas DataFrames in fixed units (:data:`UNITS`). A user who holds an
astropy ``Table`` or ``QTable`` (read from FITS or VOTable, or returned by astroquery) passes it
as it is: :func:`to_frame` converts every column of a known name that carries a unit into the
package's unit (a period in hours becomes days; a wrong kind of unit is refused with one line),
and :func:`like_input` turns a result back into the class the user gave, with the package's
units attached. Columns the package does not know keep their values and get their unit back
on the way out. Masked values become NaN (or pandas' missing value) and back.

>>> from astropy.table import QTable
>>> import astropy.units as u
>>> frame, origin = to_frame(QTable({"Prot": [24.0, 48.0] * u.h}))
>>> frame["Prot"].tolist()
[1.0, 2.0]
>>> like_input(frame, origin)["Prot"].unit
Unit("d")
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ..errors import ChronoflowError

__all__ = ["UNITS", "TableOrigin", "is_astropy_table", "like_input", "quantity_table", "to_frame"]

#: The unit of every column the package reads or writes that has one. Input columns of these
#: names that carry a unit are converted to it; output columns of these names carry it.
UNITS: dict[str, str] = {
    # the catalogue schema (chronoflow.data.catalogue.COLUMNS)
    "Prot": "d",
    "dr3_parallax_zpt_corrected": "mas",
    "G_0": "mag",
    "BPRP_0": "mag",
    "e_BPRP_0": "mag",
    "fiducial_age_Myr": "Myr",
    # outputs: star ages, forward-modelled periods
    "age_myr_p16": "Myr",
    "age_myr_median": "Myr",
    "age_myr_p84": "Myr",
    "age_myr": "Myr",
    "bprp0": "mag",
    "e_bprp0": "mag",
    "prot_d": "d",
}


@dataclass(frozen=True)
class TableOrigin:
    """What :func:`like_input` needs to give a result back as the user's kind of table."""

    cls: type
    units: dict[str, Any] = field(default_factory=dict)  # units of the columns not in UNITS
    meta: dict[str, Any] = field(default_factory=dict)


def is_astropy_table(obj: Any) -> bool:
    """True for an ``astropy.table.Table`` (``QTable`` included), without importing astropy for
    anything else."""
    if not type(obj).__module__.startswith("astropy"):
        return False
    from astropy.table import Table

    return isinstance(obj, Table)


def to_frame(data: Any, *, what: str = "the table", units: dict[str, str] | None = None) -> tuple[pd.DataFrame, TableOrigin | None]:
    """A pandas DataFrame of ``data`` in the package's units, and where it came from.

    Parameters
    ----------
    data
        A pandas DataFrame (returned as it is, origin ``None``), or an astropy ``Table`` /
        ``QTable``. A column named in :data:`UNITS` that has a unit is converted to that unit;
        a column without a unit is taken to be in it already.
    what
        How the error messages name ``data``.
    units
        Units of further column names (e.g. aliases a reader understands), beside :data:`UNITS`.

    Returns
    -------
    (pandas.DataFrame, TableOrigin or None)

    Raises
    ------
    ChronoflowError
        A unit that cannot be converted (one line naming the column, its unit and the unit
        allowed), a column with more than one value per row, or ``data`` of another type.
    """
    if isinstance(data, pd.DataFrame):
        return data, None
    if not is_astropy_table(data):
        raise ChronoflowError(f"{what}: expected a pandas DataFrame or an astropy Table/QTable, got {type(data).__name__}")
    from astropy import units as u
    from astropy.table import Table

    plain = Table(data, copy=True)  # Quantity columns become Columns with their unit; the user's table is untouched
    for name in plain.colnames:
        if plain[name].ndim > 1:
            raise ChronoflowError(f"column {name!r} of {what} has shape {plain[name].shape[1:]} per row; allowed: one value per row")
    given = {n: plain[n].unit for n in plain.colnames if plain[n].unit is not None and plain[n].unit != u.dimensionless_unscaled}
    for name in given:
        plain[name].unit = None
    frame = plain.to_pandas()
    known = {**UNITS, **(units or {})}
    for name, unit in given.items():
        if name not in known:
            continue
        try:
            frame[name] = unit.to(known[name], frame[name].to_numpy(dtype=float))
        except u.UnitConversionError:
            raise ChronoflowError(
                f"column {name!r} of {what} has unit {unit}; allowed: a unit convertible to {known[name]}"
            ) from None
    extra = {n: unit for n, unit in given.items() if n not in known}
    return frame, TableOrigin(type(data), extra, dict(data.meta))


def like_input(frame: pd.DataFrame, origin: TableOrigin | None):
    """``frame`` as the kind of table :func:`to_frame` was given: the DataFrame itself for
    ``None``, else an instance of the user's class with :data:`UNITS` (and the user's own units
    of the other columns) attached and the input's ``meta``."""
    if origin is None:
        return frame
    units = {n: origin.units.get(n) or UNITS.get(n) for n in frame.columns if n in origin.units or n in UNITS}
    table = origin.cls.from_pandas(frame.reset_index(drop=True), units=units)  # NaN becomes a masked value
    table.meta.update(origin.meta)
    return table


def quantity_table(frame: pd.DataFrame):
    """``frame`` as an astropy ``QTable`` with :data:`UNITS` attached: the output of a function
    whose array inputs were given as Quantities."""
    from astropy.table import QTable

    return like_input(frame, TableOrigin(QTable))
