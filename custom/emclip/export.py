"""Export the inference path (eval mode) to TorchScript, ``torch.export`` (``.pt2``) and ONNX, check
each export against the eager network, and run an ONNX export with ONNX Runtime.

    python -m emclip.export --config_file bundle/configs/inference.yaml \\
        --ckpt_file bundle/models/fundus/model.pt --output bundle/models/fundus/model

writes ``model.pt2`` and ``model.onnx`` beside the checkpoint from the bundle's ``network_def``
(input ``[1, in_channels, *spatial_size]`` of the config, batch size free), runs each on a random
batch of two and stops with an error if any logit differs from the eager network's by more than
``--tolerance`` (default :data:`TOLERANCE`).
"""

from __future__ import annotations

import argparse
import os
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn

__all__ = [
    "TOLERANCE",
    "export_torchscript",
    "export_onnx",
    "export_pt2",
    "load_pt2",
    "max_abs_difference",
    "OnnxRuntimeNetwork",
    "main",
]

# Largest absolute difference of a logit allowed between an export and the eager network (float32;
# the logits are cosine similarities over a temperature of 0.07, so up to about 15 in size).
TOLERANCE = 1e-4


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


def export_pt2(
    net: nn.Module, path: str | os.PathLike, input_shape: Sequence[int], max_batch: int = 64
) -> torch.export.ExportedProgram:
    """``torch.export`` ``net`` on a random input of ``input_shape`` and save it to ``path`` (``.pt2``).

    Args:
        net: the network (exported in eval mode).
        path: the ``.pt2`` file.
        input_shape: (B, C, H, W); H and W are fixed in the program, the batch size is free.
        max_batch: the largest batch size the program accepts.
    """
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    # traced at batch 2 at least: torch.export takes a size-1 dimension for a constant
    example = _example(net, (max(2, input_shape[0]), *input_shape[1:]))
    with torch.no_grad():
        program = torch.export.export(net, (example,), dynamic_shapes={"x": {0: batch}})
    torch.export.save(program, str(path))
    return program


def load_pt2(path: str | os.PathLike) -> nn.Module:
    """The callable module of a saved ``.pt2`` program."""
    return torch.export.load(str(path)).module()


class OnnxRuntimeNetwork(nn.Module):
    """An ONNX export run by ONNX Runtime, usable where a bundle expects ``network``.

    It takes and returns torch tensors (the output on the input's device), so MONAI's inferers and
    evaluators run it as they run the PyTorch network; it has no weights to load or train.

    Args:
        path: the ``.onnx`` file (input ``image``, output ``pred``, as :func:`export_onnx` writes).
        providers: ONNX Runtime execution providers, best first (default: CUDA when ONNX Runtime
            has it, then CPU).
        threads: intra-op threads (``None``: ONNX Runtime's default, one per core).
    """

    def __init__(self, path: str | os.PathLike, providers: Sequence[str] | None = None, threads: int | None = None):
        super().__init__()
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise ImportError("OnnxRuntimeNetwork needs onnxruntime: pip install onnxruntime") from err
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no ONNX model {path}: write it with python -m emclip.export (see its --help)")
        available = ort.get_available_providers()
        chosen = list(providers) if providers else [p for p in ("CUDAExecutionProvider",) if p in available]
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        chosen += [] if "CPUExecutionProvider" in chosen else ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(path), options, providers=chosen)
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        image = np.ascontiguousarray(x.detach().float().cpu().numpy())
        return torch.from_numpy(self.session.run(None, {self.input_name: image})[0]).to(x.device)


def max_abs_difference(reference: nn.Module, exported: Any, x: torch.Tensor) -> float:
    """The largest absolute difference between ``exported(x)`` and ``reference(x)`` (eval, no_grad)."""
    with torch.no_grad():
        return float((exported(x) - reference.eval()(x)).abs().max())


def _network(config_files: Sequence[str], meta_file: str | None, ckpt: str) -> tuple[nn.Module, list[int]]:
    """The bundle's ``network_def`` with the checkpoint's weights, and its input shape."""
    from monai.bundle import ConfigParser

    from emclip.workflows import check_checkpoint
    from emclip.workflows.checks import load_weights

    parser = ConfigParser()
    parser.read_config(list(config_files))
    if meta_file:
        parser.read_meta(meta_file)
    for key in ("network_def", "num_classes", "in_channels", "spatial_size"):
        if key not in parser:
            raise KeyError(f"{config_files}: no {key!r}; pass the bundle's inference config")
    net = parser.get_parsed_content("network_def").eval()
    state = load_weights(check_checkpoint(ckpt, parser.get_parsed_content("num_classes"), net))
    net.load_state_dict(state.get("model", state) if isinstance(state, dict) else state)
    shape = [1, int(parser.get_parsed_content("in_channels")), *parser.get_parsed_content("spatial_size")]
    return net, shape


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    """Export and check (see the module's docstring); returns ``{file: max abs difference}``."""
    parser = argparse.ArgumentParser(prog="python -m emclip.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config_file", nargs="+", required=True, help="the inference config (and overlays)")
    parser.add_argument("--meta_file", default=None)
    parser.add_argument("--ckpt_file", required=True, help="the state_dict (models/model.pt)")
    parser.add_argument("--output", required=True, help="path without suffix: writes <output>.pt2, <output>.onnx")
    parser.add_argument("--formats", nargs="+", choices=("pt2", "onnx"), default=["pt2", "onnx"])
    parser.add_argument("--tolerance", type=float, default=TOLERANCE, help="largest logit difference allowed")
    args = parser.parse_args(argv)
    net, shape = _network(args.config_file, args.meta_file, args.ckpt_file)
    x = torch.randn(2, *shape[1:])
    loaders = {"pt2": (export_pt2, load_pt2), "onnx": (export_onnx, OnnxRuntimeNetwork)}
    result = {}
    for fmt in args.formats:
        path = f"{args.output}.{fmt}"
        write, load = loaders[fmt]
        write(net, path, shape)
        result[path] = max_abs_difference(net, load(path), x)
        print(f"wrote {path}: input {shape} (any batch size), max |logit - eager| {result[path]:.2e}")
        if result[path] > args.tolerance:
            raise SystemExit(f"error: {path} differs from the eager network by {result[path]:.2e} > {args.tolerance}")
    return result


if __name__ == "__main__":
    main()
