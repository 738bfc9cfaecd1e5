"""Fill the generated parts of a Markdown report from benchmark outputs, so no measured number in
``bundle/docs/benchmarks.md`` is typed by hand.

    python -m emclip.benchmarks.report --doc bundle/docs/benchmarks.md --results bundle/docs/benchmarks [--check]

A block ``<!-- include: NAME -->`` ... ``<!-- end -->`` is replaced by the file ``NAME`` of the
results folder: a ``.md`` file verbatim, a ``.csv`` file as a Markdown table
(``<!-- include: NAME column=value -->`` keeps the rows with that value). ``--check`` changes
nothing and exits with 1 when a block differs from its file (the test suite runs it).
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["csv_table", "render", "fill", "read_csv", "write_csv"]

BLOCK = re.compile(r"(<!-- include: (?P<name>[^ ]+)(?: (?P<column>\w+)=(?P<value>[^ ]+))? -->\n)(?P<body>.*?)(<!-- end -->)", re.DOTALL)


def write_csv(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """Write ``rows`` (dicts) to ``path`` with the union of their keys as columns."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for row in rows for k in row)))
        writer.writeheader()
        writer.writerows(rows)
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file with a header, as dicts of strings."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def csv_table(path: Path, column: str | None = None, value: str | None = None) -> str:
    """A Markdown table of a CSV file, header row first; only rows whose ``column`` is ``value``
    when a column is given."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise ValueError(f"{path}: empty CSV file")
    header, body = rows[0], rows[1:]
    if column is not None:
        if column not in header:
            raise ValueError(f"{path}: no column {column!r} (columns: {header})")
        body = [row for row in body if row[header.index(column)] == value]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def render(name: str, results: Path, column: str | None = None, value: str | None = None) -> str:
    path = results / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: named by an include block but not found")
    text = csv_table(path, column, value) if path.suffix == ".csv" else path.read_text()
    return text if text.endswith("\n") else text + "\n"


def fill(doc: str, results: Path) -> str:
    """``doc`` with every include block's body replaced by its file's content."""
    return BLOCK.sub(lambda m: m.group(1) + render(m.group("name"), results, m.group("column"), m.group("value")) + m.group(6), doc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--doc", type=Path, default=Path("bundle/docs/benchmarks.md"))
    parser.add_argument("--results", type=Path, default=Path("bundle/docs/benchmarks"))
    parser.add_argument("--check", action="store_true", help="exit 1 if the doc is out of date; write nothing")
    args = parser.parse_args()
    doc = args.doc.read_text()
    filled = fill(doc, args.results)
    if args.check:
        if filled != doc:
            sys.exit(f"{args.doc}: generated blocks differ from {args.results}; run without --check")
        return
    args.doc.write_text(filled)


if __name__ == "__main__":
    main()
