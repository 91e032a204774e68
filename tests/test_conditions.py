"""The conditions (PROTOCOL §4), each checked against its definition on populations built by hand."""

import math

import numpy as np
import pytest
import torch
from torch import nn

import plasticity_lab as pl
from plasticity_lab.conditions import (CONDITIONS, L2, Composite, InjectedHead, Injection, ReDo, RegenL2, RegenW2,
                                       ResetFinal, ShrinkPerturb, SoftShrinkPerturb, fold_injections,
                                       parse_condition)
from plasticity_lab.nets import CReLU, NetworkSpec
from plasticity_lab.population import Population
from plasticity_lab.ppo import PPOConfig
from rollouts import random_rollout


def _population(condition, spec=None, seeds=(0, 1)):
    spec = spec or NetworkSpec(**condition.network_options())
    pop = Population(spec, member_seeds=list(seeds), ppo=PPOConfig(), condition=condition)
    condition.setup(pop)
    return pop


def _snapshot(pop):
    return {k: v.detach().clone() for k, v in pop.params.items()}


def _fresh_like_the_hook(pop, generator):
    """The fresh draw a hook will make from ``generator`` (same generator state), leaving ``generator`` as is."""
    twin = torch.Generator().set_state(generator.get_state())
    return pop.fresh_params(twin)


def _obs(members=2, batch=64, seed=5):
    return (torch.rand(members, batch, 363, generator=torch.Generator().manual_seed(seed)) < 0.1).float()


# ---------------------------------------------------------------------------------------------------------------
# Shrink+perturb and resets
# ---------------------------------------------------------------------------------------------------------------


def test_shrink_perturb_mixes_old_and_fresh():
    cond = ShrinkPerturb(perturb=0.5)
    pop = _population(cond)
    old, g = _snapshot(pop), torch.Generator().manual_seed(3)
    fresh = _fresh_like_the_hook(pop, g)
    cond.at_shift(pop, g)
    for name, p in pop.params.items():
        torch.testing.assert_close(p.detach(), 0.5 * old[name] + 0.5 * fresh[name], rtol=0, atol=1e-7)
        assert not torch.equal(p.detach(), old[name])


def test_shrink_perturb_with_beta_one_is_exactly_a_reset():
    cond = ShrinkPerturb(perturb=1.0)
    assert cond.parameters() == {"perturb": 1.0, "shrink": None}
    pop = _population(cond)
    g = torch.Generator().manual_seed(4)
    fresh = _fresh_like_the_hook(pop, g)
    cond.at_shift(pop, g)
    for name, p in pop.params.items():
        assert torch.equal(p.detach(), fresh[name])


def test_shrink_and_perturb_are_independent_and_per_member():
    cond = ShrinkPerturb(perturb=0.25, shrink=0.5)
    pop = _population(cond)
    old, g = _snapshot(pop), torch.Generator().manual_seed(5)
    fresh = _fresh_like_the_hook(pop, g)
    cond.at_shift(pop, g)
    for name, p in pop.params.items():
        torch.testing.assert_close(p.detach(), 0.5 * old[name] + 0.25 * fresh[name], rtol=0, atol=1e-7)

    # member 0: untouched (shrink 1, perturb 0); member 1: reset (shrink 0, perturb 1)
    cond = ShrinkPerturb(perturb=[0.0, 1.0], shrink=[1.0, 0.0])
    pop = _population(cond)
    old = _snapshot(pop)
    fresh = _fresh_like_the_hook(pop, g)
    cond.at_shift(pop, g)
    for name, p in pop.params.items():
        assert torch.equal(p[0].detach(), old[name][0]) and torch.equal(p[1].detach(), fresh[name][1])


def test_reset_final_touches_only_the_two_heads():
    cond = ResetFinal()
    pop = _population(cond)
    old, g = _snapshot(pop), torch.Generator().manual_seed(6)
    fresh = _fresh_like_the_hook(pop, g)
    cond.at_shift(pop, g)
    heads = {"policy_head.weight", "policy_head.bias", "value_head.weight", "value_head.bias"}
    for name, p in pop.params.items():
        expected = fresh[name] if name in heads else old[name]
        assert torch.equal(p.detach(), expected), name
    assert all(not torch.equal(pop.params[h].detach(), old[h]) for h in heads)


# ---------------------------------------------------------------------------------------------------------------
# Soft shrink+perturb
# ---------------------------------------------------------------------------------------------------------------


class _CountingSoftSP(SoftShrinkPerturb):
    calls = 0

    def after_optimizer_step(self, population, generator):
        type(self).calls += 1
        super().after_optimizer_step(population, generator)


def test_soft_shrink_perturb_runs_after_every_optimizer_step():
    cond = _CountingSoftSP(perturb=1e-3)
    pop = _population(cond)
    steps = []
    original = pop._optimizer_step
    pop._optimizer_step = lambda: (steps.append(cond.calls), original())[1]
    _CountingSoftSP.calls = 0
    pop.update(random_rollout(2), torch.Generator().manual_seed(0))
    n = 20 * 11
    expected = pop.ppo.epochs * (n // pop.ppo.minibatch_size)
    assert _CountingSoftSP.calls == expected == len(steps) == 9
    assert steps == list(range(expected))  # the hook ran once between consecutive steps


def test_soft_shrink_perturb_leaves_the_optimizer_state_untouched():
    cond = SoftShrinkPerturb(perturb=1e-2)
    pop = _population(cond)
    pop.update(random_rollout(2), torch.Generator().manual_seed(0))
    state = {id(p): {k: v.clone() for k, v in s.items()} for p, s in pop.optimizer.state.items()}
    before = _snapshot(pop)
    cond.after_optimizer_step(pop, torch.Generator().manual_seed(1))
    for p, s in pop.optimizer.state.items():
        for k, v in s.items():
            assert torch.equal(v, state[id(p)][k]), k
    assert all(not torch.equal(pop.params[k].detach(), before[k]) for k in before)
    # the optimizer still holds the same tensors (edited in place)
    assert {id(p) for g in pop.optimizer.param_groups for p in g["params"]} == {id(p) for p in pop.params.values()}


def test_soft_shrink_perturb_contracts_as_alpha_to_the_n():
    n = 10
    # no perturbation, alpha = 1/2: exactly alpha^n
    cond = SoftShrinkPerturb(perturb=0.0, shrink=0.5)
    pop = _population(cond)
    start, g = _snapshot(pop), torch.Generator().manual_seed(2)
    for _ in range(n):
        cond.after_optimizer_step(pop, g)
    for name, p in pop.params.items():
        assert torch.equal(p.detach(), start[name] * 0.5**n)
    # with perturbation (zero-mean fresh draws): on average theta_n / theta_0 -> alpha^n
    cond = SoftShrinkPerturb(perturb=0.1)  # shrink = 0.9
    pop = _population(cond)
    start = _snapshot(pop)
    for _ in range(n):
        cond.after_optimizer_step(pop, g)
    for m in range(2):
        th0 = torch.cat([v[m].reshape(-1) for v in start.values()])
        thn = torch.cat([v[m].detach().reshape(-1) for v in pop.params.values()])
        slope = float((thn * th0).sum() / (th0 * th0).sum())
        assert slope == pytest.approx(0.9**n, abs=0.01)
        assert not torch.allclose(thn, th0 * 0.9**n)


def test_soft_shrink_perturb_pulls_layernorm_towards_gain_one_bias_zero():
    cond = parse_condition("soft_shrink_perturb+layernorm", {"perturb": 0.5})
    pop = _population(cond)
    norms = [k for k in pop.params if k.startswith("encoder.") and ".norm." in k]
    assert norms
    with torch.no_grad():
        for k in norms:
            pop.params[k].fill_(3.0)
    cond.after_optimizer_step(pop, torch.Generator().manual_seed(0))
    for k in norms:
        target = 0.5 * 3.0 + 0.5 * (1.0 if k.endswith("weight") else 0.0)
        assert torch.equal(pop.params[k].detach(), torch.full_like(pop.params[k], target))


# ---------------------------------------------------------------------------------------------------------------
# Regularisers
# ---------------------------------------------------------------------------------------------------------------


def test_l2_shrinks_a_parameter_without_gradient_by_one_minus_lr_wd_per_step():
    cond = L2(coef=[0.0, 10.0])
    pop = _population(cond)
    assert pop.weight_decay.tolist() == [0.0, 10.0]
    start, k = _snapshot(pop), 3
    for _ in range(k):
        for p in pop.trainable().values():
            p.grad = torch.zeros_like(p)
        pop.decay_weights()
        pop.optimizer.step()
    factor = (1 - pop.ppo.lr * 10.0) ** k
    for name, p in pop.params.items():
        assert torch.equal(p[0].detach(), start[name][0])
        torch.testing.assert_close(p[1].detach(), start[name][1] * factor, rtol=1e-6, atol=0)
    assert _population(L2()).weight_decay.tolist() == pytest.approx([1e-3, 1e-3])


def _displace(pop, scale=0.01, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in pop.params.values():
            p.add_(torch.randn(p.shape, generator=g) * scale)


def test_regen_l2_gradient_is_c_times_the_unit_direction_and_zero_safe():
    coef = [1e-2, 3.0]
    cond = RegenL2(coef=coef)
    pop = _population(cond)
    # at theta0: loss 0, gradient 0 (finite)
    loss = cond.extra_loss(pop)
    loss.sum().backward()
    assert loss.tolist() == [0.0, 0.0]
    assert all(torch.equal(p.grad, torch.zeros_like(p)) for p in pop.params.values())
    for p in pop.params.values():
        p.grad = None

    _displace(pop)
    diff = {k: (pop.params[k] - pop.initial_params[k]).detach() for k in pop.params}
    norms = torch.stack([sum(d[m].pow(2).sum() for d in diff.values()).sqrt() for m in range(2)])
    loss = cond.extra_loss(pop)
    torch.testing.assert_close(loss.detach(), torch.tensor(coef) * norms, rtol=1e-5, atol=0)
    loss.sum().backward()
    for k, p in pop.params.items():
        expected = torch.stack([coef[m] * diff[k][m] / norms[m] for m in range(2)])
        torch.testing.assert_close(p.grad, expected, rtol=1e-4, atol=1e-9)


def test_regen_w2_is_permutation_invariant_within_a_tensor_and_zero_at_theta0():
    cond = RegenW2(coef=1.0)
    pop = _population(cond)
    loss = cond.extra_loss(pop)
    loss.sum().backward()
    assert loss.tolist() == [0.0, 0.0]
    assert all(torch.isfinite(p.grad).all() and not p.grad.any() for p in pop.params.values())

    _displace(pop)
    value = cond.extra_loss(pop).detach()
    # by hand: sort each tensor of each member, one norm over all tensors
    for m in range(2):
        sq = sum(((np.sort(pop.params[k][m].detach().numpy().ravel()) -
                   np.sort(pop.initial_params[k][m].numpy().ravel())) ** 2).sum() for k in pop.params)
        assert value[m].item() == pytest.approx(math.sqrt(sq), rel=1e-5)
    with torch.no_grad():
        w = pop.params["encoder.0.layer.weight"]
        perm = torch.randperm(w[0].numel(), generator=torch.Generator().manual_seed(1))
        w[0] = w[0].reshape(-1)[perm].reshape(w[0].shape)
    assert torch.equal(cond.extra_loss(pop).detach(), value)
    # while the L2 distance to theta0 does change under the same permutation
    assert RegenL2(coef=1.0).extra_loss(pop)[0] > value[0] * 1.5


# ---------------------------------------------------------------------------------------------------------------
# Architecture
# ---------------------------------------------------------------------------------------------------------------


def test_layernorm_and_crelu_change_the_architecture():
    ln = _population(parse_condition("layernorm"))
    assert [type(b.norm) for b in ln.template.blocks()] == [nn.LayerNorm, nn.LayerNorm]
    cr = _population(parse_condition("crelu"))
    assert all(isinstance(b.activation, CReLU) for b in cr.template.blocks())
    assert cr.params["encoder.0.layer.weight"].shape == (2, 128, 363)
    for pop in (ln, cr):
        logits, value, features = pop.forward(_obs())
        assert logits.shape == (2, 64, 4) and value.shape == (2, 64) and features.shape == (2, 64, 256)


@pytest.mark.parametrize("encoder", ["mlp", "cnn"])
def test_injection_keeps_outputs_adds_trainable_params_and_folds(encoder):
    spec = NetworkSpec(encoder=encoder, n_actions=4)
    cond = Injection()
    pop = _population(cond, spec)
    obs = _obs() if encoder == "mlp" else torch.rand(2, 4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    count = lambda: sum(p[0].numel() for p in pop.params.values())  # noqa: E731
    plain = count()
    head_size = sum(pop.params[k][0].numel() for k in pop.params if "_head." in k)
    before = pop.forward(obs)[:2]
    g = torch.Generator().manual_seed(0)

    cond.at_shift(pop, g)
    pop.new_optimizer()
    assert isinstance(pop.template.policy_head, InjectedHead) and isinstance(pop.template.value_head, InjectedHead)
    after = pop.forward(obs)[:2]
    for a, b in zip(after, before):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert count() == plain + 2 * head_size
    in_optimizer = {id(p) for group in pop.optimizer.param_groups for p in group["params"]}
    for name, p in pop.params.items():
        frozen = ".subtracted." in name
        assert (id(p) in in_optimizer) != frozen and p.requires_grad != frozen, name
    assert {k for k in pop.params if ".added." in k} == {"policy_head.added.weight", "policy_head.added.bias",
                                                         "value_head.added.weight", "value_head.added.bias"}
    torch.testing.assert_close(pop.params["policy_head.added.weight"], pop.params["policy_head.subtracted.weight"])

    if encoder == "mlp":  # training after injection changes the output; the subtracted copy stays put
        sub = pop.params["policy_head.subtracted.weight"].detach().clone()
        added = pop.params["policy_head.added.weight"].detach().clone()
        pop.update(random_rollout(2), torch.Generator().manual_seed(1))
        assert not torch.allclose(pop.forward(obs)[0], after[0], atol=1e-4)
        assert torch.equal(pop.params["policy_head.subtracted.weight"], sub)
        assert not torch.equal(pop.params["policy_head.added.weight"].detach(), added)

    # next shift: fold, then inject again (one level at a time)
    trained = pop.forward(obs)[:2]
    cond.at_shift(pop, g)
    pop.new_optimizer()
    for a, b in zip(pop.forward(obs)[:2], trained):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert count() == plain + 2 * head_size
    assert not isinstance(pop.template.policy_head.base, InjectedHead)
    assert fold_injections(pop) and count() == plain and isinstance(pop.template.policy_head, nn.Linear)
    for a, b in zip(pop.forward(obs)[:2], trained):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_regen_l2_sees_the_effective_heads_through_an_injection():
    cond = parse_condition("regen_l2+injection", {"coef": 1.0})
    pop = _population(cond)
    _displace(pop)
    before = cond.extra_loss(pop).detach()
    cond.at_shift(pop, torch.Generator().manual_seed(0))
    pop.new_optimizer()
    torch.testing.assert_close(cond.extra_loss(pop).detach(), before, rtol=1e-6, atol=0)
    cond.extra_loss(pop).sum().backward()
    torch.testing.assert_close(pop.params["policy_head.base.weight"].grad, pop.params["policy_head.added.weight"].grad)


def test_resets_act_before_injection_inside_a_combination():
    cond = parse_condition("injection+reset_final")
    pop = _population(cond)
    obs = _obs()
    g = torch.Generator().manual_seed(0)
    cond.at_shift(pop, g)  # reset the heads, then inject on top
    assert isinstance(pop.template.policy_head, InjectedHead)
    out = pop.forward(obs)[0]
    cond.at_shift(pop, g)
    assert isinstance(pop.template.policy_head, InjectedHead)
    assert not torch.allclose(pop.forward(obs)[0], out)  # the heads were re-drawn


# ---------------------------------------------------------------------------------------------------------------
# ReDo
# ---------------------------------------------------------------------------------------------------------------

MLP_LAYOUT = [("encoder.0.layer", ["encoder.1.layer"]), ("encoder.1.layer", ["policy_head", "value_head"])]
CNN_LAYOUT = [("encoder.0.layer", ["encoder.1.layer"]), ("encoder.1.layer", ["encoder.2.layer"]),
              ("encoder.2.layer", ["encoder.3.layer"]), ("encoder.3.layer", ["encoder.5.layer"]),
              ("encoder.5.layer", ["policy_head", "value_head"])]


def _plant_dead(pop, layer, member, units, crelu=False):
    """Incoming weights 0 and a bias that keeps the pre-activation at (ReLU) −1 or (CReLU) 0: always-zero output."""
    with torch.no_grad():
        pop.params[f"{layer}.weight"][member, units] = 0.0
        pop.params[f"{layer}.bias"][member, units] = 0.0 if crelu else -1.0


def _expected_dormant(pop, spec, obs, tau):
    """Independently: each member as an ordinary nn.Module; score = mean |a| over batch (and space) / mean over
    units; CReLU units are dormant when both of their outputs are. Returns per block the [M, W] unit masks."""
    masks = []
    for m in range(pop.members):
        net = spec.build()
        net.load_state_dict({k: v.detach() for k, v in pop.member_params(m).items()})
        with torch.no_grad():
            hidden = net(obs[m], return_hidden=True)[3]
        row = []
        for a in hidden:
            per_unit = a.abs().transpose(0, 1).reshape(a.shape[1], -1).mean(1)
            dormant = per_unit / per_unit.mean() <= tau
            if spec.crelu:
                w = dormant.numel() // 2
                dormant = dormant[:w] & dormant[w:]
            row.append(dormant)
        masks.append(row)
    return [torch.stack([masks[m][k] for m in range(pop.members)]) for k in range(len(masks[0]))]


def _expected_after_redo(old, fresh, layout, masks, crelu=False, heads=("policy_head", "value_head")):
    exp = {k: v.clone() for k, v in old.items()}
    for (layer, _), units in zip(layout, masks):
        w = exp[f"{layer}.weight"]
        for m in range(units.shape[0]):
            w[m, units[m]] = fresh[f"{layer}.weight"][m, units[m]]
    for (layer, readers), units in zip(layout, masks):
        outputs = torch.cat([units, units], 1) if crelu else units
        for reader in readers:
            if reader.endswith("_head") and reader not in heads:
                continue
            w = exp[f"{reader}.weight"]
            cols = outputs if w.shape[2] == outputs.shape[1] else outputs.repeat_interleave(
                w.shape[2] // outputs.shape[1], 1)  # channel c -> columns c*16 ... c*16+15
            for m in range(units.shape[0]):
                w[m, :, cols[m]] = 0.0
    return exp


@pytest.mark.parametrize("outgoing", ["all", "policy_only"])
def test_redo_recycles_exactly_the_dormant_units_mlp(outgoing):
    cond = ReDo(outgoing=outgoing)
    spec = NetworkSpec()
    pop = _population(cond, spec)
    obs = _obs()
    pop.last_minibatch_obs = obs
    _plant_dead(pop, "encoder.0.layer", 0, [5, 77])
    _plant_dead(pop, "encoder.1.layer", 1, [7, 100, 200])
    masks = _expected_dormant(pop, spec, obs, 0.025)
    assert masks[0][0, [5, 77]].all() and masks[1][1, [7, 100, 200]].all()
    assert 5 <= int(sum(m.sum() for m in masks)) < 40  # mostly the planted ones, never everything
    old, g = _snapshot(pop), torch.Generator().manual_seed(9)
    fresh = _fresh_like_the_hook(pop, g)
    got = cond.recycle(pop, g)
    for a, b in zip(got, masks):
        assert torch.equal(a, b)
    heads = ("policy_head", "value_head") if outgoing == "all" else ("policy_head",)
    expected = _expected_after_redo(old, fresh, MLP_LAYOUT, masks, heads=heads)
    for name, p in pop.params.items():
        assert torch.equal(p.detach(), expected[name]), name
    assert not pop.params["policy_head.weight"][1, :, [7, 100, 200]].any()
    assert pop.params["value_head.weight"][1, :, [7, 100, 200]].all() == (outgoing == "policy_only")
    assert torch.equal(pop.params["encoder.0.layer.bias"], old["encoder.0.layer.bias"])  # bias kept


def test_redo_on_the_cnn_zeroes_the_sixteen_flattened_columns_of_a_channel():
    cond = ReDo()
    spec = NetworkSpec(encoder="cnn", n_actions=9)
    pop = _population(cond, spec)
    obs = torch.rand(2, 6, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    pop.last_minibatch_obs = obs
    _plant_dead(pop, "encoder.0.layer", 0, [3])
    _plant_dead(pop, "encoder.3.layer", 1, [10])
    masks = _expected_dormant(pop, spec, obs, 0.025)
    assert masks[0][0, 3] and masks[3][1, 10]
    old, g = _snapshot(pop), torch.Generator().manual_seed(9)
    fresh = _fresh_like_the_hook(pop, g)
    got = cond.recycle(pop, g)
    for a, b in zip(got, masks):
        assert torch.equal(a, b)
    expected = _expected_after_redo(old, fresh, CNN_LAYOUT, masks)
    for name, p in pop.params.items():
        assert torch.equal(p.detach(), expected[name]), name
    assert not pop.params["encoder.5.layer.weight"][1, :, 160:176].any()
    assert not pop.params["encoder.1.layer.weight"][0, :, 3].any()
    assert not torch.equal(pop.params["encoder.3.layer.weight"][1, 10], old["encoder.3.layer.weight"][1, 10])


def test_redo_with_crelu_needs_both_outputs_dormant():
    cond = parse_condition("redo+crelu")
    redo = cond.parts[0]
    spec = NetworkSpec(crelu=True)
    pop = _population(cond, spec)
    obs = _obs()
    pop.last_minibatch_obs = obs
    _plant_dead(pop, "encoder.1.layer", 0, [4], crelu=True)  # pre-activation 0: both outputs 0
    with torch.no_grad():  # pre-activation always > 0: output 8 alive, output 8 + 128 always zero — not dormant
        pop.params["encoder.1.layer.weight"][1, 8] = 0.0
        pop.params["encoder.1.layer.bias"][1, 8] = 5.0
    masks = _expected_dormant(pop, spec, obs, 0.025)
    assert masks[1][0, 4] and not masks[1][1, 8]
    old, g = _snapshot(pop), torch.Generator().manual_seed(9)
    fresh = _fresh_like_the_hook(pop, g)
    got = redo.recycle(pop, g)
    for a, b in zip(got, masks):
        assert torch.equal(a, b)
    expected = _expected_after_redo(old, fresh, MLP_LAYOUT, masks, crelu=True)
    for name, p in pop.params.items():
        assert torch.equal(p.detach(), expected[name]), name
    assert not pop.params["policy_head.weight"][0, :, [4, 132]].any()


@pytest.mark.parametrize("reset", [True, False])
def test_redo_resets_the_adam_moments_of_touched_weights(reset):
    cond = ReDo(reset_optimizer_state=reset)
    pop = _population(cond)
    pop.update(random_rollout(2), torch.Generator().manual_seed(0))
    pop.last_minibatch_obs = _obs()
    _plant_dead(pop, "encoder.1.layer", 0, [7])
    w1, head = pop.params["encoder.1.layer.weight"], pop.params["value_head.weight"]
    before = {k: pop.optimizer.state[p]["exp_avg"].clone() for k, p in (("w1", w1), ("head", head))}
    masks = cond.recycle(pop, torch.Generator().manual_seed(1))
    assert masks[1][0, 7]
    for key in ("exp_avg", "exp_avg_sq"):
        s1, sh = pop.optimizer.state[w1][key], pop.optimizer.state[head][key]
        assert (not s1[0, 7].any()) == reset and (not sh[0, :, 7].any()) == reset
    untouched = ~masks[1][0]
    assert torch.equal(pop.optimizer.state[w1]["exp_avg"][0, untouched], before["w1"][0, untouched])
    assert torch.equal(pop.optimizer.state[w1]["exp_avg"][1][~masks[1][1]], before["w1"][1][~masks[1][1]])


def test_redo_fires_every_period_epochs_per_member():
    cond = ReDo(period=[2, 3], tau=1.0)  # tau 1: every unit below the mean is recycled
    pop = _population(cond)
    pop.last_minibatch_obs = _obs()
    fired = []
    for epoch in range(6):
        old = _snapshot(pop)
        cond.after_epoch(pop, epoch, torch.Generator().manual_seed(epoch))
        fired.append([not torch.equal(pop.params["encoder.0.layer.weight"][m], old["encoder.0.layer.weight"][m])
                      for m in range(2)])
    assert fired == [[False, False], [True, False], [False, True], [True, False], [False, False], [True, True]]


# ---------------------------------------------------------------------------------------------------------------
# Composition, coefficients, errors
# ---------------------------------------------------------------------------------------------------------------


def test_every_condition_is_registered_with_a_description_and_parameters():
    assert list(CONDITIONS)[:2] == ["warm_start", "reset_all"]
    assert set(CONDITIONS) == {"warm_start", "reset_all", "reset_final", "shrink_perturb", "soft_shrink_perturb",
                               "l2", "regen_l2", "regen_w2", "layernorm", "crelu", "injection", "redo"}
    for name, cls in CONDITIONS.items():
        assert cls.name == name and cls.description and "\n" not in cls.description and cls.__doc__
        cls().parameters()
    assert CONDITIONS["soft_shrink_perturb"]().parameters() == {"perturb": 1e-6, "shrink": None}
    assert CONDITIONS["shrink_perturb"]().parameters() == {"perturb": 0.5, "shrink": None}
    assert CONDITIONS["l2"]().parameters() == {"coef": 1e-3}
    assert CONDITIONS["regen_l2"]().parameters() == {"coef": 1e-2}
    assert CONDITIONS["regen_w2"]().parameters() == {"coef": 1e-2}
    assert CONDITIONS["redo"]().parameters() == {"tau": 0.025, "period": 10, "outgoing": "all",
                                                 "reset_optimizer_state": True, "score": "project",
                                                 "timing": "project", "log_weights": "before"}


def test_composition_runs_both_and_accepts_both_override_spellings():
    cond = parse_condition("soft_shrink_perturb+layernorm")
    assert isinstance(cond, Composite) and cond.network_options() == {"layernorm": True}
    for params in ({"soft_shrink_perturb.perturb": 1e-5}, {"perturb": 1e-5}):
        c = parse_condition("soft_shrink_perturb+layernorm", params)
        assert c.parameters() == {"soft_shrink_perturb.perturb": 1e-5, "soft_shrink_perturb.shrink": None}
    pop = _population(cond)
    assert any(isinstance(m, nn.LayerNorm) for m in pop.template.modules())
    g = torch.Generator().manual_seed(0)
    fresh = _fresh_like_the_hook(pop, g)
    old = _snapshot(pop)
    cond.after_optimizer_step(pop, g)
    for k, p in pop.params.items():
        torch.testing.assert_close(p.detach(), (1 - 1e-6) * old[k] + 1e-6 * fresh[k], rtol=0, atol=1e-9)

    runner_up = parse_condition("regen_l2+layernorm", {"regen_l2.coef": 1e-4})
    pop = _population(runner_up)
    assert any(isinstance(m, nn.LayerNorm) for m in pop.template.modules())
    _displace(pop)
    assert runner_up.extra_loss(pop).shape == (2,) and (runner_up.extra_loss(pop) > 0).all()


@pytest.mark.parametrize("spec, params, message", [
    ("shrink_perturb", {"perturb": 1.5}, r"shrink_perturb: perturb must be a number in \[0, 1\].*got 1.5"),
    ("shrink_perturb", {"shrink": -0.1}, r"shrink must be a number in \[0, 1\].*got -0.1"),
    ("soft_shrink_perturb", {"perturb": "big"}, r"perturb must be .*got 'big'"),
    ("soft_shrink_perturb", {"perturb": [1e-6, 2.0]}, r"perturb must be .*got \[1e-06, 2.0\]"),
    ("l2", {"coef": -1e-3}, r"l2: coef must be a number in \[0, inf\).*got -0.001"),
    ("regen_l2", {"coef": float("nan")}, r"regen_l2: coef must be .*got nan"),
    ("redo", {"tau": 2}, r"redo: tau must be a number in \[0, 1\].*got 2"),
    ("redo", {"period": 0}, r"redo: period must be a positive integer.*got 0"),
    ("redo", {"period": 2.5}, r"period must be a positive integer.*got 2.5"),
    ("redo", {"outgoing": "value"}, r"outgoing must be one of all, policy_only; got 'value'"),
    ("redo", {"score": "paper"}, r"^redo: score must be one of project, release, or a list .*; got 'paper'$"),
    ("redo", {"score": ["project", "mean"]}, r"redo: score must be one of project, release.*got \['project', 'mean'\]"),
    ("redo", {"timing": "late"}, r"^redo: timing must be one of project, release, or a list .*; got 'late'$"),
    ("redo", {"timing": 10}, r"redo: timing must be one of project, release.*got 10"),
    ("redo", {"log_weights": "during"}, r"^redo: log_weights must be one of before, after, or a list .*got 'during'$"),
    ("redo", {"reset_optimizer_state": "yes"}, r"reset_optimizer_state must be one of true, false.*got 'yes'"),
    ("redo", {"reset_optimizer_state": 1}, r"reset_optimizer_state must be one of true, false.*got 1"),
    ("soft_shrink_perturb+layernorm", {"beta": 1e-5},
     r"unknown parameter\(s\) \['beta'\].*soft_shrink_perturb.perturb"),
    ("layernorm", {"perturb": 0.1}, r"unknown parameter\(s\) \['perturb'\].*valid: none"),
    ("l2+regen_l2", {"coef": 0.1}, r"'coef' is ambiguous.*l2.coef"),
])
def test_bad_coefficients_raise_one_clear_error(spec, params, message):
    with pytest.raises(ValueError, match=message):
        parse_condition(spec, params)


def test_per_member_coefficients_must_match_the_population():
    with pytest.raises(ValueError, match=r"perturb has 3 values .* population has 2 member"):
        _population(SoftShrinkPerturb(perturb=[1e-6, 1e-5, 1e-4]))
    cond = parse_condition("l2+regen_l2", {"l2.coef": 1e-2, "regen_l2.coef": [0.0, 1e-3]})
    pop = _population(cond)
    assert pop.weight_decay.tolist() == pytest.approx([1e-2, 1e-2])


# ---------------------------------------------------------------------------------------------------------------
# End to end
# ---------------------------------------------------------------------------------------------------------------

# Smoke scale: one environment copy, one episode an epoch (one minibatch per pass), and a test only at the end of
# each round.
TINY = dict(preset="smoke", rounds=3, epochs_per_round=2, num_envs=1, test_episodes=11, test_interval=2,
            ppo=PPOConfig(min_transitions=100))


def _check_finite(df):
    numeric = df.select_dtypes("number")
    tested = df["epoch_in_round"] == 1
    assert np.isfinite(numeric.drop(columns=["test_return"]).to_numpy(float)).all()
    assert np.isfinite(df.loc[tested, "test_return"]).all() and df.loc[~tested, "test_return"].isna().all()


@pytest.mark.parametrize("name", [*CONDITIONS, "soft_shrink_perturb+layernorm", "regen_l2+layernorm"])
def test_every_condition_runs_end_to_end_without_nans(name):
    params = {"period": 1} if name == "redo" else {}
    df = pl.run(pl.RunConfig(condition=name, condition_params=params, **TINY))
    # a run with overridden coefficients names them in its condition label
    assert len(df) == 6 and set(df["condition"]) == {"redo[period=1]" if name == "redo" else name}
    _check_finite(df)


def test_a_population_can_sweep_a_coefficient():
    params = {"perturb": [1e-6, 1e-3]}
    configs = [pl.RunConfig(seed=s, condition="soft_shrink_perturb", condition_params=params, **TINY) for s in (0, 1)]
    df = pl.run(configs)
    assert sorted(set(df["seed"])) == [0, 1] and len(df) == 12
    _check_finite(df)
