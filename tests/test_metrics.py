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


# ReDo's score, the project's (the ReDo paper's ratio of batch means) and the authors' release's (the batch mean of
# per-sample ratios), on layers whose activations are chosen by hand.

# member 0: samples [0, 1, 2], [3, 0, 3], [2, 2, 2]; member 1: the same two, then a sample whose whole layer is 0
LAYER = torch.tensor([[[0.0, 1.0, 2.0], [3.0, 0.0, 3.0], [2.0, 2.0, 2.0]],
                      [[0.0, 1.0, 2.0], [3.0, 0.0, 3.0], [0.0, 0.0, 0.0]]])


def test_project_score_divides_batch_means():
    # member 0: unit means [5/3, 1, 7/3], layer mean 5/3 -> [1, 0.6, 1.4]
    # member 1: unit means [1, 1/3, 5/3], layer mean 1 -> [1, 1/3, 5/3] (the zero sample only lowers the means)
    scores = dormant_scores(LAYER, score="project")
    assert scores[0].tolist() == pytest.approx([1.0, 0.6, 1.4], abs=1e-6)
    assert scores[1].tolist() == pytest.approx([1.0, 1 / 3, 5 / 3], abs=1e-6)
    assert torch.equal(scores, dormant_scores(LAYER))  # the default


def test_release_score_averages_per_sample_ratios_and_a_zero_sample_makes_the_layer_nan():
    # member 0: the samples' layer means are 1, 2 and 2, so the per-sample ratios are
    #   [0, 1, 2], [1.5, 0, 1.5], [1, 1, 1] -> batch means [2.5/3, 2/3, 4.5/3]
    # member 1: the third sample is 0 / 0 in every unit -> NaN everywhere
    scores = dormant_scores(LAYER, score="release")
    assert scores[0].tolist() == pytest.approx([2.5 / 3, 2 / 3, 1.5], abs=1e-6)
    assert torch.isnan(scores[1]).all()
    # a NaN score is never dormant: no unit of member 1's layer counts, whatever tau
    assert dormant_fraction(LAYER, 1.0, score="release").tolist() == pytest.approx([2 / 3, 0.0])
    assert dormant_fraction(LAYER, 1.0, score="project").tolist() == pytest.approx([2 / 3, 2 / 3])
    # the two scores disagree on member 0's second unit at tau = 0.62: 0.6 under the project's, 2/3 under the release's
    assert dormant_fraction(LAYER, 0.62, score="project").tolist() == pytest.approx([1 / 3, 1 / 3])
    assert dormant_fraction(LAYER, 0.62, score="release").tolist() == pytest.approx([0.0, 0.0])


def test_release_score_on_a_convolution_takes_the_ratio_per_sample_and_position():
    acts = torch.zeros(1, 2, 2, 1, 2)  # [M, B, C, H, W]
    acts[0, 0, :, 0, 0] = torch.tensor([1.0, 3.0])  # ratios [0.5, 1.5]
    acts[0, 0, :, 0, 1] = torch.tensor([2.0, 0.0])  # ratios [2, 0]
    acts[0, 1] = acts[0, 0]
    assert dormant_scores(acts, score="release")[0].tolist() == pytest.approx([1.25, 0.75])
    assert dormant_scores(acts, score="project")[0].tolist() == pytest.approx([1.0, 1.0])
    acts[0, 1, :, 0, 1] = 0.0  # one position of one sample is 0 in every channel: NaN for the whole layer
    assert torch.isnan(dormant_scores(acts, score="release")).all()


def test_unknown_score_is_one_clear_error():
    with pytest.raises(ValueError, match=r"^dormant_scores: score must be one of project, release; got 'mean'$"):
        dormant_scores(LAYER, score="mean")
