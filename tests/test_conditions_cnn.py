"""Every condition of the study on the paper's CoinRun CNN (``NetworkSpec(encoder="cnn", n_actions=9)``), each
checked against an expectation computed here by hand; the MLP versions are in test_conditions.py.

Small on purpose (the CNN runs on the reference ``vmap`` backend): 2 members, a few 64×64 observations, rollouts of
16 rows in minibatches of 8.
"""

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from plasticity_lab.conditions import (CONDITIONS, L2, Injection, InjectedHead, ReDo, RegenL2, RegenW2, ResetAll,
                                       ResetFinal, ShrinkPerturb, SoftShrinkPerturb, WarmStart, parse_condition)
from plasticity_lab.nets import CReLU, NetworkSpec
from plasticity_lab.population import Population
from plasticity_lab.ppo import Agent, PPOConfig, Rollout, gae

N_ACTIONS = 9
#: 16 rows per member (T=4 × E=4) in minibatches of 8: two AdamW steps per epoch.
SMALL = PPOConfig(minibatch_size=8, epochs=1)
CONVS = ["encoder.0.layer", "encoder.1.layer", "encoder.2.layer", "encoder.3.layer"]
DENSE = "encoder.5.layer"  # encoder.4 is the Flatten
HEADS = ("policy_head.weight", "policy_head.bias", "value_head.weight", "value_head.bias")


def _spec(**options):
    return NetworkSpec(encoder="cnn", n_actions=N_ACTIONS, **options)


def _population(condition, seeds=(0, 1), ppo=SMALL):
    """Built and set up as plasticity_lab.experiment does it: the condition's options, then ``setup``."""
    pop = Population(_spec(**condition.network_options()), list(seeds), ppo, condition)
    condition.setup(pop)
    return pop


def cnn_rollout(members, T=4, E=4, seed=0):
    """A random CoinRun-shaped rollout: obs ``[T, M, E, 3, 64, 64]`` in [0, 1], 9 actions, GAE targets."""
    g = torch.Generator().manual_seed(seed)
    obs = torch.rand(T, members, E, 3, 64, 64, generator=g)
    rewards = torch.randn(T, members, E, generator=g) * 0.3
    values = torch.randn(T, members, E, generator=g) * 0.1
    actions = torch.randint(0, N_ACTIONS, (T, members, E), generator=g)
    log_probs = torch.log(torch.rand(T, members, E, generator=g) * 0.5 + 0.05)
    rollout = Rollout(obs=obs, actions=actions, log_probs=log_probs, values=values, rewards=rewards)
    rollout.advantages = gae(rewards, values, 0.99, 0.95)
    rollout.returns = rollout.advantages + values
    return rollout


def _obs(members=2, batch=4, seed=5):
    return torch.rand(members, batch, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def _snapshot(pop):
    return {k: v.detach().clone() for k, v in pop.params.items()}


def _twin(generator):
    """A generator in the same state: it makes the draw the hook is about to make."""
    return torch.Generator().set_state(generator.get_state())


def _close(got, want, name, **tolerance):
    """torch.testing.assert_close, naming the tensor in front of its message."""
    torch.testing.assert_close(got, want, msg=lambda text: f"{name}: {text}", **tolerance)


def _displace(pop, scale=0.01, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in pop.params.values():
            p.add_(torch.randn(p.shape, generator=g) * scale)


# ---------------------------------------------------------------------------------------------------------------
# Warm-start, resets, shrink+perturb
# ---------------------------------------------------------------------------------------------------------------


def test_warm_start_leaves_every_cnn_parameter_at_a_shift():
    """Warm-start's shift is a no-op on the CNN: every tensor identical afterwards."""
    cond = WarmStart()
    pop = _population(cond)
    old = _snapshot(pop)
    cond.at_shift(pop, torch.Generator().manual_seed(1))
    assert all(torch.equal(p.detach(), old[k]) for k, p in pop.params.items())


def test_reset_all_redraws_every_cnn_parameter_from_pytorch_default_init():
    """Reset-all: after the shift each of the 14 CNN tensors is the fresh draw an identically seeded generator
    gives, differs from before and lies in PyTorch's default range U(±1/√fan_in), fan_in = C_in·4·4 for a conv."""
    cond = ResetAll()
    pop = _population(cond)
    assert len(pop.params) == 14  # 4 convs + dense + 2 heads, weight and bias each
    old, g = _snapshot(pop), torch.Generator().manual_seed(3)
    fresh = pop.fresh_params(_twin(g))
    cond.at_shift(pop, g)
    fan_in = {**{f"{c}.": cin * 16 for c, cin in zip(CONVS, (3, 32, 64, 128))}, f"{DENSE}.": 2048,
              "policy_head.": 256, "value_head.": 256}
    for name, p in pop.params.items():
        assert torch.equal(p.detach(), fresh[name]), name
        assert not torch.equal(p.detach(), old[name]), name
        bound = 1 / fan_in[name[:name.rindex(".") + 1]] ** 0.5
        assert p.detach().abs().max() <= bound, name
        assert not torch.equal(p[0].detach(), p[1].detach()), name  # each member its own draw


def test_reset_final_redraws_only_the_two_heads_of_the_cnn():
    """Reset-final: policy_head.* and value_head.* become the fresh draw; every conv and the dense layer are
    exactly untouched."""
    cond = ResetFinal()
    pop = _population(cond)
    old, g = _snapshot(pop), torch.Generator().manual_seed(6)
    fresh = pop.fresh_params(_twin(g))
    cond.at_shift(pop, g)
    for name, p in pop.params.items():
        if name in HEADS:
            assert torch.equal(p.detach(), fresh[name]) and not torch.equal(p.detach(), old[name]), name
        else:
            assert name.startswith("encoder.") and torch.equal(p.detach(), old[name]), name


def test_shrink_perturb_is_half_old_plus_half_fresh_on_every_cnn_tensor():
    """Shrink+perturb (β = 0.5, α = 1 − β): θ ← 0.5·θ + 0.5·θ_fresh, by hand from the twin generator's draw
    (×0.5 is exact in float, so the match is exact)."""
    cond = ShrinkPerturb()
    pop = _population(cond)
    pop.update(cnn_rollout(2), torch.Generator().manual_seed(0))  # trained weights, not the initial draw
    old, g = _snapshot(pop), torch.Generator().manual_seed(4)
    fresh = pop.fresh_params(_twin(g))
    cond.at_shift(pop, g)
    for name, p in pop.params.items():
        assert torch.equal(p.detach(), 0.5 * old[name] + 0.5 * fresh[name]), name
        assert not torch.equal(p.detach(), old[name]), name


# ---------------------------------------------------------------------------------------------------------------
# Soft shrink+perturb
# ---------------------------------------------------------------------------------------------------------------


class _RecordingSoftSP(SoftShrinkPerturb):
    """Soft shrink+perturb that records θ and the generator's state just before each of its calls."""

    def __post_init__(self):
        super().__post_init__()
        self.seen = []

    def after_optimizer_step(self, population, generator):
        self.seen.append(({k: v.detach().clone() for k, v in population.params.items()}, generator.get_state()))
        super().after_optimizer_step(population, generator)


def test_soft_shrink_perturb_runs_after_each_step_of_a_cnn_update_as_alpha_theta_plus_beta_fresh():
    """Through pop.update: the hook runs once after each AdamW step (2 here), on parameters the step changed, and
    the result is α·θ + β·θ_fresh for every tensor, conv kernels included (α = 1 − β = 0.9; the tolerance is
    float32 rounding of α)."""
    cond = _RecordingSoftSP(perturb=0.1)
    pop = _population(cond)
    pop.update(cnn_rollout(2), torch.Generator().manual_seed(0))
    assert len(cond.seen) == 2
    (first, _), (theta, state) = cond.seen
    fresh = pop.fresh_params(torch.Generator().set_state(state))
    for name, p in pop.params.items():
        expected = 0.9 * theta[name] + 0.1 * fresh[name]
        _close(p.detach(), expected, name, rtol=0, atol=1e-7)
        assert (p.detach() - theta[name]).abs().max() > 1e-4, name  # a visible change
    # between the two calls AdamW stepped (the first call's result is not what the second call saw)
    assert any(not torch.equal(first[k], theta[k]) for k in theta)


def test_soft_shrink_perturb_plus_layernorm_on_the_cnn_shrinks_norm_gains_to_one_biases_to_zero():
    """soft_shrink_perturb+layernorm: the CNN has its GroupNorms and LayerNorm, trains, and one hook call maps
    GroupNorm/LayerNorm gains g → α·g + β·1 and biases b → α·b, every other tensor (conv kernels included)
    → α·θ + β·θ_fresh (α = 0.9, β = 0.1)."""
    cond = parse_condition("soft_shrink_perturb+layernorm", {"perturb": 0.1})
    pop = _population(cond)
    assert [type(b.norm) for b in pop.template.blocks()] == [nn.GroupNorm] * 4 + [nn.LayerNorm]
    pop.update(cnn_rollout(2), torch.Generator().manual_seed(0))
    norms = [k for k in pop.params if ".norm." in k]
    assert len(norms) == 10
    with torch.no_grad():
        for k in norms:
            pop.params[k].fill_(3.0 if k.endswith("weight") else -2.0)
    old, g = _snapshot(pop), torch.Generator().manual_seed(7)
    fresh = pop.fresh_params(_twin(g))
    cond.after_optimizer_step(pop, g)
    for name, p in pop.params.items():
        if name in norms:
            target = 0.9 * 3.0 + 0.1 * 1.0 if name.endswith("weight") else 0.9 * -2.0
            _close(p.detach(), torch.full_like(p.detach(), target), name, rtol=0, atol=1e-6)
        else:
            _close(p.detach(), 0.9 * old[name] + 0.1 * fresh[name], name, rtol=0, atol=1e-7)


# ---------------------------------------------------------------------------------------------------------------
# Regularisers
# ---------------------------------------------------------------------------------------------------------------


def _agent_twin(pop, ppo):
    """An ordinary nn.Module CNN loaded with member 0's parameters, and ppo.Agent (torch.optim.AdamW) on it."""
    net = _spec().build()
    net.load_state_dict({k: v.detach().clone() for k, v in pop.member_params(0).items()})
    return net, Agent(net, ppo)


#: The two trainings compared with ppo.Agent. Adam's first steps are ≈ lr·sign(g) for every |g| ≫ adam_eps; the
#: fresh CNN has many nearly dead ReLU units, so some weights' gradients are ~1e-8 and their sign is set by which
#: pre-activations fall just either side of 0. At the protocol's eps = 1e-8 a perturbation of 1e-8 (the vmap'd
#: conv's summation order, or a weight decay of 5e-7) flips such a sign and moves that weight by a whole lr = 5e-4:
#: measured 2e-3 between two plain Agents with weight decay 1e-3 and 0. With eps = 1e-6 the step is continuous in
#: such tiny gradients and the population and the Agent agree to ≤ 9e-8 (measured); atol 1e-6 is then 10× that,
#: and 500× below one Adam step, so a different minibatch, a missing step or a wrong decay still fails.
COMPARED = dataclasses.replace(SMALL, epochs=2, adam_eps=1e-6)
RTOL, ATOL = 1e-4, 1e-6


@pytest.mark.parametrize("coef", [1e-3, 100.0], ids=["protocol-1e-3", "visible-100"])
def test_l2_on_the_cnn_trains_as_torch_adamw_with_weight_decay(coef):
    """L2: setup sets population.weight_decay to coef per member; a population of one then trains exactly as
    torch.optim.AdamW(weight_decay=coef) on an nn.Module with the same weights and minibatches (ppo.Agent). At
    coef = 1e-3 the decay (5e-7 per step) is below the tolerance, so coef = 100 (5 % per step) checks that it is
    applied, and applied as AdamW does."""
    cond = L2(coef=coef)
    ppo = COMPARED
    pop = _population(cond, seeds=(3,), ppo=ppo)
    assert pop.weight_decay.tolist() == pytest.approx([coef])
    assert _population(L2(), seeds=(0, 1)).weight_decay.tolist() == pytest.approx([1e-3, 1e-3])
    net, agent = _agent_twin(pop, dataclasses.replace(ppo, weight_decay=coef))
    assert isinstance(agent.optimizer, torch.optim.AdamW)
    assert agent.optimizer.param_groups[0]["weight_decay"] == coef
    rollout = cnn_rollout(1)
    pop.update(rollout, torch.Generator().manual_seed(11))
    agent.update(rollout, torch.Generator().manual_seed(11))
    for name, p in net.named_parameters():
        _close(pop.params[name][0].detach(), p.detach(), name, rtol=RTOL, atol=ATOL)
    if coef == 100.0:  # without the decay the result is far off
        plain_net, plain = _agent_twin(_population(L2(coef=0.0), seeds=(3,), ppo=ppo), ppo)
        plain.update(rollout, torch.Generator().manual_seed(11))
        gap = max((pop.params[k][0].detach() - p.detach()).abs().max().item()
                  for k, p in plain_net.named_parameters())
        assert gap > 100 * ATOL


def test_regen_l2_on_the_cnn_is_coef_times_the_unsquared_norm_over_all_tensors():
    """regen_l2: extra_loss = coef·‖θ − θ₀‖₂ per member over all 14 CNN tensors (not squared; float64 by
    hand); 0 at θ₀; gradient coef·(θ − θ₀)/‖θ − θ₀‖ in every tensor, conv kernels included."""
    coef = [1e-2, 3.0]
    cond = RegenL2(coef=coef)
    pop = _population(cond)
    assert set(pop.initial_params) == set(pop.params) and len(pop.params) == 14
    assert cond.extra_loss(pop).tolist() == [0.0, 0.0]
    _displace(pop)
    diff = {k: (pop.params[k].detach() - pop.initial_params[k]).double() for k in pop.params}
    norms = torch.stack([sum(d[m].pow(2).sum() for d in diff.values()).sqrt() for m in range(2)])
    loss = cond.extra_loss(pop)
    torch.testing.assert_close(loss.detach().double(), torch.tensor(coef, dtype=torch.float64) * norms,
                               rtol=1e-5, atol=0)
    loss.sum().backward()
    for k, p in pop.params.items():
        expected = torch.stack([coef[m] * diff[k][m] / norms[m] for m in range(2)]).float()
        _close(p.grad, expected, k, rtol=1e-4, atol=1e-9)


def test_regen_w2_on_the_cnn_sorts_within_each_tensor_and_ignores_a_permuted_kernel():
    """regen_w2: extra_loss = coef·‖sort(θ) − sort(θ₀)‖₂ (sorted within each tensor, one norm over all;
    numpy by hand); permuting the values of a conv kernel leaves it unchanged while the plain L2 distance grows."""
    cond = RegenW2(coef=2.0)
    pop = _population(cond)
    assert cond.extra_loss(pop).tolist() == [0.0, 0.0]
    _displace(pop)
    value = cond.extra_loss(pop).detach()
    for m in range(2):
        sq = sum(((np.sort(pop.params[k][m].detach().numpy().ravel().astype(np.float64)) -
                   np.sort(pop.initial_params[k][m].numpy().ravel().astype(np.float64))) ** 2).sum()
                 for k in pop.params)
        assert value[m].item() == pytest.approx(2.0 * np.sqrt(sq), rel=1e-5)
    l2_before = RegenL2(coef=1.0).extra_loss(pop)[0].item()
    with torch.no_grad():
        w = pop.params["encoder.2.layer.weight"]
        perm = torch.randperm(w[0].numel(), generator=torch.Generator().manual_seed(1))
        w[0] = w[0].reshape(-1)[perm].reshape(w[0].shape)
    assert cond.extra_loss(pop).detach()[0].item() == pytest.approx(value[0].item(), rel=1e-6)
    assert RegenL2(coef=1.0).extra_loss(pop)[0].item() > 1.2 * l2_before


# ---------------------------------------------------------------------------------------------------------------
# Architecture
# ---------------------------------------------------------------------------------------------------------------


def test_layernorm_puts_groupnorm_after_each_conv_and_layernorm_after_the_dense_layer():
    """layernorm: GroupNorm(1, C) after the four convs (C = 32, 64, 128, 128), LayerNorm(256) after the dense
    layer, none in the heads; gains start at 1, biases at 0; each norm's output, less its bias and divided by its
    gain, has mean 0 and variance 1 per sample over (C, H, W) (resp. the 256 units), measured on an nn.Module
    whose forward equals the population's."""
    cond = parse_condition("layernorm")
    pop = _population(cond)
    blocks = pop.template.blocks()
    groups = [b.norm for b in blocks[:4]]
    assert all(type(n) is nn.GroupNorm and n.num_groups == 1 for n in groups)
    assert [n.num_channels for n in groups] == [32, 64, 128, 128]
    assert type(blocks[4].norm) is nn.LayerNorm and blocks[4].norm.normalized_shape == (256,)
    assert type(pop.template.policy_head) is nn.Linear and type(pop.template.value_head) is nn.Linear
    assert {k for k in pop.params if k.startswith(("policy_head", "value_head"))} == set(HEADS)
    for k, width in zip(("encoder.0", "encoder.1", "encoder.2", "encoder.3", "encoder.5"), (32, 64, 128, 128, 256)):
        assert torch.equal(pop.params[f"{k}.norm.weight"].detach(), torch.ones(2, width)), k
        assert torch.equal(pop.params[f"{k}.norm.bias"].detach(), torch.zeros(2, width)), k

    g = torch.Generator().manual_seed(2)
    with torch.no_grad():  # move gains and biases off 1 and 0 so that "before the gain" means something
        for k, p in pop.params.items():
            if ".norm." in k:
                p.add_(0.3 * torch.randn(p.shape, generator=g))
    obs = _obs()
    net = _spec(layernorm=True).build()
    net.load_state_dict({k: v.detach() for k, v in pop.member_params(1).items()})
    captured = []
    hooks = [b.norm.register_forward_hook(lambda mod, inp, out: captured.append((mod, out))) for b in net.blocks()]
    with torch.no_grad():
        logits = net(obs[1])[0]
        pop_logits = pop.forward(obs)[0][1]
    for h in hooks:
        h.remove()
    torch.testing.assert_close(pop_logits, logits, rtol=1e-5, atol=1e-6)
    assert len(captured) == 5
    for mod, out in captured:
        shape = (1, -1, 1, 1) if out.dim() == 4 else (1, -1)
        normalised = (out - mod.bias.view(shape)) / mod.weight.view(shape)
        z = normalised.flatten(1)  # per sample; the variance is short of 1 by eps/var ≈ 1e-4
        torch.testing.assert_close(z.mean(1), torch.zeros(z.shape[0]), rtol=0, atol=1e-5)
        torch.testing.assert_close(z.var(1, unbiased=False), torch.ones(z.shape[0]), rtol=0, atol=5e-4)
        if out.dim() == 4:  # one group: the channels are not each normalised on their own
            assert normalised.mean((2, 3)).abs().max() > 0.1


def test_crelu_halves_every_cnn_pre_activation_and_keeps_the_widths_the_next_layer_reads():
    """crelu: conv widths 16, 32, 64, 64 and dense 128, each layer reading the doubled width of the one before
    (3, 32, 64, 128 channels; 2048 flat; heads 256); each block's output is cat(relu(z), relu(−z)), so exactly
    half of it is 0, and for the first block it equals that of F.conv2d by hand."""
    cond = parse_condition("crelu")
    pop = _population(cond)
    convs = [b.layer for b in pop.template.blocks()[:4]]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(3, 16), (32, 32), (64, 64), (128, 64)]
    dense = pop.template.blocks()[4].layer
    assert (dense.in_features, dense.out_features) == (2048, 128)
    assert all(isinstance(b.activation, CReLU) for b in pop.template.blocks())
    assert pop.params["encoder.3.layer.weight"].shape == (2, 64, 128, 4, 4)
    assert pop.params[f"{DENSE}.weight"].shape == (2, 128, 2048)
    assert pop.params["policy_head.weight"].shape == (2, N_ACTIONS, 256)
    obs = _obs()
    with torch.no_grad():
        logits, value, features, hidden = pop.forward(obs, return_hidden=True)
    assert logits.shape == (2, 4, N_ACTIONS) and value.shape == (2, 4) and features.shape == (2, 4, 256)
    assert [tuple(a.shape[2:]) for a in hidden] == [(32, 32, 32), (64, 16, 16), (128, 8, 8), (128, 4, 4), (256,)]
    for a in hidden:
        half = a.shape[2] // 2
        pos, neg = a[:, :, :half], a[:, :, half:]
        assert (a == 0).float().mean().item() == 0.5
        assert not (pos * neg).any() and ((pos + neg) > 0).all()
    for m in range(2):
        z = F.conv2d(obs[m], pop.params["encoder.0.layer.weight"][m].detach(),
                     pop.params["encoder.0.layer.bias"][m].detach(), stride=2, padding=1)
        torch.testing.assert_close(hidden[0][m], torch.cat([z.relu(), (-z).relu()], 1), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# Plasticity injection
# ---------------------------------------------------------------------------------------------------------------


def test_injection_on_the_cnn_trains_added_and_base_while_the_subtracted_copy_stays_put():
    """Injection on the CNN, then one update: the output moves, the frozen subtracted copy is bit-identical, the
    added copy and the base head train, and the output is features·(W_base + W_added − W_sub)ᵀ + b (by hand)."""
    cond = Injection()
    pop = _population(cond)
    obs = _obs()
    cond.at_shift(pop, torch.Generator().manual_seed(0))
    pop.new_optimizer()
    assert isinstance(pop.template.policy_head, InjectedHead) and isinstance(pop.template.value_head, InjectedHead)
    with torch.no_grad():
        injected = pop.forward(obs)[0]
    before = _snapshot(pop)
    pop.update(cnn_rollout(2), torch.Generator().manual_seed(1))
    for head in ("policy_head", "value_head"):
        for p in ("weight", "bias"):
            assert torch.equal(pop.params[f"{head}.subtracted.{p}"].detach(), before[f"{head}.subtracted.{p}"])
            assert not torch.equal(pop.params[f"{head}.added.{p}"].detach(), before[f"{head}.added.{p}"])
            assert not torch.equal(pop.params[f"{head}.base.{p}"].detach(), before[f"{head}.base.{p}"])
    with torch.no_grad():
        logits, value, features = pop.forward(obs)
    assert not torch.allclose(logits, injected, atol=1e-4)
    P = {k: v.detach() for k, v in pop.params.items()}
    for head, out in (("policy_head", logits), ("value_head", value.unsqueeze(-1))):
        w = P[f"{head}.base.weight"] + P[f"{head}.added.weight"] - P[f"{head}.subtracted.weight"]
        b = P[f"{head}.base.bias"] + P[f"{head}.added.bias"] - P[f"{head}.subtracted.bias"]
        torch.testing.assert_close(out, features @ w.transpose(1, 2) + b.unsqueeze(1), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# ReDo
# ---------------------------------------------------------------------------------------------------------------


def _healthy(pop):
    """Encoder weights ×0.1 and biases 0.1: every pre-activation ≈ 0.1 > 0, so every unit scores ≈ 1 ≫ τ and the
    planted units are the only dormant ones."""
    with torch.no_grad():
        for k, p in pop.params.items():
            if k.startswith("encoder."):
                p.mul_(0.1) if k.endswith("weight") else p.fill_(0.1)


def test_redo_on_the_cnn_recycles_exactly_a_dead_conv_channel():
    """On the CNN ReDo recycles the output channels of each of the four conv blocks (encoder.0–3.layer) and the
    256 units of the dense layer (encoder.5.layer). A channel made dead (kernel 0, bias −1) in conv block 1 (member
    0) and block 2 (member 1) is the only one recycled: its kernel becomes the fresh draw, its bias is kept, its
    input-channel slice in the next conv is 0; every other tensor is unchanged (the flatten → dense case is
    test_conditions.py's)."""
    cond = ReDo()
    pop = _population(cond)
    _healthy(pop)
    planted = [("encoder.1.layer", "encoder.2.layer", 0, 20), ("encoder.2.layer", "encoder.3.layer", 1, 100)]
    with torch.no_grad():
        for layer, _, m, c in planted:
            pop.params[f"{layer}.weight"][m, c] = 0.0
            pop.params[f"{layer}.bias"][m, c] = -1.0
    pop.last_minibatch_obs = _obs()
    old, g = _snapshot(pop), torch.Generator().manual_seed(9)
    fresh = pop.fresh_params(_twin(g))

    masks = cond.recycle(pop, g)

    widths = [32, 64, 128, 128, 256]
    expected_masks = [torch.zeros(2, w, dtype=torch.bool) for w in widths]
    expected_masks[1][0, 20] = expected_masks[2][1, 100] = True
    assert [m.shape for m in masks] == [e.shape for e in expected_masks]
    for got, want in zip(masks, expected_masks):
        assert torch.equal(got, want)
    expected = {k: v.clone() for k, v in old.items()}
    for layer, reader, m, c in planted:
        expected[f"{layer}.weight"][m, c] = fresh[f"{layer}.weight"][m, c]
        expected[f"{reader}.weight"][m, :, c] = 0.0
    for name, p in pop.params.items():
        assert torch.equal(p.detach(), expected[name]), name
    for layer, reader, m, c in planted:
        assert pop.params[f"{layer}.bias"][m, c].item() == -1.0  # bias kept
        assert pop.params[f"{layer}.weight"][m, c].abs().sum() > 0  # a real kernel again
        assert not pop.params[f"{reader}.weight"][m, :, c].any()
        assert pop.params[f"{reader}.weight"][1 - m, :, c].all()  # the other member is left alone


# ---------------------------------------------------------------------------------------------------------------
# Every condition runs; a population of one is one network trained alone
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [*CONDITIONS, "soft_shrink_perturb+layernorm", "regen_l2+layernorm"])
def test_every_condition_trains_across_a_shift_on_the_cnn_without_nans(name):
    """Every registered condition (and the paper's two best combinations) runs its hooks on the CNN, as the run
    loop calls them: update, after_epoch, at_shift, new AdamW, update; the weights change and stay finite."""
    cond = parse_condition(name, {"period": 1} if name == "redo" else None)
    pop = _population(cond)
    start = _snapshot(pop)
    g = torch.Generator().manual_seed(0)
    for epoch in range(2):
        stats = pop.update(cnn_rollout(2, T=2, seed=epoch), g)
        cond.after_epoch(pop, epoch, g)
        assert all(torch.isfinite(v).all() for v in stats.values()), stats
        if epoch == 0:
            cond.at_shift(pop, g)
            pop.new_optimizer()
    assert all(torch.isfinite(p).all() for p in pop.params.values())
    with torch.no_grad():
        logits, value, features = pop.forward(_obs())
    assert logits.shape == (2, 4, N_ACTIONS) and torch.isfinite(logits).all() and torch.isfinite(value).all()
    assert any(k not in start or not torch.equal(p.detach(), start[k]) for k, p in pop.params.items())


def test_a_population_of_one_cnn_trains_as_the_readable_single_agent_does():
    """ppo.Agent on NetworkSpec(encoder="cnn", n_actions=9).build() (nn.Module, clip_grad_norm_, AdamW) and a
    Population of one (vmap'd conv) from the same weights, rollout and generator seed: the same minibatches (the
    generators end in the same state) and the same weights after 4 AdamW steps, to RTOL/ATOL (see COMPARED)."""
    ppo = COMPARED
    pop = Population(_spec(), member_seeds=[3], ppo=ppo)
    net, agent = _agent_twin(pop, ppo)
    start = _snapshot(pop)
    rollout = cnn_rollout(1)
    pop_generator, agent_generator = torch.Generator().manual_seed(11), torch.Generator().manual_seed(11)
    pop_stats = pop.update(rollout, pop_generator)
    agent_stats = agent.update(rollout, agent_generator)
    assert torch.equal(pop_generator.get_state(), agent_generator.get_state())
    moved = 0.0
    for name, p in net.named_parameters():
        _close(pop.params[name][0].detach(), p.detach(), name, rtol=RTOL, atol=ATOL)
        moved = max(moved, (p.detach() - start[name][0]).abs().max().item())
    assert moved > 100 * ATOL  # the weights did train (about 4 Adam steps of lr)
    for key in ("policy_loss", "value_loss", "entropy", "grad_norm"):
        assert agent_stats[key].item() == pytest.approx(pop_stats[key][0].item(), rel=1e-3, abs=1e-6), key
