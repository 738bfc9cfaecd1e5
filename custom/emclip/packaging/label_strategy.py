"""Active learning for MONAI Label's ``monaibundle`` app: the most uncertain unlabelled image next.

The app scores unlabelled images by Monte Carlo dropout when started with ``--conf
epistemic_model <bundle>`` (it sets the bundle's ``network_def#dropout``, runs it in training mode
several times and stores the entropy as ``epistemic_entropy`` in each image's info), but it offers
only the ``random`` and ``first`` strategies. :func:`add_strategy` adds :class:`MostUncertain` to
an app folder as ``most_uncertain``: this file is copied to ``<app>/lib/activelearning/`` (it
imports only MONAI Label, so the app needs nothing of this repository) and one line registers it
in ``init_strategies`` of the app's ``main.py``.

``python -m emclip.packaging.label_strategy <app folder>`` does that for an app created with
``monailabel apps --download --name monaibundle --output apps``.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.strategy import Strategy

__all__ = ["MostUncertain", "add_strategy", "STRATEGY_NAME"]

logger = logging.getLogger(__name__)

STRATEGY_NAME = "most_uncertain"
MODULE_NAME = "emclip_uncertainty"
# where the app's main.py is changed: the import after the app's own strategy imports, and the
# entry after its "first" strategy
_IMPORT_AFTER = "from monailabel.tasks.activelearning.random import Random\n"
_ENTRY_AFTER = '            "first": First(),\n'


class MostUncertain(Strategy):
    """Serve the unlabelled image with the highest uncertainty score.

    Images without a score (not scored yet) come after every scored one, in datastore order; an
    image this strategy served less than ``recently_served`` seconds ago is skipped while another
    remains, so that annotators working at once get different images.

    Args:
        key: the image-info key of the score (MONAI Label's epistemic scoring writes
            ``epistemic_entropy``).
        recently_served: seconds during which a served image is skipped; a request may override
            it with ``{"recently_served": seconds}``.
    """

    def __init__(self, key: str = "epistemic_entropy", recently_served: float = 600.0):
        super().__init__("Most uncertain unlabelled image first (Monte Carlo dropout entropy)")
        self.key = key
        self.recently_served = recently_served

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any] | None:
        images = datastore.get_unlabeled_images(request.get("label_tag"), request.get("labels"))
        if not images:
            return None
        now = time.time()
        window = float(request.get("recently_served", self.recently_served))
        ranked = []
        for order, image in enumerate(images):
            info = datastore.get_image_info(image)
            score = info.get(self.key)
            served = info.get("strategy", {}).get(request["strategy"], {}).get("ts", 0)
            # recently served last, then unscored, then by score (highest first), then datastore order
            ranked.append((now - served < window, score is None, -(score or 0.0), order, image, score))
        _, _, _, _, image, score = min(ranked)
        logger.info(f"{request['strategy']}: selected {image} ({self.key}: {score}) among {len(images)} unlabelled")
        return {"id": image, self.key: score}


def add_strategy(app: Path) -> Path:
    """Add :class:`MostUncertain` as ``most_uncertain`` to the ``monaibundle`` app in ``app``.

    Args:
        app: the app folder (with ``main.py`` and ``lib/activelearning/``).

    Returns:
        The copied strategy module.

    Raises:
        ValueError: ``main.py`` is not the ``monaibundle`` app of MONAI Label 0.8 (the lines this
            change follows are missing); it names the file.
    """
    app = Path(app)
    main = app / "main.py"
    text = main.read_text()
    target = app / "lib" / "activelearning" / f"{MODULE_NAME}.py"
    shutil.copy2(Path(__file__), target)
    if STRATEGY_NAME in text:
        return target
    if text.count(_IMPORT_AFTER) != 1 or text.count(_ENTRY_AFTER) != 1:
        raise ValueError(
            f"{main}: not MONAI Label's monaibundle app as this change knows it (no {_IMPORT_AFTER.strip()!r} or "
            f"no {_ENTRY_AFTER.strip()!r} in init_strategies); register lib.activelearning.{MODULE_NAME}."
            f"MostUncertain() as {STRATEGY_NAME!r} in init_strategies by hand"
        )
    text = text.replace(_IMPORT_AFTER, f"{_IMPORT_AFTER}from lib.activelearning.{MODULE_NAME} import MostUncertain\n")
    text = text.replace(_ENTRY_AFTER, f'{_ENTRY_AFTER}            "{STRATEGY_NAME}": MostUncertain(),\n')
    main.write_text(text)
    return target


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m emclip.packaging.label_strategy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("app", type=Path, help="the monaibundle app folder (apps/monaibundle)")
    args = parser.parse_args(argv)
    print(f"added the {STRATEGY_NAME!r} strategy: {add_strategy(args.app)}")


if __name__ == "__main__":
    main()
