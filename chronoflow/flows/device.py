"""Where the batched flow evaluations run: the CPU, or a CUDA GPU when there is one.

The stars x ages grid (:meth:`chronoflow.flows.flow.RotationModel.log_prob_grid`) is the one
computation big enough to gain from a GPU; everything around it (posteriors on the age grid,
quantiles, tables) stays in numpy on the CPU. ``device="auto"`` (the default of the ageing
functions) picks the first CUDA GPU that torch sees and the CPU otherwise, so the same call runs
on a laptop and on a GPU node; ``"cpu"`` or ``"cuda[:N]"`` pin it.
"""

from __future__ import annotations

import torch

from ..errors import DomainError

__all__ = ["Device", "default_max_pairs", "resolve_device"]

Device = str | torch.device | None

_ALLOWED = "'auto', 'cpu', 'cuda' or 'cuda:N'"


def resolve_device(device: Device = "auto") -> torch.device:
    """The torch device a batched computation runs on.

    Parameters
    ----------
    device
        ``"auto"`` or ``None``: the first CUDA GPU when ``torch.cuda.is_available()``, else the
        CPU. ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (or a ``torch.device``): that device.

    Raises
    ------
    DomainError
        An unknown device name, or a CUDA device that this torch build or machine does not have
        (one line saying what torch sees and what to pass instead).
    """
    if device is None or (isinstance(device, str) and device.strip().lower() == "auto"):
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(device.strip().lower() if isinstance(device, str) else device)
    except (RuntimeError, TypeError, ValueError):
        raise DomainError(f"unknown device {device!r}; allowed: {_ALLOWED}") from None
    if dev.type == "cpu":
        return torch.device("cpu")
    if dev.type != "cuda":
        raise DomainError(f"device {device!r} is not supported; allowed: {_ALLOWED}")
    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise DomainError(f"device {device!r} asked for, but torch ({torch.__version__}, {build}) sees no CUDA GPU; "
                          "use device='cpu' or 'auto'")  # fmt: skip
    count = torch.cuda.device_count()
    if dev.index is not None and dev.index >= count:
        raise DomainError(f"device {device!r} asked for, but torch sees {count} CUDA GPU(s): cuda:0 - cuda:{count - 1}")
    return dev


def default_max_pairs(device: torch.device) -> int:
    """Star-age pairs per batched flow call: 65,536 on the CPU (batches that stay in the caches
    ran fastest), 4,194,304 on a GPU (enough work to fill it; ~2 GB of temporaries)."""
    return 65_536 if device.type == "cpu" else 4_194_304
