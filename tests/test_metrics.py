"""The diagnostics on tensors whose values are known by hand."""

import math

import pytest
import torch

from plasticity_lab.metrics import (dead_unit_fraction, dormant_fraction, dormant_scores, member_norm,
                                    weight_difference, weight_magnitude)


def test_weight_magnitude_is_the_rms_over_all_parameters():
    # member 0: six 2s and two 0s -> sqrt(24 / 8); member 1: all 1 -> 1
    w = torch.stack([torch.full((2, 3), 2.0), torch.ones(2, 3)])
    b = torch.stack([torch.zeros(2), torch.ones(2)])
    assert weight_magnitude([w, b]).tolist() == pytest.approx([math.sqrt(3.0), 1.0])


def test_member_norm_is_the_global_l2_norm_per_member():
    a = torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    b = torch.tensor([[4.0], [1.0]])
    assert member_norm([a, b]).tolist() == pytest.approx([5.0, math.sqrt(3.0)])


def test_weight_difference_is_the_rms_of_the_change():
    before = [torch.zeros(1, 4)]
    after = [torch.tensor([[1.0, -1.0, 1.0, -1.0]])]
    assert weight_difference(before, after).tolist() == pytest.approx([1.0])


def test_dead_unit_fraction_counts_exact_zeros_over_batch_and_units():
    acts = torch.tensor([[[0.0, 1.0, 0.0, 2.0], [0.0, 0.0, 0.0, 1e-9]]])  # 5 exact zeros of 8
    assert dead_unit_fraction(acts).tolist() == pytest.approx([5 / 8])


def test_dormant_scores_and_fraction():
    # unit means over the batch: [0, 1, 2, 1] -> layer mean 1 -> scores [0, 1, 2, 1]
    acts = torch.tensor([[[0.0, 0.0, 4.0, 1.0], [0.0, 2.0, 0.0, 1.0]]])
    assert dormant_scores(acts)[0].tolist() == pytest.approx([0.0, 1.0, 2.0, 1.0], abs=1e-6)
    assert dormant_fraction(acts, 0.025).tolist() == pytest.approx([0.25])
    assert dormant_fraction(acts, 1.0).tolist() == pytest.approx([0.75])


def test_dormant_scores_treat_conv_positions_as_batch():
    acts = torch.zeros(1, 2, 3, 2, 2)  # [M, B, C, H, W]
    acts[:, :, 1] = 1.0
    acts[:, :, 2] = 2.0
    assert dormant_scores(acts)[0].tolist() == pytest.approx([0.0, 1.0, 2.0], abs=1e-6)


def test_dead_unit_fraction_of_a_transposed_view_counts_the_same_zeros():
    # Feature-major activations reach it as a transposed view; the count must not depend on the strides.
    acts = torch.tensor([[[0.0, 3.0, 0.0], [1.0, 0.0, 0.0]], [[2.0, 2.0, 2.0], [0.0, 5.0, 6.0]]])  # [M=2, 2, 3]
    view = acts.transpose(1, 2).contiguous().transpose(1, 2)
    assert not view.is_contiguous()
    assert dead_unit_fraction(view).tolist() == pytest.approx([4 / 6, 1 / 6])
    assert dead_unit_fraction(view).dtype == torch.float32


def test_member_norm_of_a_weight_stored_input_major_equals_the_contiguous_ones():
    g = torch.Generator().manual_seed(0)
    weight, bias = torch.randn(3, 8, 5, generator=g), torch.randn(3, 8, generator=g)
    stored = weight.transpose(1, 2).contiguous().transpose(1, 2)
    assert not stored.is_contiguous() and torch.equal(stored, weight)
    want = torch.sqrt((weight.double() ** 2).sum((1, 2)) + (bias.double() ** 2).sum(1))
    torch.testing.assert_close(member_norm([stored, bias]).double(), want, rtol=1e-6, atol=0)
    torch.testing.assert_close(member_norm([weight, bias]).double(), want, rtol=1e-6, atol=0)
