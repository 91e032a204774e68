"""The actor-critic network: a shared encoder, then a policy head and a value head.

Two encoders, as in the paper:

* ``mlp``  (gridworld): ``obs_dim -> 256 -> ReLU -> 256 -> ReLU``.
* ``cnn``  (CoinRun): four convolutions (kernel 4, stride 2, padding 1; channels 3->32->64->128->128),
  ReLU after each, flatten (2 048) -> Linear 256 -> ReLU.
* ``atari`` (Montezuma's Revenge): the RND paper's policy network on 4 stacked 84×84 uint8 frames, scaled to [0, 1]:
  convolutions 8×8 stride 4 (32), 4×4 stride 2 (64), 3×3 stride 1 (64), ReLU after each, flatten (3 136) ->
  Linear 256 -> ReLU -> Linear 448 -> ReLU. (The paper's network adds one 448-wide residual layer before the policy
  and one before the values; the study's heads read the encoder directly, as in the other environments.)

``value_outputs`` = 2 gives the value head one output per reward stream (RND's extrinsic and intrinsic values).

Two architectural options belong to the network because they change its shape, not its training:

* ``layernorm``: MLP blocks become Linear -> LayerNorm -> activation; CNN blocks get GroupNorm(1, C) after each
  convolution and LayerNorm after the dense layer. The heads never get a norm.
* ``crelu``: the activation is ``cat(relu(x), relu(-x))``. It doubles the width, so every pre-activation layer
  is built at half width and each block's output keeps the width the heads expect.

Every parameter keeps PyTorch's default initialisation, which is what "fresh init" means throughout the study.
The network knows nothing of the conditions that edit it: they act on its modules and parameters from outside.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from .streams import MemberStreams

HIDDEN = 256


class CReLU(nn.Module):
    """Concatenated ReLU along the feature (or channel) dimension: ``cat(relu(x), relu(-x))``."""

    def __init__(self, dim: int = -1):
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.relu(x), torch.relu(-x)], dim=self.dim)


class Block(nn.Module):
    """One hidden layer: a linear map (dense or convolution), an optional norm, then the activation.

    ``block.layer`` is the map whose outputs feed the activation, so code that needs "the units of a layer"
    (dead units, ReDo) can find them without knowing the encoder's layout.
    """

    def __init__(self, layer: nn.Module, norm: nn.Module | None, activation: nn.Module):
        super().__init__()
        self.layer = layer
        self.norm = norm if norm is not None else nn.Identity()
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.norm(self.layer(x)))


@dataclass(frozen=True)
class NetworkSpec:
    """Everything needed to build the same network again (e.g. a fresh copy for a reset)."""

    encoder: str = "mlp"  # "mlp", "cnn" or "atari"
    obs_dim: int = 363  # MLP input width (ignored by the CNNs, which take 3x64x64 and 4x84x84)
    n_actions: int = 4
    hidden: int = HIDDEN
    layernorm: bool = False
    crelu: bool = False
    value_outputs: int = 1

    def build(self) -> "ActorCritic":
        return ActorCritic(self)


def _mlp_blocks(spec: NetworkSpec) -> list[Block]:
    width = spec.hidden // 2 if spec.crelu else spec.hidden
    blocks, fan_in = [], spec.obs_dim
    for _ in range(2):
        norm = nn.LayerNorm(width) if spec.layernorm else None
        blocks.append(Block(nn.Linear(fan_in, width), norm, CReLU(-1) if spec.crelu else nn.ReLU()))
        fan_in = spec.hidden
    return blocks


def _cnn_blocks(spec: NetworkSpec) -> list[nn.Module]:
    channels = [3, 32, 64, 128, 128]
    blocks: list[nn.Module] = []
    for c_in, c_out in zip(channels[:-1], channels[1:]):
        width = c_out // 2 if spec.crelu else c_out
        norm = nn.GroupNorm(1, width) if spec.layernorm else None
        conv = nn.Conv2d(c_in, width, kernel_size=4, stride=2, padding=1)
        blocks.append(Block(conv, norm, CReLU(1) if spec.crelu else nn.ReLU()))
    blocks.append(nn.Flatten())
    width = spec.hidden // 2 if spec.crelu else spec.hidden
    norm = nn.LayerNorm(width) if spec.layernorm else None
    blocks.append(Block(nn.Linear(128 * 4 * 4, width), norm, CReLU(-1) if spec.crelu else nn.ReLU()))
    return blocks


class Scale(nn.Module):
    """Multiplies its input, converted to float32, by a constant: uint8 frames to [0, 1] inside the network, so that
    rollouts keep their observations as bytes (a quarter of the memory)."""

    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(torch.float32) * self.factor


def _atari_blocks(spec: NetworkSpec) -> list[nn.Module]:
    blocks: list[nn.Module] = [Scale(1 / 255)]
    for c_in, c_out, kernel, stride in ((4, 32, 8, 4), (32, 64, 4, 2), (64, 64, 3, 1)):
        width = c_out // 2 if spec.crelu else c_out
        norm = nn.GroupNorm(1, width) if spec.layernorm else None
        blocks.append(Block(nn.Conv2d(c_in, width, kernel, stride=stride), norm, CReLU(1) if spec.crelu else nn.ReLU()))
    blocks.append(nn.Flatten())
    fan_in = 64 * 7 * 7
    for out in (256, spec.hidden):
        width = out // 2 if spec.crelu else out
        norm = nn.LayerNorm(width) if spec.layernorm else None
        blocks.append(Block(nn.Linear(fan_in, width), norm, CReLU(-1) if spec.crelu else nn.ReLU()))
        fan_in = out
    return blocks


ENCODERS = {"mlp": _mlp_blocks, "cnn": _cnn_blocks, "atari": _atari_blocks}


class ActorCritic(nn.Module):
    """Shared encoder + ``policy_head`` (logits) + ``value_head`` (state value).

    ``forward`` returns ``(logits, value, features)``; ``features`` is the encoder's last hidden layer (the
    heads' input), whose exact zeros are the paper's "dead units". ``forward(obs, return_hidden=True)`` also
    returns every block's output, for ReDo's per-layer scores.
    """

    def __init__(self, spec: NetworkSpec = NetworkSpec()):
        super().__init__()
        if spec.encoder not in ENCODERS:
            raise ValueError(f"unknown encoder {spec.encoder!r}; valid: {', '.join(ENCODERS)}")
        if spec.value_outputs not in (1, 2):
            raise ValueError(f"value_outputs must be 1 or 2; got {spec.value_outputs!r}")
        self.spec = spec
        self.encoder = nn.Sequential(*ENCODERS[spec.encoder](spec))
        self.policy_head = nn.Linear(spec.hidden, spec.n_actions)
        self.value_head = nn.Linear(spec.hidden, spec.value_outputs)

    def forward(self, obs: torch.Tensor, return_hidden: bool = False):
        hidden = []
        x = obs
        for module in self.encoder:
            x = module(x)
            if isinstance(module, Block):
                hidden.append(x)
        logits = self.policy_head(x)
        value = self.value_head(x)
        value = value.squeeze(-1) if value.shape[-1] == 1 else value  # [..., 2]: one per reward stream
        if return_hidden:
            return logits, value, x, hidden
        return logits, value, x

    def blocks(self) -> list[Block]:
        """The encoder's hidden layers, input side first."""
        return [m for m in self.encoder if isinstance(m, Block)]

    def heads(self) -> dict[str, nn.Module]:
        return {"policy_head": self.policy_head, "value_head": self.value_head}


# ---------------------------------------------------------------------------------------------------------------
# Fresh initialisation
# ---------------------------------------------------------------------------------------------------------------


def _uniform(shape, bound: float, generators) -> torch.Tensor:
    if isinstance(generators, MemberStreams):
        u = generators.rand(shape)
    elif all(g is generators[0] for g in generators):
        u = torch.rand((len(generators), *shape), generator=generators[0], device=generators[0].device)
    else:
        u = torch.stack([torch.rand(shape, generator=g, device=g.device) for g in generators])
    return u.mul_(2 * bound).sub_(bound)


def _fresh_default(module: nn.Module, generators: list[torch.Generator]) -> dict[str, torch.Tensor]:
    """Any module with ``reset_parameters``: a real copy per member, re-initialised under a seeded RNG."""
    out: dict[str, list[torch.Tensor]] = {}
    for g in generators:
        seed = int(torch.randint(0, 2**62, (1,), generator=g, device=g.device))
        copy_ = copy.deepcopy(module)
        copy_ = copy_.to_empty(device="cpu") if _on_meta(copy_) else copy_.cpu()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            copy_.reset_parameters()
        for name, p in copy_.named_parameters(recurse=False):
            out.setdefault(name, []).append(p.detach().clone())
    return {k: torch.stack(v).to(generators[0].device) for k, v in out.items()}


def _on_meta(module: nn.Module) -> bool:
    return any(p.is_meta for p in module.parameters(recurse=False))


def fresh_parameters(module: nn.Module, generators: list[torch.Generator] | MemberStreams) -> dict[str, torch.Tensor]:
    """A newly drawn PyTorch-default initialisation of ``module``, one per generator (or per member of
    :class:`~plasticity_lab.streams.MemberStreams`), stacked ``[M, ...]``.

    Linear and convolution layers draw weight and bias from U(−1/√fan_in, 1/√fan_in) — exactly the distribution
    of their ``reset_parameters`` (Kaiming-uniform with a = √5) — but straight into a stacked tensor, so that a
    whole population can be re-drawn cheaply (soft shrink+perturb does it after every optimizer step).
    LayerNorm and GroupNorm start at gain 1, bias 0. Any other module with parameters is re-initialised by its
    own ``reset_parameters``. ``module`` may live on the meta device (only shapes are read). Values are drawn on
    the generators' device.
    """
    if isinstance(generators, MemberStreams):
        members, device = generators.members, generators.device
    else:
        members, device = len(generators), generators[0].device
    out: dict[str, torch.Tensor] = {}
    for prefix, sub in module.named_modules():
        own = dict(sub.named_parameters(recurse=False))
        if not own:
            continue
        if isinstance(sub, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            fan_in = sub.weight[0].numel()
            bound = 1.0 / fan_in**0.5 if fan_in > 0 else 0.0
            drawn = {name: _uniform(p.shape, bound, generators) for name, p in own.items()}
        elif isinstance(sub, (nn.LayerNorm, nn.GroupNorm)):
            drawn = {name: torch.full((members, *p.shape), 1.0 if name == "weight" else 0.0,
                                      device=device)
                     for name, p in own.items()}
        elif hasattr(sub, "reset_parameters"):
            if isinstance(generators, MemberStreams):
                raise TypeError(f"member streams draw fresh values for Linear, convolution and norm layers only, "
                                f"not {type(sub).__name__} ({prefix!r})")
            drawn = _fresh_default(sub, generators)
        else:
            raise TypeError(f"cannot draw a fresh initialisation for module {type(sub).__name__} ({prefix!r})")
        for name, value in drawn.items():
            out[f"{prefix}.{name}" if prefix else name] = value
    # Keep the module's own parameter order (optimizer state and checkpoints follow it).
    return {name: out[name] for name, _ in module.named_parameters()}
