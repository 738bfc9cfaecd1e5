"""The packaged bundles served and trained by MONAI Label's `monaibundle` sample app, offline.

A real `monailabel start_server` runs as a subprocess on 127.0.0.1 with both packaged bundles in
`<app>/model/` and a datastore of synthetic fundus PNGs, one synthetic cardiac volume and one corrupt
file. Offline the server needs `--conf zoo_source github` (no NGC look-up) and `--conf sam2 false` (no
SAM2 download). Skipped where MONAI Label is not installed (`pip install monailabel==0.8.5
pydicom==2.4.4 dicomweb-client==0.59.3 pynetdicom==2.1.1`: pydicom 3 breaks the server's start).
"""

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

pytest.importorskip("monailabel")
requests = pytest.importorskip("requests")
nib = pytest.importorskip("nibabel")
Image = pytest.importorskip("PIL.Image")

from emclip.data import write_synthetic  # noqa: E402
from emclip.packaging import BUNDLE_NAMES, build_bundle, packaged_configs  # noqa: E402

HOST = "127.0.0.1"
START_TIMEOUT = 120
INFER_TIMEOUT = 300
TRAIN_TIMEOUT = 600
LABELS = {"fundus": {0, 1, 2}, "cardiac": {0, 1, 2, 3}}
TIMINGS: dict[str, float] = {}
NOTES: dict[str, str] = {}
# MONAI Label holds out 20 % for validation and the fundus train config's batch size is 8 with
# drop_last: 10 labelled images give one training batch and a non-empty validation
TRAIN_IMAGES = 10


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _monailabel() -> list[str]:
    """The `monailabel` command of the running interpreter's environment."""
    script = Path(sys.executable).parent / "monailabel"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "monailabel.main"]


def _env() -> dict[str, str]:
    """Environment for `monailabel`: the script runs the first `python` on PATH, so this one's first."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return {**os.environ, "PATH": path, "BUNDLE_DOWNLOAD_SRC": "github", "MONAI_LABEL_DATASTORE_AUTO_RELOAD": "false"}


class Server:
    """A running server: its URL, app folder, datastore ids, inferred images, fundus masks and log."""

    def __init__(self, url: str, app: Path, ids: dict[str, str], images: dict[str, Path],
                 masks: dict[str, Path], log: Path):
        self.url, self.app, self.ids, self.images, self.masks, self.log = url, app, ids, images, masks, log

    def infer(self, task_or_model: str, image: str, timeout: float = INFER_TIMEOUT) -> requests.Response:
        model = BUNDLE_NAMES.get(task_or_model, task_or_model)
        return requests.post(f"{self.url}/infer/{model}", params={"image": image, "output": "image"},
                             timeout=timeout)

    def timed_infer(self, task: str) -> requests.Response:
        """Infer ``task``'s image: the first call's latency and the median of 3 more (warm) calls."""
        start = time.monotonic()
        res = self.infer(task, self.ids[task])
        TIMINGS[f"{task} infer first (s)"] = time.monotonic() - start
        warm = []
        for _ in range(3):
            start = time.monotonic()
            assert self.infer(task, self.ids[task]).status_code == res.status_code
            warm.append(time.monotonic() - start)
        TIMINGS[f"{task} infer warm median (s)"] = float(np.median(warm))
        return res

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.is_file() else ""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("monailabel")

    # the monaibundle sample app ships in the wheel: no download
    subprocess.run([*_monailabel(), "apps", "--download", "--name", "monaibundle", "--output", str(root / "apps")],
                   check=True, capture_output=True, timeout=120, env=_env())
    app = root / "apps" / "monaibundle"
    assert (app / "main.py").is_file()

    # both bundles, each with a checkpoint of exactly the packaged inference network
    for task, name in BUNDLE_NAMES.items():
        ckpt = root / f"{task}.pt"
        torch.save(ConfigParser(packaged_configs(task)["inference.yaml"]).get_parsed_content("network_def").state_dict(),
                   ckpt)
        build_bundle(task, app / "model", ckpt)
        assert (app / "model" / name / "models" / "model.pt").is_file()

    # datastore: fundus PNGs (the first is the one inferred; TRAIN_IMAGES get labels for training), one
    # cardiac ED volume (not its _gt), one corrupt image
    write_synthetic(root / "synthetic", "fundus", per_domain=4, image_size=128, progress=False)
    write_synthetic(root / "synthetic", "cardiac", per_domain=1, progress=False)
    studies = root / "studies"
    studies.mkdir()
    fundus = sorted((root / "synthetic" / "fundus").rglob("image/*.png"))[:TRAIN_IMAGES]
    assert len(fundus) == TRAIN_IMAGES
    masks = {}
    for i, path in enumerate(fundus):
        shutil.copy2(path, studies / f"fundus_{i}.png")
        masks[f"fundus_{i}.png"] = path.parent.parent / "mask" / path.name
    cardiac = sorted((root / "synthetic" / "cardiac").glob("*_sa_ED.nii.gz"))[0]
    images = {"fundus": studies / "fundus_0.png", "cardiac": studies / "cardiac_0.nii.gz"}
    shutil.copy2(cardiac, images["cardiac"])
    (studies / "corrupt_0.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not a png chunk " * 32)

    port = _free_port()
    url = f"http://{HOST}:{port}"
    log = root / "server.log"
    cmd = [*_monailabel(), "start_server", "--app", str(app), "--studies", str(studies),
           "--conf", "models", ",".join(BUNDLE_NAMES.values()), "--conf", "zoo_source", "github",
           "--conf", "sam2", "false", "--host", HOST, "--port", str(port)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=root, env=_env(), start_new_session=True)
    try:
        start = time.monotonic()
        while True:
            assert proc.poll() is None, f"server exited with {proc.returncode}:\n{log.read_text(errors='replace')[-4000:]}"
            assert time.monotonic() - start < START_TIMEOUT, f"no /info/ in {START_TIMEOUT} s:\n{log.read_text()[-4000:]}"
            try:
                if requests.get(f"{url}/info/", timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.5)
        TIMINGS["server start (s)"] = time.monotonic() - start

        objects = requests.get(f"{url}/datastore/", params={"output": "all"}, timeout=30).json()["objects"]
        by_file = {}
        for image_id, obj in objects.items():
            by_file[obj["image"]["info"]["name"]] = image_id
        ids = {task: by_file[path.name] for task, path in images.items()}
        ids["corrupt"] = by_file["corrupt_0.png"]
        masks = {by_file[name]: mask for name, mask in masks.items()}
        yield Server(url, app, ids, images, masks, log)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=20)
        print("\nMONAI Label timings:", json.dumps({k: round(v, 3) for k, v in TIMINGS.items()}), json.dumps(NOTES))


def test_info_lists_both_bundles_with_metadata_labels(server):
    info = requests.get(f"{server.url}/info/", timeout=30).json()
    models = info["models"]
    assert set(BUNDLE_NAMES.values()) <= set(models)
    assert models[BUNDLE_NAMES["fundus"]]["labels"] == {"optic disc rim": 1, "optic cup": 2}
    assert models[BUNDLE_NAMES["cardiac"]]["labels"] == {"left ventricle": 1, "myocardium": 2, "right ventricle": 3}
    assert models[BUNDLE_NAMES["fundus"]]["dimension"] == 2
    assert set(BUNDLE_NAMES.values()) <= set(info["trainers"])
    assert TIMINGS["server start (s)"] < START_TIMEOUT


def test_infer_fundus_png(server):
    res = server.timed_infer("fundus")
    assert res.status_code == 200, res.text[:2000] + server.log_tail()
    label = np.asarray(Image.open(io.BytesIO(res.content)))
    source = Image.open(server.images["fundus"])
    assert label.shape == (source.height, source.width)
    assert set(np.unique(label).tolist()) <= LABELS["fundus"]


def test_infer_cardiac_volume(server, tmp_path):
    res = server.timed_infer("cardiac")
    assert res.status_code == 200, res.text[:2000] + server.log_tail()
    out = tmp_path / "label.nii.gz"
    out.write_bytes(res.content)
    label, source = nib.load(str(out)), nib.load(str(server.images["cardiac"]))
    assert label.shape == source.shape
    np.testing.assert_allclose(label.affine, source.affine, atol=1e-3)
    assert set(np.unique(np.asarray(label.dataobj)).astype(int).tolist()) <= LABELS["cardiac"]


def test_concurrent_requests(server):
    jobs = [("fundus", server.ids["fundus"])] * 12 + [("cardiac", server.ids["cardiac"])] * 4
    start = time.monotonic()
    with ThreadPoolExecutor(len(jobs)) as pool:
        results = list(pool.map(lambda job: server.infer(*job), jobs))
    TIMINGS["16 concurrent (s)"] = time.monotonic() - start
    assert [r.status_code for r in results] == [200] * len(jobs), server.log_tail()
    for (task, _), res in zip(jobs, results):
        if task == "fundus":
            assert set(np.unique(np.asarray(Image.open(io.BytesIO(res.content)))).tolist()) <= LABELS["fundus"]


def test_corrupt_image_fails_and_server_keeps_serving(server):
    res = server.infer("fundus", server.ids["corrupt"])
    NOTES["corrupt image"] = f"{res.status_code} {res.text[:200]}"
    assert 400 <= res.status_code < 600
    assert res.text.strip()
    res = server.infer("fundus", server.ids["fundus"])
    assert res.status_code == 200, res.text[:2000]


def test_train_fundus_through_server(server):
    for image_id, mask in server.masks.items():
        with open(mask, "rb") as f:
            res = requests.put(f"{server.url}/datastore/label", params={"image": image_id},
                               files={"label": (f"{image_id}.png", f, "image/png")}, timeout=60)
        assert res.status_code == 200, res.text[:2000]
    model = server.app / "model" / BUNDLE_NAMES["fundus"] / "models" / "model.pt"
    before = model.stat().st_mtime_ns
    # asynchronous, as MONAI Label's clients start it: the server trains in a subprocess of its own
    start = time.monotonic()
    res = requests.post(f"{server.url}/train/{BUNDLE_NAMES['fundus']}", json={"max_epochs": 1, "device": "cpu"},
                        timeout=60)
    assert res.status_code == 200, res.text[:2000] + server.log_tail()
    task_id = res.json()["id"]
    while True:
        assert time.monotonic() - start < TRAIN_TIMEOUT, f"training still running:\n{server.log_tail()}"
        task = requests.get(f"{server.url}/train/", timeout=30).json()
        if task["id"] == task_id and task["status"] not in ("SUBMITTED", "RUNNING"):
            break
        time.sleep(1)
    TIMINGS["train 1 epoch (s)"] = time.monotonic() - start
    assert task["status"] == "DONE", server.log_tail()
    assert model.is_file() and model.stat().st_mtime_ns != before, res.text[:2000] + server.log_tail()
    # the new weights still serve (the first call reloads the model and re-imports the bundle's scripts)
    start = time.monotonic()
    res = server.infer("fundus", server.ids["fundus"])
    TIMINGS["fundus infer after training (s)"] = time.monotonic() - start
    assert res.status_code == 200, res.text[:2000] + server.log_tail()
