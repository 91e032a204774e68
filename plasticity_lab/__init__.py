"""plasticity-lab: a study of plasticity loss in on-policy deep reinforcement learning.

Reproduces Juliani & Ash, *A Study of Plasticity Loss in On-Policy Deep Reinforcement Learning* (NeurIPS 2024):
PPO agents trained for rounds of shifting training distributions, under a dozen interventions.

The small public API::

    import plasticity_lab as pl
    df = pl.run(pl.RunConfig(shift="permute", condition="warm_start", seed=0, preset="smoke"))
    pl.round_summary(df)
    results = pl.load_results("data/gridworld-permute-warm-vs-reset")   # a stored study: tidy tables
    pl.run(pl.RunConfig(env="montezuma", condition="regen_l2"))          # an RND agent on Montezuma's Revenge
"""

from . import envs  # noqa: F401  (registers the gymnasium id "plasticity_lab/Gather-v0")
from .conditions import CONDITIONS, Condition, parse_condition
from .config import ENVS, PRESETS, RunConfig, parse_seeds
from .experiment import run
from .backends import cpu_matmul, cpu_matmul_reason, set_cpu_matmul
from .nets import ActorCritic, NetworkSpec
from .population import Population
from .ppo import Agent, PPOConfig
from .results import Results, load_results
from .rnd import RNDConfig
from .schema import DIAGNOSTICS, RUN_KEYS
from .shifts import SHIFTS
from .stats import check_claims, round_summary
from .sweep import Sweep, run_sweep

__version__ = "0.1.0"

__all__ = [
    "ActorCritic",
    "Agent",
    "CONDITIONS",
    "Condition",
    "DIAGNOSTICS",
    "ENVS",
    "NetworkSpec",
    "PPOConfig",
    "PRESETS",
    "Population",
    "RNDConfig",
    "RUN_KEYS",
    "Results",
    "RunConfig",
    "SHIFTS",
    "Sweep",
    "check_claims",
    "cpu_matmul",
    "cpu_matmul_reason",
    "parse_condition",
    "load_results",
    "parse_seeds",
    "round_summary",
    "run",
    "run_sweep",
    "set_cpu_matmul",
]
