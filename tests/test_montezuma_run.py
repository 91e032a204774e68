"""Montezuma's Revenge runs end to end: the table's shape and counters, repeatability, and bad input refused."""

from __future__ import annotations

import pytest

pytest.importorskip("ale_py")

from plasticity_lab.montezuma_run import MONTEZUMA_COLUMNS, run_montezuma  # noqa: E402
from plasticity_lab.rnd import RNDConfig  # noqa: E402

TINY = RNDConfig(rollout_length=8, init_steps=4, epochs=1, minibatches=2)


def test_a_run_logs_every_seed_and_iteration_and_repeats_itself():
    table = run_montezuma([3, 5], "regen_l2", iterations=2, copies=2, config=TINY)
    assert len(table) == 2 * 2
    assert list(table.columns[:8]) == ["env", "shift", "condition", "seed", "iteration", "agent_steps", "frames",
                                       MONTEZUMA_COLUMNS[0]]
    assert set(MONTEZUMA_COLUMNS) <= set(table.columns)
    assert table.groupby("seed")["agent_steps"].apply(list).tolist() == [[16, 32], [16, 32]]  # 8 steps × 2 copies
    assert (table["frames"] == 4 * table["agent_steps"]).all()
    assert table[["intrinsic_reward", "policy_loss", "value_loss", "entropy"]].notna().all().all()
    again = run_montezuma([3, 5], "regen_l2", iterations=2, copies=2, config=TINY)
    assert again.equals(table)


def test_bad_input_is_refused_by_name():
    with pytest.raises(ValueError, match="iterations must be an integer >= 1; got 0"):
        run_montezuma([0], iterations=0)
    with pytest.raises(ValueError, match=r"seeds must be distinct and at least one; got \[1, 1\]"):
        run_montezuma([1, 1])
    with pytest.raises(ValueError, match="unknown condition"):
        run_montezuma([0], "warmstart")
