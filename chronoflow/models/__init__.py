"""Pretrained model artifacts shipped with chronoflow (``*.pt``)."""
