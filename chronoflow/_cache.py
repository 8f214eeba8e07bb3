"""User cache and verified downloads (the lowest layer: no other chronoflow module below it)."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import CatalogueError, first_line

__all__ = ["cache_dir", "fetch_verified", "file_sha256"]

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


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes (read in blocks of 1 MiB)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def fetch_verified(url: str, sha256: str, filename: str, directory: Path | None = None) -> Path:
    """Download ``url`` once into the cache and verify its sha256.

    A file already in the cache is re-hashed on every call: if its bytes no longer match (a
    truncated or edited copy), it is downloaded again, and removed if that fails. The download
    goes to a temporary file in the cache directory that is renamed onto ``filename`` only once
    its hash matches, so concurrent calls for the same file each end with the verified file.

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
        On a network failure or a checksum mismatch, as one line that names the URL (and the
        cached copy, if it was corrupt).
    """
    import pooch

    directory = Path(directory) if directory is not None else cache_dir()
    target = directory / filename
    corrupt = target.is_file() and file_sha256(target) != sha256.lower()

    def drop_corrupt() -> str:
        """Remove a cached copy that still fails its checksum; say so in the error message."""
        if not corrupt:
            return ""
        if target.is_file() and file_sha256(target) != sha256.lower():  # not replaced meanwhile
            target.unlink(missing_ok=True)
        return f"; the cached copy {target} failed its checksum and was removed"

    try:
        path = pooch.retrieve(
            url, known_hash=f"sha256:{sha256}", fname=filename, path=directory, progressbar=False
        )
    except ValueError as exc:  # pooch reports a hash mismatch as ValueError
        if "hash" in str(exc).lower():
            raise CatalogueError(
                f"download of {url} failed its checksum (expected sha256 {sha256}); the file was "
                "not kept. The server copy changed or was corrupted: pass a local file with "
                f"path=... or set CHRONOFLOW_CATALOGUE{drop_corrupt()}."
            ) from None
        raise CatalogueError(f"download of {url} failed: {first_line(exc)}{drop_corrupt()}") from None
    except Exception as exc:  # requests' connection errors, HTTP errors, ...
        raise CatalogueError(
            f"could not download {url} ({type(exc).__name__}: {first_line(exc)}); to work offline set "
            f"CHRONOFLOW_CATALOGUE to a local copy of the catalogue{drop_corrupt()}."
        ) from None
    return Path(path)

