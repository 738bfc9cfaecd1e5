"""Serve packaged bundles with MONAI Label's ``monaibundle`` sample app offline, and time the server.

``python -m emclip.packaging.label_server --output DIR --fundus PNG --cardiac NIFTI [--train DIR]``
packages both bundles (weights from ``--fundus-ckpt``/``--cardiac-ckpt``, else an untrained network
of the packaged architecture, which takes as long), creates the app and a datastore of the given
images, starts a server on 127.0.0.1 and prints as JSON: the server's start time, the first and the
median warm infer latency per image, 16 concurrent requests (status codes and wall time) and, with
``--train`` (a fundus ``<split>`` folder with ``image/`` and ``mask/``), one training epoch through
the server. Needs the ``label`` extra.

Offline, MONAI Label needs :data:`OFFLINE_CONF` (no look-up of the Model Zoo's list, no SAM2 weights
download) and :data:`OFFLINE_ENV`; the bundles must already sit in ``<app>/model/<name>``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

HOST = "127.0.0.1"
OFFLINE_CONF = ("--conf", "zoo_source", "github", "--conf", "sam2", "false")
OFFLINE_ENV = {"BUNDLE_DOWNLOAD_SRC": "github", "MONAI_LABEL_DATASTORE_AUTO_RELOAD": "false"}


def monailabel_command() -> list[str]:
    """The ``monailabel`` command of the running interpreter's environment."""
    script = Path(sys.executable).parent / "monailabel"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "monailabel.main"]


def server_env() -> dict[str, str]:
    """Environment for ``monailabel``: offline settings, and this interpreter's folder first on PATH
    (the script starts the server with the first ``python`` there)."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return {**os.environ, "PATH": path, **OFFLINE_ENV}


def create_app(folder: Path) -> Path:
    """Copy the ``monaibundle`` sample app, which ships in the monailabel wheel, to ``folder``.

    Returns:
        The app folder (``folder/monaibundle``); bundles go in its ``model/``.
    """
    subprocess.run([*monailabel_command(), "apps", "--download", "--name", "monaibundle", "--output", str(folder)],
                   check=True, capture_output=True, timeout=120, env=server_env())
    return Path(folder) / "monaibundle"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class LabelServer:
    """``monailabel start_server`` as a subprocess on 127.0.0.1; a context manager that stops it.

    Args:
        app: the app folder.
        studies: the datastore folder.
        models: bundle names (folders of ``<app>/model``) to serve.
        log: file for the server's output.
        conf: more ``--conf`` options (``{"epistemic_model": "<bundle>"}``, ...).
        env: more environment variables (MONAI Label's settings, such as
            ``MONAI_LABEL_AUTO_UPDATE_SCORING``).
    """

    def __init__(self, app: Path, studies: Path, models: list[str], log: Path, conf: dict[str, str] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.app, self.studies, self.models, self.log = Path(app), Path(studies), list(models), Path(log)
        self.conf, self.env = dict(conf or {}), dict(env or {})
        self.url = f"http://{HOST}:{free_port()}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120) -> float:
        """Start the server and wait until ``/info/`` answers.

        Returns:
            Seconds from the start of the process to the first answer.

        Raises:
            RuntimeError: the server exited or did not answer in ``timeout`` s (with its log's end).
        """
        cmd = [*monailabel_command(), "start_server", "--app", str(self.app), "--studies", str(self.studies),
               "--conf", "models", ",".join(self.models), *OFFLINE_CONF,
               *[arg for key, value in self.conf.items() for arg in ("--conf", key, value)], "--host", HOST,
               "--port", self.url.rsplit(":", 1)[1]]
        start = time.monotonic()
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=self.log.parent,
                                         env={**server_env(), **self.env}, start_new_session=True)
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() - start > timeout:
                raise RuntimeError(f"no answer from {self.url}/info/ in {timeout} s:\n{self.log_tail()}")
            try:
                if requests.get(f"{self.url}/info/", timeout=5).status_code == 200:
                    return time.monotonic() - start
            except requests.RequestException:
                pass
            time.sleep(0.25)

    def stop(self) -> None:
        """Stop the server and the processes it started (its session)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=20)

    def __enter__(self) -> LabelServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.is_file() else ""

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_text()[-chars:]

    def info(self) -> dict[str, Any]:
        return requests.get(f"{self.url}/info/", timeout=30).json()

    def image_ids(self) -> dict[str, str]:
        """``{file name: datastore id}`` of the datastore's images."""
        objects = requests.get(f"{self.url}/datastore/", params={"output": "all"}, timeout=30).json()["objects"]
        return {obj["image"]["info"]["name"]: image_id for image_id, obj in objects.items()}

    def infer(self, model: str, image_id: str, timeout: float = 300) -> requests.Response:
        """``POST /infer/<model>?image=<id>``, answered with the label file itself."""
        return requests.post(f"{self.url}/infer/{model}", params={"image": image_id, "output": "image"},
                             timeout=timeout)

    def put_label(self, image_id: str, label: Path) -> None:
        """Store ``label`` as the final label of ``image_id`` (as a client's "submit label" does)."""
        with open(label, "rb") as f:
            res = requests.put(f"{self.url}/datastore/label", params={"image": image_id},
                               files={"label": (f"{image_id}{''.join(Path(label).suffixes)}", f)}, timeout=60)
        res.raise_for_status()

    def image_info(self, image_id: str) -> dict[str, Any]:
        """The datastore's info of ``image_id`` (scores included)."""
        res = requests.get(f"{self.url}/datastore/image/info", params={"image": image_id}, timeout=30)
        res.raise_for_status()
        return res.json()

    def score(self, method: str, params: dict[str, Any], timeout: float = 600) -> dict[str, Any]:
        """``POST /scoring/<method>`` run in the server's process, answered when it is done."""
        res = requests.post(f"{self.url}/scoring/{method}", params={"run_sync": "true"}, json=params, timeout=timeout)
        res.raise_for_status()
        return res.json()

    def next_sample(self, strategy: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """``POST /activelearning/<strategy>``: the image to label next (``{}`` if none)."""
        res = requests.post(f"{self.url}/activelearning/{strategy}", json=params or {}, timeout=60)
        res.raise_for_status()
        return res.json()

    def train(self, model: str, params: dict[str, Any], timeout: float = 600) -> dict[str, Any]:
        """``POST /train/<model>`` and wait until that task finishes.

        MONAI Label's clients start training asynchronously too: the server trains in a process
        of its own. Returns the task's final status record (``status`` is ``DONE`` on success).
        """
        res = requests.post(f"{self.url}/train/{model}", json=params, timeout=60)
        res.raise_for_status()
        task_id, start = res.json()["id"], time.monotonic()
        while time.monotonic() - start < timeout:
            task = requests.get(f"{self.url}/train/", timeout=30).json()
            if task["id"] == task_id and task["status"] not in ("SUBMITTED", "RUNNING"):
                return task
            time.sleep(1)
        raise RuntimeError(f"training of {model} still running after {timeout} s:\n{self.log_tail()}")


def timed(call: Any, *args: Any) -> tuple[Any, float]:
    """``call(*args)`` and the seconds it took."""
    start = time.monotonic()
    result = call(*args)
    return result, time.monotonic() - start


def measure(output: Path, images: dict[str, list[Path]], ckpts: dict[str, Path | None], train: Path | None,
            train_images: int, warm: int, concurrent: int) -> dict[str, Any]:
    """Package, serve and time (see the module's docstring); ``images`` maps task to input files."""
    from emclip.packaging.bundle import BUNDLE_NAMES, build_bundle, write_untrained_weights

    output.mkdir(parents=True, exist_ok=True)
    app = create_app(output / "apps")
    studies = output / "studies"
    shutil.rmtree(studies, ignore_errors=True)
    studies.mkdir()
    for task, ckpt in ckpts.items():
        # latency does not depend on the weights' values
        build_bundle(task, app / "model", ckpt or write_untrained_weights(task, output / f"{task}_untrained.pt"))
    names = {task: [] for task in images}
    for task, files in images.items():
        for path in files:
            shutil.copy2(path, studies / path.name)
            names[task].append(path.name)
    masks = {}
    if train is not None:
        for image in sorted((train / "image").iterdir())[:train_images]:
            found = list((train / "mask").glob(image.stem + ".*"))
            if len(found) != 1:
                raise SystemExit(f"{train / 'mask'}: expected one mask named {image.stem}.*, found {found}")
            shutil.copy2(image, studies / image.name)
            masks[image.name] = found[0]

    result: dict[str, Any] = {"cpu_count": os.cpu_count(), "load_average_before": os.getloadavg()}
    with LabelServer(app, studies, list(BUNDLE_NAMES.values()), output / "server.log") as server:
        result["server_start_s"] = server.start()
        ids = server.image_ids()
        jobs = []
        for task, files in names.items():
            for name in files:
                first, first_s = timed(server.infer, BUNDLE_NAMES[task], ids[name])
                warm_s = [timed(server.infer, BUNDLE_NAMES[task], ids[name])[1] for _ in range(warm)]
                result[f"{task} {name}"] = {"status": first.status_code, "first_s": first_s,
                                            "warm_median_s": statistics.median(warm_s), "warm_s": warm_s}
                jobs.append((BUNDLE_NAMES[task], ids[name]))
        batch = [jobs[i % len(jobs)] for i in range(concurrent)]
        with ThreadPoolExecutor(len(batch)) as pool:
            responses, wall = timed(lambda: list(pool.map(lambda job: server.infer(*job), batch)))
        result[f"{concurrent} concurrent"] = {"requests": dict(Counter(m for m, _ in batch)), "wall_s": wall,
                                             "status": dict(Counter(r.status_code for r in responses))}
        if masks:
            for name, mask in masks.items():
                server.put_label(ids[name], mask)
            task, train_s = timed(server.train, BUNDLE_NAMES["fundus"], {"max_epochs": 1, "device": "cpu"})
            result["train 1 epoch"] = {"labelled_images": len(masks), "status": task["status"], "wall_s": train_s}
        result["load_average_after"] = os.getloadavg()
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m emclip.packaging.label_server", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=None, help="work folder (default: a temporary one)")
    parser.add_argument("--fundus", type=Path, nargs="+", required=True, help="fundus images to infer")
    parser.add_argument("--cardiac", type=Path, nargs="+", required=True, help="cardiac NIfTI volumes to infer")
    parser.add_argument("--fundus-ckpt", type=Path, default=None)
    parser.add_argument("--cardiac-ckpt", type=Path, default=None)
    parser.add_argument("--train", type=Path, default=None, help="fundus folder with image/ and mask/ to train on")
    parser.add_argument("--train-images", type=int, default=10)
    parser.add_argument("--warm", type=int, default=5, help="warm requests per image")
    parser.add_argument("--concurrent", type=int, default=16)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        result = measure(args.output or Path(tmp), {"fundus": args.fundus, "cardiac": args.cardiac},
                         {"fundus": args.fundus_ckpt, "cardiac": args.cardiac_ckpt}, args.train, args.train_images,
                         args.warm, args.concurrent)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
