"""A third task that exists only as configuration: data in the generic 2D layout, an overlay copied
from task_2d.yaml, a prompts JSON and a metadata channel_def; trained, evaluated, inferred, checked
and packaged through the same commands as fundus and cardiac, with no Python of its own."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import REPO
from emclip.configs import CONFIGS, bundle_command, list_arg

# a made-up task: a round "lesion" (1) with a "core" (2) inside it, on a textured background
CLASSES = {"0": "background", "1": "lesion", "2": "core"}
DOMAINS = {"A": (0.8, 0.5, 0.4), "B": (0.4, 0.6, 0.8)}  # each domain its own colour cast


def _write_case(folder: Path, name: str, rng: np.random.Generator, tint: tuple[float, float, float], size: int = 80):
    yy, xx = np.mgrid[0:size, 0:size]
    (cy, cx), r = rng.uniform(0.35, 0.65, 2) * size, rng.uniform(0.18, 0.3) * size
    dist = np.hypot(yy - cy, xx - cx)
    label = np.where(dist < r, 1, 0) + np.where(dist < 0.45 * r, 1, 0)
    shade = 0.75 - 0.25 * label + rng.normal(0, 0.04, (size, size))
    rgb = np.clip(shade[..., None] * np.array(tint) * 255, 0, 255).astype(np.uint8)
    for sub, array in (("image", rgb), ("label", label.astype(np.uint8))):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(folder / sub / f"{name}.png")


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    """The task's data, prompts, metadata and overlay, all written as a user would write them."""
    root = tmp_path_factory.mktemp("lesions")
    rng = np.random.default_rng(0)
    for domain, tint in DOMAINS.items():
        for k in range(6):
            _write_case(root / "data" / domain / "train", f"{domain}{k:02d}", rng, tint)
    prompts = {"task": "lesions", "classes": {
        "background": ["plain textured background around a spot"],
        "lesion": ["a round lesion in the image"],
        "core": ["the darker core in the middle of the lesion"],
    }}
    (root / "lesions_prompts.json").write_text(json.dumps(prompts))
    meta = {
        "name": "EM-CLIP lesion and core segmentation",
        "network_data_format#inputs#image#spatial_shape": [64, 64],
        "network_data_format#outputs#pred#num_channels": 3,
        "network_data_format#outputs#pred#spatial_shape": [64, 64],
        "network_data_format#outputs#pred#channel_def": CLASSES,
    }
    (root / "metadata_lesions.json").write_text(json.dumps(meta))
    overlay = yaml.safe_load((CONFIGS / "task_2d.yaml").read_text())
    overlay.update(task="lesions", dataset_dir=str(root / "data"), num_classes=3, spatial_size=[64, 64],
                   prompts=str(root / "lesions_prompts.json"))
    (root / "lesions.yaml").write_text(yaml.safe_dump(overlay, sort_keys=False))
    return root


def _run(cmd: list[str], cwd: Path = REPO) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def test_third_task_runs_end_to_end_from_configuration(task, tmp_path):
    overlay = task / "lesions.yaml"
    tiny = {"epochs": 1, "batch_size": 2, "num_workers": 0, "network_def#em_bases": 8}
    common = {"bundle_root": tmp_path, "train_domains": list_arg(["A"])}

    check = _run([sys.executable, "-m", "emclip.data.datalist", "--task", str(overlay), "--root", str(task / "data"), "--check"])
    assert "checked 12 items: 0 errors" in check.stdout

    _run(bundle_command("training", ["train"], overlay, **common, **tiny))
    ckpt = tmp_path / "models" / "lesions" / "model.pt"
    assert ckpt.is_file()

    _run(bundle_command("evaluating", ["train", "evaluate"], overlay, **common, **{"network_def#em_bases": 8}))
    with open(tmp_path / "eval" / "lesions" / "metrics_summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["domain"] for r in rows} == {"B", "all"}
    assert {r["class"] for r in rows} == {"lesion", "core"}  # named by the metadata's channel_def

    image = task / "data" / "B" / "train" / "image" / "B00.png"
    _run(bundle_command("inferring", ["inference"], overlay, bundle_root=tmp_path, input_dir=image, **{"network_def#em_bases": 8}))
    pred = np.asarray(Image.open(tmp_path / "predictions" / "lesions" / "B00.png"))
    assert pred.shape == (80, 80) and set(np.unique(pred)) <= {0, 1, 2}  # the input's size, index labels

    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "emclip.packaging", "--task", str(overlay), "--output", str(dist), "--ckpt", str(ckpt)])
    bundle = dist / "emclip_lesions_segmentation"
    assert (bundle / "configs" / "lesions_prompts.json").is_file()  # the prompts travel with the bundle
    metadata = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert metadata["network_data_format"]["outputs"]["pred"]["channel_def"] == CLASSES
    _run([sys.executable, "-m", "monai.bundle", "run", "inferring", "--meta_file", "configs/metadata.json",
          "--config_file", "configs/inference.yaml", "--input_dir", str(image), "--network_def#em_bases", "8"], cwd=bundle)
    assert (bundle / "predictions" / "B00.png").is_file()


def test_overlay_that_disagrees_with_its_metadata_stops_with_one_line(task, tmp_path):
    overlay = yaml.safe_load((task / "lesions.yaml").read_text())
    overlay["num_classes"] = 4  # more classes than the metadata's channel_def names
    (tmp_path / "lesions.yaml").write_text(yaml.safe_dump(overlay))
    (tmp_path / "metadata_lesions.json").write_text((task / "metadata_lesions.json").read_text())
    out = subprocess.run(bundle_command("training", ["train"], tmp_path / "lesions.yaml", bundle_root=tmp_path, epochs=1),
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    assert out.stderr.strip().splitlines()[-1].startswith("meta_file: the metadata describes 3 input channels and 3 classes")
