"""The training-distribution shifts of the gridworld experiments (PROTOCOL §3, "Shifts").

An experiment is split into rounds ``r = 1, 2, …`` (10 in the paper). Between rounds the distribution the agent
trains on changes in one of these ways; the train and the test environment always shift together:

``permute``
    The 363 observation entries are reordered. σ is NumPy's legacy ``RandomState(seed).shuffle`` of
    ``arange(363)`` and round ``r`` uses σ composed ``r`` times, applied as ``obs[i] = raw[mapping[i]]``.
    Round 1 already sees σ (not the identity): the authors' release permutes from the start, and every shift
    composes σ once more. We match the release, so that fixture mappings taken from it agree entry by entry.
    The level pools stay fixed.
``window``
    Round ``r`` trains on levels ``[start + (r−1)k, start + rk)``: a disjoint, unseen block every round.
``expand``
    Round ``r`` trains on ``[start, start + rk)``: earlier levels stay and the pool grows by ``k`` per round.
``none``
    No shift (the stationary control): fixed pools, raw observations.

Level pools: ``k`` (``pool_size``) is 100 in the paper. The train levels of seed ``s`` start at ``s·10 000`` and the
test levels at ``1 000 000 + s·10 000``; the test pool moves exactly like the train pool, so it is always the same
kind of distribution over levels never trained on. Pools of different seeds stay disjoint while ``r·k ≤ 10 000``
(100 rounds at k = 100), and train never meets test while ``seed < 100`` — far beyond the paper's 10 rounds, 5 seeds.

Everything here is a pure function of its arguments; σ is cached per ``(seed, size)``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .schema import SPLITS, check_choice, check_int, check_round, check_seed

__all__ = [
    "SHIFTS",
    "SPLITS",
    "TRAIN_LEVEL_STRIDE",
    "TEST_LEVEL_OFFSET",
    "DEFAULT_POOL_SIZE",
    "permute_mapping",
    "level_range",
    "apply_mapping",
    "Distribution",
    "distribution",
]

SHIFTS = ("permute", "window", "expand", "none")
TRAIN_LEVEL_STRIDE = 10_000  # train levels of seed s start at s * 10_000
TEST_LEVEL_OFFSET = 1_000_000  # test levels of seed s start at 1_000_000 + s * 10_000
DEFAULT_POOL_SIZE = 100
DEFAULT_OBS_SIZE = 363


@functools.lru_cache(maxsize=256)
def _sigma(seed: int, size: int) -> np.ndarray:
    sigma = np.arange(size)
    np.random.RandomState(seed).shuffle(sigma)
    sigma.setflags(write=False)
    return sigma


def permute_mapping(seed: int, round: int, size: int = DEFAULT_OBS_SIZE) -> np.ndarray:  # noqa: A002
    """Observation mapping of the ``permute`` shift for ``seed`` in (1-based) ``round``.

    σ = ``np.random.RandomState(seed).shuffle(np.arange(size))`` (the legacy in-place shuffle, as in the release).
    Round ``r`` returns σ composed ``r`` times, ``σ^r``, to be applied as ``obs[i] = raw[mapping[i]]``
    (see :func:`apply_mapping`). Round 1 already returns σ rather than the identity because the authors' release
    permutes the observation from the first round on; each of the later shifts composes σ once more. (Powers of
    one permutation commute, so it does not matter on which side the extra σ is composed.)

    Returns a new int64 array of length ``size`` (a permutation of ``0..size-1``).
    """
    seed = check_seed(seed)
    round = check_round(round)
    size = check_int("size", size, 1, "valid: an integer >= 1")
    sigma = _sigma(seed, size)
    mapping = sigma.copy()
    for _ in range(round - 1):
        mapping = mapping[sigma]
    return mapping.astype(np.int64, copy=False)


def level_range(
    kind: str,
    seed: int,
    round: int,  # noqa: A002
    split: str = "train",
    pool_size: int = DEFAULT_POOL_SIZE,
) -> range:
    """The contiguous level pool ``[lo, hi)`` of ``split`` for shift ``kind``, ``seed`` and (1-based) ``round``.

    ``start`` is ``seed·10 000`` for ``"train"`` and ``1 000 000 + seed·10 000`` for ``"test"``; with ``k =
    pool_size``:

    * ``permute`` and ``none``: ``[start, start + k)`` in every round (the levels do not move);
    * ``window``: ``[start + (r−1)k, start + rk)`` — a fresh block of ``k`` levels each round;
    * ``expand``: ``[start, start + rk)`` — the pool grows by ``k`` each round, old levels stay.

    Each reset draws a level uniformly from this pool.
    """
    kind = check_choice("shift", kind, SHIFTS)
    split = check_choice("split", split, SPLITS)
    seed = check_seed(seed)
    round = check_round(round)
    k = check_int("pool_size", pool_size, 1, "valid: an integer >= 1")
    start = seed * TRAIN_LEVEL_STRIDE + (TEST_LEVEL_OFFSET if split == "test" else 0)
    return pool_from(kind, start, round, k)


def pool_from(kind: str, start: int, round: int, k: int) -> range:  # noqa: A002
    """The level pool of (checked) shift ``kind`` in ``round`` for pools of ``k`` levels that begin at ``start``:
    *window* ``[start + (r−1)k, start + rk)``, *expand* ``[start, start + rk)``, otherwise ``[start, start + k)``."""
    if kind == "window":
        return range(start + (round - 1) * k, start + round * k)
    if kind == "expand":
        return range(start, start + round * k)
    return range(start, start + k)


def apply_mapping(obs: torch.Tensor, mapping: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Permute the last dimension of ``obs``: ``out[..., i] = obs[..., mapping[i]]``.

    ``mapping`` is either ``[D]`` (one mapping shared by every row) or ``[B, D]`` (one mapping per copy — e.g.
    each agent of a population with its own seed's σ); in the second case ``obs`` is ``[..., B, D]`` and row ``b``
    uses ``mapping[b]``. No Python loop; the result is a new tensor on ``obs``'s device. A NumPy mapping is
    accepted and converted (pass a long tensor already on the device to avoid the copy in a hot loop).
    """
    if not isinstance(mapping, torch.Tensor):
        mapping = torch.as_tensor(np.asarray(mapping, dtype=np.int64))
    if mapping.dtype != torch.long:
        mapping = mapping.long()
    if mapping.device != obs.device:
        mapping = mapping.to(obs.device)
    d = obs.shape[-1]
    if mapping.dim() == 1:
        if mapping.shape[0] != d:
            raise ValueError(f"mapping of length {mapping.shape[0]} does not match observations of size {d}")
        return obs.index_select(-1, mapping)
    if mapping.dim() == 2:
        if obs.dim() < 2 or tuple(obs.shape[-2:]) != tuple(mapping.shape):
            raise ValueError(
                f"per-copy mapping of shape {tuple(mapping.shape)} needs observations of shape [..., "
                f"{mapping.shape[0]}, {mapping.shape[1]}], got {tuple(obs.shape)}"
            )
        return torch.gather(obs, -1, mapping.expand(obs.shape))
    raise ValueError(f"mapping must be [D] or [B, D], got shape {tuple(mapping.shape)}")


@dataclass(frozen=True, eq=False)
class Distribution:
    """What the agent sees in one round: the train and test level pools and the observation mapping.

    ``mapping`` is ``None`` when observations are not permuted (shifts ``window``, ``expand``, ``none``);
    otherwise an int64 array applied as ``obs[i] = raw[mapping[i]]`` (:func:`apply_mapping`). Train and test use
    the same mapping: the shift acts on both environments together.
    """

    train_levels: range
    test_levels: range
    mapping: np.ndarray | None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Distribution):
            return NotImplemented
        if self.train_levels != other.train_levels or self.test_levels != other.test_levels:
            return False
        if self.mapping is None or other.mapping is None:
            return self.mapping is None and other.mapping is None
        return bool(np.array_equal(self.mapping, other.mapping))

    def __hash__(self) -> int:
        mapping_key = None if self.mapping is None else self.mapping.tobytes()
        return hash((self.train_levels, self.test_levels, mapping_key))


def distribution(
    kind: str,
    seed: int,
    round: int,  # noqa: A002
    pool_size: int = DEFAULT_POOL_SIZE,
    obs_size: int = DEFAULT_OBS_SIZE,
) -> Distribution:
    """The :class:`Distribution` of shift ``kind`` for ``seed`` in (1-based) ``round``.

    * ``permute``: fixed pools and ``mapping = permute_mapping(seed, round, obs_size)``;
    * ``window`` / ``expand``: moving pools (:func:`level_range`), ``mapping = None``;
    * ``none``: fixed pools, ``mapping = None``.
    """
    kind = check_choice("shift", kind, SHIFTS)
    train = level_range(kind, seed, round, "train", pool_size)
    test = level_range(kind, seed, round, "test", pool_size)
    if kind == "permute":
        mapping = permute_mapping(seed, round, obs_size)
        mapping.setflags(write=False)
    else:
        mapping = None
    return Distribution(train_levels=train, test_levels=test, mapping=mapping)
