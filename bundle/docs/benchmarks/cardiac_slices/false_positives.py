"""Where a cardiac model's MYO and RV false-positive voxels are: in the slices without any label, on
another class, or farther than 3 voxels in-plane from every labelled voxel (one-off analysis).

python false_positives.py <data root>/cardiac/MnMs <predictions folder> [<predictions folder> ...]
(predictions: `<case>_seg.nii.gz` written by `python -m monai.bundle run inferring`)
"""

import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

CLASSES = {2: "MYO", 3: "RV"}


def main(data: Path, folders: list[Path]) -> None:
    for folder in folders:
        print(f"== {folder}")
        for pred_file in sorted(folder.glob("*_seg.nii.gz")):
            case = pred_file.name[: -len("_seg.nii.gz")]
            label_file = data / f"{case}_gt.nii.gz"
            if not label_file.is_file():
                print(f"{case}: no {label_file.name} under {data}, not counted")
                continue
            gt = np.asarray(nib.load(label_file).dataobj).astype(int)
            pred = np.asarray(nib.load(pred_file).dataobj).astype(int)
            labelled = (gt > 0).any((0, 1))
            heart = ndimage.binary_dilation(gt > 0, iterations=3, structure=np.ones((3, 3, 1)))
            parts = [f"{case}: {int((~labelled).sum())} of {gt.shape[2]} slices unlabelled"]
            for c, name in CLASSES.items():
                g, p = gt == c, pred == c
                fp = p & ~g
                share = fp[:, :, ~labelled].sum() / max(int(fp.sum()), 1)
                dice = 2 * (g & p).sum() / max(int(g.sum() + p.sum()), 1)
                parts.append(f"{name}: dice {dice:.3f}, fp {int(fp.sum())} (unlabelled slices {share:.0%}, "
                             f"other class {int((fp & (gt > 0)).sum())}, far {int((fp & ~heart)[:, :, labelled].sum())})")
            print(" | ".join(parts))


if __name__ == "__main__":
    main(Path(sys.argv[1]), [Path(f) for f in sys.argv[2:]])
