"""User cache and verified downloads (the lowest layer: no other chronoflow module below it)."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import CatalogueError

__all__ = ["cache_dir", "fetch_verified"]

#: Environment variable that overrides the cache location (useful on clusters and in CI).
CACHE_ENV = "CHRONOFLOW_CACHE_DIR"


def cache_dir() -> Path:
    """Return the directory where downloads are cached.

    ``$CHRONOFLOW_CACHE_DIR`` if set, else the platform's user cache directory
    (e.g. ``~/.cache/chronoflow`` on Linux).
    """
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("chronoflow", appauthor=False))


def fetch_verified(url: str, sha256: str, filename: str, directory: Path | None = None) -> Path:
    """Download ``url`` once into the cache and verify its sha256.

    Parameters
    ----------
    url
        Where the file is served.
    sha256
        Expected hex digest; a file that does not match is refused (and not kept).
    filename
        Name of the file in the cache.
    directory
        Cache directory; default :func:`cache_dir`.

    Returns
    -------
    Path
        Local path of the verified file.

    Raises
    ------
    CatalogueError
        On a network failure or a checksum mismatch, as one line that names the URL.
    """
    import pooch

    directory = Path(directory) if directory is not None else cache_dir()
    try:
        path = pooch.retrieve(
            url, known_hash=f"sha256:{sha256}", fname=filename, path=directory, progressbar=False
        )
    except ValueError as exc:  # pooch reports a hash mismatch as ValueError
        if "hash" in str(exc).lower():
            raise CatalogueError(
                f"download of {url} failed its checksum (expected sha256 {sha256}); the file was "
                "not kept. The server copy changed or was corrupted: pass a local file with "
                "path=... or set CHRONOFLOW_CATALOGUE."
            ) from None
        raise CatalogueError(f"download of {url} failed: {exc}") from None
    except Exception as exc:  # requests' connection errors, HTTP errors, ...
        raise CatalogueError(
            f"could not download {url} ({type(exc).__name__}: {exc}); to work offline set "
            "CHRONOFLOW_CATALOGUE to a local copy of the catalogue."
        ) from None
    return Path(path)
