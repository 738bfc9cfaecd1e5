"""The README's multi-node recipe (torchrun --nnodes with c10d rendezvous) as two "nodes" of one
process each on this machine (gloo on the loopback interface)."""

import os
import socket
import subprocess
import sys

import pytest
import torch
from monai.handlers import StatsHandler, TensorBoardStatsHandler
from test_bundle import LOGGING, META, REPO, TINY, cfg

from emclip.workflows import ProgressLogger


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_train_one_model_and_only_rank_0_writes(tmp_path):
    from emclip.data import write_synthetic

    write_synthetic(tmp_path / "data", "fundus", per_domain=4, image_size=96, progress=False)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    endpoint = f"127.0.0.1:{free_port()}"
    files = str(cfg("train", "multi_gpu_train", "fundus")).replace("'", '"')
    nodes = []
    for rank in (0, 1):
        root = tmp_path / f"node{rank}"  # each node has its own disk
        # after training every rank saves its parameters for the check (buffers such as the EM bases
        # follow rank 0's at every forward, not after the last one)
        finalize = ('["$torch.save(dict((k, v.detach()) for k, v in @network.module.named_parameters()), '
                    f'\'{tmp_path}/rank{rank}.pt\')", "$dist.is_initialized() and dist.destroy_process_group()"]')
        command = [
            sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
            "--rdzv_backend=c10d", f"--rdzv_endpoint={endpoint}", "--rdzv_id=emclip-test",
            f"--rdzv_conf=is_host={rank == 0}", "-m", "monai.bundle", "run", "training", "--meta_file", META,
            "--config_file", files, "--logging_file", LOGGING, "--bundle_root", str(root),
            "--dataset_dir", str(tmp_path / "data" / "fundus"), "--train_domains", "['SynthA']",
            "--epochs", "1", "--batch_size", "1", "--num_workers", "0", "--spatial_size", "[64, 64]",
            "--network_def#em_bases", "8", "--finalize", finalize,
        ]
        nodes.append(subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    logs = [node.communicate(timeout=600)[0] for node in nodes]
    for node, log in zip(nodes, logs):
        assert node.returncode == 0, log[-4000:]
    weights = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        torch.testing.assert_close(weights[0][key], weights[1][key], msg=key)
    # rank 0 wrote the model, the epoch checkpoint and the logs; rank 1 wrote nothing
    models = tmp_path / "node0" / "models" / "fundus"
    assert (models / "model.pt").is_file() and any("epoch=1" in p.name for p in models.iterdir())
    assert any((tmp_path / "node0" / "runs").rglob("events.out.tfevents*"))
    assert not [p for p in (tmp_path / "node1").rglob("*") if p.is_file()]
    assert "emclip.train" in logs[0] and "emclip.train" not in logs[1]


@pytest.mark.parametrize("rank", [0, 1])
def test_only_rank_0_builds_logging_handlers(rank, tmp_path, monkeypatch):
    """multi_gpu_train.yaml on a given rank: rank 0 keeps every logging handler of training and
    validation, any other rank builds none (so writes no TensorBoard event file)."""
    from emclip.configs import load_config
    from emclip.data import write_synthetic

    write_synthetic(tmp_path / "data", "fundus", per_domain=2, image_size=64, progress=False)
    monkeypatch.setenv("RANK", str(rank))  # torchrun's rank, read while no process group is up
    parser = load_config("fundus", ("train", "multi_gpu_train"), {
        **TINY, "bundle_root": str(tmp_path / "b"), "dataset_dir": str(tmp_path / "data" / "fundus"),
        "train_domains": ["SynthA"], "device": "$torch.device('cpu')",
        # no process group here: the plain network, and no DistributedSampler (it reads the group)
        "network": "@network_def", "train#sampler": None, "validate#sampler": None,
    })
    logging = (StatsHandler, TensorBoardStatsHandler, ProgressLogger)
    kinds = {part: {type(h) for h in parser.get_parsed_content(key) if isinstance(h, logging)}
             for part, key in (("train", "train#trainer#train_handlers"), ("validate", "validate#evaluator#val_handlers"))}
    events = list((tmp_path / "b").rglob("events.out.tfevents*"))
    if rank == 0:
        assert kinds == {"train": set(logging), "validate": {StatsHandler, TensorBoardStatsHandler}}
        assert events
    else:
        assert kinds == {"train": set(), "validate": set()}
        assert not events
