"""A fine-tuned text tower (`network_def#freeze_text false`): trained through `monai.bundle run
training`, then evaluated, inferred, exported and packaged by the networks without a text tower;
the checkpoint's text embeddings are the ones they use."""

import zipfile

import torch
from conftest import tiny_net
from test_bundle import LOGGING, META, TINY, cfg, cli, run
from test_packaging import bundle_python

from emclip.networks import EMCLIP
from emclip.packaging import BUNDLE_NAMES, package


def test_unfrozen_text_checkpoint_loads_without_a_tower(tmp_path):
    trained = tiny_net(3, freeze_text=False)
    state = trained.state_dict()
    assert any(k.startswith("text.text_model.") for k in state)
    bare = tiny_net(3, encode_text=False)
    bare.load_state_dict(state)  # strict, as MONAI's CheckpointLoader
    torch.testing.assert_close(bare.text.embeddings, trained.text.embeddings)
    assert bare.text.text_model is None and not any(k.startswith("text.text_model.") for k in bare.state_dict())


def test_leaving_training_mode_encodes_with_the_current_tower():
    net = tiny_net(3, freeze_text=False).train()
    with torch.no_grad():
        net.text.text_model.text_projection.mul_(-1.0)  # an optimiser step after the last forward
    assert net.text.embeddings.abs().sum() > 0
    before = net.text.embeddings.clone()
    net.eval()
    torch.testing.assert_close(net.text.embeddings, -before)


def test_fine_tuned_text_tower_round_trip(tmp_path):
    from emclip.data import write_synthetic

    write_synthetic(tmp_path / "data", "fundus", per_domain=4, image_size=96, progress=False)
    root, data = tmp_path / "bundle", str(tmp_path / "data" / "fundus")
    tiny = [a for k, v in {**TINY, "epochs": 2}.items() for a in (f"--{k}", str(v))]
    out = cli("run", "training", "--meta_file", META, "--config_file", str(cfg("train", "fundus")),
              "--logging_file", LOGGING, "--bundle_root", str(root), "--dataset_dir", data,
              "--train_domains", "['SynthA']", "--network_def#freeze_text", "False", "--warmup_epochs", "1",
              "--lr_multipliers#text", "0.5", *tiny)
    log = out.stdout + out.stderr
    assert "parameter group text/decay" in log and "lr 0.00015, weight decay 0.0001" in log, log[-3000:]
    # MONAI's LrScheduleHandler steps the warm-up: 0.1 x 3e-4 in epoch 1, the full rate after it
    assert "Current learning rate: 0.0003\n" in log, log[-3000:]
    ckpt = root / "models" / "fundus" / "model.pt"
    state = torch.load(ckpt, weights_only=True)
    assert any(k.startswith("text.text_model.") for k in state)

    # the saved buffer is the encoding by the saved (fine-tuned) tower
    tuned = tiny_net(3, freeze_text=False, em_bases=8, decoder_channels=64)
    tuned.load_state_dict(state)
    tuned.train().eval()  # re-encodes with the loaded tower
    torch.testing.assert_close(tuned.text.embeddings, state["text.embeddings"])

    common = {"bundle_root": str(root), "dataset_dir": data, "train_domains": ["SynthA"], **TINY}
    network = run(cfg("train", "evaluate", "fundus"), workflow_type="eval", keep="network", **common)
    torch.testing.assert_close(network.text.embeddings, state["text.embeddings"])
    assert (root / "eval" / "fundus" / "metrics_summary.csv").is_file()
    image = next((tmp_path / "data" / "fundus" / "SynthB").rglob("image/*.png"))
    network = run(cfg("inference", "fundus"), workflow_type="infer", keep="network", bundle_root=str(root),
                  input_dir=str(image), spatial_size=[64, 64], **{"network_def#em_bases": 8})
    torch.testing.assert_close(network.text.embeddings, state["text.embeddings"])
    assert (root / "predictions" / "fundus" / image.name).is_file()

    cli("ckpt_export", "network_def", "--filepath", str(tmp_path / "model.ts"), "--meta_file", META,
        "--config_file", str(cfg("inference", "fundus")), "--ckpt_file", str(ckpt), "--use_trace", "True",
        "--input_shape", "[1, 3, 64, 64]", "--spatial_size", "[64, 64]", "--network_def#em_bases", "8")
    eager = EMCLIP(3, em_bases=8, encode_text=False).eval()
    eager.load_state_dict(state)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(tmp_path / "model.ts"))(x), eager(x), atol=1e-4, rtol=0)

    (archive,) = package(["fundus"], tmp_path / "dist", ckpt)
    with zipfile.ZipFile(archive) as z:
        z.extractall(tmp_path / "unpacked")
    bundle = tmp_path / "unpacked" / BUNDLE_NAMES["fundus"]
    bundle_python(bundle, "-m", "monai.bundle", "run", "inferring", "--meta_file", "configs/metadata.json", "--config_file",
                  "configs/inference.yaml", "--logging_file", "configs/logging.conf",
                  "--input_dir", str(image), "--spatial_size", "[64, 64]", "--network_def#em_bases", "8")
    assert (bundle / "predictions" / image.name).is_file()
