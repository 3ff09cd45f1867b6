"""How much each data source moved a patient's risk: exact Shapley values over modalities.

The fusion's attention weights say where the network looked, not how much a source
changed the answer, and they are not stable between two trainings of the same model
(docs/model-performance.md).  This module gives an additive answer instead.  The three
modalities are the players; a coalition ``S`` is scored by the calibrated probability
the network gives when the patient's own data is used for the modalities in ``S`` and a
**reference** for the others:

- numeric: the training mean of every feature, all measured (standardised value 0,
  missingness indicator 0), i.e. an average patient's labs and vitals;
- text and image: absent (masked, as the network sees a patient without notes or MRI).

A coalition whose inputs end up empty (e.g. only the numeric player, for a patient with
no labs at all) is scored as the reference.  With three players the Shapley values are
computed exactly from the eight coalitions (Shapley 1953; "baseline Shapley" in
Sundararajan and Najmi, ICML 2020), so for every outcome

    reference + contribution[numeric] + contribution[text] + contribution[image]
        == the patient's calibrated probability

(efficiency), a modality the patient lacks gets exactly 0 for text and image (null
player), and the numeric contribution of a patient without labs is the effect of having
none.  The cost is one forward pass of the fusion over 7 copies of the batch when the
caller passes the patient's own probabilities (8 otherwise); the image network is not
re-run.
"""

from __future__ import annotations

import math

import torch

from model.mprtm import Network
from model.types import MODALITIES

#: Coalitions as bit masks over MODALITIES (bit j set = modality j uses the patient's data).
_N = len(MODALITIES)
_COALITIONS = tuple(range(1 << _N))


def _shapley_weight(size: int) -> float:
    """|S|! (n - |S| - 1)! / n! for a coalition S of ``size`` not holding the player."""
    return math.factorial(size) * math.factorial(_N - size - 1) / math.factorial(_N)


@torch.no_grad()
def modality_contributions(
    net: Network,
    numeric: torch.Tensor,
    text: torch.Tensor,
    image: torch.Tensor,
    present: torch.Tensor,
    full: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Shapley contributions of each modality to each calibrated outcome probability.

    Args:
        net: the network, in eval mode.
        numeric, text, image, present: the batch as :meth:`MPRTM.forward` takes it.
        full: (B, O) the calibrated probabilities the caller already has for these
            inputs (the grand coalition); reused instead of computed again, so the
            contributions add up to exactly those numbers.

    Returns:
        ``reference`` (O,): the calibrated probabilities of the reference patient, and
        ``contributions`` (B, M, O) in probability units, modalities in
        :data:`MODALITIES` order; ``reference + contributions.sum(1)`` is the
        patient's calibrated probability.
    """
    if net.training:
        raise RuntimeError("modality_contributions needs the network in eval mode")
    b = numeric.shape[0]
    present = present.bool()
    coalitions = _COALITIONS if full is None else _COALITIONS[:-1]
    rows_num, rows_present = [], []
    for s in coalitions:
        own = [bool(s >> j & 1) for j in range(_N)]
        num = numeric if own[0] else torch.zeros_like(numeric)
        num_present = present[:, 0] if own[0] else torch.ones_like(present[:, 0])
        pres = torch.stack(
            [
                num_present,
                present[:, 1] & own[1],
                present[:, 2] & own[2],
            ],
            dim=1,
        )  # (B, 3)
        empty = ~pres.any(dim=1)  # nothing left: score the reference patient instead
        if bool(empty.any()):
            num = torch.where(empty[:, None], torch.zeros_like(num), num)
            pres = pres.clone()
            pres[empty, 0] = True
        rows_num.append(num)
        rows_present.append(pres)
    k = len(coalitions)
    res = net(
        torch.cat(rows_num),
        text.repeat(k, *([1] * (text.dim() - 1))),
        image.repeat(k, 1),
        torch.cat(rows_present),
    )
    probs = net.calibrated_probabilities(res["logits"].float())  # (kB, O)
    value = probs.reshape(k, b, -1)  # (k, B, O): v(S) per coalition
    if full is not None:
        value = torch.cat([value, full.float().to(value.device)[None]])  # (8, B, O)
    contrib = torch.zeros(b, _N, value.shape[-1], dtype=value.dtype, device=value.device)
    for j in range(_N):
        for s in _COALITIONS:
            if s >> j & 1:
                continue
            size = bin(s).count("1")
            contrib[:, j] += _shapley_weight(size) * (value[s | 1 << j] - value[s])
    return value[0, 0], contrib
