"""The reported classes of each task: which label values make up each class, and its long name.

This is the single source of the reported class names; metadata, label-name tables and the
evaluation reports all read it from here.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ReportClass", "CLASSES", "get_classes"]


@dataclass(frozen=True)
class ReportClass:
    """One reported class.

    Args:
        labels: the label-map values whose union forms the class.
        long_name: a human-readable name, e.g. ``"optic disc"``.
    """

    labels: tuple[int, ...]
    long_name: str


# Fundus label maps store the disc *rim* (1) and the cup (2); the clinically reported optic disc
# is the whole disc, so OD is the union of both labels.
CLASSES: dict[str, dict[str, ReportClass]] = {
    "fundus": {
        "OD": ReportClass(labels=(1, 2), long_name="optic disc"),
        "OC": ReportClass(labels=(2,), long_name="optic cup"),
    },
    "cardiac": {
        "LV": ReportClass(labels=(1,), long_name="left ventricle"),
        "MYO": ReportClass(labels=(2,), long_name="left ventricular myocardium"),
        "RV": ReportClass(labels=(3,), long_name="right ventricle"),
    },
}


def get_classes(task: str) -> dict[str, ReportClass]:
    """Return the reported classes of ``task``, in report order.

    Args:
        task: a key of :data:`CLASSES` (``"fundus"`` or ``"cardiac"``).

    Raises:
        ValueError: if ``task`` is unknown.
    """
    if task not in CLASSES:
        raise ValueError(f"unknown task {task!r}; known tasks: {', '.join(CLASSES)}")
    return CLASSES[task]
