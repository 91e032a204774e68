"""A notebook opened alone (on Colab) downloads a stored study: tested against a file:// copy of data/."""

from __future__ import annotations

import shutil
import sys
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from plasticity_lab.figures import studies
from plasticity_lab.results import DATA_URL_VARIABLE, fetch_study, load_results

DATA = Path(__file__).resolve().parent.parent / "data"
STUDY = "gridworld-soft-sp-coefficients"  # a small sweep study stored in the repository


def test_fetch_study_downloads_exactly_the_stored_study(tmp_path):
    dest = fetch_study(STUDY, tmp_path / "data" / STUDY, base_url=DATA.as_uri())
    fetched, stored = load_results(dest), load_results(DATA / STUDY)
    pd.testing.assert_frame_equal(fetched.curves, stored.curves)
    pd.testing.assert_frame_equal(fetched.rounds, stored.rounds)
    for at in ("mean", "final"):
        pd.testing.assert_frame_equal(fetched.runs(at), stored.runs(at))
    assert fetched.manifest == stored.manifest and fetched.populations == stored.populations
    # every file of the stored study, byte for byte
    files = sorted(p.relative_to(DATA / STUDY) for p in (DATA / STUDY).rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(dest) for p in dest.rglob("*") if p.is_file())
    assert all((dest / f).read_bytes() == (DATA / STUDY / f).read_bytes() for f in files)
    assert sorted(p.name for p in tmp_path.joinpath("data").iterdir()) == [STUDY]  # no staging folder left


def test_a_failed_download_leaves_nothing_behind(tmp_path):
    broken = tmp_path / "mirror"
    shutil.copytree(DATA / STUDY, broken / STUDY)
    next((broken / STUDY / "populations").glob("*/runs_final.parquet")).unlink()
    with pytest.raises(OSError):
        fetch_study(STUDY, tmp_path / "out" / STUDY, base_url=broken.as_uri())
    assert list((tmp_path / "out").iterdir()) == []
    with pytest.raises(ValueError, match="single folder name"):
        fetch_study("../etc", tmp_path / "x", base_url=broken.as_uri())
    (tmp_path / "there").mkdir()
    with pytest.raises(ValueError, match="exists already"):
        fetch_study(STUDY, tmp_path / "there", base_url=broken.as_uri())


def test_load_study_downloads_only_where_asked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(DATA_URL_VARIABLE, DATA.as_uri())
    missing = tmp_path / "elsewhere" / STUDY  # as ../data/<study> is missing in a notebook opened alone

    def no_network(*args, **kwargs):
        raise AssertionError("load_study must not download outside Colab")

    with monkeypatch.context() as patch:
        patch.setattr(urllib.request, "urlopen", no_network)
        assert studies.load_study(missing) is None  # not on Colab: nothing fetched
    monkeypatch.setitem(sys.modules, "google.colab", object())  # on Colab
    results = studies.load_study(missing)
    assert results is not None and results.path == Path("data") / STUDY
    pd.testing.assert_frame_equal(results.rounds, load_results(DATA / STUDY).rounds)
    # a second call loads the copy already there
    with monkeypatch.context() as patch:
        patch.setattr(urllib.request, "urlopen", no_network)
        assert studies.load_study(missing) is not None


def test_load_study_reports_a_failed_download_and_shows_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(DATA_URL_VARIABLE, (tmp_path / "no-such-mirror").as_uri())
    assert studies.load_study(tmp_path / "missing" / STUDY, fetch=True) is None
    assert "could not be downloaded" in capsys.readouterr().out
    assert not (tmp_path / "data" / STUDY).exists()


def test_fetch_command_stores_a_study_and_refuses_to_overwrite_it(tmp_path, capsys):
    from plasticity_lab.cli import main

    args = ["fetch", STUDY, "--root", str(tmp_path), "--url", DATA.as_uri()]
    assert main(args) == 0
    assert f"stored in {tmp_path / STUDY}/" in capsys.readouterr().out
    pd.testing.assert_frame_equal(load_results(tmp_path / STUDY).rounds, load_results(DATA / STUDY).rounds)
    before = sorted(p.stat().st_mtime_ns for p in (tmp_path / STUDY).rglob("*"))
    assert main(args) == 2  # one clear error, nothing rewritten
    assert "exists already" in capsys.readouterr().err
    assert sorted(p.stat().st_mtime_ns for p in (tmp_path / STUDY).rglob("*")) == before
    assert main(["fetch", "no-such-study", "--root", str(tmp_path), "--url", DATA.as_uri()]) == 1
    assert "could not download no-such-study" in capsys.readouterr().err


def test_read_runs_downloads_a_study_that_kept_every_epoch_on_colab_only(tmp_path, monkeypatch):
    """Chapters 4 and 5 read every epoch of a study's conditions in one call, which on Colab downloads the study
    first (its every-epoch tables included)."""
    name, conditions = "gridworld-permute-warm-vs-reset", ["warm_start", "reset_all"]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(DATA_URL_VARIABLE, DATA.as_uri())
    missing = tmp_path / "elsewhere" / name
    with pytest.raises(FileNotFoundError, match="no study folder"):
        studies.read_runs(missing, conditions)  # not on Colab: nothing fetched
    assert not (tmp_path / "data").exists()
    monkeypatch.setitem(sys.modules, "google.colab", object())  # on Colab
    fetched, stored = studies.read_runs(missing, conditions), studies.read_runs(DATA / name, conditions)
    for condition in conditions:
        pd.testing.assert_frame_equal(fetched[condition][0], stored[condition][0])
        assert fetched[condition][1] == stored[condition][1]
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [name]  # no staging folder left
    # the study's files, byte for byte (its README is for the repository's readers, not downloaded)
    files = sorted(p.relative_to(DATA / name) for p in (DATA / name).rglob("*") if p.is_file() and p.suffix != ".md")
    local = tmp_path / "data" / name
    assert files == sorted(p.relative_to(local) for p in local.rglob("*") if p.is_file())
    assert all((local / f).read_bytes() == (DATA / name / f).read_bytes() for f in files)
    assert sum(f.name == "epochs.parquet" for f in files) == len(conditions)

    def no_network(*args, **kwargs):
        raise AssertionError("a downloaded study is read from its local copy")

    with monkeypatch.context() as patch:
        patch.setattr(urllib.request, "urlopen", no_network)
        assert set(studies.read_runs(missing, conditions)) == set(conditions)
    # a failed download leaves nothing behind, and says so in one line (no chained traceback for the reader)
    with pytest.raises(OSError, match="the stored study no-such-study could not be downloaded") as failed:
        studies.read_runs(tmp_path / "nowhere" / "no-such-study", conditions, base_url=DATA.as_uri())
    assert failed.value.__cause__ is None and failed.value.__suppress_context__
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [name]


def test_read_runs_downloads_only_the_populations_of_the_conditions_asked_for(tmp_path, monkeypatch):
    name = "gridworld-permute-warm-vs-reset"
    monkeypatch.chdir(tmp_path)
    runs = studies.read_runs(tmp_path / "elsewhere" / name, ["warm_start"], fetch=True, base_url=DATA.as_uri())
    assert list(runs) == ["warm_start"] and set(runs["warm_start"][0]["condition"]) == {"warm_start"}
    fetched = [p.name for p in (tmp_path / "data" / name / "populations").iterdir()]
    assert len(fetched) == 1 and fetched[0].startswith("gridworld-warm_start-")
