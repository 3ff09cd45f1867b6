"""How much each data source moved a patient's risk: exact Shapley values over modalities.

The fusion's attention weights say where the network looked, not how much a source
changed the answer, and they are not stable between two trainings of the same model
(docs/model-performance.md).  This module gives an additive answer instead.  The three
modalities are the players.  A coalition ``S`` is scored by the mean calibrated
probability the network gives when the patient's own data is used for the modalities in
``S`` and the data of each of ``B`` **typical patients** for the others (the background:
training patients with measurements, notes and an MRI, drawn when the checkpoint was
trained and stored in it).  This is the interventional ("baseline distribution")
Shapley value (Janzing et al., AISTATS 2020; Sundararajan and Najmi, ICML 2020).  With
three players it is computed exactly from the eight coalitions (Shapley 1953).

A modality the patient does not have stays missing in every coalition, background rows
included, so it contributes exactly 0 (null player), and the patient's reference is the
mean risk of the typical patients seen through the same kinds of data as the patient.
For every outcome

    reference + contribution[numeric] + contribution[text] + contribution[image]
        == the patient's calibrated probability

(efficiency).  An earlier version used one artificial reference patient (average
measurements, no notes, no MRI).  "No notes" is a state the network meets only through
modality dropout, so its risk was far from typical (18 % prevalence, reference risks of
9.8 to 51.7 % between trainings) and the notes' contributions mostly compensated for it.

The cost is one forward pass of the fusion per coalition over ``B`` copies of the batch
(7 x B copies when the caller passes the patient's own probabilities); the image network
and the text encoder are not re-run, and the text pooling runs once over the patients'
and the background's texts, not once per copy.
"""

from __future__ import annotations

import math

import torch

from model.mprtm import Network
from model.types import MODALITIES

TEXT = MODALITIES.index("text")

#: Coalitions as bit masks over MODALITIES (bit j set = modality j uses the patient's data).
_N = len(MODALITIES)
_COALITIONS = tuple(range(1 << _N))


def _shapley_weight(size: int) -> float:
    """|S|! (n - |S| - 1)! / n! for a coalition S of ``size`` not holding the player."""
    return math.factorial(size) * math.factorial(_N - size - 1) / math.factorial(_N)


def select_background(present: torch.Tensor, size: int, seed: int) -> torch.Tensor:
    """Indices (sorted) of up to ``size`` rows with all three modalities, drawn with ``seed``.

    Args:
        present: (N, 3) bool modality mask of the training split.
        size: patients to draw.
        seed: seeds the draw.
    """
    complete = torch.nonzero(present.bool().all(dim=1))[:, 0].cpu()
    if size <= 0 or len(complete) == 0:
        return complete[:0]
    if len(complete) > size:
        gen = torch.Generator().manual_seed(seed)
        complete = complete[torch.randperm(len(complete), generator=gen)[:size]]
    return complete.sort().values


@torch.no_grad()
def modality_contributions(
    net: Network,
    numeric: torch.Tensor,
    text: torch.Tensor,
    image: torch.Tensor,
    present: torch.Tensor,
    background: dict[str, torch.Tensor],
    full: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Shapley contributions of each modality to each calibrated outcome probability.

    Args:
        net: the network, in eval mode.
        numeric, text, image, present: the batch as :meth:`MPRTM.forward` takes it.
        background: ``numeric`` (B, 2F), ``text`` (B, S, D) and ``image`` (B, E + 1) of
            typical patients who have every modality (``Checkpoint.background``).
        full: (N, O) the calibrated probabilities the caller already has for these
            inputs (the grand coalition); reused instead of computed again, so the
            contributions add up to exactly those numbers.

    Returns:
        ``reference`` (N, O): each patient's mean probability over the background with
        the patient's kinds of data, and ``contributions`` (N, M, O) in probability
        units, modalities in :data:`MODALITIES` order; ``reference +
        contributions.sum(1)`` is the patient's calibrated probability.
    """
    if net.training:
        raise RuntimeError("modality_contributions needs the network in eval mode")
    n, b = numeric.shape[0], background["numeric"].shape[0]
    if b == 0:
        raise ValueError("the attribution background is empty")
    dev = numeric.device
    own = dict(zip(MODALITIES, (numeric, text, image), strict=True))
    bg = {m: background[m].to(device=dev, dtype=own[m].dtype) for m in MODALITIES}
    rows = torch.arange(n, device=dev).repeat_interleave(b)  # patient of each row
    others = torch.arange(b, device=dev).repeat(n)  # background patient of each row
    mask = present.bool()[rows]  # a modality the patient lacks stays missing everywhere
    # the text pooling (whitening, segment MLP, attention over up to 48 segments) depends
    # on the text alone: pool the N own and B background texts once, then take rows
    own_feats = net.text_features(own["text"])
    bg_feats = net.text_features(bg["text"])
    coalitions = _COALITIONS if full is None else _COALITIONS[:-1]
    values = []
    for s in coalitions:
        inputs = [own[m][rows] if s >> j & 1 else bg[m][others] for j, m in enumerate(MODALITIES)]
        feats = own_feats if s >> TEXT & 1 else bg_feats
        idx = rows if s >> TEXT & 1 else others
        res = net(*inputs, mask, {k: v[idx] for k, v in feats.items()})
        probs = net.calibrated_probabilities(res["logits"].float())  # (N*B, O)
        values.append(probs.reshape(n, b, -1).mean(1))  # v(S): mean over the background
    if full is not None:
        values.append(full.float().to(dev))
    value = torch.stack(values)  # (8, N, O)
    contrib = torch.zeros(n, _N, value.shape[-1], dtype=value.dtype, device=dev)
    for j in range(_N):
        for s in _COALITIONS:
            if s >> j & 1:
                continue
            size = bin(s).count("1")
            contrib[:, j] += _shapley_weight(size) * (value[s | 1 << j] - value[s])
    # a modality the patient lacks is masked in both halves of every difference, so its
    # value is 0 up to float rounding of the batched passes: make it exactly 0
    contrib = contrib * present.to(dev)[:, :, None]
    return value[0], contrib
