"""Bad input and faults, as the model card's table lists them: the message a user reads last, the exit
status, no abort, skipped inference inputs, atomic checkpoints and resume after a kill.

Subprocess tests run the real `python -m monai.bundle run ...` command on tiny synthetic data.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import REPO, tiny_net
from PIL import Image

CONFIGS = REPO / "bundle" / "configs"
# a tiny network and data: 64 px, one or a few epochs
TINY = ["--spatial_size", "[64, 64]", "--batch_size", "2", "--network_def#em_bases", "8", "--network_def#decoder_channels", "32"]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "custom"), os.environ.get("PYTHONPATH", "")])}
BAD_VALUES = (0, 77, 128, 200, 255)


def bundle(workflow, configs, *args, timeout=300):
    """Run `python -m monai.bundle run <workflow>`; returns (exit status, output lines)."""
    command = [
        sys.executable, "-m", "monai.bundle", "run", workflow,
        "--meta_file", str(CONFIGS / "metadata.json"),
        "--config_file", str([str(CONFIGS / f"{c}.yaml") for c in configs]),
        "--logging_file", str(CONFIGS / "logging.conf"), *args,
    ]
    return _run(command, timeout)


def _run(command, timeout=300):
    out = subprocess.run(command, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
    return out.returncode, [line for line in out.stdout.splitlines() if line.strip()]


def train(root, data, *args):
    common = ["--bundle_root", str(root), "--dataset_dir", str(data), "--train_domains", "['SynthA']", *TINY, *args]
    return bundle("training", ["train", "fundus"], *common)


def bad_mask(path):
    """Overwrite a mask with grey levels of no encoding."""
    mask = np.full((64, 64), 255, np.uint8)
    for i, value in enumerate(BAD_VALUES[:-1]):
        mask[10 * i : 10 * i + 10, :20] = value
    Image.fromarray(mask).save(path)


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    from emclip.data import write_synthetic

    return write_synthetic(tmp_path_factory.mktemp("good"), "fundus", per_domain=4, image_size=64, progress=False)["fundus"]


@pytest.fixture(scope="module")
def bad(good, tmp_path_factory):
    """Training domain SynthA with a mask of no encoding and a truncated image."""
    root = tmp_path_factory.mktemp("bad") / "fundus"
    shutil.copytree(good, root)
    train_dir = root / "SynthA" / "train"
    bad_mask(train_dir / "mask" / "syntha_000.png")
    image = train_dir / "image" / "syntha_001.png"
    image.write_bytes(image.read_bytes()[:200])
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    torch.save(tiny_net().state_dict(), path)
    return path


def test_configuration_error_is_the_last_line(good, tmp_path):
    status, lines = train(tmp_path, tmp_path / "missing")
    assert status == 1
    assert lines[-1] == f"dataset_dir: {str(tmp_path / 'missing')!r} is not a folder (override it with --dataset_dir)"
    assert "EMCLIP_TRACEBACK=1" in lines[-2] and not any("Failed to evaluate" in line for line in lines[-3:])
    status, lines = train(tmp_path, good, "--train_domains", "['Nowhere']")
    assert status == 1 and lines[-1].startswith("train_domains=['Nowhere']") and "domains found: ['SynthA', 'SynthB', 'SynthC']" in lines[-1]
    # the cardiac metadata with the fundus configs
    command = [
        sys.executable, "-m", "monai.bundle", "run", "training", "--meta_file", str([str(CONFIGS / "metadata.json"), str(CONFIGS / "metadata_cardiac.json")]),
        "--config_file", str([str(CONFIGS / "train.yaml"), str(CONFIGS / "fundus.yaml")]), "--bundle_root", str(tmp_path), "--dataset_dir", str(good),
    ]
    status, lines = _run(command)
    assert status == 1 and lines[-1] == (
        "meta_file: the metadata describes 1 input channels and 4 classes but the configs have in_channels=3, num_classes=3; "
        "fundus takes bundle/configs/metadata.json, cardiac adds bundle/configs/metadata_cardiac.json"
    )


def test_lower_case_booleans_on_the_command_line_name_the_key(good, tmp_path):
    from emclip.workflows.checks import ConfigError, check_command_line

    # Fire keeps `false` as text, which a config expression takes as true
    status, lines = train(tmp_path, good, "--refine#enabled", "false")
    assert status == 1
    assert lines[-1] == "refine#enabled: the command line reads 'false' as the text 'false', which a config expression takes as true; write --refine#enabled False"
    for argv in (["--tta#flips=true"], ["--pretrained", "null", "--epochs", "1"]):
        with pytest.raises(ConfigError, match=r"write --(tta#flips True|pretrained None)$"):
            check_command_line(argv)
    # Python spellings, other texts, flags without a value and MONAI's own `_disabled_` text pass
    check_command_line(["--tta#flips", "False", "--cache", "none", "--augment#elastic#_disabled_", "false", "--x", "--y=1"])
    check_command_line(None)  # this process is pytest, not `python -m monai.bundle`


@pytest.mark.parametrize("args", [[], ["--cache", "none", "--num_workers", "2"]], ids=["memory-cache", "no-cache-2-workers"])
def test_data_error_exits_1_without_abort(bad, tmp_path, args):
    status, lines = train(tmp_path, bad, "--val_fraction", "0.0", "--epochs", "1", *args)
    assert status == 1, lines[-5:]  # not 134 (abort) as when MONAI's cache threads were left running
    assert not any("terminate called" in line for line in lines)
    mask = f"mask {bad / 'SynthA' / 'train' / 'mask' / 'syntha_000.png'} has values {list(BAD_VALUES)}, which fit neither"
    image = f"cannot read image file {bad / 'SynthA' / 'train' / 'image' / 'syntha_001.png'}: "
    if args:  # no cache: the first bad item the loader meets ends the run
        assert lines[-1].startswith(mask) or lines[-1].startswith(image)
    else:  # the cache fill lists every problem at once
        assert lines[-3] == "caching 4 items: 2 problem(s); fix or remove these items:"
        assert lines[-2].strip().startswith(mask) and lines[-1].strip().startswith(image)


def test_checkpoint_errors_name_ckpt_path(good, checkpoint, tmp_path):
    image = next((good / "SynthB").rglob("image/*.png"))
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    status, lines = bundle("inferring", ["inference", "fundus"], "--ckpt_path", str(empty), "--input_dir", str(image), *TINY)
    assert status == 1
    assert lines[-1] == (
        f"ckpt_path: {empty}: not a PyTorch checkpoint; the file is 0 bytes: an empty file; "
        "point --ckpt_path at a model.pt written by training"
    )
    foreign = tmp_path / "foreign.pt"
    torch.save({"conv.weight": torch.zeros(2, 2)}, foreign)
    status, lines = bundle("inferring", ["inference", "fundus"], "--ckpt_path", str(foreign), "--input_dir", str(image), *TINY)
    assert status == 1
    assert lines[-1].startswith(f"ckpt_path: {str(foreign)!r} does not fit network_def: 0 of the network's ")
    assert "1 not in the network (e.g. 'conv.weight')" in lines[-1]


def test_checkpoint_file_kinds(checkpoint, tmp_path):
    from emclip.workflows.checks import ConfigError, check_checkpoint

    with pytest.raises(ConfigError, match=r"^ckpt_path: no checkpoint at '.*nowhere.pt' \(train first or override --ckpt_path\)$"):
        check_checkpoint(str(tmp_path / "nowhere.pt"), 3)
    data = checkpoint.read_bytes()
    kinds = {
        "random.pt": (bytes(range(7, 256)) * 4, "not a PyTorch checkpoint; the file is 996 bytes: binary data starting with 07 08 09"),
        "notes.pt": (b"weights are on the server\n", "not a PyTorch checkpoint; the file is 26 bytes: text starting with 'weights are on the server'"),
        "truncated.pt": (data[: len(data) // 2], "a truncated checkpoint (the write was cut short); the file is"),
    }
    for name, (content, expected) in kinds.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ConfigError) as err:
            check_checkpoint(str(tmp_path / name), 3)
        assert str(err.value).startswith(f"ckpt_path: {tmp_path / name}: {expected}"), str(err.value)
    torch.save({"model": torch.nn.Linear(2, 2)}, tmp_path / "module.pt")  # a pickled module, not weights
    with pytest.raises(ConfigError) as err:
        check_checkpoint(str(tmp_path / "module.pt"), 3)
    assert "holds Python objects other than tensors" in str(err.value) and "weights_only=True" in str(err.value)
    assert "weights_only=False" not in str(err.value)  # PyTorch's advice to unpickle anything is not passed on


def test_batch_inference_skips_unreadable_inputs(good, checkpoint, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for image in sorted((good / "SynthB").rglob("image/*.png"))[:2]:
        shutil.copy(image, inputs)
    (inputs / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    out = tmp_path / "predictions"
    status, lines = bundle(
        "inferring", ["inference", "fundus"], "--ckpt_path", str(checkpoint), "--input_dir", str(inputs), "--output_dir", str(out), *TINY
    )
    assert status == 1
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in inputs.iterdir() if p.name != "corrupt.png")
    reason = f"cannot read image file {inputs / 'corrupt.png'}: "
    assert any(f"skipped input: {reason}" in line for line in lines)  # reported when met
    assert lines[-2] == "1 of 3 inputs could not be read and got no prediction (the other 2 were written):"
    assert lines[-1].strip().startswith(reason)


KILL_MID_SAVE = """
import os, signal, sys, runpy, torch
real = torch.save
def save(obj, path, *args, **kwargs):
    real(obj, path, *args, **kwargs)
    if "epoch=2" in str(path):  # cut the file short, then die as a SIGKILL would
        os.truncate(path, os.path.getsize(path) // 2)
        os.kill(os.getpid(), signal.SIGKILL)
torch.save = save
sys.argv = ["monai.bundle"] + sys.argv[1:]
runpy.run_module("monai.bundle", run_name="__main__")
"""


def test_killed_training_resumes_without_losing_an_epoch(good, tmp_path):
    models = tmp_path / "models" / "fundus"
    args = ["--bundle_root", str(tmp_path), "--dataset_dir", str(good), "--train_domains", "['SynthA']", *TINY]
    meta = ["--meta_file", str(CONFIGS / "metadata.json"), "--logging_file", str(CONFIGS / "logging.conf")]
    configs = ["--config_file", str([str(CONFIGS / "train.yaml"), str(CONFIGS / "fundus.yaml")])]
    # 1. killed while writing the checkpoint of epoch 2: epoch 1's checkpoint and model.pt still load
    status, _ = _run([sys.executable, "-c", KILL_MID_SAVE, "run", "training", *meta, *configs, *args, "--epochs", "3"])
    assert status == -signal.SIGKILL
    assert [p.name for p in models.glob("checkpoint_*.pt")] == ["checkpoint_checkpoint_epoch=1.pt"]
    trainer = torch.load(models / "checkpoint_checkpoint_epoch=1.pt", weights_only=True)["trainer"]
    assert trainer["iteration"] == trainer["epoch_length"]  # one epoch
    torch.load(models / "model.pt", weights_only=True)
    # 2. resumes from epoch 1; killed from outside once epoch 2 is saved
    command = [sys.executable, "-m", "monai.bundle", "run", "training", *meta, *configs, *args, "--epochs", "3"]
    proc = subprocess.Popen(command, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    while not (models / "checkpoint_checkpoint_epoch=2.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.kill()
    log = proc.communicate()[0]
    assert f"resuming from epoch 1 of 3 ({models / 'checkpoint_checkpoint_epoch=1.pt'})" in log
    # the newest is epoch 2 (or 3 if the kill came late); epoch 1 may remain if the kill fell between
    # writing the new file and pruning the old one
    saved = sorted(p.name for p in models.glob("checkpoint_*.pt"))
    assert saved[-1] in ("checkpoint_checkpoint_epoch=2.pt", "checkpoint_checkpoint_epoch=3.pt"), saved
    finished = saved[-1] == "checkpoint_checkpoint_epoch=3.pt"  # nothing left to resume
    # 3. resumes after the last saved epoch and finishes
    status, lines = bundle("training", ["train", "fundus"], *args, "--epochs", "3")
    assert status == 0
    if not finished:
        assert any("resuming from epoch 2 of 3" in line for line in lines)
        assert [p.name for p in models.glob("checkpoint_*")] == ["checkpoint_checkpoint_epoch=3.pt"]
    trainer = torch.load(models / "checkpoint_checkpoint_epoch=3.pt", weights_only=True)["trainer"]
    assert trainer["iteration"] == 3 * trainer["epoch_length"]
    # 4. a finished run says so and ends
    status, lines = bundle("training", ["train", "fundus"], *args, "--epochs", "3")
    assert status == 0
    assert any(
        f"training already finished: {models / 'checkpoint_checkpoint_epoch=3.pt'} is epoch 3 of epochs=3; nothing left to do" in line
        for line in lines
    )
    assert not any("Epoch[" in line and "Complete" in line for line in lines)


def test_datalist_check_lists_every_problem(good, tmp_path):
    root = tmp_path / "fundus"
    shutil.copytree(good, root)
    train_dir = root / "SynthA" / "train"
    bad_mask(train_dir / "mask" / "syntha_000.png")
    # a JPEG mask: compression blurs the grey levels
    mask = np.asarray(Image.open(train_dir / "mask" / "syntha_001.png"))
    (train_dir / "mask" / "syntha_001.png").unlink()
    Image.fromarray(mask).save(train_dir / "mask" / "syntha_001.jpg", quality=50)
    (train_dir / "image" / "syntha_002.png").write_bytes(b"not a png")
    shutil.copy(next((root / "SynthB").rglob("image/*.png")), root / "SynthC" / "train" / "image" / "copy.png")
    shutil.copy(next((root / "SynthB").rglob("mask/*.png")), root / "SynthC" / "train" / "mask" / "copy.png")
    empty = next((root / "SynthC" / "test").rglob("mask/*.png"))
    Image.fromarray(np.full((64, 64), 255, np.uint8)).save(empty)  # dofe background only
    status, lines = _run([sys.executable, "-m", "emclip.data.datalist", "--task", "fundus", "--root", str(root), "--check"])
    assert status == 1
    errors = [line for line in lines if line.startswith("error: ")]
    warnings = [line for line in lines if line.startswith("warning: ")]
    assert len(errors) == 3 and len(warnings) == 2, lines[-8:]
    assert any("syntha_000.png has values [0, 77, 128, 200, 255]" in e for e in errors)
    assert any("syntha_001.jpg" in e and "(a JPEG mask: lossy compression changes its values; save masks as PNG)" in e for e in errors)
    assert any(e.startswith(f"error: cannot read image file {train_dir / 'image' / 'syntha_002.png'}: ") for e in errors)
    assert any("copy.png are identical (a duplicate case)" in w for w in warnings)
    assert any(w == f"warning: label {empty} has no foreground (only background)" for w in warnings)
    assert lines[-1] == "checked 13 items: 3 errors, 2 warnings"


def _nifti(path, array, affine=None):
    import nibabel as nib

    nib.save(nib.Nifti1Image(array, np.diag([1.5, 1.5, 8.0, 1.0]) if affine is None else affine), str(path))


def test_cardiac_volume_kinds(tmp_path):
    """4D without frame, 2D, NaN voxels, another affine, label values: the screen that training and --check run."""
    from emclip.data import DataError
    from emclip.data.datasets import make_slice_dataset, screen_items
    from conftest import preprocessing

    rng = np.random.default_rng(0)
    image = rng.random((32, 32, 4)).astype(np.float32)
    label = np.zeros((32, 32, 4), np.uint8)
    label[10:20, 10:20] = 1
    cases = {
        "4d": (rng.random((32, 32, 4, 3)).astype(np.float32), np.zeros((32, 32, 4, 3), np.uint8), None),
        "2d": (image[..., 0], label[..., 0], None),
        "nan": (np.where(label > 0, np.nan, image).astype(np.float32), label, None),
        "affine": (image, label, np.diag([1.5, 1.5, 8.0, 1.0]) + np.eye(4, k=3) * 5),
        "values": (image, label * 7, None),
    }
    items = []
    for name, (img, lab, label_affine) in cases.items():
        _nifti(tmp_path / f"{name}.nii.gz", img)
        _nifti(tmp_path / f"{name}_gt.nii.gz", lab, label_affine)
        items.append({"image": str(tmp_path / f"{name}.nii.gz"), "label": str(tmp_path / f"{name}_gt.nii.gz"), "frame": -1})
    screen = screen_items(items, preprocessing("cardiac", spacing=3.0, spatial_size=16), progress=False)
    errors = dict(zip(cases, screen.errors))
    assert len(screen.errors) == len(cases), screen.errors
    assert errors["4d"] == f"{tmp_path / '4d.nii.gz'} has 3 frames but no frame index (ED/ES) was given"
    assert errors["2d"] == (
        f"{tmp_path / '2d.nii.gz'} has 2 spatial axes (shape (32, 32)); expected a 3D short-axis volume (H, W, slices) or a 4D cine volume"
    )
    assert errors["nan"] == f"image {tmp_path / 'nan.nii.gz'} has NaN or infinite values"
    assert errors["affine"].startswith(f"image {tmp_path / 'affine.nii.gz'} and label {tmp_path / 'affine_gt.nii.gz'} have different geometry")
    assert errors["values"] == f"label {tmp_path / 'values_gt.nii.gz'} has values [7.0] outside 0..3"
    # cardiac training preprocesses the volumes in this thread and lists the same problems, once each
    with pytest.raises(DataError) as err:
        make_slice_dataset(items, preprocessing("cardiac", spacing=3.0, spatial_size=16), progress=False)
    assert str(err.value).splitlines() == [f"preprocessing {len(items)} volumes: {len(items)} problem(s); fix or remove these items:"] + [
        f"  {errors[name]}" for name in cases
    ]


def test_fundus_accepted_and_refused_kinds(good, tmp_path):
    """A grayscale photograph and one smaller than the network input are accepted; a colour mask and a
    mask of another size are refused, naming the files; the disk cache lists every problem too."""
    from emclip.data import DataError, build_datalist
    from emclip.data.datasets import make_dataset, screen_items
    from conftest import preprocessing

    root = tmp_path / "fundus"
    shutil.copytree(good, root)
    images = sorted((root / "SynthA" / "train" / "image").glob("*.png"))
    gray = Image.open(images[0]).convert("L")
    gray.save(images[0])
    items = [it for it in build_datalist(root, "fundus") if it["domain"] == "SynthA"]
    small = dict(items[1], image=str(tmp_path / "small.png"), label=str(tmp_path / "small_mask.png"))
    Image.open(items[1]["image"]).resize((20, 20)).save(small["image"])
    Image.open(items[1]["label"]).resize((20, 20), Image.NEAREST).save(small["label"])
    screen = screen_items(items + [small], preprocessing("fundus", spatial_size=64), progress=False)
    assert screen.errors == []
    colour = np.zeros((64, 64, 3), np.uint8)
    colour[..., 0] = 255
    Image.fromarray(colour).save(items[2]["label"])
    Image.fromarray(np.full((32, 32), 255, np.uint8)).save(items[3]["label"])
    with pytest.raises(DataError) as err:
        make_dataset(items, preprocessing("fundus", spatial_size=64), cache="disk", cache_dir=tmp_path / "cache", progress=True)
    lines = str(err.value).splitlines()
    assert lines[0] == "caching 4 items: 2 problem(s); fix or remove these items:"
    assert lines[1].strip() == f"mask {items[2]['label']} has colour channels that differ; expected one channel or three equal ones"
    assert lines[2].strip().startswith("image and mask shapes differ: ") and "(32, 32)" in lines[2]
    assert len(list((tmp_path / "cache").glob("preprocess-*/*.pt"))) == 2  # only the good items are cached


def test_hook_prints_bundle_message_last_and_keeps_tracebacks_of_bugs(capsys, monkeypatch):
    from emclip.data import DataError
    from emclip.workflows.errors import _hook, bundle_message

    def raised(error, cause=None):
        try:
            try:
                raise cause
            except Exception as inner:
                raise error from inner
        except Exception as outer:
            return outer

    wrapped = raised(RuntimeError("Failed to evaluate ConfigExpression"), DataError("mask m.png is bad"))
    monkeypatch.delenv("EMCLIP_TRACEBACK", raising=False)
    _hook(type(wrapped), wrapped, wrapped.__traceback__)
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == "mask m.png is bad" and "Traceback" not in "\n".join(err)
    monkeypatch.setenv("EMCLIP_TRACEBACK", "1")
    _hook(type(wrapped), wrapped, wrapped.__traceback__)
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == "mask m.png is bad" and any(line.startswith("Traceback") for line in err)
    bug = raised(ZeroDivisionError("division by zero"), KeyError("x"))
    _hook(type(bug), bug, bug.__traceback__)
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == "ZeroDivisionError: division by zero" and err[0].startswith("Traceback")
    # as PyTorch re-raises an error from a DataLoader worker: the outer type with the worker's traceback as text
    worker = RuntimeError(
        "Caught RuntimeError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
        '  File "x.py", line 1, in f\nemclip.data.common.DataError: label y.nii.gz has values [7]\n\n'
        "The above exception was the direct cause of the following exception:\n\nRuntimeError: applying transform"
    )
    assert bundle_message(worker) == "label y.nii.gz has values [7]"
    assert bundle_message(RuntimeError("Caught ValueError in DataLoader worker process 0.\nOriginal Traceback\nValueError: x")) is None


def test_input_dir_errors_name_the_key(tmp_path):
    from emclip.data import IMAGE_SUFFIXES
    from emclip.workflows import list_inputs
    from emclip.workflows.checks import ConfigError

    with pytest.raises(ConfigError, match=r"^input_dir: no fundus images \(\.png, .*\) in "):
        list_inputs(str(tmp_path), IMAGE_SUFFIXES, "fundus")
    with pytest.raises(ConfigError, match=r"^input_dir: '.*missing' is neither a file nor a folder \(override it with --input_dir\)$"):
        list_inputs(str(tmp_path / "missing"), IMAGE_SUFFIXES, "fundus")


def test_every_torch_load_is_weights_only():
    """Checkpoints and uploaded labels are never unpickled beyond tensors and plain containers."""
    import re

    for path in sorted((REPO / "custom").rglob("*.py")):
        for call in re.findall(r"torch\.load\([^)]*\)", path.read_text()):
            assert "weights_only=True" in call, f"{path}: {call}"
    for path in [*sorted((REPO / "custom").rglob("*.py")), *sorted((REPO / "bundle" / "configs").glob("*.yaml")), REPO / "README.md"]:
        assert "weights_only=False" not in path.read_text(), path


def test_damaged_resume_checkpoint_names_ckpt_dir(tmp_path):
    from ignite.engine import Engine

    from emclip.workflows import EpochCheckpoints
    from emclip.workflows.checks import ConfigError

    (tmp_path / "checkpoint_checkpoint_epoch=3.pt").write_bytes(b"")
    engine = Engine(lambda engine, batch: None)
    EpochCheckpoints(str(tmp_path), {"model": torch.nn.Linear(2, 2)}).attach(engine)
    with pytest.raises(ConfigError) as err:
        engine.run([0], max_epochs=4)
    assert str(err.value) == (
        f"ckpt_dir: {tmp_path / 'checkpoint_checkpoint_epoch=3.pt'}: not a PyTorch checkpoint; the file is 0 bytes: "
        "an empty file; delete it, or start over with --resume False"
    )


def test_prompts_of_another_class_count_name_the_key(good, tmp_path):
    prompts = tmp_path / "two.json"
    prompts.write_text(json.dumps({"classes": {"background": ["a photo"], "disc": ["the optic disc"]}}))
    status, lines = train(tmp_path, good, "--network_def#prompts", str(prompts))
    assert status == 1
    assert lines[-1] == (
        "network_def#prompts: num_classes=3 but the prompt file has 2 prompt sets (['background', 'disc']); "
        "give one prompt set per output class, background included"
    )
