"""One experiment: the rounds loop of the study (PROTOCOL §1), for one agent or a population of agents.

For each of ``rounds`` rounds of ``epochs_per_round`` epochs:

* at a round boundary (a *shift*): the training distribution changes (train and test together), the
  condition's at-shift action runs, and AdamW is created anew — in every condition, warm-start included;
* every epoch: whole episodes are collected from ``num_envs`` copies, PPO updates, the diagnostics are logged;
* every ``test_interval`` epochs (and at the last epoch of each round): the agent plays ``test_episodes``
  episodes on the unseen test levels of the current distribution; all of them are averaged.

:func:`run` returns a tidy per-epoch table, one row per member and epoch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from .config import RunConfig
from .conditions import parse_condition
from .envs.gridworld import N_ACTIONS, OBS_DIM
from .envs.population import GridworldPopulation
from .nets import NetworkSpec
from .ppo import Population, collect_episodes
from .shifts import distribution

#: Columns that identify a run inside a results table.
RUN_KEYS = ("env", "shift", "condition", "seed")
#: The per-epoch diagnostics of PROTOCOL §5, in the order the paper lists them.
DIAGNOSTICS = ("entropy", "weight_magnitude", "weight_difference", "grad_norm", "dead_units")
_EXTRA = ("policy_loss", "value_loss", "approx_kl", "clip_fraction")


def population_seed(seeds: Sequence[int]) -> int:
    """One seed for the randomness a population shares (level draws, actions, minibatch order, fresh inits)."""
    return int(np.random.SeedSequence([int(s) for s in seeds]).generate_state(1, np.uint64)[0] >> 1)


def _check_population(configs: list[RunConfig]) -> None:
    first = configs[0]
    shared = ("env", "condition", "preset", "rounds", "epochs_per_round", "pool_size", "test_interval",
              "test_episodes", "num_envs", "reward_magnitude", "condition_params", "ppo", "device")
    for c in configs[1:]:
        for name in shared:
            if getattr(c, name) != getattr(first, name):
                raise ValueError(f"configs of one population must share {name!r}: "
                                 f"{getattr(first, name)!r} vs {getattr(c, name)!r}")
    members = [(c.shift, c.seed) for c in configs]
    if len(set(members)) != len(members):
        raise ValueError(f"a population cannot hold the same (shift, seed) twice: {members}")


@torch.no_grad()
def evaluate(population: Population, env: GridworldPopulation, generator: torch.Generator) -> torch.Tensor:
    """Mean undiscounted return per member over one episode in each of ``env``'s copies → ``[M]``."""
    return collect_episodes(population, env, generator, advantages=False).episode_returns().mean(1)


def run(config: RunConfig | Sequence[RunConfig], progress: bool = False) -> pd.DataFrame:
    """Train one agent (a :class:`RunConfig`) or a population (a list of configs differing only in seed and
    shift) and return the per-epoch table.

    Columns: the run keys (``env, shift, condition, seed``), ``round`` (1-based), ``epoch`` (0-based, global),
    ``epoch_in_round``, ``train_return`` (mean return of the epoch's training episodes), ``test_return`` (mean
    over the test episodes, NaN on epochs without a test), the diagnostics ``entropy, weight_magnitude,
    weight_difference, grad_norm, dead_units``, PPO's ``policy_loss, value_loss, approx_kl, clip_fraction``,
    and the per-round ``normalised_train_return`` / ``normalised_test_return`` (constant within a round; see
    :func:`plasticity_lab.analysis.normalised_reward`).
    """
    configs = [config] if isinstance(config, RunConfig) else list(config)
    if not configs:
        raise ValueError("run() needs at least one RunConfig")
    configs = [c.resolved() for c in configs]
    _check_population(configs)
    cfg = configs[0]
    members = len(configs)
    device = torch.device(cfg.device)
    generator = torch.Generator(device=device).manual_seed(population_seed([c.seed for c in configs]))

    condition = parse_condition(cfg.condition, cfg.condition_params)
    spec = NetworkSpec(encoder="mlp", obs_dim=OBS_DIM, n_actions=N_ACTIONS, **condition.network_options())
    population = Population(spec, [c.seed for c in configs], cfg.ppo, condition, device)
    condition.setup(population)
    train_env = GridworldPopulation(members, cfg.num_envs, device, cfg.reward_magnitude)
    test_env = GridworldPopulation(members, cfg.test_episodes, device, cfg.reward_magnitude)

    log: dict[str, list[torch.Tensor]] = {}
    bar = _progress(cfg.rounds * cfg.epochs_per_round, progress, f"{cfg.condition} ×{members}")
    epoch = 0
    for round_ in range(1, cfg.rounds + 1):
        dists = [distribution(c.shift, c.seed, round_, pool_size=cfg.pool_size) for c in configs]
        train_env.set_distributions([d.train_levels for d in dists], [d.mapping for d in dists])
        test_env.set_distributions([d.test_levels for d in dists], [d.mapping for d in dists])
        if round_ > 1:
            condition.at_shift(population, generator)
            population.new_optimizer()
        for epoch_in_round in range(cfg.epochs_per_round):
            rollout = collect_episodes(population, train_env, generator)
            stats = population.update(rollout, generator)
            condition.after_epoch(population, epoch, generator)
            stats["train_return"] = rollout.episode_returns().mean(1)
            last = epoch_in_round == cfg.epochs_per_round - 1
            if (epoch_in_round + 1) % cfg.test_interval == 0 or last:
                stats["test_return"] = evaluate(population, test_env, generator)
            else:
                stats["test_return"] = torch.full((members,), float("nan"), device=device)
            stats["round"] = torch.full((members,), round_)
            stats["epoch"] = torch.full((members,), epoch)
            stats["epoch_in_round"] = torch.full((members,), epoch_in_round)
            for key, value in stats.items():
                log.setdefault(key, []).append(value.detach().cpu())
            epoch += 1
            bar.update(1)
    bar.close()
    return _table(configs, log)


def _table(configs: list[RunConfig], log: dict[str, list[torch.Tensor]]) -> pd.DataFrame:
    columns = {k: torch.stack(v).T.reshape(-1).numpy() for k, v in log.items()}  # member-major
    n_epochs = len(log["epoch"])
    keys = {k: np.repeat([getattr(c, k) for c in configs], n_epochs) for k in RUN_KEYS}
    ordered = ["round", "epoch", "epoch_in_round", "train_return", "test_return", *DIAGNOSTICS, *_EXTRA]
    df = pd.DataFrame({**keys, **{k: columns[k] for k in ordered}})
    for k in ("round", "epoch", "epoch_in_round", "seed"):
        df[k] = df[k].astype(int)
    return _with_normalised_reward(df)


def _with_normalised_reward(df: pd.DataFrame) -> pd.DataFrame:
    from .analysis import normalised_reward

    per_round = normalised_reward(df)[[*RUN_KEYS, "round", "normalised_train_return", "normalised_test_return"]]
    return df.merge(per_round, on=[*RUN_KEYS, "round"], how="left")


class _NoBar:
    def update(self, n):
        pass

    def close(self):
        pass


def _progress(total: int, enabled: bool, desc: str):
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="epoch")
