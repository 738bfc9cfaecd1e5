"""The domain-generalization benchmark runner: planning, one real (tiny) run per model, resume and
the summary over seeds."""

import csv
import math

import pytest

from emclip.benchmarks import dg

TINY = {"epochs": 1, "batch_size": 2, "num_workers": 0, "spatial_size": [64, 64], "cache": "none", "val_fraction": 0.0}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    from emclip.data import write_synthetic

    root = tmp_path_factory.mktemp("dg_data")
    write_synthetic(root, "fundus", per_domain=3, image_size=96, progress=False)
    return root


def tiny_settings(**models):
    settings = dg.load_settings()
    settings["seeds"] = [0]
    settings["models"] = {name: settings["models"][name] for name in models} if models else settings["models"]
    if models:
        settings["ablations"] = {}
    settings["overrides"] = {**settings["overrides"], **TINY}
    settings["tasks"] = {"fundus": {"data": "fundus", "sources": ["SynthA", "Nowhere"], "overrides": {}},
                         "cardiac": {"data": "cardiac/MnMs", "sources": ["A"], "overrides": {}}}
    return settings


def test_settings_file_lists_the_issue_models_and_a_quick_subset():
    settings = dg.load_settings()
    assert set(settings["models"]) == {"emclip_dg", "unet_dg", "emclip", "unet"}
    assert len(settings["seeds"]) >= 3 and settings["ablation_seeds"] == [0]
    assert {"emclip_dg_stride4", "emclip_stride2", "emclip_dg_no_em", "emclip_dg_no_text"} <= set(settings["ablations"])
    # the recipe is the same for EM-CLIP and the U-Net; only the network differs
    recipe = {k: v for k, v in settings["models"]["unet_dg"].items() if k != "network_def"}
    assert recipe and all(settings["models"]["emclip_dg"][k] == v for k, v in recipe.items())
    assert ["emclip_dg", "unet_dg"] in settings["compare"] and settings["scale_sweep"]["splits"] == ["eval", "val"]
    assert settings["tasks"]["fundus"]["sources"] == ["REFUGE"] and settings["tasks"]["cardiac"]["sources"] == ["A", "B"]
    assert (settings["tasks"]["fundus"]["overrides"]["epochs"], settings["tasks"]["cardiac"]["overrides"]["epochs"]) == (40, 100)
    quick = dg.load_settings(variant="quick")
    assert quick["seeds"] == [0] and list(quick["models"]) == ["emclip_dg", "unet_dg"] and not quick["ablations"]
    assert quick["tasks"]["fundus"]["overrides"]["epochs"] < settings["tasks"]["fundus"]["overrides"]["epochs"]
    long = dg.load_settings(variant="long")
    assert long["tasks"]["cardiac"]["sources"] == ["A"] and long["tasks"]["fundus"]["sources"] == ["REFUGE"]
    assert long["tasks"]["cardiac"]["overrides"]["epochs"] > settings["tasks"]["cardiac"]["overrides"]["epochs"]
    with pytest.raises(ValueError, match="no variant 'slow'"):
        dg.load_settings(variant="slow")


def test_plan_reports_what_it_skips_and_puts_seeds_outermost(data_root, tmp_path, capsys):
    settings = tiny_settings()
    settings["seeds"] = [0, 1]
    runs = dg.plan_runs(settings, data_root, tmp_path)
    out = capsys.readouterr().out
    assert "skip fundus source Nowhere" in out and "skip cardiac: no folder" in out
    # ablations with the first seed only
    expected = [(0, m) for m in [*settings["models"], *settings["ablations"]]] + [(1, m) for m in settings["models"]]
    assert [(r["seed"], r["model"]) for r in runs] == expected
    unet = next(r for r in runs if r["model"] == "unet")["overrides"]
    assert unet["network_def"]["_target_"] == "UNet" and unet["train_domains"] == ["SynthA"]
    no_em = next(r for r in runs if r["model"] == "emclip_dg_no_em")["overrides"]
    assert no_em["network_def#use_em"] is False and no_em["epochs"] == 1
    # one preprocessing cache per task, a bundle_root per run
    assert len({r["overrides"]["train#dataset#cache_dir"] for r in runs}) == 1
    assert len({r["overrides"]["bundle_root"] for r in runs}) == len(runs)


def test_runs_train_evaluate_resume_and_summarize(data_root, tmp_path):
    settings = tiny_settings(emclip={}, unet={})
    runs = dg.plan_runs(settings, data_root, tmp_path / "work")
    sweep = {"zooms": [0.8], "splits": ["eval", "val"], "test_time": {"fundus": {"flips": {"tta#flips": True}}}}
    rows, scale = [], []
    for run in runs:
        result = dg.execute(run, sweep)
        scale += dg.collect_scale(run, sweep)
        assert result["train_s"] > 0 and result["eval_s"] > 0 and result["params"] > 0 and result["peak_rss_mib"] > 0
        rows += dg.collect(run, result)
        assert "monai.bundle run training" in (tmp_path / "work" / "fundus_SynthA" / run["model"] / "seed0" / "command.txt").read_text()
    # a finished run is not run again
    log = tmp_path / "work" / "fundus_SynthA" / "unet" / "seed0" / "log.txt"
    size = log.stat().st_size
    assert dg.execute(runs[-1]) == result and log.stat().st_size == size
    # other settings in the same work dir are refused, not mixed in
    changed = {**runs[-1], "overrides": {**runs[-1]["overrides"], "epochs": 2}}
    with pytest.raises(RuntimeError, match="other benchmark settings"):
        dg.execute(changed)
    assert {(r["model"], r["domain"], r["class"]) for r in rows} == {
        (m, d, c) for m in ("emclip", "unet") for d in ("SynthB", "SynthC") for c in ("OD", "OC")
    }
    assert all(0.0 <= r["dice"] <= 1.0 and r["n"] == 3 for r in rows)
    # the sweep: zoom 0.8 and the run's own zoom-1 evaluation per model, domain and class, plainly and
    # with the flips at both zooms; no val split
    assert {(r["model"], r["zoom"], r["split"], r["test_time"]) for r in scale} == {
        (m, z, "eval", t) for m in ("emclip", "unet") for z in (0.8, 1.0) for t in ("none", "flips")}
    assert len(scale) == 2 * 2 * 2 * 2 * 2 and all(0 <= r["dice"] <= 1 and r["size_ratio"] >= 0 for r in scale)
    assert "no source validation split" in (tmp_path / "work" / "fundus_SynthA" / "unet" / "seed0" / "log.txt").read_text()
    paired = dg.paired_rows(runs, [["emclip", "unet"]])
    assert len(paired) == 4 and all(p["n"] == 3 and p["seeds"] == 1 for p in paired)
    first = paired[0]
    assert first["mean_diff"] == pytest.approx(first["model_dice"] - first["baseline_dice"])
    assert first["low"] <= first["mean_diff"] <= first["high"]
    # a pair with a test-time setting compares both models' evaluations with it (zoom 1, unseen domains)
    flips = dg.paired_rows(runs, [["emclip", "unet", "flips"]])
    assert [(p["domain"], p["class"]) for p in flips] == [(p["domain"], p["class"]) for p in paired]
    swept = {(r["model"], r["domain"], r["class"]): r["dice"] for r in scale
             if (r["test_time"], r["zoom"], r["split"]) == ("flips", 1.0, "eval")}
    for p in flips:
        assert p["test_time"] == "flips" and p["model_dice"] == pytest.approx(swept["emclip", p["domain"], p["class"]])
        assert p["baseline_dice"] == pytest.approx(swept["unet", p["domain"], p["class"]])
    out = tmp_path / "out"
    dg.write_outputs(rows, ["emclip", "unet"], out, "header line", paired + flips, scale)
    table = (out / "dg_paired.md").read_text()
    assert "| fundus | SynthA -> SynthB | OD | emclip - unet | 1 | 3 |" in table
    assert "| fundus | SynthA -> SynthB | OD | emclip - unet (both + flips) | 1 | 3 |" in table
    for name in ("dg_runs.csv", "dg_summary.csv", "dg_summary.md", "dg_dice_fundus.png", "dg_scale.csv", "dg_scale.md", "dg_scale_fundus.png"):
        assert (out / name).stat().st_size > 0
    with open(out / "dg_runs.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == len(rows)
    md = (out / "dg_summary.md").read_text()
    assert md.startswith("header line") and "| domain | class | emclip | unet |" in md and "| SynthB | OC |" in md


def test_summary_over_seeds_is_mean_and_sample_sd():
    base = {"task": "fundus", "source": "S", "domain": "T", "class": "OD", "model": "m", "train_s": 10.0,
            "params": 5, "peak_rss_mib": 1.0, "hd95": math.nan}
    rows = [{**base, "seed": 0, "dice": 0.6}, {**base, "seed": 1, "dice": 0.8, "train_s": 20.0, "peak_rss_mib": 3.0}]
    (entry,) = dg.summarize_seeds(rows)
    assert entry["seeds"] == 2 and entry["dice_mean"] == pytest.approx(0.7)
    assert entry["dice_sd"] == pytest.approx(math.sqrt(0.02))  # ddof=1: ((0.1^2) * 2) / 1
    assert math.isnan(entry["hd95_mean"]) and entry["train_s_mean"] == 15.0 and entry["peak_rss_mib_max"] == 3.0
    (single,) = dg.summarize_seeds(rows[:1])
    assert math.isnan(single["dice_sd"])
    md = dg.summary_markdown([single], ["m"])
    assert "(Dice, one seed)" in md and "| T | OD | 0.600 |" in md


def test_test_time_settings_apply_to_their_task_and_models():
    sweep = {"zooms": [0.8], "splits": ["eval"], "test_time": {"fundus": {
        "refine": {"refine#enabled": True}, "bn": {"tent#enabled": True, "_models_": ["emclip"]}}}}
    emclip, unet = ({"task": "fundus", "model": m} for m in ("emclip", "unet"))
    assert dg._test_time(sweep, emclip) == {"refine": {"refine#enabled": True}, "bn": {"tent#enabled": True}}
    assert dg._test_time(sweep, unet) == {"refine": {"refine#enabled": True}}
    assert dg._test_time(sweep, {"task": "cardiac", "model": "emclip"}) == {}
    assert dg._sweep_points(sweep, unet) == [("none", 0.8), ("none", 1.0), ("refine", 0.8), ("refine", 1.0)]


def test_scale_table_means_over_seeds_and_the_largest_distance_from_zoom_1():
    row = {"task": "fundus", "source": "REFUGE", "model": "emclip", "test_time": "none", "split": "eval",
           "domain": "DrishtiGS", "class": "OC"}
    rows = [{**row, "seed": s, "zoom": z, "dice": d} for s, z, d in
            ((0, 0.7, 0.90), (1, 0.7, 0.90), (0, 1.0, 0.70), (1, 1.0, 0.60), (0, 1.2, 0.50))]
    table = dg.scale_table(rows).splitlines()
    assert table[0] == "| task | source -> domain | model | test time | split | class | seeds | x0.7 | x1 | x1.2 | max abs diff to x1 |"
    # x0.7 and x1 average two seeds, x1.2 has one; the gain at x0.7 (+0.250) is farther than the loss at x1.2
    assert table[2] == "| fundus | REFUGE -> DrishtiGS | emclip | none | eval | OC | 1/2 | 0.900 | 0.650 | 0.500 | 0.250 |"
    # the size ratio per zoom; an evaluation written before it (NaN) is left out
    sizes = [{**r, "size_ratio": math.nan if r["zoom"] == 1.2 else r["zoom"]} for r in rows]
    table = dg.scale_table(sizes, "size_ratio").splitlines()
    assert table[0].endswith("| x0.7 | x1 | max abs diff to x1 |")
    assert table[2] == "| fundus | REFUGE -> DrishtiGS | emclip | none | eval | OC | 2 | 0.700 | 1.000 | 0.300 |"


def test_validation_table_is_the_source_split_mean_over_classes_and_seeds():
    row = {"task": "cardiac", "source": "A", "domain": "A", "test_time": "none", "split": "val", "zoom": 1.0}
    rows = [{**row, "model": "emclip", "seed": 0, "class": "LV", "dice": 0.8},
            {**row, "model": "emclip", "seed": 0, "class": "MYO", "dice": 0.4},   # seed 0: 0.6
            {**row, "model": "emclip", "seed": 1, "class": "LV", "dice": 0.5},
            {**row, "model": "emclip", "seed": 1, "class": "MYO", "dice": 0.3},   # seed 1: 0.4
            {**row, "model": "unet", "seed": 0, "class": "LV", "dice": 0.9, "zoom": 0.7},  # not at zoom 1
            {**row, "model": "unet", "seed": 0, "class": "LV", "dice": 0.1, "split": "eval", "domain": "B"}]
    table = dg.validation_table(rows, ["emclip", "unet"]).splitlines()
    assert table[0] == "| task | source | test time | emclip | unet |"
    assert table[2:] == ["| cardiac | A | none | 0.500 | n/a |"]
    assert dg.validation_table([r for r in rows if r["split"] == "eval"], ["unet"]) == ""


def test_test_time_table_puts_each_setting_in_a_column_at_zoom_1():
    row = {"task": "cardiac", "source": "B", "domain": "A", "split": "eval", "model": "emclip", "class": "RV"}
    rows = [{**row, "seed": s, "test_time": t, "zoom": z, "dice": d} for s, t, z, d in
            ((0, "none", 1.0, 0.4), (1, "none", 1.0, 0.6), (0, "brighter", 1.0, 0.7), (1, "brighter", 1.0, 0.9),
             (0, "brighter", 0.7, 0.1))]   # another zoom: not in the table
    table = dg.test_time_table(rows).splitlines()
    assert table[0] == "| task | source -> domain | split | model | class | seeds | none | brighter |"
    assert table[2:] == ["| cardiac | B -> A | eval | emclip | RV | 2 | 0.500 | 0.800 |"]
    assert dg.test_time_table([r for r in rows if r["test_time"] == "none"]) == ""


def test_cpu_name_adds_family_and_model(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\nmodel name\t: AMD EPYC\n\n"
                    "processor\t: 1\nmodel name\t: AMD EPYC\n")
    assert dg.cpu_name(info) == "AMD EPYC (cpu family 25, model 17)"
    info.write_text("processor\t: 0\n")
    assert dg.cpu_name(info) == dg.platform.machine()
    assert dg.cpu_name(tmp_path / "missing") == dg.platform.machine()
