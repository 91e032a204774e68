"""The results' vocabulary, defined once: what identifies a run, what is measured, and how bad input is refused.

Every table the package writes or reads (a run's epochs, a stored study's curves, rounds and runs, the statistics'
inputs) names its columns with these constants, so the training loop, the store, the statistics and the figures
agree without importing one another. The argument checks give every public function the same one-line error:
the bad value and the valid ones.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

#: Columns that identify a run inside a results table.
RUN_KEYS: tuple[str, ...] = ("env", "shift", "condition", "seed")
#: The columns that place an epoch inside a run.
TIME_COLUMNS: tuple[str, ...] = ("round", "epoch_in_round")
#: The two evaluation splits: training episodes and unseen test levels.
SPLITS: tuple[str, ...] = ("train", "test")
#: The per-epoch diagnostics of PROTOCOL §5, in the order the paper lists them.
DIAGNOSTICS: tuple[str, ...] = ("entropy", "weight_magnitude", "weight_difference", "grad_norm", "dead_units")
#: PPO's own per-epoch statistics, logged beside the diagnostics.
PPO_STATISTICS: tuple[str, ...] = ("policy_loss", "value_loss", "approx_kl", "clip_fraction")
#: The returns a run logs, one per split.
RETURNS: tuple[str, ...] = tuple(f"{split}_return" for split in SPLITS)


def check_choice(name: str, value: Any, valid: Sequence[Any]) -> Any:
    """``value`` if it is one of ``valid``; else one ``ValueError`` naming both."""
    try:
        ok = value in valid and not isinstance(value, (list, dict, set))
    except TypeError:  # an unhashable value tested against a mapping
        ok = False
    if not ok:
        raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(map(str, valid))}")
    return value


def check_int(name: str, value: Any, minimum: int, hint: str) -> int:
    """``value`` as an ``int`` if it is an integer (not a bool) of at least ``minimum``; else one ``ValueError``
    naming it, followed by ``hint`` (which says what is valid)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < minimum:
        raise ValueError(f"invalid {name} {value!r}; {hint}")
    return int(value)


def check_seed(seed: Any) -> int:
    """A seed: an integer ≥ 0."""
    return check_int("seed", seed, 0, "valid: an integer >= 0")


def check_round(round: Any) -> int:  # noqa: A002 - "round" is the project's word
    """A round number: rounds are 1-based, round 1 being the one before any shift."""
    return check_int("round", round, 1, "valid: an integer >= 1 (rounds are 1-based; round 1 = no shift yet)")


def check_positive(name: str, value: Any, allow_none: bool = True) -> None:
    """A count that must be a positive integer (``None`` allowed where ``allow_none``: "use the default")."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")
