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
