"""The packaged bundles served and trained by MONAI Label's `monaibundle` app, offline.

A real `monailabel start_server` runs as a subprocess on 127.0.0.1 (see
`emclip.packaging.label_server`) with both packaged bundles and a third fundus bundle without
`models/model.pt` in `<app>/model/`, and a datastore of synthetic fundus PNGs, one synthetic cardiac
volume and two corrupt files. Skipped where MONAI Label is not installed (the `label` extra).
"""

import io
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("monailabel")
nib = pytest.importorskip("nibabel")
Image = pytest.importorskip("PIL.Image")

from emclip.data import read_fundus_label, write_synthetic  # noqa: E402
from emclip.packaging import BUNDLE_NAMES, build_bundle, write_untrained_weights  # noqa: E402
from emclip.packaging.label_server import LabelServer, create_app  # noqa: E402
from emclip.packaging.label_strategy import STRATEGY_NAME, add_strategy  # noqa: E402

LABELS = {"fundus": {0, 1, 2}, "cardiac": {0, 1, 2, 3}}
UNTRAINED = "emclip_fundus_segmentation_untrained"
# fewer than the fundus batch size (8): training must still run; MONAI Label's 20 % validation
# split leaves 2 for training and 1 for validation
TRAIN_IMAGES = 3


@dataclass
class Served:
    """The running server, its app folder, datastore ids by name, inferred images and fundus labels."""

    server: LabelServer
    app: Path
    ids: dict[str, str]
    images: dict[str, Path]
    labels: dict[str, Path]

    def infer(self, task: str, name: str):
        return self.server.infer(BUNDLE_NAMES.get(task, task), self.ids[name])


def _slicer_label(mask: Path, path: Path) -> Path:
    """The label of ``mask`` as 3D Slicer submits one for a 2D image: a NIfTI of voxels (column, row, 0)."""
    nib.save(nib.Nifti1Image(read_fundus_label(mask).T[..., None], np.eye(4)), str(path))
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("monailabel")
    app = create_app(root / "apps")
    assert (app / "main.py").is_file()

    # both bundles, each with a checkpoint of exactly the packaged inference network, and one without
    for task, name in BUNDLE_NAMES.items():
        build_bundle(task, app / "model", write_untrained_weights(task, root / f"{task}.pt"))
        assert (app / "model" / name / "models" / "model.pt").is_file()
    shutil.move(build_bundle("fundus", root / "untrained"), app / "model" / UNTRAINED)

    # datastore: fundus PNGs (the first is the one inferred), labels for TRAIN_IMAGES of them (PNG
    # masks, and one NIfTI as Slicer submits), one cardiac ED volume (not its _gt), two corrupt files
    write_synthetic(root / "synthetic", "fundus", per_domain=1, image_size=128, progress=False)
    write_synthetic(root / "synthetic", "cardiac", per_domain=1, progress=False)
    studies, labels = root / "studies", root / "labels"
    studies.mkdir()
    labels.mkdir()
    fundus = sorted((root / "synthetic" / "fundus").rglob("image/*.png"))[:TRAIN_IMAGES]
    assert len(fundus) == TRAIN_IMAGES
    label_files = {}
    for i, path in enumerate(fundus):
        shutil.copy2(path, studies / f"fundus_{i}.png")
        mask = path.parent.parent / "mask" / path.name
        label_files[f"fundus_{i}.png"] = _slicer_label(mask, labels / f"fundus_{i}.nii.gz") if i == 0 else mask
    cardiac = sorted((root / "synthetic" / "cardiac").glob("*_sa_ED.nii.gz"))[0]
    images = {"fundus": studies / "fundus_0.png", "cardiac": studies / "cardiac_0.nii.gz",
              "corrupt fundus": studies / "corrupt_0.png", "corrupt cardiac": studies / "corrupt_1.nii.gz"}
    shutil.copy2(cardiac, images["cardiac"])
    images["corrupt fundus"].write_bytes(b"\x89PNG\r\n\x1a\n" + b"not a png chunk " * 32)
    images["corrupt cardiac"].write_bytes(b"not a gzip stream " * 32)

    with LabelServer(app, studies, [*BUNDLE_NAMES.values(), UNTRAINED], root / "server.log") as server:
        server.start()
        ids = server.image_ids()
        ids.update({key: ids[path.name] for key, path in images.items()})
        yield Served(server, app, ids, images, label_files)


def test_info_lists_both_bundles_with_metadata_labels(served):
    info = served.server.info()
    models = info["models"]
    assert set(BUNDLE_NAMES.values()) <= set(models)
    assert models[BUNDLE_NAMES["fundus"]]["labels"] == {"optic disc rim": 1, "optic cup": 2}
    assert models[BUNDLE_NAMES["cardiac"]]["labels"] == {"left ventricle": 1, "myocardium": 2, "right ventricle": 3}
    assert models[BUNDLE_NAMES["fundus"]]["dimension"] == 2
    assert set(BUNDLE_NAMES.values()) <= set(info["trainers"])


def test_infer_fundus_png(served):
    res = served.infer("fundus", "fundus")
    assert res.status_code == 200, res.text[:2000] + served.server.log_tail()
    label = np.asarray(Image.open(io.BytesIO(res.content)))
    source = Image.open(served.images["fundus"])
    assert label.shape == (source.height, source.width)
    assert set(np.unique(label).tolist()) <= LABELS["fundus"]


def test_infer_cardiac_volume(served, tmp_path):
    res = served.infer("cardiac", "cardiac")
    assert res.status_code == 200, res.text[:2000] + served.server.log_tail()
    out = tmp_path / "label.nii.gz"
    out.write_bytes(res.content)
    label, source = nib.load(str(out)), nib.load(str(served.images["cardiac"]))
    assert label.shape == source.shape
    np.testing.assert_allclose(label.affine, source.affine, atol=1e-3)
    assert set(np.unique(np.asarray(label.dataobj)).astype(int).tolist()) <= LABELS["cardiac"]


def test_concurrent_requests(served):
    jobs = [("fundus", "fundus")] * 12 + [("cardiac", "cardiac")] * 4
    with ThreadPoolExecutor(len(jobs)) as pool:
        results = list(pool.map(lambda job: served.infer(*job), jobs))
    assert [r.status_code for r in results] == [200] * len(jobs), served.server.log_tail()
    for (task, _), res in zip(jobs, results):
        if task == "fundus":
            assert set(np.unique(np.asarray(Image.open(io.BytesIO(res.content)))).tolist()) <= LABELS["fundus"]


@pytest.mark.parametrize("task, cause", [("fundus", "cannot identify image file"), ("cardiac", "is not a gzip file")])
def test_corrupt_image_gets_a_clear_error_and_server_keeps_serving(served, task, cause):
    res = served.infer(task, f"corrupt {task}")
    # the bundle's reader error, answered as HTTP 422 with its message (not a bare 500)
    assert res.status_code == 422, res.text[:2000]
    detail = res.json()["detail"]
    assert detail.startswith(f"cannot read image file {served.images[f'corrupt {task}']}: ") and cause in detail
    res = served.infer(task, task)
    assert res.status_code == 200, res.text[:2000]


def test_missing_checkpoint_is_reported_at_start(served):
    log = served.server.log_text()
    started = log.index("Application startup complete")
    warning = f"Ignore {served.app / 'model' / UNTRAINED} as neither model.pt nor model.ts exists"
    assert -1 < log.find(warning) < started
    info = served.server.info()
    # no model to run until weights are there; training is offered, and writes them
    assert UNTRAINED not in info["models"] and UNTRAINED in info["trainers"]
    res = served.infer(UNTRAINED, "fundus")
    assert res.status_code >= 400


def _submit_labels(served):
    for name, label in served.labels.items():
        served.server.put_label(served.ids[name], label)


def test_train_untrained_bundle_writes_its_checkpoint(served, tmp_path):
    _submit_labels(served)
    model = served.app / "model" / UNTRAINED / "models" / "model.pt"
    assert not model.exists()
    write_untrained_weights("fundus", tmp_path / "fundus.pt")
    task = served.server.train(UNTRAINED, {"max_epochs": 1, "device": "cpu"})
    assert task["status"] == "DONE", served.server.log_tail()
    assert set(torch.load(model, weights_only=True)) == set(torch.load(tmp_path / "fundus.pt", weights_only=True))


def test_retrain_fundus_updates_the_served_model(served):
    _submit_labels(served)
    model = served.app / "model" / BUNDLE_NAMES["fundus"] / "models" / "model.pt"
    before = model.stat().st_mtime_ns
    task = served.server.train(BUNDLE_NAMES["fundus"], {"max_epochs": 1, "device": "cpu"})
    assert task["status"] == "DONE", served.server.log_tail()
    assert model.stat().st_mtime_ns != before
    # the next request loads the new weights: MONAI Label reloads a model whose file time changed
    reloads = served.server.log_text().count("Reload model from cache")
    res = served.infer("fundus", "fundus")
    assert res.status_code == 200, res.text[:2000] + served.server.log_tail()
    assert served.server.log_text().count("Reload model from cache") == reloads + 1


@pytest.mark.parametrize("task", list(BUNDLE_NAMES))
def test_epistemic_scoring_and_most_uncertain_strategy(tmp_path, task):
    """The app's Monte Carlo dropout scoring runs on the bundle, and the strategy serves by its score.

    A server of its own: the scoring runs every unlabelled image through the bundle, so the datastore
    holds images of this task only.
    """
    name = BUNDLE_NAMES[task]
    app = create_app(tmp_path / "apps")
    add_strategy(app)
    # untrained, but with the class text embeddings: predictions vary over an image, and between passes
    build_bundle(task, app / "model", write_untrained_weights(task, tmp_path / f"{task}.pt", encode_text=True))
    write_synthetic(tmp_path / "synthetic", task, per_domain=1, image_size=128, progress=False)
    pattern = "image/*.png" if task == "fundus" else "*_sa_ED.nii.gz"
    studies = tmp_path / "studies"
    studies.mkdir()
    for path in sorted((tmp_path / "synthetic" / task).rglob(pattern))[:3]:
        shutil.copy2(path, studies / f"{path.parent.parent.name}_{path.name}")
    # scoring is requested below, not started by the server on its own
    conf = {"epistemic_model": name, "epistemic_simulation_size": "3"}
    with LabelServer(app, studies, [name], tmp_path / "server.log", conf,
                     {"MONAI_LABEL_AUTO_UPDATE_SCORING": "false"}) as server:
        server.start()
        info = server.info()
        assert STRATEGY_NAME in info["strategies"] and name in info["scoring"]
        ids = list(server.image_ids().values())
        assert len(ids) == 3
        summary = server.score(name, {"device": "cpu", "max_workers": 1})
        assert summary["executed"] == 3, server.log_tail()
        scores = {i: server.image_info(i)["epistemic_entropy"] for i in ids}
        assert all(np.isfinite(v) for v in scores.values()) and len(set(scores.values())) == 3, scores
        ranked = sorted(scores, key=scores.get, reverse=True)
        first = server.next_sample(STRATEGY_NAME)
        assert (first["id"], first["epistemic_entropy"]) == (ranked[0], scores[ranked[0]])
        # an image just served goes to the next annotator only when nothing else is left
        assert server.next_sample(STRATEGY_NAME)["id"] == ranked[1]
        assert server.next_sample(STRATEGY_NAME, {"recently_served": 0})["id"] == ranked[0]
