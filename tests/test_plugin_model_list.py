"""Which models the dialog and Processing offer, and engine wording turned into QGIS wording."""

from __future__ import annotations

from qgis_unravel.plugin import model_list


def test_runnable_models_come_first_with_the_demo_first():
    entries = model_list.model_entries()
    assert entries[0].id == "demo-unravelnet-synthetic" and entries[0].runnable
    assert entries[0].gsd == 0.15 and "ship" in entries[0].classes
    unpublished = {e.id: e for e in entries}["unravelnet-t-orcnn-dota10"]
    assert not unpublished.runnable and unpublished.why_not == model_list.NOT_PUBLISHED
    assert unpublished.label.endswith("(weights not published)")
    runnable = [e.runnable for e in entries]
    assert runnable == sorted(runnable, reverse=True)


def test_the_default_model_is_always_one_that_can_run(tmp_path):
    entries = model_list.model_entries()
    assert model_list.default_model(entries, "unravelnet-s-orcnn-dota10") == "demo-unravelnet-synthetic"
    assert model_list.default_model(entries, "") == "demo-unravelnet-synthetic"
    assert model_list.default_model(entries, str(tmp_path / "gone.pth")) == "demo-unravelnet-synthetic"
    kept = tmp_path / "mine.pth"
    kept.write_bytes(b"x")
    assert model_list.default_model(entries, str(kept)) == str(kept)


def test_engine_messages_lose_their_command_line_wording():
    note = ("Train one and pass it with --model PATH, or place it at the cache path shown by "
            "'qgis-unravel models info'.")
    text = model_list.for_qgis_user(note)
    assert "--" not in text and "qgis-unravel" not in text
    assert "Browse…" in text and "Diagnostics" in text
    warning = "the raster is processed at 0.5 m per pixel but the model was trained for 0.15; consider --gsd"
    assert model_list.for_qgis_user(warning).endswith("set the Processing resolution of the run")
