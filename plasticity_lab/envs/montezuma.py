"""Montezuma's Revenge for a population: ale-py's native vector environment, members × copies in one batch.

The paper's third environment (PROTOCOL §3): an RND agent (:mod:`plasticity_lab.rnd`) on the Atari game, with the
RND paper's standard setup. Every setting is chosen here deliberately (:class:`AtariSettings`), with its source:

* **frame skip 4**, each step's frame the maximum of the last two emulator frames (Mnih et al., 2015: removes the
  flicker of sprites drawn on alternate frames);
* **sticky actions**, ``p = 0.25``: at every emulator frame the previous action repeats with probability 0.25
  (Machado et al., 2018, which the RND paper follows). This is the game's only randomness, so there are **no no-op
  starts** (Machado et al. recommend sticky actions instead of them);
* **84×84 grayscale, the last 4 frames stacked** (Mnih et al., 2015; RND);
* **no reward clipping in the environment**: the game's score is the study's measure; the learner clips extrinsic
  rewards for its update (RND);
* **a lost life does not end the episode** (RND: episodes end at game over);
* **no FIRE at reset** (Montezuma's Revenge starts without one);
* **episodes cut at 18 000 frames** (4 500 steps; the RND paper's Table 5);
* the game's **18 actions**.

Episodes end at different times, and RND's rollouts have a fixed length: a step that ends an episode returns the
reward and the end of that step with the *next* episode's first observation (ale-py's ``"SameStep"`` autoreset).

Each copy's emulator is seeded from its member's seed and its copy number, so a member's games do not depend on
the other members. The room the agent is in (for "rooms visited") is in the console's RAM, which ale-py's vector
environment does not expose.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

GAME = "montezuma_revenge"
N_ACTIONS = 18
FRAME_SHAPE = (4, 84, 84)


@dataclass(frozen=True)
class AtariSettings:
    """How the game is played (see the module's text for the source of each value)."""

    frameskip: int = 4
    repeat_action_probability: float = 0.25
    stack: int = 4
    size: int = 84
    max_frames_per_episode: int = 18_000
    noop_max: int = 0
    reward_clipping: bool = False
    episodic_life: bool = False
    fire_reset: bool = False


def copy_seed(member_seed: int, copy: int, start: int = 0) -> int:
    """The emulator seed of one copy of one member: unrelated for nearby seeds and copies (NumPy's SeedSequence),
    within the int32 range ale-py takes. ``start`` counts the times a run started its games (a run continued from a
    checkpoint starts them again: the emulators' state cannot be saved), so a restart does not replay the first
    start's games."""
    entropy = [int(member_seed), int(copy), 0x4D525631, *([int(start)] if start else [])]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0] & 0x7FFFFFFF)


def _require_ale():
    try:
        import ale_py
    except ImportError as error:  # an optional extra: say how to get it
        raise ImportError("Montezuma's Revenge needs ale-py: pip install 'plasticity-lab[atari]' "
                          "(ale-py ships the game's ROM)") from error
    return ale_py


class MontezumaPopulation:
    """``members × copies`` games; observations ``[M, E, 4, 84, 84]`` uint8 on ``device``, rewards and ends ``[M, E]``.

    ``episode_returns()`` gives the scores of the episodes finished since it was last called, per member.
    """

    episodes_end = True
    n_actions = N_ACTIONS

    def __init__(self, member_seeds: list[int], copies: int, device: str | torch.device = "cpu",
                 settings: AtariSettings = AtariSettings(), threads: int = 0):
        ale_py = _require_ale()
        if isinstance(copies, bool) or not isinstance(copies, int) or copies < 1:
            raise ValueError(f"copies must be an integer >= 1; got {copies!r}")
        self.member_seeds = [int(s) for s in member_seeds]
        self.members, self.copies = len(self.member_seeds), copies
        self.device = torch.device(device)
        self.settings = settings
        s = settings
        self.env = ale_py.AtariVectorEnv(
            GAME, num_envs=self.members * copies, num_threads=threads, frameskip=s.frameskip,
            repeat_action_probability=s.repeat_action_probability, stack_num=s.stack, img_height=s.size,
            img_width=s.size, grayscale=True, maxpool=True, noop_max=s.noop_max, reward_clipping=s.reward_clipping,
            episodic_life=s.episodic_life, use_fire_reset=s.fire_reset, max_num_frames_per_episode=s.max_frames_per_episode,
            autoreset_mode="SameStep")
        self._running = np.zeros((self.members, copies), dtype=np.float64)
        self._finished: list[list[float]] = [[] for _ in range(self.members)]

    def describe(self) -> dict:
        """The settings, for a manifest."""
        return {"game": GAME, **asdict(self.settings)}

    def _tensor(self, obs: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(obs).view(self.members, self.copies, *obs.shape[1:]).to(self.device)

    def reset(self, start: int = 0) -> torch.Tensor:
        """Start every copy's first episode from its own seed (:func:`copy_seed`, with ``start``)."""
        seeds = np.array([copy_seed(m, e, start) for m in self.member_seeds for e in range(self.copies)],
                         dtype=np.int64)
        obs, _ = self.env.reset(seed=seeds)
        self._running[:] = 0.0
        return self._tensor(obs)

    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Play ``actions [M, E]``; returns the observations (a new episode's first where one ended), the rewards
        and whether the step ended its episode (game over or the frame cut)."""
        flat = actions.reshape(-1).to("cpu", torch.int64).numpy().astype(np.int32)
        if flat.shape[0] != self.members * self.copies:
            raise ValueError(f"need one action per copy ({self.members} × {self.copies}); got {tuple(actions.shape)}")
        obs, reward, terminated, truncated, _ = self.env.step(flat)
        ended = (terminated | truncated).reshape(self.members, self.copies)
        reward = reward.reshape(self.members, self.copies)
        self._running += reward
        for m, e in zip(*np.nonzero(ended)):
            self._finished[m].append(float(self._running[m, e]))
            self._running[m, e] = 0.0
        return (self._tensor(obs), torch.from_numpy(reward.astype(np.float32)).to(self.device),
                torch.from_numpy(ended).to(self.device))

    def episode_returns(self) -> list[list[float]]:
        """Each member's scores of the episodes finished since the last call (and forget them)."""
        finished, self._finished = self._finished, [[] for _ in range(self.members)]
        return finished

    def close(self) -> None:
        self.env.close()
