"""Data: the rotator catalogue and de-reddening."""
