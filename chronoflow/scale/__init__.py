"""Scale: files larger than memory (streaming) and clusters of workers (Dask)."""
