"""Chapter 14's scale table and figure, against the stored studies' own manifests read independently."""

import json
from pathlib import Path

import pytest

from plasticity_lab.figures import scale

DATA = Path(__file__).resolve().parents[1] / "data"


def test_the_book_study_row_is_what_its_manifests_say():
    study = DATA / "gridworld-book"
    if not (study / "manifest.json").exists():
        pytest.skip("the book's study is not stored in this checkout")
    manifests = [json.loads(p.read_text()) for p in (study / "populations").glob("*/manifest.json")]
    configs = [c for m in manifests for c in m["configs"]]
    wall = sum(m["wall_time_s"] for m in manifests)
    row = scale.scale_table(DATA).set_index("study").loc["gridworld-book"]
    assert row["runs"] == len(configs) == 180 and row["seeds"] == 5
    assert row["epochs_per_round"] == "200" and row["agent_epochs_per_run"] == 10 * 200
    assert row["wall_time_h"] == pytest.approx(wall / 3600)
    assert row["s_per_agent_epoch"] == pytest.approx(wall / (180 * 2000))
    assert row["fraction_of_paper_run"] == pytest.approx(2000 / 50_000)
    # the paper's grid: 3 shifts × 11 conditions × 5 seeds, 10 × 5 000 epochs each, at the same cost per epoch
    assert row["paper_grid_h"] == pytest.approx(wall / (180 * 2000) * 165 * 50_000 / 3600)


def test_every_stored_study_gets_a_row_and_the_figure_draws_them():
    folders = scale.study_folders(DATA)
    if not folders:
        pytest.skip("no study is stored in this checkout")
    table = scale.scale_table(DATA)
    assert sorted(table["study"]) == sorted(str(f.relative_to(DATA)) for f in folders)
    # the gridworld's studies only: their scale is measured against the paper's gridworld runs
    envs = {str(f.relative_to(DATA)): json.loads((f / "manifest.json").read_text())["sweep"].get("envs")
            for f in folders}
    assert all(e in (None, ["gridworld"]) for e in envs.values()), envs
    fig = scale.scale_figure(table, title="stored studies")
    bars = [t for t in fig.data if t.type == "bar"]
    assert len(bars) == 2 and sorted(bars[0].y) == sorted(table["study"])


def test_a_study_of_another_environment_is_left_out(tmp_path):
    for name, envs in (("grid", ["gridworld"]), ("game", ["montezuma"]), ("old", None)):
        (tmp_path / name).mkdir()
        sweep = {"study": name, **({"envs": envs} if envs else {})}
        (tmp_path / name / "manifest.json").write_text(json.dumps({"sweep": sweep}))
    assert [f.name for f in scale.study_folders(tmp_path)] == ["grid", "old"]  # a sweep without envs: the gridworld
    assert [f.name for f in scale.study_folders(tmp_path, env="montezuma")] == ["game"]


def test_a_folder_without_studies_is_one_clear_error(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "manifest.json").write_text("{}")  # a manifest, but not a study's
    with pytest.raises(ValueError, match="no stored study under"):
        scale.scale_table(tmp_path)
