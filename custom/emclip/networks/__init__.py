"""EM-CLIP network building blocks."""

from emclip.networks.backbone import CLIPBackbone, build_clip
from emclip.networks.decoder import PixelDecoder, TextCrossAttention
from emclip.networks.em import EMAggregation
from emclip.networks.emclip import EMCLIP, INPUT_NORMS, standardize_images
from emclip.networks.presets import PRESETS, get_preset
from emclip.networks.text import ClassTextEmbeddings, encode_class_prompts, load_prompts

__all__ = [
    "CLIPBackbone",
    "build_clip",
    "PixelDecoder",
    "TextCrossAttention",
    "EMAggregation",
    "EMCLIP",
    "INPUT_NORMS",
    "standardize_images",
    "PRESETS",
    "get_preset",
    "ClassTextEmbeddings",
    "encode_class_prompts",
    "load_prompts",
]
