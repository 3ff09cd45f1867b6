"""Note concepts: unsupervised patient-level traits found in the notes' sentences.

A trait such as "lives alone" is written in several phrasings, one or two per note, and
recurs across a patient's notes; sentences that express the same trait therefore occur
together in the same patients more often than chance, and independently of other
traits.  This module finds such traits without labels:

1. a k-means codebook of the training split's L2-normalised segment embeddings
   (sentence *types*);
2. a patient x sentence-type presence matrix, each column standardised (types present
   in under 2 % or over 90 % of patients are dropped: headers, boilerplate);
3. independent component analysis (FastICA; Hyvarinen & Oja 2000) of that matrix: each
   component is a weighted set of sentence types that vary together across patients.

A patient's concept scores are the components of their presence vector (unit variance
on the training split).  Everything after the fit is a fixed linear map of the nearest
centroid per segment, stored in buffers, so inference is a few tensor operations.

On the simulator's cohort the 20 components include one per note signal (non-adherence,
living alone, worsening breathlessness, low mood, frailty), each recovering it with an
AUROC of about 0.99 (``docs/model-performance.md``); the outcome model then only has to
learn one weight per component.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

#: Sentence types present in fewer / more patients than these fractions are dropped.
MIN_PREVALENCE = 0.02
MAX_PREVALENCE = 0.90
_UNUSED = -1e4  # centroid bias of unused codebook rows: never the nearest


class NoteConcepts(nn.Module):
    """Concept scores (B, components) of segment embeddings (B, S, H); zeros until fitted.

    Args:
        in_dim: segment embedding size.
        clusters: codebook size (sentence types).
        components: independent components (concepts).
    """

    centroids: torch.Tensor
    centroid_bias: torch.Tensor
    mean: torch.Tensor
    inv_std: torch.Tensor
    unmix: torch.Tensor
    fitted: torch.Tensor

    def __init__(self, in_dim: int, clusters: int = 200, components: int = 20) -> None:
        super().__init__()
        if in_dim <= 0 or clusters < 2 or components < 1:
            raise ValueError(
                f"in_dim ({in_dim}) > 0, clusters ({clusters}) >= 2, components ({components}) >= 1"
            )
        self.clusters = clusters
        self.components = components
        self.register_buffer("centroids", torch.zeros(clusters, in_dim))
        self.register_buffer("centroid_bias", torch.full((clusters,), _UNUSED))
        self.register_buffer("mean", torch.zeros(clusters))
        self.register_buffer("inv_std", torch.zeros(clusters))
        self.register_buffer("unmix", torch.zeros(components, clusters))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def fit(self, x: torch.Tensor, seed: int = 0) -> dict[str, int]:
        """Fit codebook and components on training texts.

        Args:
            x: (N, S, H) segment embeddings of N patients with text, zero rows padding.
            seed: seeds k-means and ICA (the fit is deterministic under it).

        Returns:
            ``segments``, ``clusters`` (codebook rows used), ``kept`` (sentence types
            kept after the prevalence filter) and ``components`` fitted (0: too little
            text; the scores stay zero).
        """
        from sklearn.cluster import MiniBatchKMeans  # noqa: PLC0415 - training only
        from sklearn.decomposition import FastICA  # noqa: PLC0415

        self.fitted.fill_(False)  # until this fit succeeds
        dev = self.centroids.device  # the fit runs on the CPU (NumPy, scikit-learn)
        x = x.detach().cpu()
        valid = x.abs().sum(-1) > 0  # (N, S)
        rows = nn.functional.normalize(x[valid].double(), dim=-1).numpy()
        k = min(self.clusters, len(rows))
        stats = {"segments": len(rows), "clusters": 0, "kept": 0, "components": 0}
        if k < 2 or len(x) < 3:
            return stats
        km = MiniBatchKMeans(k, random_state=seed, n_init=3, batch_size=4096).fit(rows)
        centroids = np.zeros((self.clusters, rows.shape[1]))
        centroids[:k] = km.cluster_centers_
        bias = np.full(self.clusters, _UNUSED)
        bias[:k] = -0.5 * (km.cluster_centers_**2).sum(1)
        self.centroids.copy_(torch.from_numpy(centroids))
        self.centroid_bias.copy_(torch.from_numpy(bias))
        presence = self._presence(x.to(dev), valid.to(dev)).double().cpu().numpy()  # (N, K)
        prev = presence.mean(0)
        keep = (prev > MIN_PREVALENCE) & (prev < MAX_PREVALENCE)
        r = min(self.components, int(keep.sum()), len(x) - 1)
        stats.update(clusters=k, kept=int(keep.sum()))
        if r < 1:
            return stats
        mu = presence[:, keep].mean(0)
        sd = presence[:, keep].std(0)
        z = (presence[:, keep] - mu) / sd
        r = min(r, int(np.linalg.matrix_rank(z - z.mean(0))))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # convergence warnings: still usable
                ica = FastICA(r, random_state=seed, whiten="unit-variance", max_iter=2000)
                ica.fit(z)
            ok = bool(np.isfinite(ica.components_).all() and np.isfinite(ica.mean_).all())
        except (ValueError, np.linalg.LinAlgError):
            ok = False
        if r < 1 or not ok:
            return stats
        mean = np.zeros(self.clusters)
        inv = np.zeros(self.clusters)
        mean[keep] = mu + ica.mean_ * sd  # folds ICA's centring into the presence mean
        inv[keep] = 1.0 / sd
        unmix = np.zeros((self.components, self.clusters))
        unmix[:r, keep] = ica.components_
        self.mean.copy_(torch.from_numpy(mean))
        self.inv_std.copy_(torch.from_numpy(inv))
        self.unmix.copy_(torch.from_numpy(unmix))
        self.fitted.fill_(True)
        stats["components"] = r
        return stats

    def presence(self, x: torch.Tensor) -> torch.Tensor:
        """(B, clusters) 1.0 where some segment's nearest codebook row is that type."""
        return self._presence(x, x.abs().sum(-1) > 0)

    def _presence(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        xn = nn.functional.normalize(x, dim=-1)
        score = xn @ self.centroids.to(xn.dtype).T + self.centroid_bias.to(xn.dtype)
        hit = nn.functional.one_hot(score.argmax(-1), self.clusters).to(x.dtype)
        return (hit * valid[..., None].to(x.dtype)).amax(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Concept scores (B, components); zeros when not fitted or for a text-less row."""
        if not bool(self.fitted):
            return x.new_zeros(len(x), self.components)
        valid = x.abs().sum(-1) > 0  # (B, S)
        z = (self._presence(x, valid) - self.mean.to(x.dtype)) * self.inv_std.to(x.dtype)
        out = z @ self.unmix.to(x.dtype).T
        return torch.where(valid.any(1, keepdim=True), out, torch.zeros_like(out))
