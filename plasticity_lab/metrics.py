"""The study's diagnostics (PROTOCOL §5), on tensors with a leading member axis ``[M, ...]``.

Each function returns one value per member, so the same code measures one agent (M = 1) or a population.
"""

from __future__ import annotations

import torch


def _by_member(t: torch.Tensor) -> torch.Tensor:
    """``t [M, ...]`` as ``[M, N]``, each member's values in the order they are stored: a view rather than a copy
    for a tensor whose dimensions are stored permuted (a weight stored input-major)."""
    if t.dim() > 2 and not t.is_contiguous():
        t = t.permute(0, *sorted(range(1, t.dim()), key=lambda d: -t.stride(d)))
    return t.reshape(t.shape[0], -1)


def member_norm(tensors: list[torch.Tensor], size_invariant: bool = False) -> torch.Tensor:
    """Global L2 norm of each member's slice across a list of ``[M, ...]`` tensors → ``[M]``.

    Used for the gradient norm (before clipping) and by :func:`weight_magnitude`. The tensors' norms are combined
    by one reduction over the stacked ``[tensors, M]``, whose order of additions PyTorch chooses by shape (with one
    member, a vectorised sum; with several, a column at a time). ``size_invariant=True`` adds them one tensor
    after another instead, the same additions for any number of members (see ``Population(size_invariant=...)``).
    """
    norms = [torch.linalg.vector_norm(_by_member(t.detach()), dim=1) for t in tensors]
    if not size_invariant:
        return torch.linalg.vector_norm(torch.stack(norms), dim=0)
    total = norms[0].square()
    for norm in norms[1:]:
        total = total + norm.square()
    return total.sqrt()


def weight_magnitude(tensors: list[torch.Tensor], size_invariant: bool = False) -> torch.Tensor:
    """Root-mean-square of all of a member's parameters, ``sqrt(Σθ² / N)`` → ``[M]``."""
    count = sum(t[0].numel() for t in tensors)
    return member_norm(tensors, size_invariant) / count**0.5


def weight_difference(before: list[torch.Tensor], after: list[torch.Tensor], size_invariant: bool = False
                      ) -> torch.Tensor:
    """RMS of the change ``after − before`` (one epoch's update) → ``[M]``."""
    return weight_magnitude([a.detach() - b.detach() for a, b in zip(after, before)], size_invariant)


def dead_unit_fraction(activations: torch.Tensor) -> torch.Tensor:
    """Fraction of exactly-zero activations over batch × units, per member: ``[M, B, units] → [M]``.

    This is the paper's "dead units" diagnostic (a ReLU output that is exactly 0), not ReDo's score.
    """
    # Counted over the non-member axes in place: flattening a transposed (feature-major) view would copy it.
    zeros = (activations == 0).sum(dim=tuple(range(1, activations.dim())))
    return zeros.to(torch.float32) / activations[0].numel()


#: How :func:`dormant_scores` scores a unit: the ReDo paper's ratio of batch means (``"project"``), or the batch
#: mean of per-sample ratios, as the authors' release computes it (``"release"``).
SCORES: tuple[str, ...] = ("project", "release")


def dormant_scores(activations: torch.Tensor, score: str = "project") -> torch.Tensor:
    """ReDo's per-unit score → ``[M, units]``; a unit whose score is at most τ is "dormant".

    ``activations [M, B, units]``, or ``[M, B, C, H, W]`` for a convolution: a unit is a channel and every
    (sample, position) counts as one row of the batch.

    * ``score="project"`` (default) — the ReDo paper's (Sokar et al., 2023) ratio of batch means::

          score_i = mean_batch(|a_i|) / (mean_units(mean_batch(|a|)) + 1e-9)

      A layer that is 0 on the whole batch scores 0 in every unit: every unit is dormant.
    * ``score="release"`` — the authors' release (``calculate_s_scores_multilayer`` in its ``shared/modules.py``):
      each sample's activations divided by that sample's mean over the layer's units, then averaged over the
      batch::

          score_i = mean_batch( a_i(x) / mean_units(a(x)) )

      with no ε and no absolute value (ReLU outputs are ≥ 0, so the absolute value changes nothing there). A sample
      on which every unit of the layer is 0 gives 0/0 = NaN for every unit, so the batch mean is NaN in every
      unit of that layer, and since ``NaN ≤ τ`` is false, ReDo then recycles **no unit of that layer** (of that
      member) at that step. For a convolution the ratio is taken per sample and position (the release's mean over
      the channel axis), then averaged over samples and positions.

    The two agree when every sample has the same layer mean; otherwise the release's weights each sample
    equally, the project's weights each sample by its share of the layer's total activity.
    """
    if score not in SCORES:
        raise ValueError(f"dormant_scores: score must be one of {', '.join(SCORES)}; got {score!r}")
    a = activations if score == "release" else activations.abs()
    if a.dim() == 5:
        a = a.movedim(2, -1).reshape(a.shape[0], -1, a.shape[2])
    if score == "release":
        return (a / a.mean(2, keepdim=True)).mean(1)
    per_unit = a.mean(1)
    return per_unit / (per_unit.mean(1, keepdim=True) + 1e-9)


def dormant_fraction(activations: torch.Tensor, tau: float, score: str = "project") -> torch.Tensor:
    """Fraction of units whose ReDo score (:func:`dormant_scores` with ``score``) is ≤ τ → ``[M]`` (a NaN score
    counts as not dormant)."""
    return (dormant_scores(activations, score) <= tau).float().mean(1)
