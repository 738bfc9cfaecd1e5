"""Export the inference path (eval mode, fixed input size) to TorchScript and ONNX."""

from __future__ import annotations

import os
from typing import Sequence

import torch
import torch.nn as nn

__all__ = ["export_torchscript", "export_onnx"]


def _example(net: nn.Module, input_shape: Sequence[int]) -> torch.Tensor:
    net.eval()
    return torch.randn(*input_shape, device=next(net.parameters()).device)


def export_torchscript(net: nn.Module, path: str | os.PathLike, input_shape: Sequence[int]) -> torch.jit.ScriptModule:
    """Trace ``net`` on a random input of ``input_shape`` (B, C, H, W) and save it to ``path``.

    The traced graph fixes H and W, which a bundle fixes anyway through its preprocessing; the
    network is also scriptable (``torch.jit.script``, what MONAI's ``ckpt_export`` does without
    ``--use_trace``), which keeps H and W free.
    """
    with torch.no_grad():
        traced = torch.jit.trace(net, _example(net, input_shape))
    torch.jit.save(traced, str(path))
    return traced


def export_onnx(net: nn.Module, path: str | os.PathLike, input_shape: Sequence[int], opset: int = 17) -> None:
    """Export ``net`` to ONNX with input ``image`` and output ``pred`` (dynamic batch size)."""
    with torch.no_grad():
        torch.onnx.export(
            net,
            (_example(net, input_shape),),
            str(path),
            input_names=["image"],
            output_names=["pred"],
            dynamic_axes={"image": {0: "batch"}, "pred": {0: "batch"}},
            opset_version=opset,
            dynamo=False,  # the TorchScript-based exporter needs no onnxscript and handles open_clip
        )
