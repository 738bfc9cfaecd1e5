"""The bundle's workflows (train, resume, evaluate, infer, multi-process) on a tiny synthetic set."""

import ast
import csv
import os
import shlex
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from conftest import REPO
from monai.bundle import ConfigWorkflow
from PIL import Image

CONFIGS = REPO / "bundle" / "configs"
META = str(CONFIGS / "metadata.json")
META_CARDIAC = [META, str(CONFIGS / "metadata_cardiac.json")]
LOGGING = str(CONFIGS / "logging.conf")
# small and fast: 64 x 64 inputs, one epoch, a narrow EM
TINY = {"epochs": 1, "batch_size": 2, "num_workers": 0, "spatial_size": [64, 64], "network_def#em_bases": 8}
TINY_CARDIAC = {**TINY, "spacing": 3.0}


def cfg(*names):
    return [str(CONFIGS / f"{n}.yaml") for n in names]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from emclip.data import write_synthetic

    root = tmp_path_factory.mktemp("data")
    write_synthetic(root, "fundus", per_domain=4, image_size=96, progress=False)
    write_synthetic(root, "cardiac", per_domain=2, progress=False)
    return root


def run(config_files, meta=META, workflow_type="train", keep=None, **overrides):
    """Run a workflow in-process; return the parsed config item ``keep``."""
    workflow = ConfigWorkflow(
        config_file=config_files, meta_file=meta, logging_file=LOGGING, workflow_type=workflow_type, **overrides
    )
    workflow.initialize()
    workflow.run()
    kept = workflow.parser.get_parsed_content(keep) if keep else None
    workflow.finalize()
    return kept


def cli(*args):
    out = subprocess.run([sys.executable, "-m", "monai.bundle", *args], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def fundus_run(data, tmp_path_factory):
    root = tmp_path_factory.mktemp("bundle")
    run(cfg("train", "fundus"), bundle_root=str(root), dataset_dir=str(data / "fundus"), train_domains=["SynthA"], **TINY)
    return root


def test_train_writes_checkpoints_and_resume_continues(fundus_run, data):
    models = fundus_run / "models" / "fundus"
    assert (models / "model.pt").is_file()
    assert any("epoch=1" in p.name for p in models.iterdir())
    state = torch.load(models / "model.pt", weights_only=True)  # a plain state_dict, as MONAI Label expects
    assert state["text.embeddings"].shape == (3, 128)
    trainer = run(
        cfg("train", "fundus"), keep="train#trainer", bundle_root=str(fundus_run), dataset_dir=str(data / "fundus"),
        train_domains=["SynthA"], **{**TINY, "epochs": 2},
    )
    assert trainer.state.epoch == 2
    # one epoch was run, not two: the iteration counter continued from the checkpoint
    assert trainer.state.iteration == 2 * trainer.state.epoch_length
    # only the newest epoch checkpoint is kept, also across a resume
    assert [p.name for p in models.glob("checkpoint_*.pt")] == ["checkpoint_checkpoint_epoch=2.pt"]


def test_weight_average_is_what_validation_saves_and_resume_keeps(data, tmp_path):
    args = dict(bundle_root=str(tmp_path), dataset_dir=str(data / "fundus"), train_domains=["SynthA"], val_fraction=0.0,
                weight_average_decay=0.9, **TINY)
    average = run(cfg("train", "fundus"), keep="weight_average", **args)
    models = tmp_path / "models" / "fundus"
    saved = torch.load(models / "model.pt", weights_only=True)
    averaged = average.network.state_dict()
    assert saved.keys() == averaged.keys()
    assert all(torch.equal(saved[k], averaged[k].cpu()) for k in saved)
    trained = average.trained.state_dict()
    assert not all(torch.equal(saved[k], trained[k].cpu()) for k in saved)  # the average, not the last step
    checkpoint = torch.load(next(models.glob("checkpoint_*.pt")), weights_only=True)
    assert all(torch.equal(checkpoint["weight_average"][k], saved[k]) for k in saved)
    # resuming the finished run restores the average itself, not a fresh copy of the trained weights
    resumed = run(cfg("train", "fundus"), keep="weight_average", **args).network.state_dict()
    assert all(torch.equal(resumed[k].cpu(), saved[k]) for k in saved)
    # evaluation scores model.pt itself, with the same overrides as training
    evaluator = run(cfg("train", "evaluate", "fundus"), keep="validate#evaluator", output_dir=str(tmp_path / "eval"), **args)
    evaluated = evaluator.network.state_dict()
    assert all(torch.equal(evaluated[k].cpu(), saved[k]) for k in saved)


def test_mlflow_tracking(data, tmp_path):
    pytest.importorskip("mlflow")
    run(cfg("train", "fundus"), tracking="mlflow", bundle_root=str(tmp_path), dataset_dir=str(data / "fundus"),
        train_domains=["SynthA"], **TINY)
    runs = tmp_path / "runs" / "fundus"
    assert (runs / "mlruns.db").is_file() and (runs / "mlruns").is_dir()


def test_evaluate_writes_reports_per_case_and_domain(fundus_run, data):
    out = fundus_run / "eval"
    run(
        cfg("train", "evaluate", "fundus"), bundle_root=str(fundus_run), dataset_dir=str(data / "fundus"),
        train_domains=["SynthA"], output_dir=str(out), **TINY,
    )
    rows = read_csv(out / "metrics_per_case.csv")
    assert list(rows[0]) == ["domain", "case", "class", "dice", "hd95", "size_ratio"]
    assert {r["domain"] for r in rows} == {"SynthB", "SynthC"}
    assert len(rows) == 2 * 4 * 2  # two unseen domains x four images x (OD, OC)
    summary = read_csv(out / "metrics_summary.csv")
    assert list(summary[0]) == ["domain", "class", "metric", "mean", "std", "median", "n"]
    assert (out / "metrics_summary.md").is_file()
    assert (out / "plots" / "dice_SynthB.png").is_file()
    assert len(list((out / "overlays" / "SynthC").glob("*.png"))) == 3


@pytest.mark.parametrize("encoding,allowed", [("index", {0, 1, 2}), ("dofe", {0, 128, 255})])
def test_fundus_inference_png_at_input_size(fundus_run, data, tmp_path, encoding, allowed):
    source = next((data / "fundus" / "SynthB").rglob("image/*.png"))
    image = tmp_path / "wide.png"
    Image.open(source).crop((0, 0, 96, 80)).save(image)  # not square: catches transposed outputs
    out = tmp_path / "pred"
    run(
        cfg("inference", "fundus"), workflow_type="infer", bundle_root=str(fundus_run), input_dir=str(image),
        output_dir=str(out), mask_encoding=encoding, spatial_size=[64, 64], **{"network_def#em_bases": 8},
    )
    (pred,) = out.glob("*.png")
    mask = Image.open(pred)
    assert mask.size == (96, 80)
    assert set(np.unique(np.array(mask)).tolist()) <= allowed


def test_cardiac_train_evaluate_infer_keep_geometry(data, tmp_path):
    common = {"bundle_root": str(tmp_path), "dataset_dir": str(data / "cardiac"), "train_domains": ["A"]}
    run(cfg("train", "cardiac"), meta=META_CARDIAC, **common, **TINY_CARDIAC)
    assert (tmp_path / "models" / "cardiac" / "model.pt").is_file()
    run(cfg("train", "evaluate", "cardiac"), meta=META_CARDIAC, output_dir=str(tmp_path / "eval"), **common, **TINY_CARDIAC)
    rows = read_csv(tmp_path / "eval" / "metrics_per_case.csv")
    assert {r["class"] for r in rows} == {"LV", "MYO", "RV"}
    assert {r["domain"] for r in rows} == {"B", "C"}
    volume = sorted((data / "cardiac").glob("*_sa_ED.nii.gz"))[0]
    # as trained, and with the landmark standardisation at test time (a step after the crop)
    standardize = {"preprocess#standardize#_disabled_": False, "intensity_landmarks": [0.0, 0.0, 0.05, 0.1, 0.15, 0.2, 0.25,
                                                                                       0.3, 0.4, 0.5, 0.7, 0.95, 1.0]}
    for name, extra in (("pred", {}), ("pred_std", standardize)):
        run(
            cfg("inference", "cardiac"), meta=META_CARDIAC, workflow_type="infer", bundle_root=str(tmp_path),
            input_dir=str(volume), output_dir=str(tmp_path / name), spatial_size=[64, 64],
            **{"network_def#em_bases": 8, "spacing": 3.0, **extra},
        )
        (pred,) = (tmp_path / name).glob("*.nii.gz")
        source, result = nib.load(volume), nib.load(pred)
        assert result.shape == source.shape
        np.testing.assert_allclose(result.affine, source.affine, atol=1e-4)
        assert set(np.unique(result.get_fdata()).tolist()) <= {0, 1, 2, 3}


@pytest.mark.parametrize(
    "files,meta,kind,task",
    [
        (("train", "fundus"), META, "train", "fundus"),
        (("train", "cardiac"), META_CARDIAC, "train", "cardiac"),
        (("train", "evaluate", "fundus"), META, "train", "fundus"),
        (("inference", "fundus"), META, "infer", "fundus"),
        (("inference", "cardiac"), META_CARDIAC, "infer", "cardiac"),
    ],
)
def test_workflow_properties_complete(data, tmp_path, files, meta, kind, task):
    # properties are read by instantiating them, so the workflow needs data to point at
    from conftest import tiny_net

    domain = {"fundus": "SynthA", "cardiac": "A"}[task]
    ckpt = tmp_path / "model.pt"  # evaluation and inference check the checkpoint fits network_def before they start
    net = tiny_net(3, decoder_channels=64) if task == "fundus" else tiny_net(4, in_channels=1, decoder_channels=64)
    torch.save(net.state_dict(), ckpt)
    if kind == "train":
        overrides = {"dataset_dir": str(data / task), "train_domains": [domain], "ckpt_path": str(ckpt)}
    else:
        image = next(p for p in sorted((data / task).rglob("*")) if p.name.endswith((".png", "_ED.nii.gz")))
        overrides = {"input_dir": str(image), "ckpt_path": str(ckpt)}
    workflow = ConfigWorkflow(
        config_file=cfg(*files), meta_file=meta, workflow_type=kind, bundle_root=str(tmp_path), **overrides, **TINY
    )
    workflow.initialize()
    assert workflow.check_properties() == []
    for key in ("bundle_root", "device", "dataset_dir", "output_dir", "inferer", "preprocessing", "postprocessing"):
        assert key in workflow.parser, key
    if kind == "train":
        for key in ("train#trainer", "train#dataset", "train#handlers", "validate#evaluator", "validate#dataset", "val_interval"):
            assert key in workflow.parser, key


@pytest.mark.parametrize("task", ["fundus", "cardiac"])
def test_inference_network_matches_training(task):
    from monai.bundle import ConfigParser

    def resolved(name):
        parser = ConfigParser()
        parser.read_config(cfg(name, task))
        parser.parse()
        keys = set(parser["network_def"]) - {"pretrained", "encode_text"}  # inference takes both from the checkpoint
        return {key: parser.get_parsed_content(f"network_def#{key}") for key in keys}

    train, infer = resolved("train"), resolved("inference")
    assert train == infer
    assert train["backbone"] == "cpu-resnet" and train["num_classes"] == (3 if task == "fundus" else 4)


@pytest.mark.parametrize("task", ["fundus", "cardiac", "task_2d"])
def test_evaluation_runs_the_test_time_steps_inference_runs(task):
    """evaluate.yaml and inference.yaml each define the test-time steps (MONAI reads a bundle's
    config files only as the command lists them): they must stay the same, or an evaluation would
    score another inference than the one users get."""
    from monai.bundle import ConfigParser

    def raw(*names):
        parser = ConfigParser()
        parser.read_config(cfg(*names, task))
        return {key: parser[key] for key in ("tta", "adabn", "tent", "refine", "postprocess", "uncertainty", "inferer", "full_size_input")}

    assert raw("train", "evaluate") == raw("inference")


def documented_commands():
    """The `python -m monai.bundle` lines of the README and the model card, split as a shell would."""
    for page in (REPO / "README.md", REPO / "bundle" / "docs" / "README.md"):
        for line in page.read_text().splitlines():
            if line.startswith("python -m monai.bundle "):
                yield page.name, shlex.split(line)


def test_documented_commands_pass_their_task_metadata():
    """Each documented command's meta_file matches its configs' classes and channels (the check its
    workflow runs first): copied from the README, a cardiac command must not stop at meta_file."""
    from monai.bundle import ConfigParser

    from emclip.workflows import check_metadata

    def files(args, flag):
        value = args[args.index(flag) + 1]
        names = ast.literal_eval(value) if value.startswith("[") else [value]
        # the model card's commands run inside a packaged bundle, where configs/ is at the top
        return [REPO / "bundle" / n if n.startswith("configs/") else REPO / n for n in names]

    checked = []
    for page, args in documented_commands():
        if "--meta_file" not in args or "--config_file" not in args:
            continue
        metas, configs = files(args, "--meta_file"), files(args, "--config_file")
        if not all(path.exists() for path in metas + configs):  # a user's own task (metadata_my_task.json)
            continue
        parser = ConfigParser()
        parser.read_meta(metas)
        parser.read_config(configs)
        if "num_classes" not in parser:  # no task overlay: export commands of the network alone
            continue
        check_metadata(parser.get("_meta_"), parser["num_classes"], parser["in_channels"])
        checked.append((page, any("cardiac.yaml" in str(path) for path in configs)))
    assert ("README.md", True) in checked and ("README.md", False) in checked


def test_configuration_errors_name_the_key(data, tmp_path):
    from conftest import chained, tiny_net

    from emclip.data import DataError
    from emclip.workflows.checks import ConfigError

    common = {"bundle_root": str(tmp_path), **TINY}
    with pytest.raises(Exception) as err:
        run(cfg("train", "fundus"), dataset_dir=str(data / "fundus"), train_domains=["Nowhere"], **common)
    message = chained(err, ConfigError)
    assert "train_domains" in message and "Nowhere" in message and "SynthA" in message
    with pytest.raises(Exception) as err:
        run(cfg("train", "fundus"), dataset_dir=str(tmp_path / "missing"), **common)
    message = chained(err, ConfigError)
    assert message.startswith("dataset_dir") and "missing" in message
    (tmp_path / "empty").mkdir()
    with pytest.raises(Exception) as err:  # a folder, but not in the layout the overlay's reader expects
        run(cfg("train", "fundus"), dataset_dir=str(tmp_path / "empty"), **common)
    assert chained(err, DataError).startswith(f"dataset_dir {str(tmp_path / 'empty')!r}: no fundus image/mask pairs under")
    with pytest.raises(Exception) as err:  # a workflow config without a task overlay
        run(cfg("train"), dataset_dir=str(data / "fundus"), **common)
    assert chained(err, ConfigError).startswith("task: no task overlay in --config_file; add bundle/configs/fundus.yaml")
    cardiac_ckpt = tmp_path / "cardiac.pt"
    torch.save(tiny_net(4, in_channels=1).state_dict(), cardiac_ckpt)
    with pytest.raises(Exception) as err:
        run(cfg("inference", "fundus"), workflow_type="infer", bundle_root=str(tmp_path), ckpt_path=str(cardiac_ckpt),
            input_dir=str(next((data / "fundus" / "SynthB").rglob("image/*.png"))))
    message = chained(err, ConfigError)
    assert message.startswith("ckpt_path") and "4 classes" in message and "num_classes=3" in message


def test_model_zoo_checks(fundus_run, tmp_path):
    cli("verify_metadata", "--meta_file", META, "--filepath", str(CONFIGS / "meta_schema.json"))
    cli("verify_net_in_out", "network_def", "--meta_file", META, "--config_file", str(cfg("inference", "fundus")))
    cli("verify_net_in_out", "network_def", "--meta_file", str(META_CARDIAC), "--config_file", str(cfg("inference", "cardiac")))
    ckpt = str(fundus_run / "models" / "fundus" / "model.pt")
    common = ["--meta_file", META, "--config_file", str(cfg("inference", "fundus")), "--ckpt_file", ckpt,
              "--use_trace", "True", "--input_shape", "[1, 3, 64, 64]",
              "--spatial_size", "[64, 64]", "--network_def#em_bases", "8"]
    cli("ckpt_export", "network_def", "--filepath", str(tmp_path / "model.ts"), *common)
    cli("onnx_export", "network_def", "--filepath", str(tmp_path / "model.onnx"), *common,
        "--converter_kwargs", "{'dynamo': False}")
    ts = torch.jit.load(str(tmp_path / "model.ts"))
    from emclip.networks import EMCLIP

    net = EMCLIP(3, em_bases=8, encode_text=False).eval()
    net.load_state_dict(torch.load(ckpt, weights_only=True))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ts(x), net(x), atol=1e-4, rtol=0)
    assert (tmp_path / "model.onnx").stat().st_size > 0


def test_two_process_ddp_training_on_cpu(data, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    files = str(cfg("train", "multi_gpu_train", "fundus")).replace("'", '"')
    out = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "-m", "monai.bundle", "run", "training",
         "--meta_file", META, "--config_file", files, "--logging_file", LOGGING,
         "--bundle_root", str(tmp_path), "--dataset_dir", str(data / "fundus"), "--train_domains", "['SynthA']",
         "--epochs", "1", "--batch_size", "1", "--num_workers", "0", "--spatial_size", "[64, 64]",
         "--network_def#em_bases", "8"],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert (tmp_path / "models" / "fundus" / "model.pt").is_file()


@pytest.mark.parametrize("gamma,scale", [(2.0, 1.0), (1.0, 0.6), (0.5, 1.5)])
def test_input_appearance_shift_maps_the_intensities_before_normalisation(data, gamma, scale):
    """evaluate.yaml's input_gamma and input_scale change what the network sees as documented,
    on the [0, 1] intensities before the CLIP normalisation, and leave the label alone."""
    from monai.bundle import ConfigParser

    from emclip.data import CLIP_MEAN, CLIP_STD

    def evaluated(**overrides):
        parser = ConfigParser()
        parser.read_config(cfg("train", "fundus", "evaluate"))
        parser.update({"dataset_dir": str(data / "fundus"), "train_domains": ["SynthA"], "spatial_size": [64, 64], **overrides})
        item = parser.get_parsed_content("splits")["eval"][0]
        out = parser.get_parsed_content("validate#preprocessing")(item)
        std, mean = torch.tensor(CLIP_STD).view(-1, 1, 1), torch.tensor(CLIP_MEAN).view(-1, 1, 1)
        return torch.as_tensor(out["image"]) * std + mean, torch.as_tensor(out["label"])

    (plain, label), (shifted, shifted_label) = evaluated(), evaluated(input_gamma=gamma, input_scale=scale)
    assert torch.equal(label, shifted_label)
    expected = (scale * plain.clamp(min=0) ** gamma).clamp(max=1.0)
    assert torch.allclose(shifted, expected, atol=1e-5)
    assert not torch.allclose(shifted, plain, atol=0.05)
