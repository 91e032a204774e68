"""The study's conditions (interventions), as small objects that plug into the training loop.

A condition acts only through these hooks, each called by the run loop on the
:class:`~plasticity_lab.population.Population`:

=============================  ==================================================================================
hook                           when
=============================  ==================================================================================
``network_options()``          at construction: architecture switches (``layernorm``, ``crelu``)
``setup(population)``          once, after the population is built (e.g. set a weight decay)
``extra_loss(population)``     in every minibatch: a per-member term ``[M]`` added to the PPO loss
``after_optimizer_step(...)``   after every AdamW step
``at_shift(...)``              at every round boundary, after the distribution changes and before AdamW is re-created
``after_epoch(...)``           after every epoch's update (may return diagnostics to log instead of the update's)
=============================  ==================================================================================

The conditions of PROTOCOL §4:

====================  ====================================================================  ==================
name                  rule                                                                   coefficients
====================  ====================================================================  ==================
warm_start            nothing (AdamW is still re-created at each shift)                      —
reset_all             at a shift every parameter ← fresh init                                —
reset_final           at a shift the policy and value heads ← fresh init                    —
shrink_perturb        at a shift θ ← shrink·θ + perturb·θ_fresh                             perturb=0.5
soft_shrink_perturb   after every optimizer step θ ← shrink·θ + perturb·θ_fresh             perturb=1e-6
l2                    decoupled weight decay in AdamW                                        coef=1e-3
regen_l2              loss += coef·‖θ − θ₀‖₂ (not squared)                                   coef=1e-2
regen_w2              loss += coef·‖sort(θ) − sort(θ₀)‖₂, sorted within each tensor          coef=1e-2
layernorm             LayerNorm (GroupNorm after convolutions) before each activation        —
crelu                 activation cat(relu(x), relu(−x)), half-width pre-activations          —
injection             at a shift each head h → h + a − b (a fresh, b a frozen copy of a)    —
redo                  every ``period`` epochs re-initialise dormant units (score ≤ τ)        tau=0.025, period=10
====================  ====================================================================  ==================

"Fresh init" is always :meth:`Population.fresh_params <plasticity_lab.population.Population.fresh_params>`: a
newly drawn PyTorch default initialisation of the current architecture, for every member, drawn anew at each use
(LayerNorm and GroupNorm: gain 1, bias 0).

**Coefficients** are dataclass fields with PROTOCOL's defaults. Each numeric coefficient is either one number or a
sequence of one number per population member, so that a population can sweep a coefficient (e.g.
``condition_params={"perturb": [1e-6, 1e-5, 1e-4]}`` with three seeds). A bad value raises one ``ValueError`` that
names it and the valid range; a sequence whose length is not the number of members fails in ``setup``.

**Composition.** Conditions compose with ``+``: ``parse_condition("soft_shrink_perturb+layernorm")`` runs both
sets of hooks, in the order given — except at a shift, where architecture-changing actions (``injection``) run after
the others, so that e.g. ``injection+reset_final`` first re-draws the heads and then injects on top of them.
The optimizer is re-created at every shift in every condition, warm-start included — that is the run loop's job,
not a condition's.

Every condition is written against modules — :class:`~plasticity_lab.nets.Block` (``.layer``, ``.norm``,
``.activation``), ``nn.Linear``, ``nn.Conv2d``, the network's ``heads()`` — so the same code serves the MLP and the
CNN encoder.

**Where they live.** One module per kind, all importable from here: :mod:`~plasticity_lab.conditions.base` (the
hook class :class:`Condition`, coefficient checking, :class:`Composite`, the registry ``CONDITIONS`` and
:func:`parse_condition`), :mod:`~plasticity_lab.conditions.resets` (warm_start, reset_all, reset_final,
shrink_perturb, soft_shrink_perturb), :mod:`~plasticity_lab.conditions.injection` (injection, the injected head and
:func:`effective_params`), :mod:`~plasticity_lab.conditions.regularisers` (l2, regen_l2, regen_w2),
:mod:`~plasticity_lab.conditions.architecture` (layernorm, crelu) and :mod:`~plasticity_lab.conditions.redo` (redo);
:mod:`~plasticity_lab.conditions.groups` holds :class:`MemberGroups`, several conditions in one population (each
on its own members).
This ``__init__`` registers every condition class, in the order of the table above; a new condition is a class in
the module of its kind plus one entry in that :func:`~plasticity_lab.conditions.base.register` call.
"""

from __future__ import annotations

from .architecture import CReLUActivation, LayerNorm
from .base import (CONDITIONS, Coefficient, Composite, Condition, check_coefficient, check_option, condition_names,
                   head_names, member_view, parse_condition, per_member, per_member_option, register,
                   shift_only_conditions)
from .groups import MemberGroups, population_key
from .injection import InjectedHead, Injection, effective_params, fold_injections, injected_heads, restore_network
from .redo import ReDo
from .regularisers import L2, RegenL2, RegenW2
from .resets import ResetAll, ResetFinal, ShrinkPerturb, SoftShrinkPerturb, WarmStart

register(WarmStart, ResetAll, ResetFinal, ShrinkPerturb, SoftShrinkPerturb, L2, RegenL2, RegenW2, LayerNorm,
         CReLUActivation, Injection, ReDo)

__all__ = [
    "CONDITIONS", "Coefficient", "Composite", "Condition", "check_coefficient", "check_option", "condition_names",
    "head_names", "member_view", "parse_condition", "per_member", "per_member_option", "register",
    "shift_only_conditions",
    "WarmStart", "ResetAll", "ResetFinal", "ShrinkPerturb", "SoftShrinkPerturb",
    "L2", "RegenL2", "RegenW2", "effective_params",
    "LayerNorm", "CReLUActivation",
    "InjectedHead", "Injection", "fold_injections", "injected_heads", "restore_network",
    "ReDo", "MemberGroups", "population_key",
]
