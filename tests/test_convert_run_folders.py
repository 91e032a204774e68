"""scripts/convert_run_folders.py: results in the run-folder layout (what ``plasticity-lab run`` wrote before it wrote
studies) become a study with the same every-epoch tables and every provenance entry, and ``load_results`` names the
script when it meets the old layout."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest

import plasticity_lab as pl
from plasticity_lab.results import TABLES, load_results, summarise
from plasticity_lab.sweep import PopulationTask, Sweep, check_study

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "convert_run_folders.py"
#: What an old run folder's manifest held besides its configs: the provenance the conversion must keep.
PROVENANCE = {"format": 1, "presets": ["smoke"], "seeds": [0, 1], "wall_time_s": 12.345, "package_version": "0.1.0",
              "git_commit": "0123abc-dirty", "python": "3.11.7", "torch": "2.13.0+cpu", "numpy": "2.4.6",
              "pandas": "2.3.3", "platform": "Linux-x86_64", "processor": "x86_64", "cpu_count": 2,
              "torch_threads": 1, "cuda": None, "git_commit_note": "recorded at launch by hand"}


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("convert_run_folders", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _configs(condition: str) -> list:
    return [pl.RunConfig(shift="permute", condition=condition, seed=seed, preset="smoke", rounds=2,
                         epochs_per_round=4, test_episodes=11) for seed in (0, 1)]


@pytest.fixture(scope="module")
def old_study(tmp_path_factory) -> tuple[Path, dict]:
    """A folder of run folders, one per condition, written by hand in the old layout."""
    folder = tmp_path_factory.mktemp("old") / "warm-vs-reset"
    tables = {}
    for condition in ("warm_start", "reset_all"):
        configs = _configs(condition)
        tables[condition] = df = pl.run(configs)
        (folder / condition).mkdir(parents=True)
        df.to_parquet(folder / condition / "epochs.parquet", index=False)
        manifest = {**PROVENANCE, "configs": [c.resolved().to_dict() for c in configs]}
        (folder / condition / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return folder, tables


def test_load_results_names_the_conversion_script_for_the_old_layout(old_study):
    folder, _ = old_study
    for old in (folder, folder / "warm_start"):  # a folder of run folders, and one run folder
        with pytest.raises(ValueError) as error:
            load_results(old)
        message = str(error.value)
        assert message.startswith(f"{old} is in the run-folder layout") and message.count("\n") == 0
        assert f"python scripts/convert_run_folders.py {old} {old}" in message


def test_conversion_gives_a_study_with_the_same_epochs_its_tables_and_every_provenance_entry(script, old_study,
                                                                                             tmp_path, capsys):
    folder, tables = old_study
    new = tmp_path / "studies" / "converted"
    assert script.main([str(folder), str(new)]) == 0
    assert "every epoch equal to the run folder's" in capsys.readouterr().out
    assert (folder / "warm_start" / "epochs.parquet").exists()  # into another folder: the old one stays
    results = load_results(new)
    sweep = Sweep.from_dict(results.manifest["sweep"])
    check_study(new, sweep)  # the synthesized sweep is one a sweep file could state, and it accepts the study
    assert sweep.study == "converted" and sweep.keep_epochs and sweep.overrides == {
        "rounds": 2, "epochs_per_round": 4, "test_episodes": 11}
    assert results.manifest["converted_from"] == "plasticity-lab run folders"
    assert results.manifest["git_commit"] == PROVENANCE["git_commit"]
    for condition, df in tables.items():
        configs = _configs(condition)
        name = PopulationTask.of(configs).name
        population = new / "populations" / name
        pd.testing.assert_frame_equal(pd.read_parquet(population / "epochs.parquet"), df, check_exact=True)
        pd.testing.assert_frame_equal(results.epochs([condition]), df, check_exact=True)
        expected = summarise(df, stride=configs[0].resolved().test_interval)
        for table in TABLES:
            pd.testing.assert_frame_equal(pd.read_parquet(population / f"{table}.parquet"), expected[table])
        manifest = json.loads((population / "manifest.json").read_text())
        assert manifest["configs"] == [c.resolved().to_dict() for c in configs]
        assert {k: manifest[k] for k in PROVENANCE} == PROVENANCE  # every entry kept, the wall time included
        assert manifest["converted_from"] == "plasticity-lab run folders" and manifest["keeps_epochs"]
    assert sorted(p.name for p in (new / "populations").iterdir()) == sorted(t.name for t in sweep.populations())
    assert sorted(p.name for p in new.parent.iterdir()) == ["converted"]  # no staging folder left


def test_conversion_in_place_replaces_the_run_folders(script, old_study, tmp_path):
    folder, tables = old_study
    copy = tmp_path / "warm-vs-reset"
    shutil.copytree(folder, copy)
    (copy / "README.md").write_text("what the study is")
    assert script.main([str(copy), str(copy), "--study", "gridworld-warm-vs-reset"]) == 0
    assert sorted(p.name for p in copy.iterdir()) == ["README.md", "manifest.json", "populations"]
    results = load_results(copy)
    assert results.manifest["sweep"]["study"] == "gridworld-warm-vs-reset"
    pd.testing.assert_frame_equal(results.epochs(["reset_all"]), tables["reset_all"], check_exact=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["warm-vs-reset"]


def test_runs_that_no_sweep_forms_are_refused_and_nothing_is_written(script, old_study, tmp_path, capsys):
    folder, _ = old_study
    mixed = tmp_path / "mixed"
    shutil.copytree(folder, mixed)
    manifest = json.loads((mixed / "reset_all" / "manifest.json").read_text())
    manifest["configs"] = [{**c, "test_episodes": 22} for c in manifest["configs"]]
    (mixed / "reset_all" / "manifest.json").write_text(json.dumps(manifest))
    assert script.main([str(mixed), str(tmp_path / "out")]) == 2
    assert "the runs differ in the settings beyond their preset" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mixed"]
