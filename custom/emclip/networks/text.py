"""Class text embeddings: CLIP-encoded class descriptions kept as a buffer."""

from __future__ import annotations

import json
import os
from importlib import resources
from typing import Any

import open_clip
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["PromptsError", "load_prompts", "encode_class_prompts", "ClassTextEmbeddings"]


class PromptsError(ValueError):
    """A prompt set that does not fit the network; the message names the key ``network_def#prompts``."""


def load_prompts(prompts: str | os.PathLike | dict[str, Any]) -> dict[str, list[str]]:
    """Read class prompts: ``{class name: [sentences]}`` in label order.

    Args:
        prompts: a packaged prompt set name (``fundus``, ``cardiac``), the path of a JSON file with
            a ``classes`` object, or such an object already loaded.
    """
    if isinstance(prompts, dict):
        data, source = prompts, "the prompts dict"
    else:
        text = str(prompts)
        if not text.endswith(".json") and not os.path.exists(text):
            packaged = resources.files("emclip") / "prompts" / f"{text}.json"
            if not packaged.is_file():
                raise PromptsError(
                    f"network_def#prompts: no prompt set {text!r}: not a file and not a packaged set (fundus, cardiac)"
                )
            text = str(packaged)
        with open(text, encoding="utf-8") as f:
            data, source = json.load(f), text
    classes = data.get("classes", data)
    if not isinstance(classes, dict) or not classes:
        raise PromptsError(f"network_def#prompts: {source}: expected a non-empty 'classes' object mapping class names to sentences")
    for name, sentences in classes.items():
        if not isinstance(sentences, list) or not sentences or not all(isinstance(s, str) for s in sentences):
            raise PromptsError(f"network_def#prompts: {source}: class {name!r} needs a non-empty list of sentences")
    return {str(k): list(v) for k, v in classes.items()}


def encode_class_prompts(clip: nn.Module, tokenizer: Any, prompts: dict[str, list[str]]) -> torch.Tensor:
    """Encode every sentence, average per class and L2-normalise: ``(num_classes, embed_dim)``."""
    device = next(clip.parameters()).device
    rows = []
    for sentences in prompts.values():
        emb = clip.encode_text(tokenizer(sentences).to(device), normalize=True)
        rows.append(F.normalize(emb.mean(dim=0), dim=-1))
    return torch.stack(rows)


def _skip_text_model(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """Load-state_dict pre-hook: without a text tower, drop the checkpoint's ``text_model.*``."""
    if module.text_model is None:
        for key in [k for k in state_dict if k.startswith(prefix + "text_model.")]:
            del state_dict[key]


class ClassTextEmbeddings(nn.Module):
    """Holds one L2-normalised text embedding per class as the buffer ``embeddings``.

    With a frozen text tower the embeddings are computed once and the tower is dropped, so the
    state_dict carries only the buffer and inference needs neither tokenizer nor text tower. With a
    trainable tower it is kept, the prompts are re-encoded at every training forward, and the
    buffer is re-encoded with the latest weights when the module leaves training mode (evaluation
    and export read the buffer). A module without a tower loads the state_dict of one with a
    trained tower: the tower's ``text_model.*`` entries are skipped, and the buffer is loaded.

    Args:
        num_classes: number of classes; must equal the number of prompt sets.
        embed_dim: CLIP joint embedding size.
        clip: the open_clip model whose text tower encodes the prompts; ``None`` leaves the buffer
            at zeros, to be filled from a checkpoint (inference).
        prompts: see :func:`load_prompts`.
        tokenizer_name: open_clip model name whose tokenizer applies (CLIP BPE by default).
        trainable: fine-tune the text tower.
    """

    def __init__(
        self,
        num_classes: int,
        embed_dim: int,
        clip: nn.Module | None = None,
        prompts: str | dict[str, Any] | None = None,
        tokenizer_name: str = "",
        trainable: bool = False,
    ):
        super().__init__()
        self.register_buffer("embeddings", torch.zeros(num_classes, embed_dim))
        self.class_names: list[str] = []
        self.text_model: nn.Module | None = None
        self.register_load_state_dict_pre_hook(_skip_text_model)
        if clip is None or prompts is None:
            return
        sets = load_prompts(prompts)
        if len(sets) != num_classes:
            raise PromptsError(
                f"network_def#prompts: num_classes={num_classes} but the prompt file has {len(sets)} prompt sets "
                f"({list(sets)}); give one prompt set per output class, background included"
            )
        self.class_names = list(sets)
        self.prompts = sets
        context = int(clip.context_length)
        self.tokenizer = open_clip.get_tokenizer(tokenizer_name, context_length=context)
        if trainable:
            self.text_model = clip
        self.refresh(clip)

    @torch.no_grad()
    def refresh(self, clip: nn.Module) -> None:
        """Recompute the buffer from the prompt file with ``clip``'s text tower."""
        self.embeddings.copy_(encode_class_prompts(clip, self.tokenizer, self.prompts))

    def train(self, mode: bool = True) -> ClassTextEmbeddings:
        # The buffer holds the encoding of the last training forward, made before the optimiser's
        # last step: leaving training mode re-encodes it with the weights that are saved with it.
        refresh = self.training and not mode and self.text_model is not None
        super().train(mode)
        if refresh:
            self.refresh(self.text_model)
        return self

    def forward(self) -> torch.Tensor:
        if self.text_model is not None and self.training:
            emb = encode_class_prompts(self.text_model, self.tokenizer, self.prompts)
            self.embeddings.copy_(emb.detach())
            return emb
        return self.embeddings
