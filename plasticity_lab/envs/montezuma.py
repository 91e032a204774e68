"""Montezuma's Revenge for a population: members × copies games in one batch, played by one ALE emulator per game
(:class:`MontezumaEmulators`, the default) or by ale-py's native vector environment (:class:`MontezumaPopulation`).

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
the other members.

**Two ways to play the same games** (``AtariSettings.games``):

* ``"emulators"`` (the default): one ``ale_py.ALEInterface`` per game, stepped in a loop, the frames resized in one
  batched product. It reads the console's RAM — the room the player is in is byte 3 (:data:`ROOM_BYTE`), so a run
  can log the rooms it has visited, the standard measure of exploration in this game — and saves every game's
  whole state, so a run continued from a checkpoint plays on exactly as it would have. For that the sticky
  actions are drawn here, from each game's own generator (ALE's state leaves out the action a sticky frame
  repeats, so ALE's own sticky actions cannot be resumed exactly); the rule is ALE's (Machado et al., 2018): at
  every frame, with the probability, the action of the frame before instead of the one asked for. Without sticky
  actions the emulators play exactly the vector environment's games (rewards and ends equal, frames equal but
  for the resize's rounding: at most one grey level, on a pixel or so per frame; tested); with them, the same
  kind of game from other random draws.
* ``"vector"``: ale-py's vector environment, which steps the games on C++ threads: faster on a machine with many
  cores (a GPU's host), but it exposes neither the RAM nor the emulators' state.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

GAME = "montezuma_revenge"
N_ACTIONS = 18
FRAME_SHAPE = (4, 84, 84)
#: The RAM byte that holds the room the player is in (0–23 on the first level; the game starts in room 1).
ROOM_BYTE = 3
#: The ways to play the games (see the module's text).
GAMES = ("emulators", "vector")


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
    games: str = "emulators"

    def __post_init__(self):
        if self.games not in GAMES:
            raise ValueError(f"unknown games {self.games!r}; valid: {', '.join(GAMES)}")
        for name in ("frameskip", "stack", "size", "max_frames_per_episode"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"AtariSettings.{name} must be an integer >= 1; got {value!r}")
        if not 0.0 <= self.repeat_action_probability <= 1.0:
            raise ValueError(f"AtariSettings.repeat_action_probability must be in [0, 1]; got "
                             f"{self.repeat_action_probability!r}")


def copy_seed(member_seed: int, copy: int, start: int = 0) -> int:
    """The emulator seed of one copy of one member: unrelated for nearby seeds and copies (NumPy's SeedSequence),
    within the int32 range ale-py takes. ``start`` counts the times a run started its games (a run on the vector
    environment, which cannot save its emulators, starts them again when it continues from a checkpoint), so a
    restart does not replay the first start's games."""
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


def _area_weights(n_in: int, n_out: int) -> np.ndarray:
    """The ``[n_out, n_in]`` matrix of an area resize: each output pixel the mean of the input it covers, pixels
    cut by its edges counted by the share inside (what OpenCV's ``INTER_AREA`` computes when shrinking)."""
    scale = n_in / n_out
    weights = np.zeros((n_out, n_in))
    for i in range(n_out):
        lo, hi = i * scale, (i + 1) * scale
        for j in range(int(np.floor(lo)), min(int(np.ceil(hi)), n_in)):
            weights[i, j] = max(0.0, min(hi, j + 1) - max(lo, j))
    return (weights / scale).astype(np.float32)


class MontezumaEmulators:
    """``members × copies`` games, one ALE emulator each; the same interface as :class:`MontezumaPopulation`
    (observations ``[M, E, 4, 84, 84]`` uint8, rewards and ends ``[M, E]``, ``episode_returns()``), and also
    :meth:`rooms_visited` and :meth:`state_dict` / :meth:`load_state_dict`.

    Per step and game: the action for ``frameskip`` frames (the emulator repeats the previous one with the sticky
    probability at each), the rewards summed, the last two frames' maximum in grayscale, resized to 84×84, pushed
    onto the stack. An episode ends at game over or at the frame cut; its end step returns the next episode's
    first observation (the stack emptied, the new game's first frame last), as the vector environment's
    ``"SameStep"`` autoreset does.
    """

    episodes_end = True
    n_actions = N_ACTIONS

    def __init__(self, member_seeds: list[int], copies: int, device: str | torch.device = "cpu",
                 settings: AtariSettings = AtariSettings()):
        self._ale_py = _require_ale()
        if isinstance(copies, bool) or not isinstance(copies, int) or copies < 1:
            raise ValueError(f"copies must be an integer >= 1; got {copies!r}")
        for name in ("noop_max", "reward_clipping", "episodic_life", "fire_reset"):
            if getattr(settings, name) != getattr(AtariSettings(), name):
                raise ValueError(f"games 'emulators' play without {name} (the study's setting); got "
                                 f"{name}={getattr(settings, name)!r}: use games 'vector' for it")
        self.member_seeds = [int(s) for s in member_seeds]
        self.members, self.copies = len(self.member_seeds), copies
        self.device = torch.device(device)
        self.settings = settings
        self._ale_py.ALEInterface.setLoggerMode(self._ale_py.LoggerMode.Error)
        self._rom = self._ale_py.roms.get_rom_path(GAME)
        self._rows = _area_weights(210, settings.size)
        self._columns = _area_weights(160, settings.size).T.copy()
        n = self.members * copies
        self._stack = np.zeros((n, settings.stack, settings.size, settings.size), dtype=np.uint8)
        self._running = np.zeros(n, dtype=np.float64)
        self._finished: list[list[float]] = [[] for _ in range(self.members)]
        self._rooms: list[set[int]] = [set() for _ in range(self.members)]
        self._ales: list = []
        self._actions = None

    def describe(self) -> dict:
        """The settings, for a manifest."""
        return {"game": GAME, **asdict(self.settings)}

    def _new_emulator(self, seed: int):
        ale = self._ale_py.ALEInterface()
        ale.setInt("random_seed", seed)
        ale.setFloat("repeat_action_probability", 0.0)  # drawn in step(), from the game's own generator
        ale.setInt("max_num_frames_per_episode", self.settings.max_frames_per_episode)
        ale.loadROM(self._rom)
        return ale

    def _resized(self, screens: np.ndarray) -> np.ndarray:
        """``[N, 210, 160]`` grayscale screens → ``[N, size, size]`` uint8 (float32 products, rounded to nearest)."""
        return np.rint(self._rows @ screens.astype(np.float32) @ self._columns).astype(np.uint8)

    def _note_rooms(self) -> None:
        for i, ale in enumerate(self._ales):
            self._rooms[i // self.copies].add(int(ale.getRAM()[ROOM_BYTE]))

    def reset(self, start: int = 0) -> torch.Tensor:
        """Start every copy's first episode from its own seed (:func:`copy_seed`, with ``start``)."""
        seeds = [copy_seed(m, e, start) for m in self.member_seeds for e in range(self.copies)]
        self._ales = [self._new_emulator(seed) for seed in seeds]
        self._actions = self._ales[0].getMinimalActionSet()
        self._draws = [np.random.Generator(np.random.PCG64(seed)) for seed in seeds]  # the sticky actions'
        self._previous = np.zeros(len(seeds), dtype=np.int64)  # each game's action of its last frame (NOOP first)
        self._stack[:] = 0
        self._stack[:, -1] = self._resized(np.stack([ale.getScreenGrayscale() for ale in self._ales]))
        self._running[:] = 0.0
        self._note_rooms()
        return self.observation()

    def observation(self) -> torch.Tensor:
        """The games' current observations ``[M, E, 4, 84, 84]`` (what the last step or reset returned)."""
        return torch.from_numpy(self._stack.copy()).view(self.members, self.copies, *self._stack.shape[1:]).to(
            self.device)

    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Play ``actions [M, E]``; returns the observations (a new episode's first where one ended), the rewards
        and whether the step ended its episode (game over or the frame cut)."""
        flat = actions.reshape(-1).to("cpu", torch.int64).tolist()
        n = self.members * self.copies
        if len(flat) != n:
            raise ValueError(f"need one action per copy ({self.members} × {self.copies}); got {tuple(actions.shape)}")
        skip, p = self.settings.frameskip, self.settings.repeat_action_probability
        screens = np.zeros((n, 2, 210, 160), dtype=np.uint8)
        rewards = np.zeros(n, dtype=np.float32)
        ended = np.zeros(n, dtype=bool)
        for i, (ale, a) in enumerate(zip(self._ales, flat)):
            repeats = self._draws[i].random(skip) < p if p > 0 else np.zeros(skip, dtype=bool)
            for frame in range(skip):
                if not repeats[frame]:  # a sticky frame keeps the action of the frame before
                    self._previous[i] = a
                rewards[i] += ale.act(self._actions[self._previous[i]])
                if frame >= skip - 2:
                    ale.getScreenGrayscale(screens[i, frame - skip + 2])
                if ale.game_over():  # game over, or the frame cut
                    ended[i] = True
                    break
        pooled = screens.max(1) if skip > 1 else screens[:, 1]
        self._stack[:, :-1] = self._stack[:, 1:]
        self._stack[:, -1] = self._resized(pooled)
        self._running += rewards
        for i in np.nonzero(ended)[0]:
            self._finished[i // self.copies].append(float(self._running[i]))
            self._running[i] = 0.0
            self._ales[i].reset_game()
            self._stack[i] = 0
            self._stack[i, -1] = self._resized(self._ales[i].getScreenGrayscale()[None])[0]
        self._note_rooms()
        return (self.observation(), torch.from_numpy(rewards.reshape(self.members, self.copies)).to(self.device),
                torch.from_numpy(ended.reshape(self.members, self.copies)).to(self.device))

    def episode_returns(self) -> list[list[float]]:
        """Each member's scores of the episodes finished since the last call (and forget them)."""
        finished, self._finished = self._finished, [[] for _ in range(self.members)]
        return finished

    def screen_rgb(self, member: int = 0, copy: int = 0) -> np.ndarray:
        """One game's console screen as the player sees it, ``[210, 160, 3]`` uint8 (for pictures: the agent sees
        the grayscale frames of :meth:`observation`)."""
        return self._ales[member * self.copies + copy].getScreenRGB()

    def room(self, member: int = 0, copy: int = 0) -> int:
        """The room one game is in now (RAM byte :data:`ROOM_BYTE`)."""
        return int(self._ales[member * self.copies + copy].getRAM()[ROOM_BYTE])

    def move_to_room(self, room: int, member: int = 0, copy: int = 0) -> None:
        """Put one game's player in ``room`` by writing the room byte (for pictures and tests: the game then draws
        that room; the agent's games never do this)."""
        if not 0 <= room <= 23:
            raise ValueError(f"room must be 0–23 (the first level's rooms); got {room!r}")
        self._ales[member * self.copies + copy].setRAM(ROOM_BYTE, room)

    def rooms_visited(self) -> list[list[int]]:
        """Each member's rooms seen so far by any of its games, sorted (since the games were made; a restored
        state brings back the rooms it had)."""
        return [sorted(r) for r in self._rooms]

    def state_dict(self) -> dict:
        """Every emulator's state, the sticky actions' generators and each game's last action, the frame stacks,
        the scores of the episodes under way and the rooms seen: with :meth:`load_state_dict`, the games go on exactly as they
        would have. Tensors and plain containers only (``torch.load(weights_only=True)`` reads them)."""
        import json

        states = [torch.from_numpy(np.frombuffer(ale.cloneState().serialize(), dtype=np.uint8).copy())
                  for ale in self._ales]
        return {"emulators": states, "stack": torch.from_numpy(self._stack.copy()),
                "running": torch.from_numpy(self._running.copy()), "rooms": [sorted(r) for r in self._rooms],
                "previous": torch.from_numpy(self._previous.copy()),
                "draws": [json.dumps(d.bit_generator.state) for d in self._draws]}

    def load_state_dict(self, state: dict) -> None:
        """Continue the games of :meth:`state_dict` (of the same members and copies)."""
        if len(state["emulators"]) != self.members * self.copies:
            raise ValueError(f"the saved games are {len(state['emulators'])}, these {self.members * self.copies}")
        import json

        if not self._ales:
            self._ales = [self._new_emulator(0) for _ in state["emulators"]]
            self._actions = self._ales[0].getMinimalActionSet()
        for ale, saved in zip(self._ales, state["emulators"]):
            ale.restoreState(self._ale_py.ALEState(saved.numpy().tobytes()))
        self._draws = [np.random.Generator(np.random.PCG64()) for _ in state["draws"]]
        for generator, saved in zip(self._draws, state["draws"]):
            generator.bit_generator.state = json.loads(saved)
        self._previous = state["previous"].numpy().copy()
        self._stack[:] = state["stack"].numpy()
        self._running[:] = state["running"].numpy()
        self._rooms = [set(r) for r in state["rooms"]]

    def close(self) -> None:
        self._ales = []


def montezuma_games(member_seeds: list[int], copies: int, device: str | torch.device = "cpu",
                    settings: AtariSettings = AtariSettings()):
    """The games ``settings.games`` names: :class:`MontezumaEmulators` or :class:`MontezumaPopulation`."""
    cls = MontezumaEmulators if settings.games == "emulators" else MontezumaPopulation
    return cls(member_seeds, copies, device, settings)
