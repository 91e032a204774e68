"""Shared test helpers (importable from the tests: pytest puts this folder on sys.path)."""

import torch

from plasticity_lab.ppo import Rollout, gae


def random_rollout(members, T=20, E=11, obs_dim=363, seed=0):
    """A rollout of random sparse observations, rewards and actions for ``members`` agents, with GAE."""
    g = torch.Generator().manual_seed(seed)
    obs = (torch.rand(T, members, E, obs_dim, generator=g) < 0.1).float()
    rewards = torch.randn(T, members, E, generator=g) * 0.3
    values = torch.randn(T, members, E, generator=g) * 0.1
    actions = torch.randint(0, 4, (T, members, E), generator=g)
    log_probs = torch.log(torch.rand(T, members, E, generator=g) * 0.5 + 0.1)
    r = Rollout(obs, actions, log_probs, values, rewards)
    r.advantages = gae(rewards, values, 0.99, 0.95)
    r.returns = r.advantages + values
    return r


def store_synthetic_study(folder, epochs, sweep_fields: dict, keep_epochs: bool = True):
    """Store a per-epoch table (one condition per population, every member of the grid in it) as
    ``plasticity-lab sweep`` stores a study, under ``folder``: the populations' tables are computed from the epochs
    by the package's own writer. ``sweep_fields`` are the sweep file's (``conditions``, ``shifts``, ``seeds``,
    ``overrides``…); the study is named after the folder."""
    from plasticity_lab.results import write_population
    from plasticity_lab.sweep import Sweep, write_study_manifest

    sweep = Sweep.from_dict({"study": folder.name, "preset": "book", "curve_stride": 1, "keep_epochs": keep_epochs,
                             "max_members": len(sweep_fields["shifts"]) * len(sweep_fields["seeds"]),
                             **sweep_fields})
    done = {}
    for task in sweep.populations():
        condition = task.configs[0].condition
        part = epochs[epochs["condition"] == condition].reset_index(drop=True)
        write_population(folder / "populations" / task.name, part, list(task.configs), 0.0, 1, {},
                         keep_epochs=keep_epochs)
        done[task.name] = {"members": len(task.configs), "condition": condition, "wall_time_s": 0.0}
    write_study_manifest(folder, sweep, {}, None, done)
    return folder
