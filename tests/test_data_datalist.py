"""Domain selection and subject-wise splits (the datalist command line is tested on synthetic data)."""

from __future__ import annotations

import pytest

from emclip.data import leave_one_domain_out, split_domains


def _items() -> list[dict]:
    """Three domains; subjects have two items (ED/ES-like) and two splits in domain X."""
    items = []
    for domain, subjects in (("X", 20), ("Y", 6), ("Z", 3)):
        for s in range(subjects):
            for phase in ("ED", "ES"):
                split = "test" if domain == "X" and s >= 15 else "train"
                items.append({"image": f"{domain}{s}{phase}", "domain": domain, "subject": f"s{s}", "split": split, "phase": phase})
    return items


def _subjects(items: list[dict]) -> set[tuple[str, str]]:
    return {(it["domain"], it["subject"]) for it in items}


def test_single_source_split_by_subject() -> None:
    parts = split_domains(_items(), "X", val_fraction=0.25, seed=3)
    assert {it["domain"] for it in parts["train"] + parts["val"]} == {"X"}
    assert {it["domain"] for it in parts["eval"]} == {"Y", "Z"}
    assert len(_subjects(parts["val"])) == 5  # 25% of 20 subjects
    assert not _subjects(parts["train"]) & _subjects(parts["val"])  # no subject in two sets
    assert len(parts["train"]) + len(parts["val"]) == 40 and len(parts["eval"]) == 18  # nothing lost, all splits
    assert parts == split_domains(_items(), ["X"], val_fraction=0.25, seed=3)  # deterministic
    assert _subjects(parts["val"]) != _subjects(split_domains(_items(), "X", val_fraction=0.25, seed=4)["val"])


def test_validation_per_source_domain_and_train_splits() -> None:
    parts = split_domains(_items(), ["X", "Y"], val_fraction=0.1, train_splits="train")
    assert {d for d, _ in _subjects(parts["val"])} == {"X", "Y"}  # each source domain gives validation subjects
    assert all(it["split"] == "train" for it in parts["train"] + parts["val"])
    assert {it["domain"] for it in parts["eval"]} == {"Z"}
    assert split_domains(_items(), "Z", val_fraction=0.0)["val"] == []


def test_leave_one_domain_out() -> None:
    parts = leave_one_domain_out(_items(), "Y")
    assert {it["domain"] for it in parts["train"] + parts["val"]} == {"X", "Z"}
    assert {it["domain"] for it in parts["eval"]} == {"Y"}


@pytest.mark.parametrize(
    ("train", "evaluate", "named"),
    [("Q", None, "Q"), ("X", ["Y", "W"], "W"), ([], None, "no training domain"), (["X", "Y", "Z"], None, "no evaluation"),
     ("X", "X", "both")],
)
def test_bad_domain_selection_lists_found_domains(train: object, evaluate: object, named: str) -> None:
    with pytest.raises(ValueError, match=named) as info:
        split_domains(_items(), train, evaluate)
    assert "['X', 'Y', 'Z']" in str(info.value)
