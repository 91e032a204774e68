"""Runs with their own random streams (RunConfig(randomness="member")) and populations that mix conditions
(conditions.MemberGroups): a run's table is the same whatever it is trained beside — alone, among other seeds, or
among other conditions — to the last bit; and what cannot be mixed is refused with one clear error."""

import numpy as np
import pandas as pd
import pytest

import plasticity_lab as pl
from plasticity_lab.conditions import MemberGroups, parse_condition
from plasticity_lab.config import RunConfig, config_identity
from plasticity_lab.envs.coinrun import procgen_available
from plasticity_lab.experiment import Experiment
from plasticity_lab.population import MemberSlice
from plasticity_lab.ppo import PPOConfig

KEYS = ["env", "shift", "condition", "seed", "epoch"]
#: 2 rounds of 2 epochs: every condition acts (a shift, ReDo every 2 epochs), and runs differ by then.
SHORT = dict(preset="smoke", rounds=2, epochs_per_round=2, randomness="member")


def runs(condition: str, seeds=(0, 1), shifts=("permute",), params=None, **extra) -> list[RunConfig]:
    return [RunConfig(condition=condition, shift=s, seed=k, condition_params=params or {}, **{**SHORT, **extra})
            for s in shifts for k in seeds]


def table(configs) -> pd.DataFrame:
    return pl.run(configs).sort_values(KEYS).reset_index(drop=True)


def assert_same_tables(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert list(a.columns) == list(b.columns)
    for column in a.columns:
        x, y = a[column].to_numpy(), b[column].to_numpy()
        if x.dtype.kind == "f":
            assert np.array_equal(x, y, equal_nan=True), (column, np.nanmax(np.abs(x - y)))
        else:
            assert (x == y).all(), column


def test_a_run_gives_the_same_table_alone_and_among_other_seeds_and_shifts():
    alone = table(runs("warm_start", seeds=(1,), shifts=("window",)))
    among = table(runs("warm_start", seeds=(0, 1, 2), shifts=("permute", "window")))
    assert_same_tables(alone, among[(among.seed == 1) & (among["shift"] == "window")].reset_index(drop=True))
    # and the runs do differ from each other (the comparison could fail)
    other = among[(among.seed == 2) & (among["shift"] == "window")].reset_index(drop=True)
    assert not np.array_equal(alone["entropy"], other["entropy"])


MIXED = {  # every condition that acts on the parameters, each where it acts within SHORT
    "warm_start": None, "reset_all": None, "reset_final": None, "shrink_perturb": None,
    "soft_shrink_perturb": {"perturb": 1e-3}, "l2": {"coef": 1.0}, "regen_l2": None, "regen_w2": None,
    "redo": {"period": 2, "tau": 0.5},
}


def test_a_population_of_every_parameter_condition_equals_each_condition_trained_alone():
    mixed_configs = [c for name, params in MIXED.items() for c in runs(name, params=params)]
    mixed = table(mixed_configs)
    assert sorted(mixed["condition"].unique()) == sorted(c.label for c in mixed_configs[::2])
    for name, params in MIXED.items():
        alone = table(runs(name, params=params))
        label = alone["condition"].iloc[0]
        assert_same_tables(alone, mixed[mixed.condition == label].reset_index(drop=True))
    # the conditions did act: after the shift, reset_all's weights are not warm-start's
    second = mixed[mixed.epoch == 2].set_index(["condition", "seed"])["weight_magnitude"]
    assert second[("reset_all", 0)] != second[("warm_start", 0)]


def test_groups_with_the_same_architecture_mix_and_redo_logs_its_own_members_after_recycling():
    # LayerNorm alone and soft shrink+perturb with LayerNorm build the same network; ReDo's "after" read-out
    # revises only its own rows, the others keep the update's (checked against each alone)
    configs = (runs("layernorm") + runs("soft_shrink_perturb+layernorm")
               + runs("redo+layernorm", params={"period": 2, "tau": 0.5, "log_weights": "after"}))
    mixed = table(configs)
    for group in (runs("layernorm"), runs("soft_shrink_perturb+layernorm"),
                  runs("redo+layernorm", params={"period": 2, "tau": 0.5, "log_weights": "after"})):
        alone = table(group)
        assert_same_tables(alone, mixed[mixed.condition == group[0].label].reset_index(drop=True))


def test_members_of_one_condition_are_kept_together_in_the_order_conditions_first_appear():
    configs = [runs("reset_all", seeds=(0,))[0], runs("warm_start", seeds=(0,))[0], runs("reset_all", seeds=(1,))[0]]
    experiment = Experiment(configs)
    assert [(c.condition, c.seed) for c in experiment.configs] == [("reset_all", 0), ("reset_all", 1),
                                                                    ("warm_start", 0)]
    groups = experiment.condition.groups
    assert [(c.name, a, b) for c, a, b in groups] == [("reset_all", 0, 2), ("warm_start", 2, 3)]


def test_a_member_slice_is_a_view_of_its_members():
    experiment = Experiment(runs("warm_start", seeds=(0, 1, 2)))
    population = experiment.population
    view = population.member_slice(1, 3)
    assert isinstance(view, MemberSlice) and view.members == 2 and view.member_seeds == [1, 2]
    name = "policy_head.bias"
    view.params[name].data.fill_(7.0)  # an edit of the view is the population's
    assert (population.params[name][1:] == 7.0).all() and not (population.params[name][0] == 7.0).any()
    view.weight_decay = pl.conditions.per_member(0.5, view)
    assert population.weight_decay.tolist() == [0.0, 0.5, 0.5]
    view.keep_update_start = True
    assert population.keep_update_start
    with pytest.raises(ValueError, match="0 <= start < stop <= 3"):
        population.member_slice(2, 5)
    with pytest.raises(ValueError, match="own streams"):
        view.fresh_params(experiment.generator)
    with pytest.raises(ValueError, match="architecture"):
        view.set_network(None, {})


def test_what_cannot_be_mixed_is_refused_with_one_clear_error():
    shared = [RunConfig(condition=c, preset="smoke", seed=0) for c in ("warm_start", "reset_all")]
    with pytest.raises(ValueError, match="must share 'condition'.*randomness='member'"):
        Experiment(shared)
    with pytest.raises(ValueError, match="same network"):
        Experiment(runs("warm_start") + runs("layernorm"))
    with pytest.raises(ValueError, match="injection"):
        Experiment(runs("warm_start") + runs("injection"))
    with pytest.raises(ValueError, match="randomness='member'"):
        groups = MemberGroups([(parse_condition("warm_start"), 0, 1), (parse_condition("reset_all"), 1, 2)])
        experiment = Experiment(runs("warm_start", seeds=(0, 1)))
        groups.at_shift(experiment.population, experiment.generator)
    with pytest.raises(ValueError, match="without gaps"):
        MemberGroups([(parse_condition("warm_start"), 0, 1), (parse_condition("reset_all"), 2, 3)])
    with pytest.raises(ValueError, match="unknown randomness 'shared'; valid: population, member"):
        RunConfig(randomness="shared")


def test_member_streams_resume_from_a_checkpoint_exactly(tmp_path):
    configs = runs("soft_shrink_perturb", params={"perturb": 1e-3}) + runs("reset_all")
    whole = table(configs)
    first = Experiment(configs)
    for _ in range(3):
        first.train_epoch()
    first.save(tmp_path / "c.pt")
    second = Experiment(configs)
    second.restore(tmp_path / "c.pt")
    second.train_to_end()
    assert_same_tables(whole, second.table().sort_values(KEYS).reset_index(drop=True))


def test_randomness_population_is_left_out_of_a_runs_identity_and_member_is_kept():
    assert "randomness" not in config_identity(RunConfig().to_dict())
    assert config_identity(RunConfig(randomness="member").to_dict())["randomness"] == "member"


@pytest.mark.skipif(not procgen_available(), reason="ProcGen is not installed")
def test_coinrun_members_with_their_own_streams_train_alike_alone_and_mixed():
    tiny = dict(env="coinrun", rounds=2, epochs_per_round=1, num_envs=2, test_episodes=2,
                ppo=PPOConfig(min_transitions=64))
    warm, reset = runs("warm_start", seeds=(0,), **tiny), runs("reset_all", seeds=(0,), **tiny)
    mixed = table(warm + reset)
    assert_same_tables(table(reset), mixed[mixed.condition == "reset_all"].reset_index(drop=True))
    assert_same_tables(table(warm), mixed[mixed.condition == "warm_start"].reset_index(drop=True))


MIX = {"study": "mixed", "preset": "smoke", "shifts": ["permute"], "seeds": "0-1", "max_members": 8,
       "conditions": ["warm_start", "layernorm", "reset_all", "soft_shrink_perturb"],
       "overrides": {"rounds": 2, "epochs_per_round": 2, "test_episodes": 11}}


def test_a_mixing_sweep_forms_populations_by_network_and_stores_what_separate_populations_store(tmp_path):
    from plasticity_lab.results import load_results
    from plasticity_lab.sweep import Sweep, run_sweep

    mixing = Sweep.from_dict({**MIX, "mix_conditions": True})
    tasks = mixing.populations()
    # warm-start, reset-all and soft S+P build one network: one population of 6; LayerNorm's own of 2
    assert [(len(t.configs), t.conditions) for t in tasks] == [
        (6, ["warm_start", "reset_all", "soft_shrink_perturb"]), (2, ["layernorm"])]
    assert tasks[0].name.startswith("gridworld-mixed-") and tasks[1].name.startswith("gridworld-layernorm-")
    assert all(c.randomness == "member" for t in tasks for c in t.configs)
    mixed = run_sweep(mixing, root=tmp_path, threads=1, progress=False)
    separate = run_sweep(Sweep.from_dict({**MIX, "study": "separate", "overrides": {
        **MIX["overrides"], "randomness": "member"}}), root=tmp_path, threads=1, progress=False)
    assert len(separate.manifest["populations"]) == 4 and len(mixed.manifest["populations"]) == 2
    keys = ["shift", "condition", "seed", "round"]
    a = mixed.rounds.sort_values(keys).reset_index(drop=True)
    b = separate.rounds.sort_values(keys).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)
    entry = mixed.manifest["populations"][tasks[0].name]
    assert entry["conditions"] == ["warm_start", "reset_all", "soft_shrink_perturb"]
    assert load_results(tmp_path / "mixed").runs().shape[0] == 8


def test_mixing_refuses_shared_randomness_and_a_non_boolean():
    from plasticity_lab.sweep import Sweep

    with pytest.raises(ValueError, match="mix_conditions needs every run's own random streams"):
        Sweep.from_dict({**MIX, "mix_conditions": True,
                         "overrides": {**MIX["overrides"], "randomness": "population"}})
    with pytest.raises(ValueError, match="'mix_conditions' must be true or false; got 'yes'"):
        Sweep.from_dict({**MIX, "mix_conditions": "yes"})


def test_the_command_line_trains_mixed_conditions_in_one_population(tmp_path, capsys):
    from plasticity_lab.cli import main
    from plasticity_lab.results import load_results

    out = tmp_path / "mixed"
    code = main(["run", "--condition", "warm_start,reset_all", "--seeds", "0-1", "--rounds", "2",
                 "--epochs-per-round", "1", "--test-episodes", "11", "--mix", "--out", str(out), "--no-progress"])
    assert code == 0
    results = load_results(out)
    assert len(results.manifest["populations"]) == 1
    assert sorted(results.epochs()["condition"].unique()) == ["reset_all", "warm_start"]
    assert {c["randomness"] for p in results.populations for c in p["configs"]} == {"member"}
    assert main(["run", "--randomness", "shared", "--out", str(tmp_path / "bad"), "--no-progress"]) == 2
    assert not (tmp_path / "bad").exists()
    assert "unknown randomness 'shared'; valid: population, member" in capsys.readouterr().err


def test_fused_adamw_stepped_member_by_member_is_the_same_for_a_member_whatever_the_population():
    import torch

    from plasticity_lab.backends.cpu_kernels import fused_adamw_step

    def fused_step_per_member(optimizer):
        fused_adamw_step(optimizer, per_member=True)

    gen = torch.Generator().manual_seed(0)
    for shape in [(1,), (4,), (3, 5), (256, 363)]:
        start = torch.randn(15, *shape, generator=gen)
        grads = torch.randn(60, 15, *shape, generator=gen) * torch.rand(60, 15, *shape, generator=gen)
        finals = {}
        for members in (1, 2, 15):
            p = start[:members].clone().requires_grad_()
            optimizer = torch.optim.AdamW([p], lr=2.5e-4, eps=1e-5, weight_decay=1e-2, fused=True)
            for g in grads:
                p.grad = g[:members].clone()
                fused_step_per_member(optimizer)
            finals[members] = p.detach()
        assert torch.equal(finals[1][0], finals[2][0]) and torch.equal(finals[1][0], finals[15][0])
        # and it is AdamW: each member as PyTorch's own (for-loop) AdamW moves it, to float rounding
        for m in (0, 7, 14):
            q = start[m].clone().requires_grad_()
            reference = torch.optim.AdamW([q], lr=2.5e-4, eps=1e-5, weight_decay=1e-2, foreach=False)
            for g in grads:
                q.grad = g[m].clone()
                reference.step()
            assert torch.allclose(finals[15][m], q.detach(), rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="per-member AdamW step needs one group with fused=True"):
        fused_step_per_member(torch.optim.AdamW([torch.zeros(2, 3, requires_grad=True)], foreach=True))
