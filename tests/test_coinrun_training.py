"""Training on CoinRun through the same API as the gridworld: config, run, checkpoints, command line and sweep."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

import plasticity_lab as pl
from plasticity_lab.cli import main
from plasticity_lab.config import COINRUN_PRESETS, RunConfig, config_identity
from plasticity_lab.envs.coinrun import (EPISODE_LENGTH, STEP_PENALTY, CoinRunPopulation, patch_mapping,
                                      procgen_available)
from plasticity_lab.envs.population import GridworldPopulation
from plasticity_lab.experiment import Experiment
from plasticity_lab.ppo import PPOConfig

needs_procgen = pytest.mark.skipif(not procgen_available(), reason="ProcGen is not installed")

#: Two epochs of two members, two copies each, at least one minibatch of transitions per epoch.
TINY = dict(env="coinrun", preset="smoke", rounds=2, epochs_per_round=1, num_envs=2, test_episodes=2,
            ppo=PPOConfig(min_transitions=64))


def test_the_env_field_selects_games_network_and_presets():
    coinrun = Experiment([RunConfig(env="coinrun", shift="window", seed=3, preset="smoke")])
    assert isinstance(coinrun.train_env, CoinRunPopulation) and coinrun.population.episodes_end
    assert coinrun.population.params["encoder.0.layer.weight"].shape == (1, 32, 3, 4, 4)  # the paper's CNN
    assert coinrun.population.params["policy_head.weight"].shape == (1, 9, 256)  # 9 movement actions
    gridworld = Experiment([RunConfig(env="gridworld", preset="smoke")])
    assert isinstance(gridworld.train_env, GridworldPopulation) and not gridworld.population.episodes_end
    assert gridworld.population.params["encoder.0.layer.weight"].shape == (1, 256, 363)
    # CoinRun's presets: the paper's scale (PROTOCOL §1, §3) and the book's own
    paper = RunConfig(env="coinrun", preset="paper").resolved()
    assert (paper.rounds, paper.epochs_per_round, paper.pool_size, paper.test_interval) == (10, 5000, 100, 100)
    book = RunConfig(env="coinrun", preset="book").resolved()
    assert book.epochs_per_round == COINRUN_PRESETS["book"]["epochs_per_round"]
    assert book.test_interval == COINRUN_PRESETS["book"]["test_interval"]
    # round 2 of window: the next 100... here 10 levels of the smoke pool, from 0 (train) and 10 000 (test)
    coinrun._set_distributions(2)
    assert coinrun.train_env.level_pools == [range(10, 20)]
    assert coinrun.test_env.level_pools == [range(10_010, 10_020)]


def test_a_bad_env_is_one_clear_error():
    with pytest.raises(ValueError, match=r"env.*'atari'.*gridworld, coinrun"):
        RunConfig(env="atari")


def test_a_setting_added_since_the_stored_studies_leaves_their_identity_alone_at_its_earlier_value():
    default = RunConfig().to_dict()
    assert "min_transitions" not in config_identity(default)["ppo"]
    other = RunConfig(ppo=PPOConfig(min_transitions=2048)).to_dict()
    assert config_identity(other)["ppo"]["min_transitions"] == 2048
    stored = {**default, "ppo": {k: v for k, v in default["ppo"].items() if k != "min_transitions"}}
    assert config_identity(stored) == config_identity(default)


@pytest.fixture(scope="module")
def tiny_run():
    configs = [RunConfig(shift="permute", seed=s, condition="soft_shrink_perturb+layernorm", **TINY) for s in (0, 1)]
    return configs, pl.run(configs)


@needs_procgen
def test_a_coinrun_population_trains_with_the_protocol_columns(tiny_run):
    _, df = tiny_run
    assert len(df) == 4 and set(df["env"]) == {"coinrun"} and df["seed"].tolist() == [0, 0, 1, 1]
    numeric = df.select_dtypes("number").drop(columns=["test_return"])
    assert np.isfinite(numeric.to_numpy(float)).all()
    # an episode pays −0.01 a step for at most 200 steps, and 10 for the coin
    low, high = -STEP_PENALTY * EPISODE_LENGTH, 10.0
    assert df["train_return"].between(low, high).all()
    assert df["test_return"].notna().all() and df["test_return"].between(low, high).all()  # tested every epoch
    assert (df["dead_units"].between(0, 1)).all() and (df["weight_difference"] > 0).all()


@needs_procgen
def test_a_coinrun_run_repeats_itself_and_continues_from_a_checkpoint(tiny_run, tmp_path):
    configs, df = tiny_run
    checkpoint = tmp_path / "run.pt"
    first = Experiment(configs)
    first.train_epoch()
    first.save(checkpoint)
    resumed = Experiment(configs)
    resumed.restore(checkpoint)
    resumed.train_to_end()
    pd.testing.assert_frame_equal(resumed.table(), df)
    # the optimizer counts each member's steps: the checkpoint kept them
    state = resumed.population.optimizer.state_dict()["state"]
    assert all("member_steps" in s for s in state.values())


@needs_procgen
def test_the_command_line_trains_coinrun_into_a_study(tmp_path, capsys):
    out = tmp_path / "study"
    code = main(["run", "--env", "coinrun", "--shift", "window", "--condition", "warm_start", "--seeds", "0",
                 "--preset", "smoke", "--rounds", "2", "--epochs-per-round", "1", "--test-episodes", "2",
                 "--out", str(out), "--no-progress"])
    assert code == 0
    results = pl.load_results(out)
    assert set(results.runs()["env"]) == {"coinrun"} and len(results.epochs()) == 2
    manifest = json.loads(next((out / "populations").glob("*/manifest.json")).read_text())
    assert manifest["configs"][0]["env"] == "coinrun" and manifest["configs"][0]["ppo"]["min_transitions"] == 1024
    assert manifest["population_backend"] == "member_loop"  # the CNN on the CPU


def test_a_sweep_grids_coinrun_runs_into_coinrun_populations():
    from plasticity_lab.sweep import Sweep

    sweep = Sweep.from_dict({"study": "coinrun-grid", "envs": ["coinrun", "gridworld"], "preset": "book",
                             "shifts": ["permute", "window"], "conditions": ["warm_start", "reset_all"],
                             "seeds": "0-1"})
    tasks = sweep.populations()
    coinrun = [t for t in tasks if t.name.startswith("coinrun-")]
    assert len(coinrun) == 2 and len(tasks) == 4  # one population per environment and condition
    for task in coinrun:
        assert {c.env for c in task.configs} == {"coinrun"} and len(task.configs) == 4
        resolved = task.configs[0].resolved()
        assert resolved.epochs_per_round == COINRUN_PRESETS["book"]["epochs_per_round"]


@needs_procgen
def test_the_frames_drawn_are_the_frames_the_network_is_given():
    from plasticity_lab.envs.coinrun import permute_patches
    from plasticity_lab.figures.coinrun import coinrun_levels_figure, level_frame

    plain = level_frame(0)
    assert plain.shape == (64, 64, 3) and plain.dtype == np.uint8 and plain.std() > 0
    assert not np.array_equal(plain, level_frame(1))  # another level, another picture
    # under permute: the same pixels, their 4×4 patches moved as the environment moves them
    moved = level_frame(0, seed=3, round=2)
    expected = permute_patches(torch.from_numpy(plain).permute(2, 0, 1).float(), patch_mapping(3, 2))
    assert np.array_equal(moved, expected.permute(1, 2, 0).numpy().astype(np.uint8))
    assert not np.array_equal(moved, plain)
    fig = coinrun_levels_figure(train_levels=(0, 1), test_levels=(10_000,), permuted=0, rounds=(1,))
    assert [a.text for a in fig.layout.annotations] == ["train level 0", "train level 1", "test level 10,000",
                                                        "level 0, permute round 1"]
    with pytest.raises(ValueError, match="level must be a non-negative integer; got -1"):
        level_frame(-1)
