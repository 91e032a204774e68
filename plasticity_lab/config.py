"""What one run is: :class:`RunConfig`, the presets, and validation with clear errors.

A preset fixes the scale of a run, per environment; explicit fields override it::

    RunConfig(shift="permute", condition="warm_start", seed=0, preset="smoke")             # seconds
    RunConfig(shift="window", condition="reset_all", preset="paper", epochs_per_round=500)  # paper, shorter rounds
    RunConfig(env="coinrun", shift="permute", preset="book")                                # CoinRun's book scale

Every other setting of the study (PPO, network, environment) is the same in every preset.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .conditions import CONDITIONS, condition_names, parse_condition, shift_only_conditions
from .graphs import EXECUTIONS
from .ppo import PPOConfig
from .envs.montezuma import AtariSettings
from .rnd import RNDConfig
from .schema import check_choice, check_positive
from .shifts import SHIFTS
from .streams import RANDOMNESS

#: The environments a run can train on (:mod:`plasticity_lab.environments` builds the games and network of the
#: first two; ``montezuma`` trains with its own loop, :mod:`plasticity_lab.montezuma_run`).
ENVS = ("gridworld", "coinrun", "montezuma")

#: Scale settings of each gridworld preset. ``paper`` is the authors' scale (PROTOCOL §1); ``smoke`` runs in seconds
#: for tests and for the book's smoke mode; ``book`` is the scale of the studies stored in ``data/``, chosen by the
#: search documented in ``data/gridworld-preset-search/README.md``.
PRESETS: dict[str, dict] = {
    "paper": {"rounds": 10, "epochs_per_round": 5000, "pool_size": 100},
    "book": {"rounds": 10, "epochs_per_round": 200, "pool_size": 10},
    "smoke": {"rounds": 3, "epochs_per_round": 6, "pool_size": 10},
}

#: CoinRun's presets, under the same names. ``paper``: 10 × 5 000 epochs, 100-level pools (PROTOCOL §1, §3).
#: ``book``: 10 × 50 epochs, 100-level pools, a test every 10 epochs — the book's CoinRun grid (3 conditions × 3
#: shifts × 5 seeds) in a day or two of a 2-core CPU, from the cost ``benchmarks/coinrun_speed.py`` measures (the
#: README gives it); 500 epochs are under 1 M agent steps, a small fraction of the paper's 5 000 epochs a round, so
#: the preset shows the machinery and the first rounds' learning, not the paper's late-round plasticity loss. It
#: tests less often than 50 times a round because a CoinRun evaluation (55 episodes of up to 200 steps) costs
#: about half an epoch of training. ``smoke``: a minute on a CPU.
COINRUN_PRESETS: dict[str, dict] = {
    "paper": {"rounds": 10, "epochs_per_round": 5000, "pool_size": 100},
    "book": {"rounds": 10, "epochs_per_round": 50, "pool_size": 100, "test_interval": 10},
    "smoke": {"rounds": 3, "epochs_per_round": 2, "pool_size": 10},
}

#: Montezuma's Revenge's presets. The game has no rounds, shifts or level pools (PROTOCOL §3): a run is one round of
#: ``epochs_per_round`` RND iterations (a rollout of :attr:`~plasticity_lab.rnd.RNDConfig.rollout_length` steps in
#: each of ``num_envs`` games, then one update); ``pool_size`` and ``test_interval`` are 1 and unused.
#: ``paper``: the RND paper's 128 games and 3 000 iterations of 128 steps, 49 M agent steps (197 M frames) — the
#: Juliani & Ash paper's own scale for the game is not in its release. ``book``: 8 games × 200 iterations, 204 800
#: agent steps (0.8 M frames) per run, a few CPU hours for a population of five (``benchmarks/montezuma_speed.py``
#: measures it): the agent learns to leave the first screen's start at best, so the preset shows the machinery,
#: RND's curiosity and the diagnostics, not the paper's comparison. ``smoke``: 2 games × 2 iterations.
MONTEZUMA_PRESETS: dict[str, dict] = {
    "paper": {"rounds": 1, "epochs_per_round": 3000, "pool_size": 1, "test_interval": 1, "num_envs": 128},
    "book": {"rounds": 1, "epochs_per_round": 200, "pool_size": 1, "test_interval": 1, "num_envs": 8},
    "smoke": {"rounds": 1, "epochs_per_round": 2, "pool_size": 1, "test_interval": 1, "num_envs": 2},
}

#: Every environment's presets.
ENV_PRESETS: dict[str, dict[str, dict]] = {"gridworld": PRESETS, "coinrun": COINRUN_PRESETS,
                                           "montezuma": MONTEZUMA_PRESETS}

#: The environments without rounds of shifting distributions: their runs take ``shift="none"``.
UNSHIFTED_ENVS = ("montezuma",)

#: Copies of the game a run collects from, where its preset does not say.
DEFAULT_COPIES = 11


def preset_scale(env: str, preset: str) -> dict:
    """The settings ``preset`` fixes for ``env`` (rounds, epochs per round, pool size, and for some a test
    interval), as defined now."""
    env = check_choice("env", env, ENVS)
    return dict(ENV_PRESETS[env][check_choice("preset", preset, list(ENV_PRESETS[env]))])


def at_preset_scale(config: dict) -> bool:
    """Whether a resolved config (a dict, as manifests store it) has the rounds, epochs per round and pool size its
    preset defines now for its environment (and the number of games, where the preset sets it): a stored study
    outlives a preset that moves, and captions say so."""
    presets = ENV_PRESETS.get(config.get("env", "gridworld"), {})
    scale = presets.get(config.get("preset"), {})
    return all(scale.get(k) == config.get(k) for k in ("rounds", "epochs_per_round", "pool_size")) and (
        "num_envs" not in scale or scale["num_envs"] == config.get("num_envs"))

def scale_text(config: dict) -> str:
    """A resolved config's scale (a dict, as manifests store it) in words, for captions: rounds × epochs and the
    level pool; for Montezuma's Revenge, which has no rounds or level pools, iterations × games × steps."""
    if config.get("env") == "montezuma":
        rollout = (config.get("rnd") or {}).get("rollout_length", "?")
        return f"{config['epochs_per_round']} iterations × {config['num_envs']} games × {rollout} steps"
    return f"{config['rounds']} rounds × {config['epochs_per_round']} epochs, {config['pool_size']}-level pool"

#: At paper scale the test environment is evaluated every 100 of 5 000 epochs: 50 evaluations per round.
TESTS_PER_ROUND = 50


def _format_value(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "/".join(_format_value(v) for v in value)
    return str(value)


@dataclass(frozen=True)
class RunConfig:
    """One training run: an environment, a shift, a condition and a seed, at a preset's scale.

    ``env`` selects the environment, its network and its collection rule (``"gridworld"``: the MLP, 11 × 100-step
    episodes; ``"coinrun"``: the CNN, episodes that end, collected until ``ppo.min_transitions``). Fields left as
    ``None`` take the preset's value for the environment (see :data:`ENV_PRESETS`); ``test_interval`` defaults to the
    preset's, else ``epochs_per_round / 50`` (at least 1), which is the paper's 100 at 5 000 epochs per round.
    ``reward_magnitude`` is the gridworld's (±0.75 in the release, PROTOCOL §3) and means nothing to CoinRun.
    ``condition_params`` overrides a condition's coefficients, e.g. ``{"perturb": 1e-5}`` (see ``plasticity-lab conditions``).
    ``randomness``: ``"population"`` (the default, what every stored study used) draws the whole population's random
    numbers from one generator, so a run's numbers depend on the runs beside it; ``"member"`` gives each run its own
    streams (:mod:`plasticity_lab.streams`), so a run gives the same table whatever it is trained with — which is
    what lets runs of different conditions share one population (:class:`plasticity_lab.conditions.MemberGroups`).
    ``execution``: ``"eager"`` (the default) or ``"graphs"``, the collection step and the minibatch update each
    compiled into one graph (:mod:`plasticity_lab.graphs`; CUDA graphs on a GPU) — for the gridworld with
    ``randomness="member"``; it agrees with eager to float rounding, and falls back to eager where it cannot compile.

    ``env="montezuma"``: Montezuma's Revenge with an RND agent (:mod:`plasticity_lab.montezuma_run`), whose runs
    have no shifts (``shift`` is ``"none"``, and the default becomes it), one round of ``epochs_per_round`` RND
    iterations, ``num_envs`` games, their learning settings in ``rnd`` (an :class:`~plasticity_lab.rnd.RNDConfig`;
    ``ppo`` stays at its defaults) and the game's in ``atari`` (an :class:`~plasticity_lab.envs.montezuma.
    AtariSettings`, which also chooses how the games are played). Conditions that act only at a shift are refused
    there. ``shift`` left as ``None`` is ``"permute"`` elsewhere; ``num_envs`` left as ``None`` is the preset's number of games (11 for the
    gridworld and CoinRun), fixed when the config is made.
    """

    env: str = "gridworld"
    shift: str | None = None
    condition: str = "warm_start"
    seed: int = 0
    preset: str = "smoke"
    rounds: int | None = None
    epochs_per_round: int | None = None
    pool_size: int | None = None
    test_interval: int | None = None
    test_episodes: int = 55
    num_envs: int | None = None
    reward_magnitude: float = 0.75
    condition_params: dict = field(default_factory=dict)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    device: str = "cpu"
    randomness: str = "population"
    execution: str = "eager"
    rnd: RNDConfig | None = None
    atari: AtariSettings | None = None

    def __post_init__(self):
        check_choice("env", self.env, ENVS)
        check_choice("preset", self.preset, list(PRESETS))
        unshifted = self.env in UNSHIFTED_ENVS
        if self.shift is None:  # the environment's default, set once (the dataclass is frozen)
            object.__setattr__(self, "shift", "none" if unshifted else "permute")
        if unshifted and self.shift != "none":
            raise ValueError(f"env {self.env!r} has no rounds of shifting distributions: its shift is 'none'; "
                             f"got {self.shift!r}")
        if not unshifted:
            check_choice("shift", self.shift, [s for s in SHIFTS if s != "none"])
        if self.num_envs is None:
            object.__setattr__(self, "num_envs", ENV_PRESETS[self.env][self.preset].get("num_envs", DEFAULT_COPIES))
        if self.env == "montezuma":
            self._check_montezuma()
        elif self.rnd is not None or self.atari is not None:
            raise ValueError(f"rnd and atari (RND's and the game's settings) are for env 'montezuma'; env "
                             f"{self.env!r} takes None for both")
        condition_names(self.condition)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer; got {self.seed!r}")
        for name in ("rounds", "epochs_per_round", "pool_size", "test_interval"):
            check_positive(name, getattr(self, name))
        for name in ("test_episodes", "num_envs"):
            check_positive(name, getattr(self, name), allow_none=False)
        if not (isinstance(self.reward_magnitude, (int, float)) and self.reward_magnitude > 0):
            raise ValueError(f"reward_magnitude must be a positive number; got {self.reward_magnitude!r}")
        if not isinstance(self.condition_params, dict):
            raise ValueError(f"condition_params must be a dict; got {self.condition_params!r}")
        parse_condition(self.condition, self.condition_params)  # unknown coefficient names fail here, early
        if not (self.device == "cpu" or str(self.device).startswith("cuda")):
            raise ValueError(f"unknown device {self.device!r}; valid: cpu, cuda, cuda:N")
        check_choice("randomness", self.randomness, RANDOMNESS)
        check_choice("execution", self.execution, EXECUTIONS)
        if self.execution == "graphs" and (self.env != "gridworld" or self.randomness != "member"):
            raise ValueError(f"execution 'graphs' needs env 'gridworld' (episodes of a fixed length) and randomness "
                             f"'member' (a generator object cannot enter a graph); got env {self.env!r}, "
                             f"randomness {self.randomness!r}")

    def _check_montezuma(self) -> None:
        for name, settings in (("rnd", RNDConfig), ("atari", AtariSettings)):
            if getattr(self, name) is None:
                object.__setattr__(self, name, settings())
            elif not isinstance(getattr(self, name), settings):
                raise ValueError(f"{name} must be a {settings.__name__}; got {getattr(self, name)!r}")
        if self.ppo != PPOConfig():
            raise ValueError("env 'montezuma' takes its learning settings from rnd (an RNDConfig); leave ppo at "
                             "its defaults")
        if self.randomness != "population":
            raise ValueError(f"env 'montezuma' draws from one generator per population; randomness must be "
                             f"'population', got {self.randomness!r}")
        shift_only = shift_only_conditions(self.condition)
        if shift_only:
            raise ValueError(f"condition {self.condition!r} cannot run on env 'montezuma': {', '.join(shift_only)} "
                             f"act(s) only at a shift, and the game has none; valid there: "
                             f"{', '.join(n for n in CONDITIONS if not shift_only_conditions(n))} and their "
                             f"combinations")
        if self.rounds not in (None, 1):
            raise ValueError(f"env 'montezuma' trains in one round (its iterations are epochs_per_round); "
                             f"got rounds={self.rounds!r}")

    def resolved(self) -> "RunConfig":
        """The same run with every preset-dependent field filled in."""
        preset = preset_scale(self.env, self.preset)
        values = {k: getattr(self, k) if getattr(self, k) is not None else v for k, v in preset.items()}
        if self.test_interval is None and "test_interval" not in preset:
            values["test_interval"] = max(1, round(values["epochs_per_round"] / TESTS_PER_ROUND))
        return dataclasses.replace(self, **values)

    @property
    def label(self) -> str:
        """The condition as results tables name it: ``"soft_shrink_perturb"``, or with its overridden coefficients,
        ``"soft_shrink_perturb[perturb=1e-05]"`` (so runs of a coefficient sweep stay apart)."""
        if not self.condition_params:
            return self.condition
        items = ",".join(f"{k}={_format_value(v)}" for k, v in sorted(self.condition_params.items()))
        return f"{self.condition}[{items}]"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "RunConfig":
        data = settings_from_mappings(dict(data), "field")
        valid = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - valid)
        if unknown:
            raise ValueError(f"unknown RunConfig field(s) {unknown}; valid: {', '.join(sorted(valid))}")
        return cls(**data)


#: The fields of :class:`RunConfig` that hold a dataclass of settings, which a manifest or a sweep file gives as a
#: mapping.
SETTINGS_FIELDS = {"ppo": PPOConfig, "rnd": RNDConfig, "atari": AtariSettings}


def settings_from_mappings(values: dict, what: str) -> dict:
    """``values`` (RunConfig fields by name, changed in place and returned) with each of :data:`SETTINGS_FIELDS`
    given as a mapping made into its dataclass; a key it does not have is one error naming ``what`` was bad (e.g.
    ``"override"``) and the valid keys."""
    for name, settings in SETTINGS_FIELDS.items():
        if isinstance(values.get(name), dict):
            try:
                values[name] = settings(**values[name])
            except TypeError as error:
                valid = ", ".join(f.name for f in dataclasses.fields(settings))
                raise ValueError(f"bad {what} {name} = {values[name]!r} ({error}); valid keys: {valid}") from None
    return values


#: Settings added after studies were stored, each with the value that does what every stored run did before it
#: existed: ``ppo.min_transitions`` at 1 024 is one batch of 11 whole 100-step gridworld episodes, which is what the
#: stored studies (all with 11 copies) collected. At that value a setting is left out of a run's identity
#: (:func:`config_identity`), so stored studies keep their population names and stay extendable. ``randomness`` at
#: ``"population"`` is the one generator every stored population drew from, ``execution`` at ``"eager"`` the way every
#: stored population was computed, ``rnd`` and ``atari`` at ``None`` every environment but Montezuma's Revenge (a
#: group of ``None``: a top-level field).
LATER_SETTINGS: dict[tuple[str | None, str], object] = {("ppo", "min_transitions"): 1024,
                                                        (None, "randomness"): "population",
                                                        (None, "execution"): "eager",
                                                        (None, "rnd"): None,
                                                        (None, "atari"): None}


def config_identity(config: dict) -> dict:
    """A run's config (a dict, as :meth:`RunConfig.to_dict` gives it or a manifest stores it) as runs are told
    apart — population names, stored runs against a sweep, checkpoints against their run: the dict without the
    :data:`LATER_SETTINGS` that sit at their earlier behaviour."""
    out = dict(config)
    for (group, name), value in LATER_SETTINGS.items():
        if group is None:
            if name in out and out[name] == value:
                del out[name]
        elif isinstance(out.get(group), dict) and out[group].get(name, value) == value:
            out[group] = {k: v for k, v in out[group].items() if k != name}
    return out


def parse_seeds(text: str) -> list[int]:
    """``"0-4"`` → [0, 1, 2, 3, 4]; ``"0,3,7"`` → [0, 3, 7]; ``"2"`` → [2]."""
    seeds: list[int] = []
    try:
        for part in str(text).split(","):
            part = part.strip()
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-"))
                if hi < lo:
                    raise ValueError
                seeds.extend(range(lo, hi + 1))
            else:
                seeds.append(int(part))
    except ValueError:
        raise ValueError(f"bad seeds {text!r}; use e.g. '0-4', '0,3,7' or '2' (non-negative integers)") from None
    if any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise ValueError(f"bad seeds {text!r}; seeds must be distinct non-negative integers")
    return seeds
