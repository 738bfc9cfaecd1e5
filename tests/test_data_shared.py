"""Counts on the real data in ../shared/data (skipped when the folder is absent)."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from emclip.data import build_datalist, read_fundus_label, summarize

DATA_ROOT = Path(os.environ.get("EMCLIP_DATA_ROOT", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


def _root(task: str) -> Path:
    root = DATA_ROOT / task
    if not root.is_dir():
        pytest.skip(f"no shared data at {root}")
    return root


def test_fundus_counts() -> None:
    items = build_datalist(_root("fundus"), "fundus")
    assert Counter(it["domain"] for it in items) == {"REFUGE": 321, "DrishtiGS": 101}
    assert Counter((it["domain"], it["split"]) for it in items)[("DrishtiGS", "test")] == 51
    assert all(it["mask_format"] == "auto" and Path(it["label"]).is_file() for it in items)
    for domain in ("REFUGE", "DrishtiGS"):  # one mask per domain: all three classes, DoFE encoding read right
        item = next(it for it in items if it["domain"] == domain)
        assert set(np.unique(read_fundus_label(item["label"])).tolist()) == {0, 1, 2}


def test_mnms_labelled_slices_per_vendor() -> None:
    counts = summarize(build_datalist(_root("cardiac"), "cardiac"), count_slices=True)
    assert {v: c["labelled_slices"] for v, c in counts.items()} == {"A": 29, "B": 54}
    assert {v: (c["subjects"], c["images"]) for v, c in counts.items()} == {"A": (2, 4), "B": (2, 4)}
