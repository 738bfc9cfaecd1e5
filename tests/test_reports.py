"""Tests of emclip.reports: metrics on hand-made masks, report files, overlays and the handler."""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from monai.data import DataLoader, Dataset, MetaTensor
from monai.engines import SupervisedEvaluator
from monai.handlers import CheckpointSaver
from monai.transforms import AsDiscreted
from PIL import Image

import emclip.reports.handler as handler_module
from emclip.reports import (
    MetricsReportHandler,
    ReportClass,
    as_report_classes,
    case_metrics,
    classes_from_channel_def,
    get_classes,
    save_overlay,
    summarize,
    write_reports,
)

# the report_classes of the two built-in overlays, as their configs write them
FUNDUS = {"OD": {"labels": [1, 2], "name": "optic disc"}, "OC": {"labels": [2], "name": "optic cup"}}
CARDIAC = {
    "LV": {"labels": [1], "name": "left ventricle"},
    "MYO": {"labels": [2], "name": "left ventricular myocardium"},
    "RV": {"labels": [3], "name": "right ventricle"},
}


def _square(shape, rows, cols, value=2):
    out = np.zeros(shape, dtype=np.int64)
    out[rows[0] : rows[1], cols[0] : cols[1]] = value
    return out


def _by_class(rows):
    return {r["class"]: r for r in rows}


def _read_csv(path):
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def _assert_png(path):
    assert Path(path).is_file()
    with Image.open(path) as img:
        assert img.format == "PNG"
        assert img.width > 50 and img.height > 50
        img.verify()


# ---------------------------------------------------------------- classes


def test_report_classes_from_a_config_value():
    classes = as_report_classes(FUNDUS)
    assert classes == {"OD": ReportClass((1, 2), "optic disc"), "OC": ReportClass((2,), "optic cup")}
    assert as_report_classes(classes) == classes
    with pytest.raises(TypeError, match="report_classes"):
        as_report_classes("fundus")  # a task name no longer fixes the classes
    with pytest.raises(ValueError, match="no label values"):
        as_report_classes({"OD": {"labels": [], "name": "optic disc"}})


def test_builtin_overlays_set_their_report_classes():
    assert get_classes("fundus") == as_report_classes(FUNDUS)
    assert get_classes("cardiac") == as_report_classes(CARDIAC)


def test_classes_from_channel_def_one_per_foreground_label():
    channel_def = {"0": "background", "2": "myocardium", "1": "left ventricle", "3": "right ventricle"}
    assert classes_from_channel_def(channel_def) == {
        "left_ventricle": ReportClass((1,), "left ventricle"),
        "myocardium": ReportClass((2,), "myocardium"),
        "right_ventricle": ReportClass((3,), "right ventricle"),
    }
    with pytest.raises(ValueError, match="twice"):
        classes_from_channel_def({"0": "background", "1": "a b", "2": "a-b"})


def test_a_new_task_reports_the_classes_of_its_metadata(tmp_path):
    """A made-up task with four structures: an overlay and a metadata file, no table in code."""
    channel_def = {"0": "background", "1": "nucleus", "2": "cytoplasm", "3": "membrane", "4": "vesicle"}
    (tmp_path / "metadata_cells.json").write_text(json.dumps(
        {"network_data_format#outputs#pred#num_channels": 5, "network_data_format#outputs#pred#channel_def": channel_def}))
    overlay = tmp_path / "cells.yaml"
    overlay.write_text(
        "task: cells\n"
        "num_classes: 5\n"
        "report_classes: \"$emclip.reports.classes_from_channel_def(@_meta_#network_data_format#outputs#pred#channel_def)\"\n"
    )
    classes = get_classes(overlay)
    assert list(classes) == ["nucleus", "cytoplasm", "membrane", "vesicle"]

    label = np.zeros((20, 20), dtype=np.int64)
    for value in range(1, 5):
        label[5 * (value - 1) : 5 * value, :10] = value
    pred = label.copy()
    pred[15:, :10] = 0  # no vesicle predicted
    rows = case_metrics(pred, label, classes)
    assert [(r["class"], r["dice"]) for r in rows] == [("nucleus", 1.0), ("cytoplasm", 1.0), ("membrane", 1.0), ("vesicle", 0.0)]
    paths = write_reports([{"domain": "lab", "case": "c0", **r} for r in rows], tmp_path / "out", classes, task="cells")
    markdown = paths["summary_md"].read_text()
    assert markdown.startswith("# Segmentation metrics: cells")
    assert "| lab | vesicle (vesicle) | 0.0000 ± 0.0000 |" in markdown


# ---------------------------------------------------------------- case_metrics


def test_dice_of_half_overlapping_squares():
    label = _square((40, 40), (0, 20), (0, 20))
    pred = _square((40, 40), (10, 30), (0, 20))  # overlap 10x20 of two 20x20 squares
    rows = _by_class(case_metrics(pred, label, FUNDUS))
    assert rows["OD"]["dice"] == pytest.approx(0.5)
    assert rows["OC"]["dice"] == pytest.approx(0.5)


def test_hd95_of_shifted_square_in_pixels_and_with_spacing():
    label = _square((48, 48), (5, 25), (5, 25))
    pred = _square((48, 48), (8, 28), (5, 25))  # shifted 3 pixels along axis 0
    assert _by_class(case_metrics(pred, label, FUNDUS))["OD"]["hd95"] == pytest.approx(3.0)
    # The shift is along axis 0, so only that axis's spacing scales the distance.
    assert _by_class(case_metrics(pred, label, FUNDUS, spacing=(2.0, 1.0)))["OD"]["hd95"] == pytest.approx(6.0)
    assert _by_class(case_metrics(pred, label, FUNDUS, spacing=(1.0, 2.0)))["OD"]["hd95"] == pytest.approx(3.0)
    with pytest.raises(ValueError, match="spacing"):
        case_metrics(pred, label, FUNDUS, spacing=(1.0, 1.0, 1.0))


def test_cardiac_volume_with_anisotropic_spacing_and_channel_axis():
    label = np.zeros((24, 24, 6), dtype=np.int64)
    label[4:14, 4:14, 1:4] = 1  # LV, 3 slices
    label[16:20, 16:20, 1:4] = 2  # MYO
    pred = label.copy()
    pred[pred == 1] = 0
    pred[4:14, 4:14, 2:5] = 1  # LV moved one slice (10 mm) along the last axis
    rows = _by_class(case_metrics(torch.from_numpy(pred)[None], label[None], CARDIAC, spacing=(1.25, 1.25, 10.0)))
    assert list(rows) == ["LV", "MYO", "RV"]
    assert rows["LV"]["dice"] == pytest.approx(2 / 3)
    assert rows["LV"]["hd95"] == pytest.approx(10.0)
    assert (rows["MYO"]["dice"], rows["MYO"]["hd95"]) == (1.0, 0.0)
    assert (rows["RV"]["dice"], rows["RV"]["hd95"]) == (1.0, 0.0)  # absent in both


def test_fundus_od_is_rim_plus_cup_and_oc_is_cup():
    label = _square((32, 32), (4, 24), (4, 24), value=1)
    label[10:18, 10:18] = 2  # cup inside the disc rim
    pred_disc_only = np.where(label > 0, 1, 0)  # the whole disc, but labelled as rim
    rows = _by_class(case_metrics(pred_disc_only, label, FUNDUS))
    assert rows["OD"]["dice"] == pytest.approx(1.0)
    assert rows["OD"]["hd95"] == pytest.approx(0.0)
    assert rows["OC"]["dice"] == 0.0
    assert math.isnan(rows["OC"]["hd95"])
    # Predicting only the cup gives a perfect OC but an OD that is just the cup's share of the disc.
    rows = _by_class(case_metrics(np.where(label == 2, 2, 0), label, FUNDUS))
    assert rows["OC"]["dice"] == pytest.approx(1.0)
    assert rows["OD"]["dice"] == pytest.approx(2 * 64 / (64 + 400))


def test_size_ratio_is_predicted_over_annotated_size():
    label = _square((32, 32), (4, 24), (4, 24), value=1)
    label[10:18, 10:18] = 2
    pred = label.copy()
    pred[10:14, 10:18] = 1  # half the cup predicted as rim: OC under-segmented, OD as annotated
    rows = _by_class(case_metrics(pred, label, FUNDUS))
    assert rows["OC"]["size_ratio"] == pytest.approx(0.5) and rows["OD"]["size_ratio"] == pytest.approx(1.0)
    assert _by_class(case_metrics(np.where(label > 0, 2, 0), label, FUNDUS))["OC"]["size_ratio"] == pytest.approx(400 / 64)
    empty = np.zeros((32, 32), dtype=np.int64)
    assert math.isnan(_by_class(case_metrics(label, empty, FUNDUS))["OC"]["size_ratio"])  # nothing annotated
    assert _by_class(case_metrics(empty, label, FUNDUS))["OC"]["size_ratio"] == 0.0


def test_empty_mask_rules():
    empty = np.zeros((16, 16), dtype=np.int64)
    cup = _square((16, 16), (4, 8), (4, 8))
    both_empty = _by_class(case_metrics(empty, empty, FUNDUS))["OC"]
    assert (both_empty["dice"], both_empty["hd95"]) == (1.0, 0.0)
    for pred, label in ((cup, empty), (empty, cup)):
        one_empty = _by_class(case_metrics(pred, label, FUNDUS))["OC"]
        assert one_empty["dice"] == 0.0
        assert math.isnan(one_empty["hd95"])


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(16, 16\).*\(16, 12\)"):
        case_metrics(np.zeros((16, 16)), np.zeros((1, 16, 12)), FUNDUS)


# ---------------------------------------------------------------- summaries and files


def _synthetic_rows(seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for domain, n_cases in (("siteA", 4), ("siteB", 3)):
        for i in range(n_cases):
            for name in FUNDUS:
                hd95 = math.nan if (domain, i, name) == ("siteA", 1, "OC") else float(rng.uniform(1, 20))
                rows.append(
                    {"domain": domain, "case": f"c{i}", "class": name, "dice": float(rng.uniform()), "hd95": hd95}
                )
    return rows


def test_summary_matches_numpy_and_skips_nan():
    rows = _synthetic_rows()
    summary = summarize(rows, FUNDUS)
    assert len(summary) == 3 * 2 * 2  # (siteA, siteB, all) x (OD, OC) x (dice, hd95)
    for entry in summary:
        values = np.array(
            [
                r[entry["metric"]]
                for r in rows
                if r["class"] == entry["class"] and entry["domain"] in ("all", r["domain"])
            ]
        )
        values = values[~np.isnan(values)]
        assert entry["n"] == values.size
        assert entry["mean"] == pytest.approx(np.mean(values))
        assert entry["std"] == pytest.approx(np.std(values))
        assert entry["median"] == pytest.approx(np.median(values))
    by_key = {(e["domain"], e["class"], e["metric"]): e for e in summary}
    assert by_key[("siteA", "OC", "hd95")]["n"] == 3
    assert by_key[("siteA", "OC", "dice")]["n"] == 4
    assert by_key[("all", "OD", "dice")]["n"] == 7


def test_summary_of_all_nan_values_and_bad_rows():
    rows = [{"domain": "d", "case": "c", "class": "OC", "dice": 0.0, "hd95": math.nan}]
    entry = {(e["class"], e["metric"]): e for e in summarize(rows, FUNDUS)}[("OC", "hd95")]
    assert entry["n"] == 0 and all(math.isnan(entry[k]) for k in ("mean", "std", "median"))
    with pytest.raises(ValueError, match="not a reported class"):
        summarize([{**rows[0], "class": "LV"}], FUNDUS)
    with pytest.raises(ValueError, match="reserved"):
        summarize([{**rows[0], "domain": "all"}], FUNDUS)


def test_size_ratio_column_is_summarised_when_every_row_has_it(tmp_path):
    rows = [{**r, "size_ratio": 0.5 + 0.1 * i} for i, r in enumerate(_synthetic_rows())]
    paths = write_reports(rows, tmp_path / "out", FUNDUS)
    columns, _ = _read_csv(paths["per_case_csv"])
    assert columns == ["domain", "case", "class", "dice", "hd95", "size_ratio"]
    entry = next(e for e in summarize(rows, FUNDUS) if (e["domain"], e["class"], e["metric"]) == ("siteB", "OC", "size_ratio"))
    ratios = [r["size_ratio"] for r in rows if (r["domain"], r["class"]) == ("siteB", "OC")]
    assert entry["mean"] == pytest.approx(np.mean(ratios)) and entry["median"] == pytest.approx(np.median(ratios))
    assert f"| {np.median(ratios):.3f} |" in (md := paths["summary_md"].read_text()) and "size pred/ref median" in md
    assert "size pred/ref" not in write_reports(_synthetic_rows(), tmp_path / "old", FUNDUS)["summary_md"].read_text()
    with pytest.raises(ValueError, match="'size_ratio' value and others not"):
        summarize(rows[:2] + _synthetic_rows()[2:], FUNDUS)


def test_write_reports_files(tmp_path):
    rows = _synthetic_rows()
    paths = write_reports(rows, tmp_path / "out", FUNDUS)

    columns, per_case = _read_csv(paths["per_case_csv"])
    assert columns == ["domain", "case", "class", "dice", "hd95"]
    assert len(per_case) == len(rows)
    assert float(per_case[0]["dice"]) == rows[0]["dice"]  # written without rounding
    assert sum(r["hd95"] == "nan" for r in per_case) == 1

    columns, summary = _read_csv(paths["summary_csv"])
    assert columns == ["domain", "class", "metric", "mean", "std", "median", "n"]
    assert len(summary) == 3 * 2 * 2
    od_all = next(r for r in summary if (r["domain"], r["class"], r["metric"]) == ("all", "OD", "dice"))
    od_dice = [r["dice"] for r in rows if r["class"] == "OD"]
    assert float(od_all["mean"]) == pytest.approx(np.mean(od_dice))
    assert float(od_all["std"]) == pytest.approx(np.std(od_dice))
    assert int(od_all["n"]) == len(od_dice)

    markdown = paths["summary_md"].read_text()
    for text in ("OD (optic disc)", "OC (optic cup)", "siteA", "siteB", "| all |", "Dice mean ± std", "(n=3)"):
        assert text in markdown

    assert set(paths["plots"]) == {"siteA", "siteB", "all"}
    for domain, plot in paths["plots"].items():
        assert plot == tmp_path / "out" / "plots" / f"dice_{domain}.png"
        _assert_png(plot)


# ---------------------------------------------------------------- overlays


def test_save_overlay_rgb_2d_and_grey_3d(tmp_path):
    label = _square((40, 48), (8, 30), (8, 30), value=1)
    label[14:22, 14:22] = 2
    pred = np.roll(label, 2, axis=0)
    image = torch.randn(3, 40, 48) * 2.5 - 1.0  # channel-first RGB, CLIP-style normalisation
    path = save_overlay(image, label[None], pred, tmp_path / "o" / "fundus.png", FUNDUS, title="a / b")
    _assert_png(path)

    volume_label = np.zeros((32, 32, 5), dtype=np.int64)
    volume_label[8:20, 8:20, 3] = 1
    empty_pred = np.zeros_like(volume_label)
    _assert_png(save_overlay(np.random.rand(1, 32, 32, 5), volume_label, empty_pred, tmp_path / "v.png", CARDIAC))
    with pytest.raises(ValueError, match="spatial shape"):
        save_overlay(np.zeros((1, 30, 32, 5)), volume_label, empty_pred, tmp_path / "bad.png", CARDIAC)


# ---------------------------------------------------------------- handler


def _meta_label(array, spacing):
    affine = torch.diag(torch.tensor([*spacing, 1.0, 1.0], dtype=torch.float64))
    return MetaTensor(torch.from_numpy(array)[None], affine=affine, meta={"filename_or_obj": "/d/img_07.nii.gz"})


def _evaluation_batches():
    """Two iterations of decollated items, the forms a MONAI evaluator produces."""
    label = _square((40, 40), (5, 25), (5, 25))
    shifted = _square((40, 40), (8, 28), (5, 25))
    one_hot = torch.nn.functional.one_hot(torch.from_numpy(shifted), 3).permute(2, 0, 1).float()
    image = torch.rand(3, 40, 40)
    first = [
        # label-map pred, anisotropic spacing from the MetaTensor affine
        {
            "pred": torch.from_numpy(shifted)[None],
            "label": _meta_label(label, (2.0, 1.0)),
            "image": image,
            "domain": "siteA",
            "case": "a0",
        },
        # one-hot pred
        {"pred": one_hot, "label": _meta_label(label, (1.0, 1.0)), "image": image, "domain": "siteA", "case": "a1"},
    ]
    perfect = torch.from_numpy(label)[None]
    second = [
        {"pred": perfect, "label": _meta_label(label, (1.0, 1.0)), "image": image, "domain": "siteA", "case": "a2"},
        # no domain/case anywhere: "unknown" domain, case from the file name
        {"pred": perfect, "label": _meta_label(label, (1.0, 1.0)), "image": image},
    ]
    # Input-only keys stay in engine.state.batch in MONAI evaluators; the handler looks there too.
    batches = [
        [{"domain": "ignored"}, {}],
        [{}, {}],
    ]
    return list(zip(batches, (first, second)))


def _engine():
    """An Engine fed ``(batch items, output items)`` pairs; like a MONAI evaluator after
    decollation, ``state.batch`` and ``state.output`` become per-item lists."""

    def step(engine, data):
        engine.state.batch, output = data
        return output

    return Engine(step)


def test_handler_writes_reports_and_sets_metrics(tmp_path, caplog):
    engine = _engine()
    handler = MetricsReportHandler(tmp_path / "eval", FUNDUS, overlays_per_domain=2)
    handler.attach(engine)
    data = _evaluation_batches()
    with caplog.at_level(logging.INFO, logger="emclip.reports"):
        engine.run(data, max_epochs=1)

    _, per_case = _read_csv(tmp_path / "eval" / "metrics_per_case.csv")
    assert len(per_case) == 4 * 2
    by_case = {(r["domain"], r["case"], r["class"]): r for r in per_case}
    assert float(by_case[("siteA", "a0", "OD")]["hd95"]) == pytest.approx(6.0)  # spacing 2 along the shift
    assert float(by_case[("siteA", "a1", "OD")]["hd95"]) == pytest.approx(3.0)  # one-hot pred, argmax'ed
    assert float(by_case[("siteA", "a1", "OD")]["dice"]) == pytest.approx(0.85)
    assert float(by_case[("siteA", "a2", "OC")]["dice"]) == pytest.approx(1.0)
    assert ("unknown", "img_07", "OD") in by_case

    for name in ("metrics_summary.csv", "metrics_summary.md"):
        assert (tmp_path / "eval" / name).is_file()
    for domain in ("siteA", "unknown", "all"):
        _assert_png(tmp_path / "eval" / "plots" / f"dice_{domain}.png")
    overlays = sorted((tmp_path / "eval" / "overlays").rglob("*.png"))
    assert [p.relative_to(tmp_path / "eval").as_posix() for p in overlays] == [
        "overlays/siteA/a0.png",
        "overlays/siteA/a1.png",
        "overlays/unknown/img_07.png",
    ]
    assert "overlays/siteA/a0.png" in (tmp_path / "eval" / "metrics_summary.md").read_text()

    od_dice = [float(r["dice"]) for r in per_case if r["class"] == "OD"]
    assert engine.state.metrics["dice_OD"] == pytest.approx(np.mean(od_dice))
    assert engine.state.metrics["hd95_OD"] == pytest.approx(np.mean([6.0, 3.0, 0.0, 0.0]))
    assert engine.state.metrics["dice_mean"] == pytest.approx(
        (engine.state.metrics["dice_OD"] + engine.state.metrics["dice_OC"]) / 2
    )
    assert any("OD (optic disc)" in r.getMessage() for r in caplog.records)

    engine.run(data, max_epochs=1)  # a second evaluation starts from scratch
    assert len(_read_csv(tmp_path / "eval" / "metrics_per_case.csv")[1]) == 4 * 2


def test_handler_reads_domain_from_batch_and_rejects_undecollated_output(tmp_path, caplog):
    item = {"pred": torch.zeros(1, 8, 8, dtype=torch.long), "label": torch.zeros(1, 8, 8, dtype=torch.long)}
    engine = _engine()
    handler = MetricsReportHandler(tmp_path, FUNDUS, overlays_per_domain=0)
    handler.attach(engine)
    engine.run([([{"domain": "siteZ", "case": "z9"}], [item])], max_epochs=1)
    assert {(r["domain"], r["case"]) for r in handler.rows} == {("siteZ", "z9")}
    assert not (tmp_path / "overlays").exists()

    # An image on another grid than the label (e.g. label inverted to original geometry) gets no
    # overlay, but the case is still scored.
    engine = _engine()
    handler = MetricsReportHandler(tmp_path, FUNDUS)
    handler.attach(engine)
    with caplog.at_level(logging.WARNING, logger="emclip.reports"):
        engine.run([([{}], [{**item, "image": torch.rand(3, 16, 16)}])], max_epochs=1)
    assert len(handler.rows) == 2
    assert not (tmp_path / "overlays").exists()
    assert any("grids differ" in r.getMessage() for r in caplog.records)

    bad = Engine(lambda engine, batch: item)
    MetricsReportHandler(tmp_path, FUNDUS).attach(bad)
    with pytest.raises(TypeError, match="decollate"):
        bad.run([0], max_epochs=1)


@pytest.mark.parametrize("rank", [0, 1])
def test_handler_distributed_gathers_and_writes_on_rank0(tmp_path, monkeypatch, rank):
    label = torch.from_numpy(_square((16, 16), (2, 10), (2, 10)))[None]
    own = [{"pred": label, "label": label, "image": torch.rand(1, 16, 16), "domain": "d", "case": "r0"}]
    # The other rank repeats case r0, as a padding DistributedSampler would, and has r1.
    other = [{"domain": "d", "case": c, "class": k, "dice": 0.5, "hd95": 1.0, "size_ratio": 1.0} for c in ("r0", "r1") for k in ("OD", "OC")]

    def all_gather_object(out, rows):
        out[:] = [rows, other] if rank == 0 else [other, rows]

    fake = SimpleNamespace(
        is_available=lambda: True,
        is_initialized=lambda: True,
        get_world_size=lambda: 2,
        get_rank=lambda: rank,
        all_gather_object=all_gather_object,
    )
    monkeypatch.setattr(handler_module, "dist", fake)
    engine = _engine()
    MetricsReportHandler(tmp_path, FUNDUS).attach(engine)
    engine.run([([{}], own)], max_epochs=1)

    assert "dice_OD" in engine.state.metrics  # every rank gets the metrics
    if rank == 1:
        assert list(tmp_path.iterdir()) == []  # neither reports nor overlays
        return
    _, per_case = _read_csv(tmp_path / "metrics_per_case.csv")
    assert sorted((r["case"], r["class"]) for r in per_case) == [("r0", "OC"), ("r0", "OD"), ("r1", "OC"), ("r1", "OD")]
    assert {float(r["dice"]) for r in per_case if r["case"] == "r0"} == {1.0}  # rank 0's copy is kept
    assert (tmp_path / "overlays" / "d" / "r0.png").is_file()


def test_handler_in_monai_evaluator_feeds_checkpoint_saver(tmp_path):
    affine = torch.diag(torch.tensor([0.5, 0.5, 1.0, 1.0], dtype=torch.float64))
    label = _square((24, 24), (4, 16), (4, 16), value=1)
    label[8:12, 8:12] = 2
    data = [
        {
            "image": MetaTensor(torch.rand(3, 24, 24), affine=affine),
            "label": MetaTensor(torch.from_numpy(label)[None], affine=affine),
            "domain": f"site{i % 2}",
            "case": f"c{i}",
        }
        for i in range(3)
    ]
    torch.manual_seed(0)
    net = torch.nn.Conv2d(3, 3, 1)
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(Dataset(data), batch_size=2),
        network=net,
        postprocessing=AsDiscreted(keys="pred", argmax=True),
        val_handlers=[
            MetricsReportHandler(tmp_path / "eval", FUNDUS, overlays_per_domain=1),
            # Runs after the report handler on EPOCH_COMPLETED, so it can key on its metrics.
            CheckpointSaver(str(tmp_path / "ckpt"), {"net": net}, save_key_metric=True, key_metric_name="dice_mean"),
        ],
    )
    evaluator.run()

    _, per_case = _read_csv(tmp_path / "eval" / "metrics_per_case.csv")
    assert sorted({(r["domain"], r["case"]) for r in per_case}) == [("site0", "c0"), ("site0", "c2"), ("site1", "c1")]
    assert sorted(p.name for p in (tmp_path / "eval" / "overlays").rglob("*.png")) == ["c0.png", "c1.png"]
    assert [p.name for p in (tmp_path / "ckpt").iterdir()] == [
        f"net_key_metric={evaluator.state.metrics['dice_mean']:.4f}.pt"
    ]
