"""Real exports as they come (issue 21, part 2): a label spelled two ways, a class only in
test, files listed but missing. By default each is repaired, said loudly ("repaired: ...")
and recorded in ``Dataset.notes["repairs"]``; ``[split] strict`` turns each into an error
naming the labels or files. The exports are generated (tests/ei_fixtures.py)."""

from __future__ import annotations

import ei_fixtures as fx
import numpy as np
import pytest

from pipeline.core.config import load_config, to_toml
from pipeline.core.errors import PipelineError
from pipeline.data.labels import nearest_label, normalized
from pipeline.data.load import dataset_from_config, load_dataset
from pipeline.data.splits import prepare

pytestmark = pytest.mark.filterwarnings("ignore:The least populated class:UserWarning")


def load(path, **overrides):
    """The dataset as a stage loads it, and the lines it printed."""
    cfg = load_config(overrides={"data.dataset": str(path), **overrides})
    lines: list[str] = []
    return dataset_from_config(cfg, out=lines.append), lines


def repairs(ds, kind):
    return [r for r in ds.notes.get("repairs", []) if r["kind"] == kind]


# --------------------------------------------------------------------------- labels spelled two ways


def test_normalized_ignores_case_spaces_hyphens_underscores():
    assert normalized("X-Circle_left") == normalized("xcircle  left") == "xcircleleft"
    assert normalized("left") != normalized("right")
    assert nearest_label("xcircle lft", ["idle", "x-circle left", "x-circle right"]) == "x-circle left"


def test_two_spellings_merge_into_the_training_spelling_and_say_so(tmp_path):
    ds, lines = load(fx.export_two_spellings(tmp_path / "x"))
    assert ds.label_names == ("idle", "updown", "x-circle left")
    assert ds.class_counts() == {"idle": 30, "updown": 30, "x-circle left": 30}
    (r,) = repairs(ds, "merged_labels")
    assert r["count"] == 3 and len(r["items"]) == 3
    assert "'xcircle left' (0 training, 3 testing)" in r["what"]
    assert "'x-circle left' (24 training, 3 testing)" in r["what"] and "most frequent in training" in r["what"]
    assert lines == [f"repaired: {r['what']}"]
    # what the drone export stopped on before: too few samples of "xcircle left" to split
    prepared = prepare(load_config(overrides={"data.dataset": str(tmp_path / "x")}), tmp_path / "run", write=False)
    assert "xcircle left" not in prepared.manifest["dataset"]["label_names"]


def test_two_spellings_strict_is_an_error_naming_both(tmp_path):
    path = fx.export_two_spellings(tmp_path / "x")
    with pytest.raises(PipelineError, match=r"'x-circle left' \(24 training, 3 testing\) and 'xcircle left' "
                                            r"\(0 training, 3 testing\)") as exc:
        load(path, **{"split.strict": True})
    assert 'label_map = { "xcircle left" = "x-circle left" }' in exc.value.hint


def test_merge_labels_false_keeps_them_apart_then_the_test_only_spelling_is_left_out(tmp_path):
    ds, lines = load(fx.export_two_spellings(tmp_path / "x"), **{"data.merge_labels": False})
    assert not repairs(ds, "merged_labels") and any("kept apart" in n for n in ds.notes["loader"])
    (r,) = repairs(ds, "test_only_class")
    assert "'xcircle left'" in r["what"] and "nearest training label 'x-circle left'" in r["what"]
    assert ds.class_counts()["x-circle left"] == 27 and "xcircle left" not in ds.label_names


# --------------------------------------------------------------------------- a class only in test


@pytest.mark.parametrize("gen", [fx.export_test_only_class, fx.export_zip_test_only_class])
def test_test_only_class_is_left_out_with_its_nearest_label_and_mapping(tmp_path, gen):
    path = gen(tmp_path)
    ds, lines = load(path)
    assert ds.label_names == ("idle", "updown", "wave") and len(ds) == 90
    assert ds.skipped["class only in test"] == 1
    (r,) = repairs(ds, "test_only_class")
    near = nearest_label("testing", ["idle", "updown", "wave"])
    assert r["count"] == 1 and r["items"] == ["testing.dev-e.extra00"]
    assert "class 'testing' (1 test sample(s), none in training)" in r["what"]
    assert f"nearest training label {near!r}" in r["what"]
    assert f'label_map = {{ "testing" = "{near}" }}' in r["what"]
    assert lines == [f"repaired: {r['what']}"]
    # the per-sample arrays were cut alike
    assert len(ds.predefined_split) == len(ds.meta["rate_hz"]) == len(ds.group_ids) == 90
    with pytest.raises(PipelineError, match=r"class 'testing' has 1 sample\(s\) in testing and none in training"):
        load(path, **{"split.strict": True})


def test_label_map_maps_the_test_only_class_by_hand(tmp_path):
    path = fx.export_test_only_class(tmp_path / "x")
    ds, lines = load(path, **{"data.label_map": {"testing": "updown"}})
    assert not ds.notes.get("repairs") and not lines
    assert ds.class_counts() == {"idle": 30, "updown": 31, "wave": 30}
    with pytest.raises(PipelineError, match=r"\[data\] label_map: 'tesitng' is not a label of"):
        load(path, **{"data.label_map": {"tesitng": "updown"}})


def test_label_map_is_a_toml_table_of_strings(tmp_path):
    cfg = load_config(overrides={"data.label_map": {"a b": "c", "x\"y": "z"}})
    text = to_toml(cfg)
    assert 'label_map = {"a b" = "c", "x\\"y" = "z"}' in text
    path = tmp_path / "c.toml"
    path.write_text(text)
    assert load_config(path).data.label_map == {"a b": "c", 'x"y': "z"}
    with pytest.raises(PipelineError, match=r"\[data\] label_map 'a': expected str, got int 1"):
        load_config(overrides={"data.label_map": {"a": 1}})
    with pytest.raises(PipelineError, match=r"\[data\] label_map: expected a table"):
        load_config(overrides={"data.label_map": "a=b"})


def test_npz_label_names_keep_their_order_after_a_merge(tmp_path):
    X = np.random.default_rng(0).normal(size=(12, 8, 2)).astype(np.float32)
    y = np.array([0, 1, 2] * 4)
    np.savez(tmp_path / "d.npz", X=X, y=y, label_names=np.array(["Wave", "idle", "wave"]))
    ds = load_dataset(str(tmp_path / "d.npz"))
    # no predefined split: every sample is training; a tie goes to the first in sort order
    assert ds.label_names == ("Wave", "idle") and ds.class_counts() == {"Wave": 8, "idle": 4}


# --------------------------------------------------------------------------- files listed but missing


def test_listed_missing_files_are_skipped_named_and_counted(tmp_path):
    path = fx.export_listed_missing(tmp_path / "x")
    ds, lines = load(path)
    assert len(ds) == 88 and ds.skipped["listed in info.labels, missing"] == 2
    (r,) = repairs(ds, "missing_files")
    assert r["items"] == ["training/idle.dev-a.idle00.json", "testing/idle.dev-e.idle00.json"]
    assert "2 of 90 file(s) listed in info.labels are missing" in r["what"]
    assert lines == [f"repaired: {r['what']}"]
    with pytest.raises(PipelineError, match=r"2 file\(s\) listed in info.labels are missing.*"
                                            r"training/idle.dev-a.idle00.json, testing/idle.dev-e.idle00.json"):
        load(path, **{"split.strict": True})


def test_every_file_missing_is_still_an_error(tmp_path):
    path = fx.export_listed_missing(tmp_path / "x", missing=90)
    for p in path.rglob("*.json"):
        p.unlink()
    with pytest.raises(PipelineError, match=r"90 file\(s\) listed in info.labels are missing"):
        load(path)
