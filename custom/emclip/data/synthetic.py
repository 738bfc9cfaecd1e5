"""Synthetic multi-domain data in the on-disk layouts of the real data (demo and test default).

* fundus: ``<output>/fundus/<domain>/<split>/{image,mask}/<name>.png``; 3-channel images with an
  elliptic optic disc and cup and vessels; masks with 3 equal channels, 0 cup, 128 rim,
  255 background;
* cardiac: ``<output>/cardiac/<code>_sa_<ED|ES>.nii.gz`` with ``..._gt.nii.gz`` (0 background,
  1 LV, 2 MYO, 3 RV) and ``info.csv`` with the columns of the shared ``info.csv``; each volume has
  unlabelled slices beyond base and apex, as real stacks do.

The three domains of each task differ in colour cast, contrast (gamma), blur, noise, field of view,
resolution or voxel spacing and (cardiac) bias field. ``write_fundus_photos`` adds whole fundus
photographs (circular field of view, disc at a random position and scale), for the two-pass
inference. Command line::

    python -m emclip.data.synthetic --task both --output demo_data --per-domain 12 --seed 0
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter
from tqdm.auto import tqdm

__all__ = ["CARDIAC_STYLES", "FUNDUS_STYLES", "main", "write_cardiac", "write_fundus", "write_fundus_photos", "write_synthetic"]

# cast: RGB gain; gamma > 1 darkens mid-tones; blur sigma in output pixels; noise std in [0, 1]
# units; disc: disc size factor (field of view); resolution: render scale before upsampling.
FUNDUS_STYLES: dict[str, dict] = {
    "SynthA": {"cast": (1.0, 0.55, 0.32), "gamma": 1.0, "blur": 0.0, "noise": 0.01, "disc": 1.0, "resolution": 1.0},
    "SynthB": {"cast": (0.8, 0.62, 0.6), "gamma": 1.6, "blur": 1.5, "noise": 0.03, "disc": 0.75, "resolution": 0.5},
    "SynthC": {"cast": (1.0, 0.78, 0.25), "gamma": 0.7, "blur": 0.5, "noise": 0.06, "disc": 1.3, "resolution": 0.75},
}
# shape: in-plane voxels; spacing: mm (x, y, slice); scale: maximum stored intensity; bias: strength
# of a smooth multiplicative field.
CARDIAC_STYLES: dict[str, dict] = {
    "A": {"vendor_name": "SynthVendorA", "centre": "1", "shape": (192, 192), "spacing": (1.25, 1.25, 10.0),
          "slices": 10, "gamma": 1.0, "blur": 0.0, "noise": 0.02, "bias": 0.0, "scale": 800.0},
    "B": {"vendor_name": "SynthVendorB", "centre": "2", "shape": (256, 224), "spacing": (1.5, 1.5, 8.0),
          "slices": 12, "gamma": 1.5, "blur": 0.8, "noise": 0.05, "bias": 0.5, "scale": 300.0},
    "C": {"vendor_name": "SynthVendorC", "centre": "3", "shape": (160, 176), "spacing": (1.8, 1.8, 6.5),
          "slices": 14, "gamma": 0.7, "blur": 0.0, "noise": 0.08, "bias": 0.25, "scale": 2000.0},
}
# whole photographs: disc centre within this share of the field of view's radius, disc radius as a
# share of the image side, field of view diameter as a share of the side
PHOTO_DISC_REACH = 0.55
PHOTO_DISC_RADIUS = (0.04, 0.09)
PHOTO_FIELD = 0.96
_CODE_CHARS = np.array(list("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"))


def _ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, rx: float, ry: float, angle: float) -> np.ndarray:
    """Normalised elliptic radius: < 1 inside the ellipse."""
    c, s = np.cos(angle), np.sin(angle)
    u, v = (x - cx) * c + (y - cy) * s, -(x - cx) * s + (y - cy) * c
    return np.sqrt((u / rx) ** 2 + (v / ry) ** 2)


def _fundus_case(rng: np.random.Generator, size: int, style: dict, photo: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """One fundus-like RGB image (uint8) and its 0/128/255 mask (uint8, 2D).

    ``photo``: a whole photograph instead of a disc-centred crop: a circular field of view on
    black, the disc anywhere within 55 % of its radius and 4-9 % of the image side in radius.
    """
    if photo:
        r, phi = PHOTO_DISC_REACH * np.sqrt(rng.uniform()), rng.uniform(0, 2 * np.pi)
        cx, cy = size / 2 * (1 + r * np.cos(phi)), size / 2 * (1 + r * np.sin(phi))
        rx = size * rng.uniform(*PHOTO_DISC_RADIUS)
    else:
        cx, cy = size / 2 + rng.uniform(-0.05, 0.05, 2) * size
        rx = size * 0.15 * style["disc"] * rng.uniform(0.85, 1.15)
    ry = rx * rng.uniform(0.85, 1.15)
    angle = rng.uniform(0, np.pi)
    ratio = rng.uniform(0.3, 0.7)
    ccx, ccy = cx + rng.uniform(-0.15, 0.15) * rx, cy + rng.uniform(-0.15, 0.15) * ry
    vessels = [(rng.uniform(0, 2 * np.pi), rng.uniform(0.1, 0.4), rng.uniform(20, 60)) for _ in range(rng.integers(5, 9))]

    def render(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Disc radius, cup radius and image on an n x n grid in output-pixel coordinates."""
        y, x = np.mgrid[0:n, 0:n] * (size / n) + (size / n - 1) / 2
        disc = _ellipse(x, y, cx, cy, rx, ry, angle)
        cup = _ellipse(x, y, ccx, ccy, rx * ratio, ry * ratio, angle)
        radius = np.hypot(x - size / 2, y - size / 2) / (size / 2)
        shade = 0.55 * (1 - 0.35 * radius**2) + 0.05 * np.sin(x / 9.0 + rng.uniform(0, 6)) * np.cos(y / 13.0)
        rgb = shade[None] * np.asarray(style["cast"])[:, None, None]
        rgb = rgb + (1 / (1 + np.exp((disc - 1) * 12)))[None] * np.array([0.3, 0.22, 0.1])[:, None, None]
        rgb = rgb + (1 / (1 + np.exp((cup - 1) * 10)))[None] * np.array([0.15, 0.3, 0.4])[:, None, None]
        r, phi = np.hypot(x - cx, y - cy), np.arctan2(y - cy, x - cx)
        for theta, wiggle, period in vessels:
            offset = np.angle(np.exp(1j * (phi - theta - wiggle * np.sin(r / period)))) * r
            width = 3.0 * size / 256 * np.clip(1.2 - r / size, 0.3, 1)
            vessel = np.exp(-((offset / width) ** 2)) / (1 + np.exp((1 - cup) * 10))  # vessels leave the cup free
            rgb = rgb * (1 - 0.45 * vessel[None] * np.array([0.3, 1.0, 1.0])[:, None, None])
        return disc, cup, rgb

    disc, cup, _ = render(size)
    mask = np.full((size, size), 255, np.uint8)
    mask[disc < 1] = 128
    mask[(cup < 1) & (disc < 1)] = 0
    low = max(16, round(size * style["resolution"]))
    rgb = render(low)[2]
    if low != size:
        rgb = np.stack([np.asarray(Image.fromarray(c.astype(np.float32)).resize((size, size), Image.BILINEAR)) for c in rgb])
    if style["blur"]:
        rgb = gaussian_filter(rgb, (0, style["blur"], style["blur"]))
    rgb = np.clip(rgb, 0, 1) ** style["gamma"] + rng.normal(0, style["noise"], rgb.shape)
    image = (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8).transpose(1, 2, 0)
    if photo:
        y, x = np.mgrid[0:size, 0:size] + 0.5
        image[np.hypot(x - size / 2, y - size / 2) > PHOTO_FIELD * size / 2] = 0
    return image, mask


def write_fundus_photos(
    root: str | Path, count: int = 4, seed: int = 0, image_size: int = 512, domain: str = "SynthPhoto", style: str = "SynthA"
) -> list[Path]:
    """Write whole synthetic fundus photographs (disc at a random position and scale) and their
    masks to ``root/<domain>/test/{image,mask}``, in the layout of :func:`write_fundus`.

    Args:
        root: the fundus data root.
        count: photographs to write.
        seed: random seed.
        image_size: side of the square photographs.
        domain: domain folder name.
        style: the :data:`FUNDUS_STYLES` entry giving colour, blur and noise.

    Returns:
        The image paths written.
    """
    written = []
    for i in range(count):
        image, mask = _fundus_case(np.random.default_rng([seed, 1000, i]), image_size, FUNDUS_STYLES[style], photo=True)
        name = f"{domain.lower()}_{i:03d}.png"
        for folder, array in (("image", image), ("mask", np.repeat(mask[..., None], 3, axis=2))):
            out = Path(root) / domain / "test" / folder
            out.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(out / name)
        written.append(Path(root) / domain / "test" / "image" / name)
    return written


def write_fundus(
    root: str | Path, per_domain: int = 12, seed: int = 0, image_size: int = 256, progress: bool = True
) -> list[Path]:
    """Write synthetic fundus domains under ``root`` (about 20% of each domain in ``test``).

    Returns:
        The image paths written.
    """
    root = Path(root)
    n_test = round(0.2 * per_domain) if per_domain > 1 else 0
    jobs = [(d, i) for d in range(len(FUNDUS_STYLES)) for i in range(per_domain)]
    written = []
    for d, i in tqdm(jobs, desc="Synthetic fundus", disable=not progress):
        domain = list(FUNDUS_STYLES)[d]
        image, mask = _fundus_case(np.random.default_rng([seed, d, i]), image_size, FUNDUS_STYLES[domain])
        split = "test" if i >= per_domain - n_test else "train"
        name = f"{domain.lower()}_{i:03d}.png"
        for folder, array in (("image", image), ("mask", np.repeat(mask[..., None], 3, axis=2))):
            out = root / domain / split / folder
            out.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(out / name)
        written.append(root / domain / split / "image" / name)
    return written


def _cardiac_case(rng: np.random.Generator, style: dict) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """ED and ES (image int16, label uint8) volumes of one subject, shaped (X, Y, slices)."""
    (nx, ny), (sx, sy, _), nz = style["shape"], style["spacing"], style["slices"]
    x, y = np.meshgrid((np.arange(nx) - nx / 2) * sx, (np.arange(ny) - ny / 2) * sy, indexing="ij")  # mm
    cx, cy = rng.uniform(-10, 10, 2)
    rv_angle = rng.uniform(0.7, 1.2) * np.pi
    body = _ellipse(x, y, 0, 0, rng.uniform(130, 150), rng.uniform(95, 110), rng.uniform(-0.2, 0.2)) < 1
    texture = gaussian_filter(rng.normal(0, 1, (nx, ny)), 3) * 0.15
    bias = 1.0
    if style["bias"]:
        a, b, c = rng.uniform(-1, 1, 3)
        bias = np.exp(style["bias"] * (a * x / nx / sx + b * y / ny / sy + c * (x * y) / (nx * sx * ny * sy)) * 2)
    first, last = 1, nz - 2  # slices outside [first, last] hold no heart
    cases = {}
    for phase, lv_scale, wall in (("ED", 1.0, 8.0), ("ES", 0.7, 11.0)):
        image = np.zeros((nx, ny, nz), np.float32)
        label = np.zeros((nx, ny, nz), np.uint8)
        lv_radius = rng.uniform(20, 26) * lv_scale
        for k in range(nz):
            slab = np.where(body, 0.35 + texture, 0.03)
            lab = np.zeros((nx, ny), np.uint8)
            if first <= k <= last:
                t = (k - first) / max(last - first, 1)  # 0 at base, 1 at apex
                taper = np.sqrt(1 - 0.75 * t**2)
                r = np.hypot(x - cx, y - cy)
                inner, outer = lv_radius * taper, lv_radius * taper + wall
                if t < 0.75:
                    # a larger disc shifted sideways, minus the LV and a septal gap: a crescent
                    rvx, rvy = cx + 0.6 * outer * np.cos(rv_angle), cy + 0.6 * outer * np.sin(rv_angle)
                    rv = (np.hypot(x - rvx, y - rvy) < 1.3 * outer * lv_scale**0.5) & (r > outer + 2.0)
                    lab[rv] = 3
                lab[r < outer] = 2
                lab[r < inner] = 1
                slab = np.where(lab == 2, 0.2, slab)
                slab = np.where((lab == 1) | (lab == 3), 0.9, slab)
            image[..., k] = slab
            label[..., k] = lab
        if style["blur"]:
            image = gaussian_filter(image, (style["blur"], style["blur"], 0))
        image = np.clip(image * (bias[..., None] if style["bias"] else 1.0), 0, None) ** style["gamma"]
        image = np.abs(image + rng.normal(0, style["noise"], image.shape))  # magnitude images are non-negative
        cases[phase] = ((image * style["scale"]).round().astype(np.int16), label)  # scanners store integers
    return cases


def _subject_code(rng: np.random.Generator, taken: set[str]) -> str:
    while True:
        code = "".join(rng.choice(_CODE_CHARS, 6))
        if code not in taken:
            taken.add(code)
            return code


def write_cardiac(root: str | Path, per_domain: int = 4, seed: int = 0, progress: bool = True) -> list[Path]:
    """Write synthetic cardiac vendors as split-out ED/ES frames plus ``info.csv`` under ``root``.

    Returns:
        The image paths written.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    taken: set[str] = set()
    rows, written = [], []
    jobs = [(d, i) for d in range(len(CARDIAC_STYLES)) for i in range(per_domain)]
    for d, i in tqdm(jobs, desc="Synthetic cardiac", disable=not progress):
        vendor = list(CARDIAC_STYLES)[d]
        style = CARDIAC_STYLES[vendor]
        rng = np.random.default_rng([seed, 100 + d, i])
        code = _subject_code(rng, taken)
        affine = np.diag([*style["spacing"], 1.0])
        for phase, (image, label) in _cardiac_case(rng, style).items():
            nib.save(nib.Nifti1Image(image, affine), root / f"{code}_sa_{phase}.nii.gz")
            nib.save(nib.Nifti1Image(label, affine), root / f"{code}_sa_{phase}_gt.nii.gz")
            written.append(root / f"{code}_sa_{phase}.nii.gz")
        rows.append({"code": code, "vendor": vendor, "vendor_name": style["vendor_name"],
                     "centre": style["centre"], "phase_files": "ED;ES"})
    with open(root / "info.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["code", "vendor", "vendor_name", "centre", "phase_files"])
        writer.writeheader()
        writer.writerows(rows)
    return written


def write_synthetic(
    root: str | Path,
    task: str = "both",
    per_domain: int | None = None,
    seed: int = 0,
    image_size: int = 256,
    progress: bool = True,
) -> dict[str, Path]:
    """Write a synthetic data set: fundus under ``root/fundus``, cardiac under ``root/cardiac``.

    Args:
        root: output folder.
        task: ``"fundus"``, ``"cardiac"`` or ``"both"``.
        per_domain: fundus images / cardiac subjects per domain (default 12 / 4).
        seed: random seed; the same seed writes the same files.
        image_size: fundus image side in pixels.
        progress: show progress bars.

    Returns:
        ``{task: data root}`` for each task written, ready for ``build_datalist``.
    """
    if task not in ("fundus", "cardiac", "both"):
        raise ValueError(f"unknown task {task!r}; expected 'fundus', 'cardiac' or 'both'")
    root = Path(root)
    roots = {}
    if task in ("fundus", "both"):
        write_fundus(root / "fundus", per_domain or 12, seed, image_size, progress)
        roots["fundus"] = root / "fundus"
    if task in ("cardiac", "both"):
        write_cardiac(root / "cardiac", per_domain or 4, seed, progress)
        roots["cardiac"] = root / "cardiac"
    return roots


def main(argv: Sequence[str] | None = None) -> dict[str, Path]:
    """Command line entry point."""
    parser = argparse.ArgumentParser(prog="python -m emclip.data.synthetic", description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="both", choices=("fundus", "cardiac", "both"))
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--per-domain", type=int, default=None, help="fundus images / cardiac subjects per domain")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=256, help="fundus image side in pixels")
    parser.add_argument("--photos", type=int, default=0,
                        help="also write this many whole fundus photographs (512 px, disc anywhere) as domain SynthPhoto")
    args = parser.parse_args(argv)
    roots = write_synthetic(args.output, args.task, args.per_domain, args.seed, args.image_size)
    if args.photos and "fundus" in roots:
        write_fundus_photos(roots["fundus"], args.photos, args.seed)
    for task, path in roots.items():
        print(f"{task}: {path}")
    return roots


if __name__ == "__main__":
    main()
