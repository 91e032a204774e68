"""Checkpoints: a run restored from one continues exactly as the uninterrupted run; bad files fail clearly."""

import pandas as pd
import pytest
import torch

import plasticity_lab as pl
from plasticity_lab.experiment import Experiment

SMOKE = dict(preset="smoke", rounds=3, epochs_per_round=4, test_interval=2, test_episodes=11)


def _population(condition, **params):
    return [pl.RunConfig(shift=s, seed=k, condition=condition, condition_params=params, **SMOKE)
            for s, k in (("permute", 0), ("window", 1))]


def _interrupted(configs, stop_at: int, path) -> pd.DataFrame:
    first = Experiment(configs)
    for _ in range(stop_at):
        first.train_epoch()
    first.save(path)
    del first
    second = Experiment(configs)  # a new process would build the same object from the same configs
    second.restore(path)
    assert second.epoch == stop_at
    while not second.finished:
        second.train_epoch()
    return second.table()


@pytest.mark.parametrize("condition, params, stop_at", [
    # stop_at 4: at the end of round 1, before the shift; 6: in the middle of round 2
    ("warm_start", {}, 6),
    ("injection", {}, 4),
    ("injection", {}, 6),  # the architecture changed at the shift: the checkpoint must rebuild it
    ("redo", {"period": 3}, 6),
    ("soft_shrink_perturb+layernorm", {"perturb": 1e-3}, 6),
    ("regen_l2", {}, 6),
    ("shrink_perturb", {}, 4),
])
def test_restored_run_equals_uninterrupted_run(condition, params, stop_at, tmp_path):
    configs = _population(condition, **params)
    whole = pl.run(configs)
    resumed = _interrupted(configs, stop_at, tmp_path / "ckpt.pt")
    pd.testing.assert_frame_equal(whole, resumed)


def test_run_with_checkpoint_resumes_from_the_file(tmp_path):
    configs = _population("injection")
    path = tmp_path / "run.pt"
    experiment = Experiment(configs)
    for _ in range(7):
        experiment.train_epoch()
    experiment.elapsed_s = 12.5  # the time of the interrupted process travels with its checkpoint
    experiment.save(path)
    again = Experiment(configs)
    again.restore(path)
    assert again.elapsed_s == 12.5
    # run() with an existing checkpoint trains only the remaining epochs
    calls = []
    original = Experiment.train_epoch

    def counting(self):
        calls.append(self.epoch)
        original(self)

    Experiment.train_epoch = counting
    try:
        resumed = pl.run(configs, checkpoint=path)
    finally:
        Experiment.train_epoch = original
    assert calls == list(range(7, 12))
    pd.testing.assert_frame_equal(resumed, pl.run(configs))
    # the file now holds the finished run, loadable without unpickling arbitrary objects
    state = torch.load(path, weights_only=True)
    assert state["epoch"] == 12 and state["injected_heads"] == ["policy_head", "value_head"]
    assert state["params"]["policy_head.added.weight"].shape[0] == 2  # stacked over the 2 members


def test_checkpoint_of_other_configs_is_refused(tmp_path):
    path = tmp_path / "a.pt"
    experiment = Experiment(_population("warm_start"))
    experiment.train_epoch()
    experiment.save(path)
    with pytest.raises(ValueError, match="belongs to other configs"):
        Experiment(_population("reset_all")).restore(path)


def test_truncated_or_newer_checkpoint_gives_one_clear_error(tmp_path):
    path = tmp_path / "a.pt"
    experiment = Experiment(_population("warm_start"))
    experiment.train_epoch()
    experiment.save(path)
    data = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        Experiment(_population("warm_start")).restore(tmp_path / "cut.pt")
    state = torch.load(path, weights_only=True)
    state["format"] = 99
    with pytest.raises(ValueError, match="format 99 is newer"):
        Experiment(_population("warm_start")).load_state_dict(state)


def test_bad_checkpoint_every_is_rejected():
    with pytest.raises(ValueError, match="checkpoint_every must be a positive integer; got 0"):
        pl.run(_population("warm_start"), checkpoint_every=0)
