"""Environments of plasticity_lab.

Importing this package registers the gymnasium id ``"plasticity_lab/Gather-v0"`` (the paper's gather gridworld,
:class:`GatherEnv`), so ``gymnasium.make("plasticity_lab/Gather-v0", render_mode="rgb_array")`` works.
ProcGen's CoinRun, batched the same way, is :class:`CoinRunPopulation` (ProcGen itself is imported only when a game
is made).
"""

from gymnasium.envs.registration import register, registry

from plasticity_lab.envs.coinrun import CoinRunPopulation, coinrun_level_range, patch_mapping, permute_patches
from plasticity_lab.envs.gridworld import GatherEnv, GridworldBatch, LevelLayout, level_layout

__all__ = ["GatherEnv", "GridworldBatch", "LevelLayout", "level_layout", "GATHER_ENV_ID", "CoinRunPopulation",
           "coinrun_level_range", "patch_mapping", "permute_patches"]

GATHER_ENV_ID = "plasticity_lab/Gather-v0"

if GATHER_ENV_ID not in registry:  # guarded: re-importing (e.g. importlib.reload) must not warn or fail
    register(id=GATHER_ENV_ID, entry_point="plasticity_lab.envs.gridworld:GatherEnv")
