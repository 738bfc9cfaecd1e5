"""Command line: ``python -m emclip.packaging --task fundus|cardiac|both|<overlay.yaml> --output DIR [--ckpt PATH]``."""

import argparse
from pathlib import Path

from emclip.packaging.bundle import BUNDLE_NAMES, package


def main(argv: list[str] | None = None) -> None:
    """Write ``DIR/<bundle name>/`` and ``DIR/<bundle name>.zip`` for each task.

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(prog="python -m emclip.packaging", description=__doc__)
    parser.add_argument("--task", required=True,
                        help="fundus, cardiac, both (the two), or a task overlay's name in bundle/configs or its path")
    parser.add_argument("--output", type=Path, required=True, help="folder to write the bundles and zips into")
    parser.add_argument("--ckpt", type=Path, default=None, help="trained state_dict copied to models/model.pt")
    args = parser.parse_args(argv)
    tasks = list(BUNDLE_NAMES) if args.task == "both" else [args.task]
    if args.ckpt is not None and len(tasks) > 1:
        parser.error("--ckpt holds the weights of one task: name one task")
    for path in package(tasks, args.output, args.ckpt):
        print(f"wrote {path.with_suffix('')}/ and {path}")
        if args.ckpt is None:
            # MONAI Label cannot say more than "Ignore <bundle> as neither model.pt nor model.ts exists"
            # at start (none of the bundle's code runs then), so what to do is said here
            print(f"  no {path.with_suffix('')}/models/model.pt: MONAI Label serves no model for this bundle "
                  "until trained weights are there; package again with --ckpt, or train it through MONAI Label "
                  "(POST /train/<name> writes models/model.pt) and restart the server")


if __name__ == "__main__":
    main()
