"""EM-CLIP: vision-language semantic aggregation for generalizable medical image segmentation."""

__version__ = "0.1.0"
