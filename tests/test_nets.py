"""The network's architecture (PROTOCOL §2, §4) and fresh PyTorch-default initialisation."""

import pytest
import torch
from scipy import stats
from torch import nn

from plasticity_lab.nets import ActorCritic, CReLU, NetworkSpec, fresh_parameters


def _linears(module):
    return [m for m in module.modules() if isinstance(m, nn.Linear)]


def test_mlp_matches_the_protocol():
    net = NetworkSpec().build()
    shapes = [tuple(m.weight.shape) for m in _linears(net)]
    assert shapes == [(256, 363), (256, 256), (4, 256), (1, 256)]
    assert not any(isinstance(m, (nn.LayerNorm, CReLU)) for m in net.modules())
    logits, value, features = net(torch.zeros(7, 363))
    assert logits.shape == (7, 4) and value.shape == (7,) and features.shape == (7, 256)


def test_layernorm_sits_between_linear_and_relu_and_not_in_heads():
    net = NetworkSpec(layernorm=True).build()
    for block in net.blocks():
        assert isinstance(block.layer, nn.Linear) and isinstance(block.norm, nn.LayerNorm)
        assert isinstance(block.activation, nn.ReLU)
        assert block.norm.normalized_shape == (256,)
    assert not any(isinstance(m, nn.LayerNorm) for m in net.policy_head.modules())


def test_crelu_halves_pre_activation_widths_and_keeps_outputs():
    net = NetworkSpec(crelu=True).build()
    assert [tuple(m.weight.shape) for m in _linears(net)] == [(128, 363), (128, 256), (4, 256), (1, 256)]
    logits, value, features, hidden = net(torch.randn(3, 363), return_hidden=True)
    assert [h.shape[-1] for h in hidden] == [256, 256] and features.shape == (3, 256)
    x = torch.tensor([[-1.0, 2.0]])
    assert CReLU()(x).tolist() == [[0.0, 2.0, 1.0, 0.0]]


def test_cnn_matches_the_protocol():
    net = NetworkSpec(encoder="cnn", n_actions=9).build()
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding) for c in convs] == [
        (3, 32, (4, 4), (2, 2), (1, 1)), (32, 64, (4, 4), (2, 2), (1, 1)),
        (64, 128, (4, 4), (2, 2), (1, 1)), (128, 128, (4, 4), (2, 2), (1, 1))]
    logits, value, features, hidden = net(torch.rand(2, 3, 64, 64), return_hidden=True)
    assert [tuple(h.shape[1:]) for h in hidden] == [(32, 32, 32), (64, 16, 16), (128, 8, 8), (128, 4, 4), (256,)]
    assert logits.shape == (2, 9) and value.shape == (2,)


def test_cnn_layernorm_and_crelu():
    net = NetworkSpec(encoder="cnn", layernorm=True, crelu=True).build()
    norms = [type(b.norm) for b in net.blocks()]
    assert norms == [nn.GroupNorm] * 4 + [nn.LayerNorm]
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [16, 32, 64, 64]
    assert [c.in_channels for c in convs] == [3, 32, 64, 128]
    assert all(g.num_groups == 1 for g in net.modules() if isinstance(g, nn.GroupNorm))
    _, _, features, hidden = net(torch.rand(2, 3, 64, 64), return_hidden=True)
    assert [h.shape[1] for h in hidden] == [32, 64, 128, 128, 256]


def test_unknown_encoder_is_rejected():
    with pytest.raises(ValueError, match="unknown encoder 'rnn'.*mlp, cnn"):
        ActorCritic(NetworkSpec(encoder="rnn"))


def test_fresh_parameters_follow_pytorch_default_init():
    template = NetworkSpec(layernorm=True).build()
    fresh = fresh_parameters(template, [torch.Generator().manual_seed(0)] * 4)
    assert list(fresh) == [n for n, _ in template.named_parameters()]
    assert fresh["encoder.0.layer.weight"].shape == (4, 256, 363)
    # Compare the drawn weights with PyTorch's own reset_parameters draws (Kaiming-uniform, a = sqrt(5)).
    reference = torch.cat([nn.Linear(363, 256).weight.detach().flatten() for _ in range(4)])
    drawn = fresh["encoder.0.layer.weight"].flatten()
    assert drawn.abs().max() <= 1 / 363**0.5
    assert stats.ks_2samp(drawn.numpy(), reference.numpy()).pvalue > 1e-3
    bias_ref = torch.cat([nn.Linear(256, 4).bias.detach() for _ in range(2000)])
    assert stats.ks_2samp(fresh["policy_head.bias"].flatten().numpy().repeat(1), bias_ref.numpy()).pvalue > 1e-3
    assert torch.equal(fresh["encoder.0.norm.weight"], torch.ones(4, 256))
    assert torch.equal(fresh["encoder.0.norm.bias"], torch.zeros(4, 256))


def test_fresh_parameters_are_reproducible_and_new_each_draw():
    template = NetworkSpec().build().to("meta")
    a = fresh_parameters(template, [torch.Generator().manual_seed(3)])
    b = fresh_parameters(template, [torch.Generator().manual_seed(3)])
    g = torch.Generator().manual_seed(3)
    c, d = fresh_parameters(template, [g]), fresh_parameters(template, [g])
    for name in a:
        assert torch.equal(a[name], b[name]) and torch.equal(a[name], c[name])
        assert not torch.equal(c[name], d[name])
    assert all(p.is_meta for p in template.parameters())  # the template is only read


def test_fresh_parameters_fall_back_to_a_modules_own_reset():
    fresh = fresh_parameters(nn.Embedding(500, 20), [torch.Generator().manual_seed(0)])
    w = fresh["weight"][0]
    assert abs(w.mean().item()) < 0.02 and abs(w.std().item() - 1.0) < 0.02  # Embedding: N(0, 1)
