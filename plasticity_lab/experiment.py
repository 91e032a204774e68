"""One experiment: the rounds loop of the study (PROTOCOL §1), for one agent or a population of agents.

For each of ``rounds`` rounds of ``epochs_per_round`` epochs:

* at a round boundary (a *shift*): the training distribution changes (train and test together), the
  condition's at-shift action runs, and AdamW is created anew — in every condition, warm-start included;
* every epoch: whole episodes are collected from ``num_envs`` copies, PPO updates, the diagnostics are logged;
* every ``test_interval`` epochs (and at the last epoch of each round): the agent plays ``test_episodes``
  episodes on the unseen test levels of the current distribution; all of them are averaged.

:func:`run` returns a tidy per-epoch table, one row per member and epoch. An :class:`Experiment` is the same run
as an object that advances one epoch at a time and saves / restores its whole state (checkpoints), so a killed run
continues exactly where it stopped.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import backends
from .config import RunConfig, config_identity
from .schema import DIAGNOSTICS, PPO_STATISTICS, RUN_KEYS
from .conditions import MemberGroups, injected_heads, parse_condition, restore_network
from .environments import environment
from .graphs import GraphedSteps
from .population import Population
from .ppo import PopulationEnv, collect_episodes, play_episodes
from .storage import read_checkpoint, save_checkpoint
from .streams import MemberStreams



def population_seed(seeds: Sequence[int]) -> int:
    """One seed for the randomness a population shares (level draws, actions, minibatch order, fresh inits)."""
    return int(np.random.SeedSequence([int(s) for s in seeds]).generate_state(1, np.uint64)[0] >> 1)


def check_population(configs: list[RunConfig]) -> None:
    """Refuse configs that cannot train as one population, naming the setting they disagree on."""
    first = configs[0]
    shared = ("env", "preset", "rounds", "epochs_per_round", "pool_size", "test_interval", "test_episodes",
              "num_envs", "reward_magnitude", "ppo", "device", "randomness", "execution")
    if first.randomness != "member":
        shared = ("condition", *shared)
    for c in configs[1:]:
        for name in shared:
            if getattr(c, name) != getattr(first, name):
                hint = (" (runs of different conditions can share a population with randomness='member')"
                        if name == "condition" else "")
                raise ValueError(f"configs of one population must share {name!r}: "
                                 f"{getattr(first, name)!r} vs {getattr(c, name)!r}{hint}")
    for group in condition_groups(configs):
        for c in group[1:]:
            if set(c.condition_params) != set(group[0].condition_params):
                raise ValueError(f"configs of one condition in a population must override the same coefficients: "
                                 f"{sorted(group[0].condition_params)} vs {sorted(c.condition_params)}")
    members = [(c.shift, c.seed, c.label) for c in configs]
    if len(set(members)) != len(members):
        raise ValueError(f"a population cannot hold the same (shift, seed) twice: {members}")


def condition_groups(configs: Sequence[RunConfig]) -> list[list[RunConfig]]:
    """The configs by condition, in the order each condition first appears (one group unless a population mixes
    conditions)."""
    groups: dict[str, list[RunConfig]] = {}
    for c in configs:
        groups.setdefault(c.condition, []).append(c)
    return list(groups.values())


def population_condition(configs: Sequence[RunConfig]):
    """The condition a population trains under: the configs' one condition with its per-member coefficients, or,
    where they name several, :class:`~plasticity_lab.conditions.MemberGroups` of them over contiguous members (in
    the order of :func:`condition_groups`)."""
    groups = condition_groups(configs)
    if len(groups) == 1:
        return parse_condition(configs[0].condition, population_params(configs))
    parts, start = [], 0
    for group in groups:
        parts.append((parse_condition(group[0].condition, population_params(group)), start, start + len(group)))
        start += len(group)
    return MemberGroups(parts)


def population_params(configs: list[RunConfig]) -> dict:
    """The condition coefficients of a population: one value where all members agree, else one per member."""
    params = {}
    for name in configs[0].condition_params:
        values = [c.condition_params[name] for c in configs]
        params[name] = values[0] if all(v == values[0] for v in values) else values
    return params


@torch.no_grad()
def evaluate(population: Population, env: PopulationEnv, generator: torch.Generator) -> torch.Tensor:
    """Mean undiscounted return per member over one episode in each of ``env``'s copies → ``[M]``."""
    return play_episodes(population, env, generator).mean(1)


#: Version of the checkpoint layout written by :meth:`Experiment.state_dict`.
CHECKPOINT_FORMAT = 1


class Experiment:
    """A run in progress: the population, its environments, its random generator and the log so far.

    :meth:`train_epoch` advances it by one epoch; :meth:`state_dict` / :meth:`load_state_dict` capture and restore
    everything that decides what happens next (parameters and architecture, AdamW's state, the generator, the
    epoch counter and the log), so a run restored from a checkpoint continues exactly as it would have. The
    environments hold no state between epochs (every epoch starts new episodes from the generator) and the level
    distributions follow from the configs and the round.
    """

    def __init__(self, configs: Sequence[RunConfig]):
        configs = [c.resolved() for c in configs]
        if not configs:
            raise ValueError("an experiment needs at least one RunConfig")
        check_population(configs)
        # a mixed population keeps each condition's members together (its group acts on a contiguous slice)
        configs = [c for group in condition_groups(configs) for c in group]
        self.configs = configs
        cfg = self.cfg = configs[0]
        self.members = len(configs)
        self.device = torch.device(cfg.device)
        self.generator = torch.Generator(device=self.device).manual_seed(population_seed([c.seed for c in configs]))
        # randomness="member": each run's own streams, addressed by the place of the run (see _random)
        self.streams = (MemberStreams.for_members([(c.seed, c.shift) for c in configs], self.device)
                        if cfg.randomness == "member" else None)
        self.condition = population_condition(configs)
        self.environment = environment(cfg.env)
        self.train_env = self.environment.make_games(self.members, cfg.num_envs, self.device, cfg.reward_magnitude)
        self.test_env = self.environment.make_games(self.members, cfg.test_episodes, self.device,
                                                    cfg.reward_magnitude)
        spec = self.environment.network_spec(**self.condition.network_options())
        self.population = Population(spec, [c.seed for c in configs], cfg.ppo, self.condition, self.device,
                                     episodes_end=self.train_env.episodes_end,
                                     size_invariant=self.streams is not None)
        self.condition.setup(self.population)
        if cfg.execution == "graphs":
            self.population.graphs = GraphedSteps(self.population)
            if self.population.graphs.fallback is not None:
                self._warn_eager()
        self.total_epochs = cfg.rounds * cfg.epochs_per_round
        self.epoch = 0  # epochs completed
        self.elapsed_s = 0.0  # training time of earlier processes, for a run continued from a checkpoint
        self.log: dict[str, list[torch.Tensor]] = {}
        self._distribution_round = None

    @property
    def finished(self) -> bool:
        return self.epoch >= self.total_epochs

    def _set_distributions(self, round_: int) -> None:
        if self._distribution_round == round_:
            return
        dists = [self.environment.round_distribution(c.shift, c.seed, round_, self.cfg.pool_size)
                 for c in self.configs]
        self.train_env.set_distributions([d.train_levels for d in dists], [d.mapping for d in dists])
        self.test_env.set_distributions([d.test_levels for d in dists], [d.mapping for d in dists])
        self._distribution_round = round_

    def train_epoch(self) -> None:
        """One epoch: at a round boundary the shift first, then collect, update, test when due, log. Denormal
        floats are flushed to zero meanwhile (unless ``PLASTICITY_LAB_FLUSH_DENORMALS=0``): dead units would
        otherwise slow the CPU down epoch after epoch (:mod:`plasticity_lab.backends.denormals`)."""
        with backends.denormals.flushed():
            self._train_epoch()

    def _random(self, phase: str, number: int):
        """Where a phase of the run draws its random numbers: the population's one generator (in the order the
        phases run), or each member's streams at ``(phase, number)`` — the same numbers whatever ran before."""
        return self.generator if self.streams is None else self.streams.at(phase, number)

    def _train_epoch(self) -> None:
        cfg, population, members = self.cfg, self.population, self.members
        round_, epoch_in_round = divmod(self.epoch, cfg.epochs_per_round)
        round_ += 1
        self._set_distributions(round_)
        if epoch_in_round == 0 and round_ > 1:
            self.condition.at_shift(population, self._random("shift", round_))
            population.new_optimizer()
        rollout = collect_episodes(population, self.train_env, self._random("collect", self.epoch))
        stats = population.update(rollout, self._random("update", self.epoch))
        revised = self.condition.after_epoch(population, self.epoch, self._random("after_epoch", self.epoch))
        for key, value in (revised or {}).items():
            # diagnostics measured again after the condition acted (ReDo's log_weights="after"); NaN: not revised
            stats[key] = torch.where(torch.isnan(value), stats[key], value)
        stats["train_return"] = rollout.mean_episode_return()
        last = epoch_in_round == cfg.epochs_per_round - 1
        if (epoch_in_round + 1) % cfg.test_interval == 0 or last:
            stats["test_return"] = evaluate(population, self.test_env, self._random("test", self.epoch))
        else:
            stats["test_return"] = torch.full((members,), float("nan"), device=self.device)
        stats["round"] = torch.full((members,), round_)
        stats["epoch"] = torch.full((members,), self.epoch)
        stats["epoch_in_round"] = torch.full((members,), epoch_in_round)
        for key, value in stats.items():
            # a GPU's values stay there until the round's end (_move_log_to_host): a copy to the host every epoch
            # would make the CPU wait for the device every epoch
            self.log.setdefault(key, []).append(value.detach())
        self.epoch += 1
        if self.epoch % cfg.epochs_per_round == 0:
            self._move_log_to_host()

    def _move_log_to_host(self) -> None:
        """Bring the log's values that are still on the device to the host, one copy per diagnostic."""
        for values in self.log.values():
            waiting = [i for i, v in enumerate(values) if v.device.type != "cpu"]
            if waiting:
                for i, value in zip(waiting, torch.stack([values[i] for i in waiting]).cpu().unbind(0)):
                    values[i] = value

    def train_to_end(self, checkpoint: str | Path | None = None, checkpoint_every: int | None = None,
                     on_epoch=None) -> None:
        """Train the remaining epochs. With ``checkpoint``, save there at the end of every round (and every
        ``checkpoint_every`` epochs); ``on_epoch(1)`` is called after each epoch. ``elapsed_s`` keeps adding up
        the training time, across the processes that continued this run from its checkpoints."""
        start, earlier = time.time(), self.elapsed_s
        while not self.finished:
            eager_before = self.execution.startswith("graphs→")
            self.train_epoch()
            if not eager_before and self.execution.startswith("graphs→"):
                self._warn_eager()
            if on_epoch is not None:
                on_epoch(1)
            self.elapsed_s = earlier + time.time() - start
            if checkpoint is not None:
                round_end = self.epoch % self.cfg.epochs_per_round == 0
                if round_end or (checkpoint_every and self.epoch % checkpoint_every == 0):
                    self.save(checkpoint)

    def _warn_eager(self) -> None:
        warnings.warn(f"execution 'graphs' is not available on this machine, so the run goes on eager: "
                      f"{self.population.graphs.fallback}", RuntimeWarning, stacklevel=3)

    @property
    def execution(self) -> str:
        """How the epochs are computed: ``"eager"``, ``"graphs"``, or ``"graphs→eager: <why>"`` where the graphs
        could not be compiled on this machine (see :mod:`plasticity_lab.graphs`)."""
        graphs = self.population.graphs
        if graphs is None:
            return "eager"
        return "graphs" if graphs.fallback is None else f"graphs→eager: {graphs.fallback}"

    def table(self) -> pd.DataFrame:
        """The per-epoch table of the epochs trained so far (see :func:`run`)."""
        self._move_log_to_host()
        return _table(self.configs, self.log)

    # ---- checkpoints ------------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """Everything needed to continue this run, as tensors and plain containers (``weights_only``-loadable)."""
        population = self.population
        self._move_log_to_host()
        return {
            "format": CHECKPOINT_FORMAT,
            "configs": checkpoint_configs(self.configs),
            "epoch": self.epoch,
            "params": {k: v.detach().cpu() for k, v in population.params.items()},
            "frozen": sorted(population.frozen),
            "injected_heads": injected_heads(population),
            "optimizer": population.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "log": {k: torch.stack(v) for k, v in self.log.items()},
            "elapsed_s": float(self.elapsed_s),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from :meth:`state_dict` of the same configs (anything else is refused, naming the difference)."""
        check_checkpoint(state, self.configs, CHECKPOINT_FORMAT)
        population = self.population
        params = {k: v.to(self.device) for k, v in state["params"].items()}
        restore_network(population, list(state["injected_heads"]), params, frozen=state["frozen"])
        population.new_optimizer()
        population.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.epoch = int(state["epoch"])
        self.elapsed_s = float(state.get("elapsed_s", 0.0))
        self.log = {k: list(v.unbind(0)) for k, v in state["log"].items()}
        self._distribution_round = None

    def save(self, path: str | Path) -> Path:
        """Write a checkpoint atomically (a crash mid-write leaves the previous one intact)."""
        return save_checkpoint(path, self.state_dict())

    def restore(self, path: str | Path) -> None:
        """Load a checkpoint written by :meth:`save` (with ``torch.load(weights_only=True)``)."""
        self.load_state_dict(read_checkpoint(path))


def checkpoint_configs(configs: Sequence[RunConfig]) -> str:
    """The configs a checkpoint records (JSON), as runs are told apart
    (:func:`~plasticity_lab.config.config_identity`)."""
    return json.dumps([config_identity(c.to_dict()) for c in configs], sort_keys=True)


def check_checkpoint(state, configs: Sequence[RunConfig], newest: int) -> None:
    """Refuse a checkpoint that is not this package's, is of a format newer than ``newest``, or belongs to other
    configs than ``configs`` (naming the difference): what every experiment checks before it continues from one."""
    if not isinstance(state, dict) or "format" not in state:
        raise ValueError("not a plasticity-lab checkpoint (no 'format' entry)")
    if state["format"] > newest:
        raise ValueError(f"checkpoint format {state['format']} is newer than this package reads "
                         f"({newest}); upgrade plasticity-lab")
    stored = [config_identity(c) for c in json.loads(state["configs"])]
    mine = [config_identity(c.to_dict()) for c in configs]
    if stored != json.loads(json.dumps(mine, sort_keys=True)):
        diff = [f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for a, b in zip(stored, mine) for k in a
                if a.get(k) != json.loads(json.dumps(b.get(k)))]
        if len(stored) != len(mine):
            diff = [f"{len(stored)} members vs {len(mine)}"]
        raise ValueError(f"the checkpoint belongs to other configs ({'; '.join(diff[:3])})")


def run(config: RunConfig | Sequence[RunConfig], progress: bool = False, checkpoint: str | Path | None = None,
        checkpoint_every: int | None = None) -> pd.DataFrame:
    """Train one agent (a :class:`RunConfig`) or a population (a list of configs differing only in seed, shift and
    coefficient values) and return the per-epoch table.

    Columns: the run keys (``env, shift, condition, seed``; ``condition`` is the config's :attr:`~RunConfig.label`,
    which names overridden coefficients), ``round`` (1-based), ``epoch`` (0-based, global), ``epoch_in_round``,
    ``train_return`` (mean return of the epoch's training episodes), ``test_return`` (mean over the test episodes,
    NaN on epochs without a test), the diagnostics ``entropy, weight_magnitude, weight_difference, grad_norm,
    dead_units``, PPO's ``policy_loss, value_loss, approx_kl, clip_fraction``, and the per-round
    ``normalised_train_return`` / ``normalised_test_return`` (constant within a round; see
    :func:`plasticity_lab.stats.normalised_reward`). A Montezuma's Revenge run (``env="montezuma"``) has no
    rounds or tests and logs per RND iteration instead (see :meth:`plasticity_lab.montezuma_run.MontezumaExperiment.
    table`).

    With ``checkpoint`` (a file path) the run saves its whole state there at the end of every round (and every
    ``checkpoint_every`` epochs if given) and, if the file already exists, continues from it: an interrupted run
    re-started with the same arguments gives the same table as an uninterrupted one.
    """
    configs = [config] if isinstance(config, RunConfig) else list(config)
    if not configs:
        raise ValueError("run() needs at least one RunConfig")
    if checkpoint_every is not None and (isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int)
                                         or checkpoint_every < 1):
        raise ValueError(f"checkpoint_every must be a positive integer; got {checkpoint_every!r}")
    experiment = experiment_for(configs)
    bar = progress_bar(experiment.total_epochs, progress, f"{experiment.cfg.condition} ×{experiment.members}")
    train(experiment, checkpoint, checkpoint_every, on_epoch=bar.update)
    bar.close()
    return experiment.table()


def experiment_for(configs: Sequence[RunConfig]):
    """The experiment that trains a population of ``configs``: an :class:`Experiment`, or for ``env="montezuma"``
    a :class:`~plasticity_lab.montezuma_run.MontezumaExperiment` (the RND agent's own loop; same interface)."""
    configs = list(configs)
    if configs and configs[0].env == "montezuma":
        from .montezuma_run import MontezumaExperiment

        return MontezumaExperiment(configs)
    return Experiment(configs)


def train(experiment: Experiment, checkpoint: str | Path | None = None, checkpoint_every: int | None = None,
          on_epoch=None) -> int:
    """Train ``experiment`` to its end, continuing from ``checkpoint`` if that file exists, and saving there as it
    goes (see :meth:`Experiment.train_to_end`): the one resume path that :func:`run` and a sweep's populations
    share. ``on_epoch(n)`` hears of the ``n`` epochs restored, then of each epoch trained. Returns the epoch it
    continued from (0 for a fresh start)."""
    if checkpoint is not None and Path(checkpoint).exists():
        experiment.restore(checkpoint)
    resumed_from = experiment.epoch
    if on_epoch is not None and resumed_from:
        on_epoch(resumed_from)
    experiment.train_to_end(checkpoint, checkpoint_every, on_epoch=on_epoch)
    return resumed_from


def _table(configs: list[RunConfig], log: dict[str, list[torch.Tensor]]) -> pd.DataFrame:
    columns = {k: torch.stack(v).T.reshape(-1).numpy() for k, v in log.items()}  # member-major
    n_epochs = len(log["epoch"])
    label = {"condition": lambda c: c.label}
    keys = {k: np.repeat([label.get(k, lambda c: getattr(c, k))(c) for c in configs], n_epochs) for k in RUN_KEYS}
    ordered = ["round", "epoch", "epoch_in_round", "train_return", "test_return", *DIAGNOSTICS, *PPO_STATISTICS]
    df = pd.DataFrame({**keys, **{k: columns[k] for k in ordered}})
    for k in ("round", "epoch", "epoch_in_round", "seed"):
        df[k] = df[k].astype(int)
    return _with_normalised_reward(df)


def _with_normalised_reward(df: pd.DataFrame) -> pd.DataFrame:
    from .stats import normalised_reward

    per_round = normalised_reward(df)[[*RUN_KEYS, "round", "normalised_train_return", "normalised_test_return"]]
    return df.merge(per_round, on=[*RUN_KEYS, "round"], how="left")


class _NoBar:
    def update(self, n):
        pass

    def close(self):
        pass


def progress_bar(total: int, enabled: bool, desc: str, unit: str = "epoch"):
    """A tqdm bar of ``total`` steps (runs and sweeps show the same kind), or one that shows nothing."""
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, smoothing=0.05)
