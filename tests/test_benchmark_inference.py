"""Choosing post-processing on the source validation split, and the test-time steps benchmark, on
a tiny synthetic set with an untrained checkpoint (the commands' plumbing, not their numbers)."""

import csv

import pytest
import torch
import yaml
from conftest import REPO
from monai.bundle import ConfigParser

from emclip.data import write_synthetic
from emclip.networks import EMCLIP

CONFIGS = REPO / "bundle" / "configs"
TINY = ["spatial_size=[64,64]", "network_def#em_bases=8", "num_workers=0", "val_fraction=0.34", "eval_domains=[SynthB]"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    write_synthetic(root / "data", "fundus", per_domain=3, image_size=96, progress=False)
    (root / "models" / "fundus").mkdir(parents=True)
    torch.save(EMCLIP(3, em_bases=8, encode_text=False).state_dict(), root / "models" / "fundus" / "model.pt")
    return root


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_choose_postprocessing_writes_an_overlay_from_the_source_split(trained, tmp_path):
    from emclip.inference.choose_postprocessing import main

    out = tmp_path / "chosen.yaml"
    result = main(["--task", "fundus", "--bundle-root", str(trained), "--dataset-dir", str(trained / "data" / "fundus"),
                   "--train-domains", "SynthA", "--output", str(out), "--set", *TINY])
    overlay = yaml.safe_load(out.read_text())
    names = ["largest_component", "fill_holes", "cup_in_disc"]  # the steps fundus.yaml lists
    assert {k: v for k, v in overlay.items() if k.startswith("postprocess#")} == {
        f"postprocess#{n}#_disabled_": not result["postprocess"][n] for n in names}
    assert [t["step"] for t in result["trials"]] == names
    for t in result["trials"]:  # a step is kept exactly when it raised the source-validation Dice
        assert t["kept"] == (t["dice_with"] > t["dice_without"])
    assert 0 < overlay["refine#disc_fraction"] < 1
    # the overlay is a valid last config file of the evaluation
    files = [str(CONFIGS / f"{n}.yaml") for n in ("train", "evaluate", "fundus")] + [str(out)]
    parser = ConfigParser()
    parser.read_config(files)
    assert list(parser.get_parsed_content("postprocess")) == [n for n in names if result["postprocess"][n]]
    assert parser.get_parsed_content("refine")["disc_fraction"] == overlay["refine#disc_fraction"]
    raw = trained / "eval" / "fundus_source_val" / "metrics_per_case.csv"  # the reports of the raw predictions
    domains = {r["domain"] for r in read_csv(raw)}
    assert domains == {"SynthA"}  # only the source validation split was used


def test_inference_benchmark_reports_each_step_against_plain(trained, tmp_path, monkeypatch):
    from emclip.benchmarks import inference
    from emclip.benchmarks.inference import main

    seen = {}

    def recording(task, overrides, config_dir):
        seen[overrides["output_dir"].rsplit("/", 1)[-1]] = overrides
        return evaluation_workflow(task, overrides, config_dir)

    evaluation_workflow = inference.evaluation_workflow
    monkeypatch.setattr(inference, "evaluation_workflow", recording)
    summary = main(["--task", "fundus", "--bundle-root", str(trained), "--dataset-dir", str(trained / "data" / "fundus"),
                    "--train-domains", "SynthA", "--output", str(tmp_path), "--steps", "tta", "refine",
                    "--scales", "0.5", "--resize", "2", "--set", *TINY])
    variants = {e["variant"] for e in summary}
    assert {"plain", "tta", "refine", "pp_largest_component", "pp_fill_holes", "pp_cup_in_disc", "chosen"} <= variants
    # plain is one pass although fundus.yaml's defaults are the flips and the two-pass mode; a step adds only itself
    one_pass = ("tta#flips", "adabn#enabled", "refine#enabled", "tent#enabled")
    assert {k: seen["plain"][k] for k in one_pass} == dict.fromkeys(one_pass, False)
    assert seen["plain"]["tta#gammas"] == [1.0]
    assert (seen["refine"]["refine#enabled"], seen["refine"]["tta#flips"]) == (True, False)
    domains = {(e["domain"], e["split"]) for e in summary}
    assert {("SynthA", "source-val"), ("SynthB", "unseen"), ("SynthB@x0.5", "unseen"), ("SynthB@r2", "unseen")} <= domains
    from PIL import Image

    originals = {p.name: Image.open(p).size for p in (trained / "data" / "fundus" / "SynthB").glob("*/image/*.png")}
    copies = [p for p in (tmp_path / "scaled" / "SynthB@r2").glob("*.png") if not p.name.startswith("mask_")]
    assert sorted(p.name for p in copies) == sorted(originals)
    for copy in copies:  # the whole image at twice the pixels
        w, h = originals[copy.name]
        assert Image.open(copy).size == (2 * w, 2 * h) == Image.open(copy.with_name(f"mask_{copy.name}")).size
    for e in summary:
        if e["variant"] == "plain":
            assert e["diff_vs_plain"] == 0 and e["ci_low"] == e["ci_high"] == 0
        assert e["seconds_per_case"] > 0 and e["n"] > 0 and e["size_ratio_median"] >= 0
    rows = read_csv(tmp_path / "inference_per_case.csv")
    assert {"variant", "domain", "case", "class", "dice", "seconds", "uncertainty"} <= set(rows[0])
    assert "vs plain (95 % CI)" in (md := (tmp_path / "inference_summary.md").read_text()) and "size pred/ref (median)" in md
    chosen = yaml.safe_load((tmp_path / "chosen.yaml").read_text())
    assert {k for k in chosen if k.startswith("postprocess#")} == {
        f"postprocess#{n}#_disabled_" for n in ("largest_component", "fill_holes", "cup_in_disc")}


def test_inference_benchmark_on_volumes(tmp_path):
    from emclip.benchmarks.inference import main

    write_synthetic(tmp_path / "data", "cardiac", per_domain=2, progress=False)
    (tmp_path / "models" / "cardiac").mkdir(parents=True)
    torch.save(EMCLIP(4, em_bases=8, in_channels=1, prompts="cardiac", encode_text=False).state_dict(),
               tmp_path / "models" / "cardiac" / "model.pt")
    summary = main(["--task", "cardiac", "--bundle-root", str(tmp_path), "--dataset-dir", str(tmp_path / "data"),
                    "--train-domains", "A", "--output", str(tmp_path / "out"), "--steps", "tta",
                    "--set", "spatial_size=[64,64]", "spacing=3.0", "network_def#em_bases=8",
                    "num_workers=0", "val_fraction=0.5", "eval_domains=[B]"])
    assert {e["variant"] for e in summary} == {"plain", "tta", "pp_largest_component", "pp_fill_holes", "pp_myo_near_lv", "chosen"}
    assert {e["class"] for e in summary} == {"LV", "MYO", "RV"}
    assert {(e["domain"], e["split"]) for e in summary} == {("A", "source-val"), ("B", "unseen")}


def test_inference_benchmark_without_a_source_split_chooses_nothing(trained, tmp_path):
    from emclip.benchmarks.inference import main

    tiny = [o for o in TINY if not o.startswith("val_fraction")] + ["val_fraction=0.0"]
    summary = main(["--task", "fundus", "--bundle-root", str(trained), "--dataset-dir", str(trained / "data" / "fundus"),
                    "--train-domains", "SynthA", "--output", str(tmp_path), "--steps", "tta", "--set", *tiny])
    assert {e["split"] for e in summary} == {"unseen"}
    assert "chosen" not in {e["variant"] for e in summary}  # nothing chosen on an unseen domain
    assert "No source validation split: nothing was chosen" in (tmp_path / "inference_summary.md").read_text()
    chosen = yaml.safe_load((tmp_path / "chosen.yaml").read_text())
    assert all(v is True for k, v in chosen.items() if k.startswith("postprocess#"))  # every step stays off
