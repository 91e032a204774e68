"""Denormal floats flushed while training (:mod:`plasticity_lab.backends.denormals`)."""

import pytest
import torch

import plasticity_lab as pl
from plasticity_lab.backends import denormals

_DENORMAL = 2e-38 * 0.25  # 5e-39: below float32's smallest normal number (about 1.18e-38)


def _can_flush() -> bool:
    supported = torch.set_flush_denormal(True)
    torch.set_flush_denormal(False)
    return supported


needs_flushing = pytest.mark.skipif(not _can_flush(), reason="this CPU cannot flush denormals")


@needs_flushing
def test_flushed_turns_flushing_on_and_restores_the_mode_it_found():
    assert not denormals.flushing_now()
    x = torch.tensor(2e-38) * 0.25
    assert x.item() == pytest.approx(_DENORMAL, rel=1e-3)  # kept: a denormal
    with denormals.flushed(True):
        assert denormals.flushing_now()
        assert (torch.tensor(2e-38) * 0.25).item() == 0.0
    assert not denormals.flushing_now()
    torch.set_flush_denormal(True)  # a caller that flushes already keeps flushing after a training epoch
    try:
        with denormals.flushed(False):
            assert not denormals.flushing_now()
        assert denormals.flushing_now()
    finally:
        torch.set_flush_denormal(False)


def test_the_setting_is_read_from_the_environment_and_a_bad_value_is_one_clear_error(monkeypatch):
    monkeypatch.delenv(denormals.VARIABLE, raising=False)
    assert denormals.wanted() is True
    monkeypatch.setenv(denormals.VARIABLE, "0")
    assert denormals.wanted() is False and denormals.status() == "off"
    monkeypatch.setenv(denormals.VARIABLE, "1")
    assert denormals.wanted() is True
    assert denormals.status() == ("on" if _can_flush() else "unsupported")
    monkeypatch.setenv(denormals.VARIABLE, "yes")
    with pytest.raises(ValueError, match=r"PLASTICITY_LAB_FLUSH_DENORMALS='yes' is not a valid setting; valid: 1 "):
        denormals.wanted()


@needs_flushing
@pytest.mark.parametrize("setting, expected", [(None, True), ("1", True), ("0", False)])
def test_training_epochs_run_with_the_setting_and_leave_the_caller_as_it_was(monkeypatch, setting, expected):
    from plasticity_lab.population import Population

    if setting is None:
        monkeypatch.delenv(denormals.VARIABLE, raising=False)
    else:
        monkeypatch.setenv(denormals.VARIABLE, setting)
    seen = []
    update = Population.update

    def watched(self, *args, **kwargs):
        seen.append(denormals.flushing_now())
        return update(self, *args, **kwargs)

    monkeypatch.setattr(Population, "update", watched)
    pl.run(pl.RunConfig(shift="permute", condition="warm_start", seed=0, preset="smoke", rounds=1,
                        epochs_per_round=2))
    assert seen == [expected, expected]
    assert not denormals.flushing_now()


def test_manifests_record_the_setting(monkeypatch):
    from plasticity_lab.results import environment_info

    monkeypatch.setenv(denormals.VARIABLE, "0")
    assert environment_info()["flush_denormals"] == "off"
    monkeypatch.setenv(denormals.VARIABLE, "1")
    assert environment_info()["flush_denormals"] == ("on" if _can_flush() else "unsupported")
