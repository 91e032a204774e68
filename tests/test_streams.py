"""Member streams (plasticity_lab.streams): the hash against a plain-Python lowbias32, the draws' distribution,
their independence of the population, counters shared with subsets, and the functions that take either source."""

import random

import numpy as np
import pytest
import torch

from plasticity_lab import streams
from plasticity_lab.streams import MemberStreams, member_keys, mix32


def lowbias32(x: int) -> int:
    """Chris Wellons' lowbias32, written out in Python integers (the independent reference)."""
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    x ^= x >> 16
    return x


def test_mix32_is_lowbias32_over_the_whole_32_bit_range():
    rng = random.Random(7)
    values = [0, 1, 2, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF] + [rng.getrandbits(32) for _ in range(5000)]
    got = mix32(torch.tensor(values, dtype=torch.int64)).tolist()
    assert got == [lowbias32(v) for v in values]


def test_mix32_is_a_bijection_on_a_block():
    x = torch.arange(1 << 18, dtype=torch.int64) * 4099  # distinct inputs spread over the range
    assert torch.unique(mix32(x & 0xFFFFFFFF)).numel() == x.numel()


def test_uniform_draws_look_uniform_and_lie_in_0_1():
    s = MemberStreams.for_members([(seed, "permute") for seed in range(4)]).at("collect", 0)
    u = s.rand((50_000,))
    assert u.dtype == torch.float32 and u.shape == (4, 50_000)
    assert float(u.min()) >= 0.0 and float(u.max()) < 1.0
    for row in u:
        counts = torch.histc(row, bins=10, min=0.0, max=1.0)
        chi2 = float(((counts - 5000) ** 2 / 5000).sum())
        assert chi2 < 30.0  # 9 degrees of freedom: p ≈ 0.0004
        assert abs(float(row.mean()) - 0.5) < 0.01
    # members' draws are uncorrelated
    c = np.corrcoef(u.numpy())
    assert np.abs(c[np.triu_indices(4, 1)]).max() < 0.03


def test_a_members_draws_do_not_depend_on_its_companions():
    alone = MemberStreams.for_members([(3, "window")]).at("update", 5)
    many = MemberStreams.for_members([(0, "permute"), (3, "window"), (9, "expand")]).at("update", 5)
    for shape in [(7,), (2, 3), ()]:
        a, m = alone.bits(shape), many.bits(shape)
        assert torch.equal(a[0], m[1])
    # and the place of the run decides the numbers: another epoch, another phase, another draw differ
    root = MemberStreams.for_members([(3, "window")])
    x = root.at("update", 5).bits((100,))
    assert torch.equal(x, root.at("update", 5).bits((100,)))
    assert not torch.equal(x, root.at("update", 6).bits((100,)))
    assert not torch.equal(x, root.at("collect", 5).bits((100,)))
    twice = root.at("update", 5)
    twice.bits((100,))
    assert not torch.equal(x, twice.bits((100,)))


def test_values_within_a_draw_are_distinct_so_argsort_is_a_true_permutation():
    s = MemberStreams.for_members([(0, "permute"), (1, "permute")]).at("update", 0)
    keys = streams.permutation_keys(s, 2, 5000)
    assert keys.dtype == torch.int64
    for row in keys:
        assert torch.unique(row).numel() == 5000
    order = keys.argsort(dim=1)
    assert torch.equal(order.sort(dim=1).values, torch.arange(5000).expand(2, -1))


def test_a_subset_draws_its_members_own_numbers_and_shares_their_counters():
    s = MemberStreams.for_members([(k, "permute") for k in range(5)]).at("shift", 2)
    reference = MemberStreams.for_members([(k, "permute") for k in range(5)]).at("shift", 2)
    sub = s.subset(1, 3)
    drawn = sub.bits((4,))
    assert torch.equal(drawn, reference.bits((4,))[1:3])
    assert s.counters.tolist() == [0, 1, 1, 0, 0]
    # member 0's next draw is its first; members 1 and 2 are at their second
    nxt = s.bits((4,))
    again = MemberStreams.for_members([(k, "permute") for k in range(5)]).at("shift", 2)
    first = again.bits((4,))
    second = again.bits((4,))
    assert torch.equal(nxt[0], first[0]) and torch.equal(nxt[1:3], second[1:3]) and torch.equal(nxt[3:], first[3:])


def test_categorical_follows_the_probabilities_and_never_picks_an_impossible_action():
    s = MemberStreams.for_members([(0, "permute"), (1, "permute")]).at("collect", 0)
    probs = torch.tensor([0.1, 0.0, 0.6, 0.3]).expand(2, 20_000, 4)
    actions = streams.categorical(probs, s)
    assert actions.shape == (2, 20_000)
    freq = torch.stack([(actions == a).float().mean(1) for a in range(4)], 1)
    assert torch.allclose(freq, torch.tensor([0.1, 0.0, 0.6, 0.3]).expand(2, 4), atol=0.015)
    assert int((actions == 1).sum()) == 0
    # a row whose cumulative sum falls just short of 1 still gives a valid action
    short = torch.full((2, 1000, 3), (1 - 1e-6) / 3)
    assert int(streams.categorical(short, s).max()) <= 2


def test_generator_sources_draw_what_torch_draws():
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(streams.uniform(g1, 4, (5,)), torch.rand(4, 5, generator=g2))
    assert torch.equal(streams.integers(g1, 3, 100), torch.randint(0, 100, (3,), generator=g2))
    probs = torch.softmax(torch.randn(2, 6, 4, generator=torch.Generator().manual_seed(1)), -1)
    assert torch.equal(streams.categorical(probs, g1),
                       torch.multinomial(probs.reshape(-1, 4), 1, generator=g2).reshape(2, 6))
    assert torch.equal(streams.permutation_keys(g1, 2, 9), torch.rand(2, 9, generator=g2))


def test_member_count_mismatch_and_bad_addresses_are_clear_errors():
    s = MemberStreams.for_members([(0, "permute"), (1, "permute")])
    with pytest.raises(ValueError, match="serve 2 member"):
        streams.uniform(s, 3, (4,))
    with pytest.raises(ValueError, match="0 <= start < stop <= 2"):
        s.subset(1, 5)
    with pytest.raises(TypeError, match="int or a str"):
        s.at(1.5)


def test_member_keys_differ_for_nearby_identities():
    keys = member_keys([(seed, shift) for seed in range(50) for shift in ("permute", "window", "expand")])
    assert len(set(keys)) == len(keys)
    assert all(0 <= k < 2**32 for k in keys)


def test_the_int32_hash_draws_exactly_what_the_int64_reference_draws(monkeypatch):
    assert streams.int32_hash_works("cpu")  # proved on this machine, so draws take it
    seeds = torch.tensor([0, 5, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF], dtype=torch.int64)
    for count in (1, 15, 16, 17, 1000, 70_001):
        fast = streams._bulk(seeds, count, True).to(torch.int64) & 0xFFFFFFFF
        assert torch.equal(fast, streams._bulk(seeds, count, False))
    # a device where the probe failed draws through the reference: the same numbers
    root = MemberStreams.for_members([(0, "permute"), (4, "expand")])
    fast_draw = root.at("update", 3).rand((300, 7))
    monkeypatch.setitem(streams._INT32_CHECKED, "cpu", False)
    assert torch.equal(root.at("update", 3).rand((300, 7)), fast_draw)
    assert torch.equal(root.at("update", 3).bits((300,)), MemberStreams(root.keys).at("update", 3).bits((300,)))
