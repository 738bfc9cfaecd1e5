"""Generated benchmark report blocks, and the profiling script at a tiny size."""

import subprocess
import sys
from pathlib import Path

import pytest

from emclip.benchmarks import profile, report

REPO = Path(__file__).resolve().parents[1]


def test_fill_replaces_include_blocks_with_files(tmp_path):
    (tmp_path / "t.csv").write_text("model,dice\nunet,0.5\n")
    (tmp_path / "s.md").write_text("| a |\n")
    doc = "intro\n<!-- include: t.csv -->\nstale 0.9\n<!-- end -->\nmid\n<!-- include: s.md -->\n<!-- end -->\n"
    filled = report.fill(doc, tmp_path)
    assert filled == ("intro\n<!-- include: t.csv -->\n| model | dice |\n|---|---|\n| unet | 0.5 |\n<!-- end -->\n"
                      "mid\n<!-- include: s.md -->\n| a |\n<!-- end -->\n")
    assert report.fill(filled, tmp_path) == filled
    (tmp_path / "k.csv").write_text("K,ms\n16,1\n64,2\n")
    assert report.fill("<!-- include: k.csv K=64 -->\n<!-- end -->", tmp_path) == (
        "<!-- include: k.csv K=64 -->\n| K | ms |\n|---|---|\n| 64 | 2 |\n<!-- end -->")
    with pytest.raises(ValueError, match="no column 'N'"):
        report.fill("<!-- include: k.csv N=1 -->\n<!-- end -->", tmp_path)
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        report.fill("<!-- include: missing.csv -->\n<!-- end -->", tmp_path)


def test_committed_benchmark_report_matches_its_results():
    doc = REPO / "bundle" / "docs" / "benchmarks.md"
    if not doc.exists():
        pytest.skip("no benchmark report committed")
    proc = subprocess.run([sys.executable, "-m", "emclip.benchmarks.report", "--doc", str(doc),
                           "--results", str(REPO / "bundle" / "docs" / "benchmarks"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_profile_rows_at_a_tiny_size():
    ops = profile.profile_ops("cpu-resnet", 64, 2, top=5)
    assert [r["phase"] for r in ops] == ["train"] * 5 + ["inference"] * 5
    assert all(0 < r["share"] <= 1 and r["self_ms"] >= 0 for r in ops)
    variants = profile.time_variants("cpu-resnet", 64, 2, min_run_time=0.0)
    assert [(r["phase"], r["variant"]) for r in variants] == [
        ("train", "contiguous fp32"), ("train", "channels-last fp32"), ("train", "channels-last bf16 autocast"),
        ("inference", "contiguous no_grad"), ("inference", "contiguous inference_mode"),
        ("inference", "channels-last no_grad"), ("inference", "channels-last inference_mode"),
    ]
    assert variants[0]["ratio"] == 1.0 and variants[3]["ratio"] == 1.0
    assert all(r["ms"] > 0 for r in variants)
    train = {r["variant"]: r for r in variants if r["phase"] == "train"}
    assert train["channels-last fp32"]["ratio"] == pytest.approx(
        train["channels-last fp32"]["ms"] / train["contiguous fp32"]["ms"], rel=0.02)


def test_loading_is_measured_on_the_bundle_configs_training_loader(tmp_path):
    """Cold and cached epochs and the cache size of train.yaml + the overlay's own dataset and loader."""
    from emclip.data import write_synthetic

    write_synthetic(tmp_path / "data", "fundus", per_domain=3, image_size=48, progress=False)
    tiny = {"spatial_size": [32, 32], "batch_size": 2}
    rows = profile.time_epochs("fundus", tmp_path / "data" / "fundus", "SynthA", tmp_path / "cache", tiny)
    memory, disk = rows
    assert (memory["cache"], disk["cache"]) == ("memory", "disk") and memory["items"] == disk["items"] == 3
    assert all(r["cold_epoch_s"] > 0 and r["cached_epoch_s"] > 0 for r in rows)
    assert memory["memory_cache_bytes"] >= 3 * (3 + 1) * 32 * 32 * 4 and memory["disk_cache_bytes"] == 0
    assert disk["disk_cache_bytes"] > 0
    stalls = profile.time_loading("fundus", tmp_path / "data" / "fundus", "SynthA", 2, tmp_path / "c2", tiny)
    assert [r["num_workers"] for r in stalls] == [0, 2] and all(0 <= r["stall"] <= 1 for r in stalls)


def _screen(folder, runs):
    """A dg output folder: for each (source, model, per-class val Dice, per-class unseen Dice); the
    ``plain`` test-time rows rank the models the other way, so reading them would flip the signs."""
    folder.mkdir()
    scale = [{"task": "cardiac", "source": s, "model": m, "seed": 0, "test_time": t, "split": "val", "zoom": 1.0,
              "domain": s, "class": c, "dice": 1 - v if t == "plain" else v}
             for s, m, val, _ in runs for t in ("none", "plain") for c, v in zip(("LV", "RV"), val)]
    rows = [{"task": "cardiac", "source": s, "model": m, "seed": 0, "domain": d, "class": c, "dice": v}
            for s, m, val, unseen in runs for d in ({"A", "B"} - {s}) for c, v in zip(("LV", "RV"), unseen)]
    report.write_csv(scale, folder / "dg_scale.csv")
    report.write_csv(rows, folder / "dg_runs.csv")


def test_selection_ranks_source_validation_against_the_unseen_domain(tmp_path):
    from emclip.benchmarks import selection

    # from A the validation order is the unseen order, from B it is reversed; "base" is in both folders
    a = [("A", "base", (0.5, 0.5), (0.4, 0.4)), ("A", "m1", (0.6, 0.6), (0.5, 0.5)), ("A", "m2", (0.7, 0.7), (0.6, 0.6))]
    b = [("B", "m1", (0.6, 0.6), (0.3, 0.3)), ("B", "m2", (0.7, 0.7), (0.2, 0.2)), ("B", "m3", (0.8, 0.8), (0.1, 0.1))]
    _screen(tmp_path / "one", a + b)
    _screen(tmp_path / "two", [a[0], ("A", "m3", (0.8, 0.8), (0.7, 0.7))])
    (tmp_path / "no_val").mkdir()  # a folder without the val split is passed over
    selection.main(["--screens", *(str(tmp_path / n) for n in ("one", "two", "no_val")), "--output", str(tmp_path / "out")])
    table = {(r["source"], r["class"]): r for r in selection.correlations(selection.collect_pairs([tmp_path / "one", tmp_path / "two"]))}
    assert table["A", "mean"]["runs"] == 4  # base counted once
    assert table["A", "mean"]["spearman"] == pytest.approx(1.0) and table["B", "RV"]["spearman"] == pytest.approx(-1.0)
    assert table["A", "LV"]["low"] == pytest.approx(1.0)  # every resample of a perfect ranking is perfect
    text = (tmp_path / "out" / "selection.md").read_text()
    assert "| cardiac | B -> A | mean | 3 | -1.00" in text and "(one, two)" in text and f"--output {tmp_path / 'out'}`" in text


def test_selection_with_a_stressed_validation_averages_the_test_time_settings(tmp_path):
    from emclip.benchmarks import selection

    # _screen's "plain" rows are 1 - val: the mean over both settings is 0.5 for every run, so the
    # stressed validation has no ranking; a run without a second setting is left out of it
    _screen(tmp_path / "one", [("A", "m1", (0.6, 0.6), (0.5, 0.5)), ("A", "m2", (0.7, 0.7), (0.6, 0.6))])
    rows = selection.collect_pairs([tmp_path / "one"], "mean")
    assert all(r["val"] == pytest.approx(0.5) for r in rows) and len({r["model"] for r in rows}) == 2
    plain = tmp_path / "plain_only"
    plain.mkdir()
    scale = [r for r in report.read_csv(tmp_path / "one" / "dg_scale.csv") if r["test_time"] == "none"]
    report.write_csv(scale, plain / "dg_scale.csv")
    report.write_csv(report.read_csv(tmp_path / "one" / "dg_runs.csv"), plain / "dg_runs.csv")
    assert selection.collect_pairs([plain], "mean") == [] and len(selection.collect_pairs([plain])) == len(rows)
    selection.main(["--screens", str(tmp_path / "one"), "--val-test-time", "mean", "--output", str(tmp_path / "out")])
    assert "--val-test-time mean --output" in (tmp_path / "out" / "selection.md").read_text()
    with pytest.raises(ValueError, match="val_test_time"):
        selection.collect_pairs([plain], "median")
