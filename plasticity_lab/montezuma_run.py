"""Montezuma's Revenge runs: a population of RND agents (:mod:`plasticity_lab.rnd_agent`) trained on the game and
logged per iteration, behind the same ``run`` / sweep / storage path as the other environments.

The study's third environment has no rounds and no shifts (PROTOCOL §3): each of its runs is a condition and a seed
(``RunConfig(env="montezuma", ...)``), trained for ``epochs_per_round`` iterations in one round. An iteration is
the RND agent's unit of work — one rollout of :attr:`~plasticity_lab.rnd.RNDConfig.rollout_length` steps in each of
``num_envs`` games, then one update — so it takes the place of the gridworld's epoch in the table
(``epoch`` counts iterations). The paper compares conditions by the game's score over time.

:class:`MontezumaExperiment` offers what :class:`~plasticity_lab.experiment.Experiment` offers to
:func:`~plasticity_lab.experiment.run` and to a sweep (train an epoch, checkpoint, resume, the table), and
:func:`montezuma_summary` gives the tables a stored population holds.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import backends
from .config import RunConfig
from .envs.montezuma import montezuma_games
from .experiment import (check_checkpoint, check_population, checkpoint_configs, population_condition,
                         population_seed)
from .population import Population
from .rnd import RNDNetworks
from .rnd_agent import RNDAgent, atari_network_spec
from .schema import RUN_KEYS
from .storage import read_checkpoint, save_checkpoint

#: The per-iteration columns of a Montezuma's Revenge table, after the run keys and the counters (``round``,
#: ``epoch``, ``epoch_in_round``, ``agent_steps``, ``frames``).
MONTEZUMA_COLUMNS = ("extrinsic_return", "episodes", "rooms_visited", "intrinsic_reward", "predictor_loss",
                     "policy_loss", "value_loss", "entropy", "grad_norm", "dead_units", "weight_magnitude",
                     "weight_difference")

#: Version of the checkpoint layout written by :meth:`MontezumaExperiment.state_dict`.
CHECKPOINT_FORMAT = 1


class MontezumaExperiment:
    """A Montezuma's Revenge population in progress: the agents, RND's networks and statistics, the games, the
    generator and the log.

    A checkpoint holds everything that decides what happens next — the agents' and predictors' parameters and
    AdamW states, the observation and reward statistics, the generator, the log, and with the default games
    (``atari.games="emulators"``) every emulator's state — so a run continued from it gives the table of an
    uninterrupted run. ale-py's vector environment (``atari.games="vector"``) cannot save its emulators: a run on
    it continued from a checkpoint starts new games (seeded apart from the first start's,
    :func:`~plasticity_lab.envs.montezuma.copy_seed`) and forgets the episodes under way, so its table differs
    from an uninterrupted run's after the restart; it logs no rooms either (it does not expose the RAM).
    """

    def __init__(self, configs: Sequence[RunConfig]):
        configs = [c.resolved() for c in configs]
        if not configs:
            raise ValueError("an experiment needs at least one RunConfig")
        others = sorted({c.env for c in configs} - {"montezuma"})
        if others:
            raise ValueError(f"a Montezuma's Revenge experiment takes env 'montezuma' only; got {others}")
        check_population(configs)
        self.configs, self.cfg = configs, configs[0]
        cfg, seeds = self.cfg, [c.seed for c in configs]
        self.members = len(configs)
        self.device = torch.device(cfg.device)
        self.settings = cfg.atari
        self.condition = population_condition(configs)
        self.population = Population(atari_network_spec(**self.condition.network_options()), seeds,
                                     cfg.rnd.ppo_settings(), self.condition, self.device, episodes_end=True)
        self.condition.setup(self.population)
        self.agent = RNDAgent(self.population, RNDNetworks(seeds, cfg.rnd, self.device), cfg.rnd)
        # the population's one generator (the random start, actions, minibatch order, the predictor's share)
        self.generator = torch.Generator(device=self.device).manual_seed(population_seed(seeds))
        self.total_epochs = cfg.epochs_per_round
        self.epoch = 0
        self.elapsed_s = 0.0
        self.starts = 0  # times the games were started (a continued run starts them again)
        self.log: dict[str, list[torch.Tensor]] = {}
        self.env = None
        self._obs: torch.Tensor | None = None
        self._saved_games: dict | None = None  # a checkpoint's games, until they are made again

    @property
    def finished(self) -> bool:
        return self.epoch >= self.total_epochs

    @property
    def execution(self) -> str:
        return "eager"

    def _start_games(self) -> None:
        self.env = montezuma_games([c.seed for c in self.configs], self.cfg.num_envs, self.device, self.settings)
        if self._saved_games is not None:  # a checkpoint's games, exactly where they were
            self.env.load_state_dict(self._saved_games)
            self._saved_games = None
            self._obs = self.env.observation()
            return
        obs = self.env.reset(self.starts)
        if self.epoch == 0:
            # the random start begins the observation statistics; its episodes are not the agent's
            obs = self.agent.initialise_observation_stats(self.env, obs, self.generator)
            self.env.episode_returns()
        self.starts += 1
        self._obs = obs

    def train_epoch(self) -> None:
        """One iteration: a rollout in every game, one update, the condition's after-epoch action, the log."""
        if self.env is None:
            self._start_games()
        with backends.denormals.flushed():
            stats, self._obs = self.agent.iterate(self.env, self._obs, self.generator)
        revised = self.condition.after_epoch(self.population, self.epoch, self.generator)
        for key, value in (revised or {}).items():
            stats[key] = torch.where(torch.isnan(value), stats[key], value)
        steps = (self.epoch + 1) * self.cfg.rnd.rollout_length * self.cfg.num_envs
        members = self.members
        rooms = getattr(self.env, "rooms_visited", None)
        stats["rooms_visited"] = (torch.tensor([float(len(r)) for r in rooms()]) if rooms is not None
                                  else torch.full((members,), float("nan")))
        stats["round"] = torch.ones(members)
        stats["epoch"] = torch.full((members,), self.epoch)
        stats["agent_steps"] = torch.full((members,), steps, dtype=torch.float64)
        for key, value in stats.items():
            self.log.setdefault(key, []).append(value.detach().cpu())
        self.epoch += 1

    def train_to_end(self, checkpoint: str | Path | None = None, checkpoint_every: int | None = None,
                     on_epoch=None) -> None:
        """Train the remaining iterations, saving to ``checkpoint`` every ``checkpoint_every`` iterations (default:
        every 10) and at the end; ``on_epoch(1)`` after each. The games are closed at the end."""
        start, earlier = time.time(), self.elapsed_s
        every = checkpoint_every or 10
        try:
            while not self.finished:
                self.train_epoch()
                if on_epoch is not None:
                    on_epoch(1)
                self.elapsed_s = earlier + time.time() - start
                if checkpoint is not None and (self.finished or self.epoch % every == 0):
                    self.save(checkpoint)
        finally:
            self.close()

    def close(self) -> None:
        """Close the games (a later epoch starts new ones)."""
        if self.env is not None:
            self.env.close()
            self.env = None

    def table(self) -> pd.DataFrame:
        """One row per member and iteration: the run keys, ``round`` (1), ``epoch`` and ``epoch_in_round`` (the
        iteration, 0-based), ``agent_steps`` and ``frames`` (cumulative per run, the random start excluded), then
        :data:`MONTEZUMA_COLUMNS` — ``extrinsic_return`` is the mean score of the episodes that ended during the
        iteration (NaN where none did), ``episodes`` how many ended, ``rooms_visited`` how many of the game's rooms
        the run's games have been in so far (the start room counts; NaN with ``atari.games="vector"``)."""
        columns = {k: torch.stack(v).T.reshape(-1).numpy() for k, v in self.log.items()}  # member-major
        n = len(self.log.get("epoch", []))
        keys = {k: np.repeat([c.label if k == "condition" else getattr(c, k) for c in self.configs], n)
                for k in RUN_KEYS}
        df = pd.DataFrame({**keys, **{k: columns.get(k, np.zeros(0)) for k in ("round", "epoch", "agent_steps")}})
        df["epoch_in_round"] = df["epoch"]
        df["frames"] = df["agent_steps"] * self.settings.frameskip
        for k in MONTEZUMA_COLUMNS:
            df[k] = columns[k] if n else np.zeros(0)
        for k in ("round", "epoch", "epoch_in_round", "seed", "agent_steps", "frames", "episodes"):
            df[k] = df[k].astype(int)
        return df[[*RUN_KEYS, "round", "epoch", "epoch_in_round", "agent_steps", "frames", *MONTEZUMA_COLUMNS]]

    # ---- checkpoints ------------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """Everything needed to continue this run, the games' state where they can save it (``weights_only``-
        loadable)."""
        agent, rnd = self.agent, self.agent.rnd
        games = self.env.state_dict() if hasattr(self.env, "state_dict") else self._saved_games
        return {
            "games": games,
            "format": CHECKPOINT_FORMAT,
            "configs": checkpoint_configs(self.configs),
            "epoch": self.epoch,
            "starts": self.starts,
            "params": {k: v.detach().cpu() for k, v in self.population.params.items()},
            "optimizer": self.population.optimizer.state_dict(),
            "predictor": {k: v.detach().cpu() for k, v in rnd.predictor_params.items()},
            "predictor_optimizer": agent.predictor_optimizer.state_dict(),
            "obs_stats": _moments(rnd.obs_stats),
            "reward_stats": _moments(agent.reward_stats),
            "reward_filter": agent.reward_filter.returns,
            "generator": self.generator.get_state(),
            "log": {k: torch.stack(v) for k, v in self.log.items()},
            "elapsed_s": float(self.elapsed_s),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from :meth:`state_dict` of the same configs (anything else is refused, naming the difference)."""
        check_checkpoint(state, self.configs, CHECKPOINT_FORMAT)
        if "predictor" not in state:
            raise ValueError("not a Montezuma's Revenge checkpoint (it holds no RND predictor)")
        with torch.no_grad():
            for source, target in ((state["params"], self.population.params),
                                   (state["predictor"], self.agent.rnd.predictor_params)):
                for k, v in source.items():
                    target[k].copy_(v)
        self.population.optimizer.load_state_dict(state["optimizer"])
        self.agent.predictor_optimizer.load_state_dict(state["predictor_optimizer"])
        _load_moments(self.agent.rnd.obs_stats, state["obs_stats"], self.device)
        _load_moments(self.agent.reward_stats, state["reward_stats"], self.device)
        returns = state["reward_filter"]
        self.agent.reward_filter.returns = None if returns is None else returns.to(self.device)
        self.generator.set_state(state["generator"])
        self.epoch, self.starts = int(state["epoch"]), int(state["starts"])
        self.elapsed_s = float(state.get("elapsed_s", 0.0))
        self.log = {k: list(v.unbind(0)) for k, v in state["log"].items()}
        self.close()  # the games are made again at the next epoch: from the saved state, or started anew
        self._saved_games = state.get("games")

    def save(self, path: str | Path) -> Path:
        """Write a checkpoint atomically."""
        return save_checkpoint(path, self.state_dict())

    def restore(self, path: str | Path) -> None:
        """Load a checkpoint written by :meth:`save`."""
        self.load_state_dict(read_checkpoint(path))


def _moments(stats) -> dict[str, torch.Tensor]:
    return {"mean": stats.mean.cpu(), "var": stats.var.cpu(), "count": stats.count.cpu()}


def _load_moments(stats, saved: dict[str, torch.Tensor], device: torch.device) -> None:
    stats.mean, stats.var, stats.count = (saved[k].to(device) for k in ("mean", "var", "count"))


def montezuma_summary(df: pd.DataFrame, stride: int = 1) -> dict[str, pd.DataFrame]:
    """The stored tables of a Montezuma's Revenge population, under the names every population uses:

    * ``curves``: the mean of each block of ``stride`` iterations (``extrinsic_return`` over the blocks' iterations
      that ended an episode);
    * ``rounds``: one row per run — ``episodes`` (all that ended), ``mean_score`` (their mean score, each
      iteration's mean weighted by its episodes), ``best_score`` (the best iteration's mean), ``rooms_visited`` (at
      the end), and the diagnostics' means over the run;
    * ``runs_mean``: each run's ``extrinsic_return`` averaged over its iterations with episodes, and the
      diagnostics' means; ``runs_final``: the same over the last tenth of the iterations (at least one).
    """
    from .results import curve_table

    keys = list(RUN_KEYS)
    diagnostics = [c for c in MONTEZUMA_COLUMNS if c not in ("extrinsic_return", "episodes", "rooms_visited")]

    def per_run(part: pd.DataFrame) -> pd.DataFrame:
        groups = part.groupby(keys, sort=False)
        out = groups[["extrinsic_return", *diagnostics]].mean()
        out["rooms_visited"] = groups["rooms_visited"].max()  # a count that only grows: where the run got to
        out["iterations"] = groups.size()
        out["agent_steps"] = groups["agent_steps"].max()
        return out.reset_index()

    runs = per_run(df)
    weighted = df.assign(_score=df["extrinsic_return"].fillna(0.0) * df["episodes"])
    totals = weighted.groupby(keys, sort=False)[["_score", "episodes"]].sum()
    rounds = runs.drop(columns="extrinsic_return").merge(totals.reset_index(), on=keys)
    rounds["mean_score"] = rounds["_score"] / rounds["episodes"].where(rounds["episodes"] > 0)
    rounds["best_score"] = df.groupby(keys, sort=False)["extrinsic_return"].max().values
    rounds.insert(len(keys), "round", 1)
    rounds = rounds.drop(columns="_score")
    last = df.groupby(keys, sort=False)["epoch"].transform(lambda e: e >= e.max() + 1 - max(1, (e.max() + 1) // 10))
    return {"curves": curve_table(df, stride), "rounds": rounds, "runs_mean": runs, "runs_final": per_run(df[last])}


__all__ = ["CHECKPOINT_FORMAT", "MONTEZUMA_COLUMNS", "MontezumaExperiment", "montezuma_summary"]
