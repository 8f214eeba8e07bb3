"""Registry of known rotation-period catalogues (``registry.toml``), shipped as package data."""
