"""The model card: its file-format keys, the name a result gives its model, and its rows as text.

A card is the JSON dict that travels with a model's weights (written by
:func:`chronoflow.flows.training.train` and :func:`chronoflow.flows.artifact.save_model`, read by
:func:`chronoflow.flows.artifact.load_model`). This module holds what more than one module needs
to agree on about it: the format name and version every model file carries, and two ways of
showing a card (the short name a result records, the rows ``chronoflow model info`` prints).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .flow import RotationModel

__all__ = ["MODEL_FORMAT", "MODEL_FORMAT_VERSION", "READABLE_FORMAT_VERSIONS", "card_rows", "model_name"]

#: The ``format`` of every chronoflow model card.
MODEL_FORMAT = "chronoflow-model"
#: The ``format_version`` this release writes.
MODEL_FORMAT_VERSION = 2
#: Format versions this release reads (1: a single flow; 2: a single flow or an ensemble).
READABLE_FORMAT_VERSIONS = (1, 2)


def model_name(model: RotationModel) -> str:
    """The identifier a result carries for its model: the start of its weights' checksum and its
    creation date (``untracked (no card)`` for a model without a card)."""
    card = getattr(model, "card", {}) or {}
    return f"{card.get('weights_sha256', 'untracked')[:12]} ({card.get('created', 'no card')})"


def card_rows(card: dict[str, Any]) -> list[tuple[str, str]]:
    """The card as ``(field, value)`` rows of text, as ``chronoflow model info`` (and ``chronoflow
    train``) print them: versions, architecture, training data and settings, training domain,
    held-out metrics, ensemble, regularization and the model-error term."""
    arch = card["architecture"]
    rows = [
        ("created", card.get("created", "?")),
        ("chronoflow / torch / nflows", f"{card.get('chronoflow_version')} / {card.get('torch_version')} / {card.get('nflows_version')}"),
        ("architecture", f"{arch['kind']}: {arch['n_transforms']} transforms x {arch['n_bins']} bins, MLP {arch['n_hidden_layers']}x{arch['hidden']}, tails +-{arch['tail_bound']:g}"),
        ("parameters", str(card.get("n_parameters"))),
        ("training catalogue", f"{card.get('catalogue_file')} (file sha256 {card.get('catalogue_file_sha256')})"),
        ("training stars / clusters", f"{card.get('n_training_stars')} / {len(card.get('clusters', []))}"),
        ("seed", str(card.get("training", {}).get("seed"))),
        ("validation clusters", ", ".join(card.get("split", {}).get("val_clusters", [])) or "-"),
        ("epochs (split best / final)", f"{card.get('epochs', {}).get('flow_split_best')} / {card.get('epochs', {}).get('final')}"),
    ]  # fmt: skip
    dom = card["training_domain"]
    rows.append(("domain: log10 age [Myr]", "{:.3f} - {:.3f}".format(*dom["log10_age_myr"])))
    rows.append(("domain: (BP-RP)0 [mag]", "{:.3f} - {:.3f}".format(*dom["bprp0"])))
    rows.append(("domain: log10 e_(BP-RP)0", "{:.3f} - {:.3f}".format(*dom["log10_e_bprp0"])))
    for name in ("flow", "baseline"):
        v = card.get("validation", {}).get(name)
        if v:
            rows.append(
                (f"held-out NLL ({name})", f"{v['nll']:.4f} nats/star; PIT KS {v['pit_ks']:.3f}, coverage 68% {v['coverage_68']:.3f}, 95% {v['coverage_95']:.3f}")
            )  # fmt: skip
    ens = card.get("ensemble")
    if ens:
        rows.append(("ensemble", f"{ens['n_members']} members, seeds {', '.join(map(str, ens['seeds']))}, bootstrap {ens['bootstrap']!r}"))
        rows.append(("member epochs (final)", ", ".join(str(m["epochs"]["final"]) for m in ens["members"])))
    train_cfg = card.get("training", {})
    rows.append(("regularization", f"age-label noise {train_cfg.get('age_noise_dex', 0.0):g} dex, weight decay {train_cfg.get('weight_decay', 0.0):g}"))
    me = card.get("model_error")
    if me:
        m = me.get("loo_metrics", {})
        rows.append(("model error", f"calibrated on {me['curve']['n_clusters']} leave-one-out clusters ({me.get('source', '')})"))
        if m:
            rows.append(("leave-one-out (23 clusters)", f"rms {m['rms_all_dex']:.3f} dex, median |res| {m['median_abs_all_dex']:.3f} dex, "
                         f"coverage of the total error {m['coverage_total_all']:.2f}, median total {m['median_total_all_dex']:.3f} dex"))  # fmt: skip
    else:
        rows.append(("model error", "not calibrated (run `chronoflow validate loo --calibrate FILE`)"))
    rows.append(("training wall time", f"{card.get('wall_time_s')} s"))
    return [(k, str(v)) for k, v in rows]
