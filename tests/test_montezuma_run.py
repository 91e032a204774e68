"""Montezuma's Revenge runs through the study's own path (``RunConfig(env="montezuma")``, ``run``, sweeps, the CLI,
checkpoints, storage): the table's shape and counters, repeatability, every condition that applies, and bad input
refused by name."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("ale_py")

import plasticity_lab as pl  # noqa: E402
from plasticity_lab.cli import main  # noqa: E402
from plasticity_lab.conditions import CONDITIONS, shift_only_conditions  # noqa: E402
from plasticity_lab.montezuma_run import MONTEZUMA_COLUMNS, MontezumaExperiment, montezuma_summary  # noqa: E402
from plasticity_lab.envs.montezuma import AtariSettings  # noqa: E402
from plasticity_lab.report import montezuma_tests, report  # noqa: E402
from plasticity_lab.rnd import RNDConfig  # noqa: E402
from plasticity_lab.sweep import Sweep, run_sweep  # noqa: E402

TINY = RNDConfig(rollout_length=8, init_steps=4, epochs=1, minibatches=2)


def tiny(seed=0, condition="warm_start", **kw):
    return pl.RunConfig(env="montezuma", condition=condition, seed=seed, rnd=TINY, **kw)


def test_a_run_logs_every_seed_and_iteration_and_repeats_itself():
    configs = [tiny(3, "regen_l2", epochs_per_round=2), tiny(5, "regen_l2", epochs_per_round=2)]
    table = pl.run(configs)
    assert len(table) == 2 * 2
    assert list(table.columns[:9]) == ["env", "shift", "condition", "seed", "round", "epoch", "epoch_in_round",
                                       "agent_steps", "frames"]
    assert list(table.columns[9:]) == list(MONTEZUMA_COLUMNS)
    assert set(table["shift"]) == {"none"} and set(table["round"]) == {1}
    # the smoke preset's 2 games × 8 steps per iteration, 4 frames a step
    assert table.groupby("seed")["agent_steps"].apply(list).tolist() == [[16, 32], [16, 32]]
    assert (table["frames"] == 4 * table["agent_steps"]).all()
    assert table[["intrinsic_reward", "policy_loss", "value_loss", "entropy", "weight_difference"]].notna().all().all()
    assert (table["weight_difference"] > 0).all()  # the update moved the weights
    assert pl.run(configs).equals(table)


MONTEZUMA_CONDITIONS = [n for n in CONDITIONS if not shift_only_conditions(n)]


def test_the_conditions_that_act_without_a_shift_are_the_ones_montezuma_takes():
    # hand-listed from what each condition does (PROTOCOL §4): resets, S+P and injection act only at a shift
    assert sorted(MONTEZUMA_CONDITIONS) == sorted(["warm_start", "soft_shrink_perturb", "l2", "regen_l2", "regen_w2",
                                                   "layernorm", "crelu", "redo"])


@pytest.mark.parametrize("condition", [*MONTEZUMA_CONDITIONS, "soft_shrink_perturb+layernorm"])
def test_each_condition_trains_on_the_game_without_nan(condition):
    params = {"period": 1} if condition == "redo" else {}  # ReDo acts after every iteration, so it is exercised
    table = pl.run(tiny(1, condition, epochs_per_round=2, num_envs=1, condition_params=params))
    numbers = table[[c for c in MONTEZUMA_COLUMNS if c != "extrinsic_return"]]
    assert np.isfinite(numbers.to_numpy(dtype=float)).all()


@pytest.mark.parametrize("games", ["emulators", "vector"])
def test_a_checkpointed_run_continues_where_it_stopped(tmp_path, games):
    checkpoint = tmp_path / "run.pt"
    config = tiny(2, epochs_per_round=3, atari=AtariSettings(games=games))
    whole = pl.run(config)
    first = MontezumaExperiment([config])
    first.train_epoch(), first.train_epoch()
    first.save(checkpoint)
    first.close()
    later = MontezumaExperiment([config])
    later.restore(checkpoint)
    assert later.epoch == 2 and later.starts == 1
    later.train_to_end()
    table = later.table()
    if games == "emulators":  # the emulators' state was saved: the run goes on exactly as it would have
        pd.testing.assert_frame_equal(table, whole)
        assert table["rooms_visited"].tolist() == [1, 1, 1]  # a few random steps stay in the start room
    else:  # the vector environment cannot save its games: they restart (new seeds) after the checkpoint
        pd.testing.assert_frame_equal(table.iloc[:2], whole.iloc[:2])
        assert table["rooms_visited"].isna().all()
    assert table["epoch"].tolist() == [0, 1, 2] and table["agent_steps"].tolist() == [16, 32, 48]
    with pytest.raises(ValueError, match="belongs to other configs"):
        MontezumaExperiment([tiny(4, epochs_per_round=3)]).restore(checkpoint)


def test_the_stored_tables_by_hand():
    df = pd.DataFrame({"env": "montezuma", "shift": "none", "condition": "warm_start", "seed": 0, "round": 1,
                       "epoch": range(10), "epoch_in_round": range(10), "agent_steps": np.arange(1, 11) * 16,
                       "frames": np.arange(1, 11) * 64})
    df["extrinsic_return"] = [np.nan, 0, np.nan, 100, np.nan, np.nan, 400, np.nan, np.nan, 0]
    df["episodes"] = [0, 2, 0, 1, 0, 0, 1, 0, 0, 3]
    for k in MONTEZUMA_COLUMNS[2:]:
        df[k] = np.arange(10.0)
    df["rooms_visited"] = [1, 1, 1, 2, 2, 2, 3, 3, 3, 3]
    tables = montezuma_summary(df, stride=5)
    rounds = tables["rounds"].iloc[0]
    assert rounds["episodes"] == 7
    assert math.isclose(rounds["mean_score"], (0 * 2 + 100 + 400 + 0 * 3) / 7)
    assert rounds["best_score"] == 400 and rounds["iterations"] == 10 and rounds["agent_steps"] == 160
    assert math.isclose(rounds["dead_units"], 4.5) and rounds["rooms_visited"] == 3  # a count: its last value
    # the per-run means: iterations with episodes alike, whatever their count; the last tenth is the last iteration
    assert math.isclose(tables["runs_mean"].iloc[0]["extrinsic_return"], 500 / 4)
    assert tables["runs_final"].iloc[0]["extrinsic_return"] == 0 and tables["runs_final"].iloc[0]["dead_units"] == 9
    assert tables["curves"]["epoch"].tolist() == [4, 9]
    assert math.isclose(tables["curves"]["extrinsic_return"].iloc[0], 50)


def test_a_sweep_runs_each_condition_and_seed_once_and_a_rerun_trains_nothing(tmp_path):
    sweep = Sweep.from_dict({"study": "mz", "envs": ["montezuma"], "conditions": ["warm_start"], "seeds": [0, 1],
                             "overrides": {"epochs_per_round": 1, "num_envs": 1,
                                           "rnd": {"rollout_length": 8, "init_steps": 4, "epochs": 1,
                                                   "minibatches": 2}}})
    assert [(c.shift, c.seed) for c in sweep.configs()] == [("none", 0), ("none", 1)]
    results = run_sweep(sweep, out=tmp_path / "mz")
    assert sorted(results.rounds["seed"]) == [0, 1]
    text = report(tmp_path / "mz")
    assert text.startswith("# study mz, preset book with its scale overridden (1 iterations × 1 games × 8 steps)")
    assert text.count("(not computed: the t-tests need warm_start and another condition") == 2  # one condition
    with pytest.raises(ValueError, match="no rounds to read out or fit"):
        report(tmp_path / "mz", at="final")
    stamp = {p: p.stat().st_mtime_ns for p in (tmp_path / "mz" / "populations").rglob("*.parquet")}
    run_sweep(sweep, out=tmp_path / "mz")
    assert {p: p.stat().st_mtime_ns for p in stamp} == stamp


def test_bad_input_is_refused_by_name(capsys):
    with pytest.raises(ValueError, match="env 'montezuma' has no rounds of shifting distributions"):
        pl.RunConfig(env="montezuma", shift="permute")
    with pytest.raises(ValueError, match="reset_all act.* only at a shift.*valid there: warm_start"):
        pl.RunConfig(env="montezuma", condition="reset_all+layernorm")
    with pytest.raises(ValueError, match="trains in one round"):
        pl.RunConfig(env="montezuma", rounds=2)
    with pytest.raises(ValueError, match="takes its learning settings from rnd"):
        pl.RunConfig(env="montezuma", ppo=pl.PPOConfig(lr=1e-3))
    with pytest.raises(ValueError, match="rnd and atari .* are for env 'montezuma'"):
        pl.RunConfig(env="gridworld", rnd=RNDConfig())
    with pytest.raises(ValueError, match="unknown games 'emulator'; valid: emulators, vector"):
        AtariSettings(games="emulator")
    with pytest.raises(ValueError, match="RNDConfig.epochs must be an integer >= 1; got 0"):
        RNDConfig(epochs=0)
    with pytest.raises(ValueError, match="bad override rnd"):
        Sweep.from_dict({"study": "x", "envs": ["montezuma"], "conditions": ["warm_start"],
                         "overrides": {"rnd": {"epoch": 2}}})
    assert main(["run", "--env", "montezuma", "--shift", "window"]) == 2
    assert "--env montezuma has no shifts" in capsys.readouterr().err


def test_the_tests_against_the_baseline_by_hand():
    per_run = pd.DataFrame({"condition": ["warm_start"] * 3 + ["regen_l2"] * 3 + ["l2"] * 2,
                            "mean_score": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 0.0, 0.0]})
    tests = montezuma_tests(per_run, "mean_score").set_index("condition")
    # means 2 and 5, both variances 1: pooled variance 1, t = 3 / sqrt(2/3), 4 degrees of freedom
    assert tests.loc["regen_l2", "t"] == pytest.approx(3 / math.sqrt(2 / 3))
    assert tests.loc["regen_l2", "p"] == pytest.approx(0.02131, abs=5e-5)
    assert (tests.loc["regen_l2", "n"], tests.loc["regen_l2", "baseline_mean"]) == (3, 2.0)
    # no spread in l2's runs, but some in the baseline's: pooled variance (0 + 2) / 3, t = −2 / sqrt(2/3 · 5/6)
    assert tests.loc["l2", "t"] == pytest.approx(-2 / math.sqrt(2 / 3 * 5 / 6))
