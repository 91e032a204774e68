"""The stacked-parameter forward against the network's own forward, member by member."""

import copy

import pytest
import torch
from torch.func import functional_call

from plasticity_lab.backends import batched, cpu_kernels, fastpath
from plasticity_lab.conditions import InjectedHead
from plasticity_lab.nets import NetworkSpec, fresh_parameters
from plasticity_lab.population import Population
from plasticity_lab.ppo import PPOConfig, ppo_loss

MEMBERS = 3


def _injected(spec: NetworkSpec):
    module = spec.build()
    for name in ("policy_head", "value_head"):
        head = getattr(module, name)
        setattr(module, name, InjectedHead(head, copy.deepcopy(head), copy.deepcopy(head)))
    return module


TEMPLATES = {
    "plain": lambda: NetworkSpec(obs_dim=20, hidden=16).build(),
    "layernorm": lambda: NetworkSpec(obs_dim=20, hidden=16, layernorm=True).build(),
    "crelu": lambda: NetworkSpec(obs_dim=20, hidden=16, crelu=True).build(),
    "layernorm+crelu": lambda: NetworkSpec(obs_dim=20, hidden=16, layernorm=True, crelu=True).build(),
    "injected": lambda: _injected(NetworkSpec(obs_dim=20, hidden=16)),
}


def _params(module):
    generators = [torch.Generator().manual_seed(10 + m) for m in range(MEMBERS)]
    params = fresh_parameters(module, generators)
    for name, value in params.items():
        if "norm" in name:  # move LayerNorm off its gain-1 / bias-0 start so the affine part is exercised
            value.add_(0.1 * torch.randn(value.shape, generator=generators[0]))
    return {k: v.requires_grad_() for k, v in params.items()}


def fast_path(path: str):
    """``path`` as a test parameter, skipped with its probe's reason where it cannot run here."""
    reason = fastpath.probe(path)
    return pytest.param(path, marks=pytest.mark.skipif(bool(reason), reason=f"{path} cannot run here: {reason}"))


CPU_MATMULS = ["blas", fast_path("onednn")]
SPARSE = fastpath.probe("onednn+sparse")
ONEDNN = fastpath.probe("onednn")


@pytest.fixture
def cpu_matmul(request):
    """Train with the given CPU matmul path; the default choice is restored afterwards."""
    fastpath.set_cpu_matmul(request.param)
    yield request.param
    fastpath.set_cpu_matmul(None)


@pytest.mark.parametrize("cpu_matmul", CPU_MATMULS, indirect=True)
@pytest.mark.parametrize("rows", [5, batched.FEATURE_MAJOR_FROM + 8], ids=["few-rows", "training-minibatch"])
@pytest.mark.parametrize("name", list(TEMPLATES))
def test_stacked_forward_and_gradients_equal_each_members_own_module(name, rows, cpu_matmul):
    module = TEMPLATES[name]()
    assert batched.supports(module)
    params = _params(module)
    obs = (torch.rand(MEMBERS, rows, 20, generator=torch.Generator().manual_seed(1)) < 0.3).float()
    logits, value, features, hidden = batched.forward(module, params, obs, return_hidden=True)
    (logits.square().sum() + value.sum() + features.sum()).backward()
    for m in range(MEMBERS):
        own = {k: v[m].detach().clone().requires_grad_() for k, v in params.items()}
        ref_logits, ref_value, ref_features, ref_hidden = functional_call(module, own, (obs[m],),
                                                                          {"return_hidden": True})
        torch.testing.assert_close(logits[m], ref_logits, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(value[m], ref_value, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(features[m], ref_features, rtol=1e-5, atol=1e-6)
        for got, ref in zip(hidden, ref_hidden, strict=True):
            torch.testing.assert_close(got[m], ref, rtol=1e-5, atol=1e-6)
        (ref_logits.square().sum() + ref_value.sum() + ref_features.sum()).backward()
        for k, v in own.items():
            torch.testing.assert_close(params[k].grad[m], v.grad, rtol=1e-4, atol=1e-5, msg=lambda text: f"{k}: {text}")


@pytest.mark.skipif(bool(SPARSE), reason=f"onednn+sparse cannot run here: {SPARSE}")
@pytest.mark.parametrize("rows", [5, batched.FEATURE_MAJOR_FROM + 8], ids=["few-rows", "training-minibatch"])
@pytest.mark.parametrize("options", [{}, {"layernorm": True}, {"crelu": True}], ids=["plain", "layernorm", "crelu"])
def test_sparse_first_layer_equals_each_members_own_module_and_keeps_its_weight_input_major(options, rows):
    module = NetworkSpec(obs_dim=37, hidden=2 * cpu_kernels.SPARSE_LANES, **options).build()  # CReLU halves it
    key = cpu_kernels.sparse_input_weight(module)
    assert key == "encoder.0.layer.weight"
    params = _params(module)
    params[key] = cpu_kernels.input_major(params[key].detach()).requires_grad_()
    g = torch.Generator().manual_seed(2)
    obs = (torch.rand(MEMBERS, rows, 37, generator=g) < 0.2) * torch.tensor([-0.75, 0.75, 1.0])[
        torch.randint(0, 3, (MEMBERS, rows, 37), generator=g)]
    obs[:, :, :4] = 1.0  # columns every row shares, like the gridworld's border walls
    fastpath.set_cpu_matmul("onednn+sparse")
    try:
        assert cpu_kernels.uses_sparse_input(obs, params[key])
        logits, value, features = batched.forward(module, params, obs)
        (logits.square().sum() + value.sum() + features.sum()).backward()
        with torch.no_grad():  # acting: the same kernel without a graph
            acting = batched.forward(module, params, obs)
    finally:
        fastpath.set_cpu_matmul(None)
    assert params[key].grad.stride() == params[key].stride()  # accumulated in the weight's layout, no copy
    torch.testing.assert_close(acting[0], logits.detach(), rtol=0, atol=0)
    for m in range(MEMBERS):
        own = {k: v[m].detach().clone().requires_grad_() for k, v in params.items()}
        ref_logits, ref_value, ref_features = functional_call(module, own, (obs[m],))
        torch.testing.assert_close(logits[m], ref_logits, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(value[m], ref_value, rtol=1e-5, atol=1e-5)
        (ref_logits.square().sum() + ref_value.sum() + ref_features.sum()).backward()
        for k, v in own.items():
            torch.testing.assert_close(params[k].grad[m], v.grad, rtol=1e-4, atol=1e-5, msg=lambda text: f"{k}: {text}")


def test_a_population_stores_its_first_layer_input_major_only_for_the_sparse_kernels():
    for kind in ("blas", "onednn", "onednn+sparse"):
        if fastpath.probe(kind):
            continue
        fastpath.set_cpu_matmul(kind)
        try:
            population = Population(NetworkSpec(), [0, 1])
        finally:
            fastpath.set_cpu_matmul(None)
        weight = population.params["encoder.0.layer.weight"]
        assert weight.shape == (2, 256, 363)
        assert cpu_kernels.is_input_major(weight) == (kind == "onednn+sparse") != weight.is_contiguous()
        # the values do not depend on the layout: the same draw as the contiguous initial parameters
        assert torch.equal(weight.detach(), population.initial_params["encoder.0.layer.weight"])


def test_injected_head_adds_exactly_nothing_while_added_equals_subtracted():
    module = _injected(NetworkSpec(obs_dim=20, hidden=16))
    params = _params(module)
    with torch.no_grad():
        for head in ("policy_head", "value_head"):
            for p in ("weight", "bias"):
                params[f"{head}.subtracted.{p}"].copy_(params[f"{head}.added.{p}"])
    plain = NetworkSpec(obs_dim=20, hidden=16).build()
    base = {k.replace(".base.", "."): v for k, v in params.items() if ".added." not in k and ".subtracted." not in k}
    obs = torch.rand(MEMBERS, 40, 20)
    got = batched.forward(module, params, obs)
    want = batched.forward(plain, base, obs)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_unknown_modules_fall_back_to_vmap():
    assert not batched.supports(NetworkSpec(encoder="cnn").build())
    population = Population(NetworkSpec(encoder="cnn"), [0, 1])
    assert not population.batched
    assert Population(NetworkSpec(), [0, 1]).batched


def test_ppo_loss_over_a_member_axis_equals_each_members_loss():
    g = torch.Generator().manual_seed(3)
    members, rows, actions_n = 4, 9, 3
    logits = torch.randn(members, rows, actions_n, generator=g)
    values = torch.randn(members, rows, generator=g)
    actions = torch.randint(0, actions_n, (members, rows), generator=g)
    old = torch.randn(members, rows, generator=g) - 1.0
    advantages = torch.randn(members, rows, generator=g) * torch.arange(1, members + 1).unsqueeze(1)
    returns = torch.randn(members, rows, generator=g)
    losses, stats = ppo_loss(logits, values, actions, old, advantages, returns, PPOConfig())
    assert losses.shape == (members,)
    for m in range(members):
        loss, own = ppo_loss(logits[m], values[m], actions[m], old[m], advantages[m], returns[m], PPOConfig())
        torch.testing.assert_close(losses[m], loss)
        for key, value in own.items():
            torch.testing.assert_close(stats[key][m], value, msg=key)


@pytest.mark.parametrize("cpu_matmul", CPU_MATMULS, indirect=True)
def test_layout_is_feature_major_only_for_a_blas_training_minibatch_and_all_give_the_same_network(cpu_matmul):
    training = batched.FEATURE_MAJOR if cpu_matmul == "blas" else batched.BATCH_MAJOR
    assert batched.layout(64) == training and batched.layout(5) == batched.BATCH_MAJOR
    assert batched.layout(64, "meta") == batched.FEATURE_MAJOR  # not a CPU: batched products, feature-major
    with torch.no_grad():
        assert batched.layout(64) == batched.BATCH_MAJOR
    module = TEMPLATES["layernorm+crelu"]()
    params = _params(module)
    obs = (torch.rand(MEMBERS, 40, 20, generator=torch.Generator().manual_seed(2)) < 0.3).float()
    with_grad = batched.forward(module, params, obs)
    with torch.no_grad():
        without = batched.forward(module, params, obs)
    for got, want in zip(without, with_grad, strict=True):
        assert got.is_contiguous()  # batch-major: no transposed views
        torch.testing.assert_close(got, want.detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(bool(ONEDNN), reason=f"onednn cannot run here: {ONEDNN}")
@pytest.mark.parametrize("with_bias", [True, False])
def test_onednn_linear_and_its_gradients_equal_a_float64_reference(with_bias):
    g = torch.Generator().manual_seed(4)
    x = torch.randn(3, 40, 24, generator=g, requires_grad=True)
    weight = torch.randn(3, 12, 24, generator=g, requires_grad=True)
    bias = torch.randn(3, 12, generator=g, requires_grad=True) if with_bias else None
    upstream = torch.randn(3, 40, 12, generator=g)
    out = cpu_kernels.OneDNNLinear.apply(x, weight, bias)
    out.backward(upstream)
    x64, w64 = x.detach().double(), weight.detach().double()
    want = torch.einsum("mbi,moi->mbo", x64, w64) + (bias.detach().double().unsqueeze(1) if with_bias else 0)
    torch.testing.assert_close(out.double(), want, rtol=1e-5, atol=1e-5)
    u64 = upstream.double()
    torch.testing.assert_close(x.grad.double(), torch.einsum("mbo,moi->mbi", u64, w64), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(weight.grad.double(), torch.einsum("mbo,mbi->moi", u64, x64), rtol=1e-5, atol=1e-5)
    if with_bias:
        torch.testing.assert_close(bias.grad.double(), u64.sum(1), rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(bool(ONEDNN), reason=f"onednn cannot run here: {ONEDNN}")
def test_onednn_linear_computes_no_gradient_for_a_frozen_weight():
    x = torch.randn(2, 40, 8, requires_grad=True)
    frozen = torch.randn(2, 16, 8)
    cpu_kernels.OneDNNLinear.apply(x, frozen, None).sum().backward()
    assert frozen.grad is None
    torch.testing.assert_close(x.grad, frozen.sum(1).unsqueeze(1).expand(-1, 40, -1))


def test_narrow_linear_gradients_equal_autograd_of_the_same_product():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(3, 40, 16, generator=g, requires_grad=True)
    weight = torch.randn(3, 4, 16, generator=g, requires_grad=True)
    bias = torch.randn(3, 4, generator=g, requires_grad=True)
    upstream = torch.randn(3, 40, 4, generator=g)
    cpu_kernels.NarrowLinear.apply(x, weight, bias).backward(upstream)
    got = [t.grad.clone() for t in (x, weight, bias)]
    for t in (x, weight, bias):
        t.grad = None
    torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2)).backward(upstream)
    for mine, reference in zip(got, (x.grad, weight.grad, bias.grad), strict=True):
        torch.testing.assert_close(mine, reference, rtol=1e-5, atol=1e-5)
