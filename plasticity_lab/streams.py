"""Random numbers that belong to one run: a counter-based stream per population member.

By default a population draws every random number (levels, actions, minibatch order, fresh initialisations) from
one ``torch.Generator`` that its members share, so what a run does depends on which runs it was trained beside.
With ``RunConfig(randomness="member")`` each member draws from its own :class:`MemberStreams` instead, and a run's
numbers depend only on the run: the same (seed, shift) gives the same table alone, in a population of other seeds,
or in a population that mixes conditions (:class:`plasticity_lab.conditions.MemberGroups`). That is what lets a
whole grid train as one computation without changing any run's result.

A value is a hash of where it is drawn, not the next output of a sequential generator::

    value(member, k-th draw, element i) = h(h(key_member, k), i)

``key_member`` comes from the member's (seed, shift) and from the place in the run (:meth:`MemberStreams.at`: e.g.
the epoch and the phase, "collect" or "update"); ``k`` counts that member's own draws at that place, so a draw that
some members make and others do not (soft shrink+perturb's fresh weights, in the members of that condition) leaves
the others' later draws as they were. ``h`` is a 32-bit integer hash (``lowbias32``, Chris Wellons' hash-prospector)
built from operations every torch device has. Its reference form (:func:`mix32`) works on int64 with the
multiplications split into 16-bit halves, so that no product leaves int64's range; the bulk of a draw (soft
shrink+perturb draws a whole network's worth every step) goes through the same hash on int32, whose multiplications
wrap modulo 2³² on the machines PyTorch runs on — twelve times as fast — where a probe on the device has shown it
equal to the reference (:func:`int32_hash_works`), else through the reference. Nothing is stored between draws but
the counters, so a checkpoint needs no generator state and the draws are the same on the CPU and on a GPU.

:func:`uniform`, :func:`categorical` and :func:`permutation_keys` take either kind of source (a ``torch.Generator``
or a :class:`MemberStreams`), so the environments and PPO call one function whatever the run chose; given a
generator they draw exactly what they always drew.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import numpy as np
import torch

MASK = 0xFFFFFFFF
#: The two ways a run can draw its random numbers (``RunConfig.randomness``).
RANDOMNESS = ("population", "member")
# Added before hashing so that 0 does not map to 0 (lowbias32 fixes 0).
_GOLDEN = 0x9E3779B9


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """``(x · c) mod 2³²`` for ``x`` in ``[0, 2³²)``, without overflowing int64: ``x = hi·2¹⁶ + lo``."""
    lo = x & 0xFFFF
    hi = x >> 16
    return (lo * c + (((hi * c) & 0xFFFF) << 16)) & MASK


def mix32(x: torch.Tensor) -> torch.Tensor:
    """``lowbias32``: a bijection of ``[0, 2³²)`` whose output bits each depend on every input bit (int64 tensors)."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def _mix32_int32_(x: torch.Tensor, scratch: torch.Tensor) -> torch.Tensor:
    """:func:`mix32` in place on an int32 tensor holding the 32 bits (two's complement): the multiplications wrap,
    and each right shift is masked to the bits a logical shift keeps (int32's shift copies the sign bit). In place,
    through ``scratch`` (same shape): a draw is a whole network's worth of numbers, and new tensors for each
    operation would cost more than the arithmetic."""
    for shift, mask, factor in ((16, 0xFFFF, _C1_INT32), (15, 0x1FFFF, _C2_INT32), (16, 0xFFFF, None)):
        torch.bitwise_right_shift(x, shift, out=scratch)
        x.bitwise_xor_(scratch.bitwise_and_(mask))
        if factor is not None:
            x.mul_(factor)
    return x


def _as_int32(x: torch.Tensor) -> torch.Tensor:
    """int64 values in ``[0, 2³²)`` → int32 with the same 32 bits."""
    return (x - ((x >> 31) << 32)).to(torch.int32)


_C1_INT32 = 0x7FEB352D
_C2_INT32 = 0x846CA68B - (1 << 32)
_INT32_CHECKED: dict[str, bool] = {}


def int32_hash_works(device: str | torch.device = "cpu") -> bool:
    """Whether the int32 form of the hash equals :func:`mix32` on ``device`` (probed once per device type, on
    values whose products overflow and on lengths that take both a kernel's vector loop and its scalar tail)."""
    kind = torch.device(device).type
    if kind not in _INT32_CHECKED:
        values = torch.tensor(member_keys([(k, "int32 probe") for k in range(37)]) + [0, 1, 0x7FFFFFFF, 0x80000000,
                                                                                       0xFFFFFFFF], dtype=torch.int64)
        values = values.to(device)
        seeds = values[:5]
        try:
            ok = all(torch.equal(_bulk(seeds, n, True).to(torch.int64) & MASK, _bulk(seeds, n, False))
                     for n in (1, 7, 16, 33, values.numel()))
        except RuntimeError:  # an int32 operation the device lacks
            ok = False
        _INT32_CHECKED[kind] = ok
    return _INT32_CHECKED[kind]


def _bulk(seeds: torch.Tensor, count: int, int32: bool) -> torch.Tensor:
    """The hash of element ``i`` for each member's draw seed: ``[M, count]``, ``mix32((mix32(i ^ s) + s) mod 2³²)``;
    int32 bit patterns or int64 values in ``[0, 2³²)``."""
    if int32:
        s = _as_int32(seeds).unsqueeze(1)
        x = torch.arange(count, dtype=torch.int32, device=seeds.device).unsqueeze(0) ^ s
        scratch = torch.empty_like(x)
        return _mix32_int32_(_mix32_int32_(x, scratch).add_(s), scratch)
    s = seeds.unsqueeze(1)
    index = torch.arange(count, dtype=torch.int64, device=seeds.device).unsqueeze(0)
    return mix32((mix32(index ^ s) + s) & MASK)


def _combine(keys: torch.Tensor, value: int | torch.Tensor) -> torch.Tensor:
    """A new 32-bit key from ``keys`` and ``value`` (an int or an int64 tensor that broadcasts)."""
    if not torch.is_tensor(value):
        value = int(value) & MASK
    return mix32(keys ^ mix32((value + _GOLDEN) & MASK))


def address_code(part: int | str) -> int:
    """An address part as a 32-bit number: integers as they are (mod 2³²), names by their CRC-32."""
    if isinstance(part, str):
        return zlib.crc32(part.encode())
    if isinstance(part, (bool, np.bool_)) or not isinstance(part, (int, np.integer)):
        raise TypeError(f"a stream address part must be an int or a str; got {part!r}")
    return int(part) & MASK


def member_keys(identities: Sequence[Sequence[int | str]]) -> list[int]:
    """One 32-bit key per member from its identity (e.g. ``(seed, shift)``), through NumPy's ``SeedSequence`` so
    that nearby seeds give unrelated keys."""
    return [int(np.random.SeedSequence([address_code(p) for p in identity]).generate_state(1, np.uint32)[0])
            for identity in identities]


class MemberStreams:
    """One stream of random numbers per population member, at one place of a run.

    ``keys``: ``[M]`` int64 in ``[0, 2³²)``; ``counters``: ``[M]`` int64, how many draws each member has made here
    (shared with the population a :meth:`subset` was taken from). Build the run's root with :meth:`for_members`, and
    a place with :meth:`at`.
    """

    def __init__(self, keys: torch.Tensor, counters: torch.Tensor | None = None):
        if keys.dim() != 1 or keys.dtype != torch.int64:
            raise ValueError(f"keys must be a 1-d int64 tensor; got {keys.dtype} of shape {tuple(keys.shape)}")
        self.keys = keys
        self.counters = torch.zeros_like(keys) if counters is None else counters

    @classmethod
    def for_members(cls, identities: Sequence[Sequence[int | str]], device: str | torch.device = "cpu"
                    ) -> "MemberStreams":
        """The root streams of a population whose members are ``identities`` (one tuple each, e.g. (seed, shift))."""
        keys = torch.tensor(member_keys(identities), dtype=torch.int64, device=device)
        return cls(keys)

    @property
    def members(self) -> int:
        return self.keys.shape[0]

    @property
    def device(self) -> torch.device:
        return self.keys.device

    def at(self, *address: int | str) -> "MemberStreams":
        """The streams at a place of the run (``at("collect", epoch)``): new keys, counters at 0. The same address
        gives the same numbers again."""
        keys = self.keys
        for part in address:
            keys = _combine(keys, address_code(part))
        return MemberStreams(keys)

    def subset(self, start: int, stop: int) -> "MemberStreams":
        """Members ``start … stop − 1``: their own numbers, with counters shared with this object's (a draw on the
        subset advances them here too)."""
        if not 0 <= start < stop <= self.members:
            raise ValueError(f"a subset of {self.members} members must satisfy 0 <= start < stop <= {self.members}; "
                             f"got {start}, {stop}")
        return MemberStreams(self.keys[start:stop], self.counters[start:stop])

    def _draw(self, shape: Sequence[int]) -> torch.Tensor:
        """The hashes of one draw, ``[M, *shape]`` (int32 bit patterns, or int64 where the int32 form is not
        proved on this device); every member's counter advances by one."""
        shape = tuple(int(s) for s in shape)
        seeds = _combine(self.keys, self.counters)  # [M]
        self.counters.add_(1)
        count = math.prod(shape)  # 1 for a scalar draw
        return _bulk(seeds, count, int32_hash_works(self.device)).view(self.members, *shape)

    def bits(self, shape: Sequence[int]) -> torch.Tensor:
        """``[M, *shape]`` int64 in ``[0, 2³²)``, and every member's counter advances by one. Within a member's
        draw all values differ (the last step is a bijection of the element's index)."""
        return self._draw(shape).to(torch.int64) & MASK

    def rand(self, shape: Sequence[int]) -> torch.Tensor:
        """``[M, *shape]`` float32 uniform in ``[0, 1)`` (the top 24 bits of each hash, as many random bits as
        ``torch.rand`` gives)."""
        top = self._draw(shape).bitwise_right_shift_(8).bitwise_and_(0xFFFFFF)
        return top.to(torch.float32).mul_(2.0**-24)

    def __repr__(self) -> str:
        return f"MemberStreams(members={self.members}, device={self.device})"


def uniform(source, members: int, shape: Sequence[int]) -> torch.Tensor:
    """``[members, *shape]`` uniform in ``[0, 1)``: ``torch.rand`` from a generator, or each member's own stream."""
    if isinstance(source, MemberStreams):
        _check_members(source, members)
        return source.rand(shape)
    return torch.rand((members, *shape), generator=source, device=source.device)


def integers(source, members: int, high: int) -> torch.Tensor:
    """One integer in ``[0, high)`` per member, ``[members]`` (``torch.randint`` from a generator)."""
    if isinstance(source, MemberStreams):
        _check_members(source, members)
        return source.bits(()) % high
    return torch.randint(0, high, (members,), generator=source, device=source.device)


def categorical(probs: torch.Tensor, source) -> torch.Tensor:
    """One sample per row of ``probs [M, ..., A]`` → ``[M, ...]``. From a generator: ``torch.multinomial`` (rows
    flattened); from member streams: the inverse of each row's cumulative distribution at a uniform number."""
    if isinstance(source, MemberStreams):
        _check_members(source, probs.shape[0])
        u = source.rand(probs.shape[1:-1]).to(probs.device)
        cdf = probs.cumsum(-1)
        # the first action whose cumulative probability exceeds u (float rounding can leave the total below 1)
        return (u.unsqueeze(-1) >= cdf).sum(-1).clamp_(max=probs.shape[-1] - 1)
    flat = probs.reshape(-1, probs.shape[-1])
    return torch.multinomial(flat, 1, generator=source).reshape(probs.shape[:-1])


def permutation_keys(source, members: int, rows: int) -> torch.Tensor:
    """Sort keys ``[members, rows]`` whose ``argsort`` along rows is a uniformly random permutation: ``torch.rand``
    from a generator; distinct integers from member streams (so no two rows tie)."""
    if isinstance(source, MemberStreams):
        _check_members(source, members)
        return source.bits((rows,))
    return torch.rand(members, rows, generator=source, device=source.device)


def _check_members(source: MemberStreams, members: int) -> None:
    if source.members != members:
        raise ValueError(f"these member streams serve {source.members} member(s), not {members}")
