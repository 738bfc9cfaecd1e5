"""torch.export (.pt2) and ONNX Runtime exports of EM-CLIP against the eager network."""

import pytest
import torch
from conftest import tiny_net

from emclip.export import TOLERANCE, export_onnx, export_pt2, load_pt2, max_abs_difference


@pytest.mark.parametrize("backbone", ["cpu-resnet", "cpu-vit"])
def test_pt2_matches_eager_at_any_batch(tmp_path, backbone):
    net = tiny_net(3, backbone).eval()
    export_pt2(net, tmp_path / "m.pt2", (1, 3, 224, 224))
    program = load_pt2(tmp_path / "m.pt2")
    for batch in (1, 3):
        assert max_abs_difference(net, program, torch.randn(batch, 3, 224, 224)) <= TOLERANCE


def test_onnx_runtime_network_matches_eager_and_says_what_is_missing(tmp_path):
    pytest.importorskip("onnxruntime")
    from emclip.export import OnnxRuntimeNetwork

    net = tiny_net(4, in_channels=1, use_em=False).eval()
    export_onnx(net, tmp_path / "m.onnx", (1, 1, 192, 192))
    runtime = OnnxRuntimeNetwork(tmp_path / "m.onnx", threads=1)
    x = torch.randn(2, 1, 192, 192)
    assert runtime(x).dtype == torch.float32 and runtime(x).shape == (2, 4, 192, 192)
    assert max_abs_difference(net, runtime, x) <= TOLERANCE
    with pytest.raises(FileNotFoundError, match=r"no ONNX model .*missing.onnx: write it with python -m emclip.export"):
        OnnxRuntimeNetwork(tmp_path / "missing.onnx")
