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


def member_norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Global L2 norm of each member's slice across a list of ``[M, ...]`` tensors → ``[M]``.

    Used for the gradient norm (before clipping) and by :func:`weight_magnitude`.
    """
    norms = [torch.linalg.vector_norm(_by_member(t.detach()), dim=1) for t in tensors]
    return torch.linalg.vector_norm(torch.stack(norms), dim=0)


def weight_magnitude(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Root-mean-square of all of a member's parameters, ``sqrt(Σθ² / N)`` → ``[M]``."""
    count = sum(t[0].numel() for t in tensors)
    return member_norm(tensors) / count**0.5


def weight_difference(before: list[torch.Tensor], after: list[torch.Tensor]) -> torch.Tensor:
    """RMS of the change ``after − before`` (one epoch's update) → ``[M]``."""
    return weight_magnitude([a.detach() - b.detach() for a, b in zip(after, before)])


def dead_unit_fraction(activations: torch.Tensor) -> torch.Tensor:
    """Fraction of exactly-zero activations over batch × units, per member: ``[M, B, units] → [M]``.

    This is the paper's "dead units" diagnostic (a ReLU output that is exactly 0), not ReDo's score.
    """
    # Counted over the non-member axes in place: flattening a transposed (feature-major) view would copy it.
    zeros = (activations == 0).sum(dim=tuple(range(1, activations.dim())))
    return zeros.to(torch.float32) / activations[0].numel()


def dormant_scores(activations: torch.Tensor) -> torch.Tensor:
    """ReDo's per-unit score: ``mean_batch(|a_i|) / mean_units(mean_batch(|a|))``.

    ``activations [M, B, units]`` (or ``[M, B, C, H, W]`` for a convolution: the spatial positions count as
    batch) → ``[M, units]``. A unit whose score is at most τ is "dormant". ReLU outputs are non-negative, so
    the absolute value only matters for other activations.
    """
    a = activations.abs()
    if a.dim() == 5:
        a = a.movedim(2, -1).reshape(a.shape[0], -1, a.shape[2])
    per_unit = a.mean(1)
    return per_unit / (per_unit.mean(1, keepdim=True) + 1e-9)


def dormant_fraction(activations: torch.Tensor, tau: float) -> torch.Tensor:
    """Fraction of units whose ReDo score is ≤ τ → ``[M]``."""
    return (dormant_scores(activations) <= tau).float().mean(1)
