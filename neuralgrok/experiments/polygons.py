"""The polygon-counting image task of Gu et al. ("Beyond Progress Measures", arXiv 2504.03162), and
the ResNet-18 they train on it (torchvision's, as :mod:`neuralgrok.experiments.resnet`).

Each image is white with a 2x2 grid of cells; each cell is blank or holds a regular polygon with 3..12
sides (1-pixel black outline, a spoke from the centre to every vertex, the first vertex at angle 0,
radius 46/112 of the cell as in the paper's 224-pixel images). The dataset is all 11^4 = 14,641
ordered combinations; the label is the total number of sides (blank = 0), one of the 47 values 0 and
3..48, mapped to class indices 0..46 (class ``c`` is ``CLASS_SIDES[c]`` sides). Cells are numbered
0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right; combinations are in lexicographic order of
``(cell 0, cell 1, cell 2, cell 3)``, the order the reference code writes them.

``faithful=True`` reproduces a quirk of the reference drawing: it bounds the radius by the distance
to the border of a cell-sized square at the origin instead of the image, which leaves the top-left
cell as intended but gives the other three cells a radius of minus half a cell, i.e. a polygon of
radius cell/2 rotated by pi whose vertices touch the cell border (and, at the border pixels, the
neighbouring cell). The default draws every cell as intended. Other differences from the reference
pipeline, not reproduced: it saves JPEGs (lossy), resizes to 256 and centre-crops 224 (cutting
about 14 of the 224 pixels off each border), and trains a 52-way head on the raw side totals (5 of
its classes never occur).

Storage: the images are pure black and white, so they are generated as one 8-bit channel and cached
as a ``(14641, S, S)`` uint8 ``.npy`` (60 MB at 64 px, 735 MB at 224 px). :func:`polygon_split`
normalises them with one mean and standard deviation (ImageNet's, averaged over its three channels:
black and white land within 10% of where ImageNet's per-channel normalisation puts them) and
expands the single channel to the three ResNet-18 takes as a view, so the float images cost 4 bytes
per pixel, not 12 (``.to(device)`` or ``.contiguous()`` materialises the three channels).

Cache: files ``polygons-<S>px-<clean|faithful>-<key>.npy`` in ``cache_dir``, else
``$NEURALGROK_CACHE``, else ``$XDG_CACHE_HOME/neuralgrok``, else ``~/.cache/neuralgrok``. ``key``
hashes the generation parameters and :data:`GENERATOR_VERSION` (bump it whenever the drawing
changes), so a changed drawing never reads an old file. Beside each ``.npy`` a ``.json`` holds the
SHA-256 of the array; a missing, unreadable or mismatching file is regenerated with a warning. Both
files are written atomically.

Example (the paper's recipe: Adam lr 1e-3, weight decay 1e-4, batch 200)::

    from neuralgrok.experiments.polygons import polygon_split, resnet18
    train_x, train_y, test_x, test_y = polygon_split(image_size=64, train_fraction=0.25, seed=0)
    model = resnet18()                       # (batch, 3, 64, 64) -> (batch, 47) logits
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)

The runner trains it as ``neuralgrok run --task polygons --model resnet18 ...``; the paper's setup is
``neuralgrok run --config configs/grokking_insight/polygons_resnet18.toml --out runs/gi-polygons``.
"""
from typing import List, Optional, Sequence, Tuple, Union
import functools
import hashlib
import itertools
import json
import math
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from ..storage.checkpoints import load_weights
from ..storage.files import atomic_write, atomic_write_text

GENERATOR_VERSION = 1
SIDES = (0, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12)
CELLS = 4
NUM_IMAGES = len(SIDES) ** CELLS  # 14,641: every ordered combination
# class index -> total sides: 0, 3, 4, ..., 48
CLASS_SIDES = (0,) + tuple(range(min(SIDES[1:]), max(SIDES) * CELLS + 1))
NUM_CLASSES = len(CLASS_SIDES)  # 47
RADIUS_FRACTION = 46 / 112  # polygon radius / cell size, the paper's 46 pixels in 112-pixel cells
MEAN, STD = 0.449, 0.226  # ImageNet's per-channel means (0.485, 0.456, 0.406) and stds averaged
MIN_IMAGE_SIZE = 16


def combinations() -> List[Tuple[int, ...]]:
    """All ``(14641, 4)`` ordered cell contents (sides per cell, 0 = blank), cell 0 varying slowest."""
    return np.array(list(itertools.product(SIDES, repeat=CELLS)), dtype=np.int64)


def labels(cell_sides: Sequence[Sequence[int]]) -> torch.Tensor:
    """Class indices ``(N,)`` of an ``(N, 4)`` array of sides per cell: 0 for all blank, else
    total sides - 2 (totals 1 and 2 cannot occur)."""
    totals = np.asarray(cell_sides, dtype=np.int64).sum(axis=1)
    return np.where(totals == 0, 0, totals - 2)


def polygon(cell: int, sides: int, image_size: int, faithful: bool = False) -> List[Tuple[float, float]]:
    """``(centre, vertices)``: pixel coordinates ``(x, y)`` of the centre and the list of vertices of
    the polygon with ``sides`` sides in ``cell`` (0..3)."""
    half = image_size / 2  # the cell size
    cx = (cell % 2) * half + half / 2
    cy = (cell // 2) * half + half / 2
    radius = RADIUS_FRACTION * half
    if faithful:  # the reference's bound: distances to the border of [0, half]^2, negative off it
        radius = min(radius, cx, cy, half - cx, half - cy)
    angles = [2 * math.pi * k / sides for k in range(sides)]
    return (cx, cy), [(cx + radius * math.cos(a), cy + radius * math.sin(a)) for a in angles]


def draw(cell_sides: Sequence[int], image_size: int = 64, faithful: bool = False) -> np.ndarray:
    """One image as an ``(S, S)`` uint8 array (255 white, 0 black) for 4 cell contents."""
    from PIL import Image, ImageDraw

    check_image_size(image_size)
    image = Image.new("L", (image_size, image_size), 255)
    pen = ImageDraw.Draw(image)
    for cell, sides in enumerate(cell_sides):
        if sides == 0:
            continue
        if sides not in SIDES:
            raise ValueError(f"cell {cell} has {sides} sides; use 0 (blank) or 3..12")
        centre, points = polygon(cell, int(sides), image_size, faithful)
        pen.polygon(points, outline=0, fill=255)  # the white fill matters only where cells overlap (faithful)
        for point in points:
            pen.line([centre, point], fill=0)
    return np.asarray(image, dtype=np.uint8)


def generate_images(image_size: int = 64, faithful: bool = False, progress: bool = True) -> np.ndarray:
    """Draw all 14,641 images: ``(14641, S, S)`` uint8, in :func:`combinations` order."""
    from tqdm import tqdm

    check_image_size(image_size)
    contents = combinations()
    images = np.empty((len(contents), image_size, image_size), dtype=np.uint8)
    for index, cell_sides in enumerate(tqdm(contents, desc=f"drawing polygons {image_size}px",
                                            disable=not progress, leave=False)):
        images[index] = draw(cell_sides, image_size, faithful)
    return images


def default_cache_dir() -> Path:
    """``$NEURALGROK_CACHE``, else ``$XDG_CACHE_HOME/neuralgrok``, else ``~/.cache/neuralgrok``."""
    if os.environ.get("NEURALGROK_CACHE"):
        return Path(os.environ["NEURALGROK_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "neuralgrok"


def cache_path(image_size: int = 64, faithful: bool = False, cache_dir: Optional[Union[str, Path]] = None) -> Path:
    """Where :func:`load_images` keeps the images for these parameters (the ``.json`` lies beside it)."""
    parameters = {"version": GENERATOR_VERSION, "image_size": image_size, "faithful": bool(faithful),
                  "radius_fraction": RADIUS_FRACTION, "sides": SIDES}
    key = hashlib.sha256(json.dumps(parameters, sort_keys=True).encode()).hexdigest()[:16]
    name = f"polygons-{image_size}px-{'faithful' if faithful else 'clean'}-{key}.npy"
    return Path(cache_dir if cache_dir is not None else default_cache_dir()) / name


def load_images(image_size: int = 64, faithful: bool = False, cache_dir: Optional[Union[str, Path]] = None,
                progress: bool = True) -> np.ndarray:
    """All images ``(14641, S, S)`` uint8, from the cache when it holds a verified copy, else drawn and
    cached (see the module docstring)."""
    check_image_size(image_size)
    path = cache_path(image_size, faithful, cache_dir)
    if path.exists():
        images, problem = _read_verified(path, image_size)
        if problem is None:
            return images
        warnings.warn(f"polygon cache {path}: {problem}; regenerating it", stacklevel=2)
    images = generate_images(image_size, faithful, progress)
    with atomic_write(path, "wb") as f:
        np.save(f, images)
    atomic_write_text(path.with_suffix(".json"), json.dumps(
        {"sha256": _sha256(images), "shape": list(images.shape), "image_size": image_size,
         "faithful": bool(faithful), "version": GENERATOR_VERSION}, indent=1) + "\n")
    return images


def split_indices(n: int, train_fraction: float = 0.25, seed: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """A shuffle of ``range(n)`` by ``seed`` (its own generator, global RNG untouched): the first
    ``round(train_fraction * n)`` indices train, the rest test."""
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction={train_fraction} must be strictly between 0 and 1")
    n_train = round(train_fraction * n)
    if not 0 < n_train < n:
        raise ValueError(f"train_fraction={train_fraction} leaves an empty train or test set of {n} images")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[:n_train], order[n_train:]


def polygon_split(image_size: int = 64, train_fraction: float = 0.25, seed: int = 0, faithful: bool = False,
                  cache_dir: Optional[Union[str, Path]] = None,
                  progress: bool = True) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(train_x, train_y, test_x, test_y)``: images ``(N, 3, S, S)`` float32, normalised, the channel
    expanded as a view; labels ``(N,)`` long class indices. Defaults: 3,660 train, 10,981 test.
    ``progress``: a progress bar while the images are drawn (once per size, before they are cached)."""
    images = torch.from_numpy(load_images(image_size, faithful, cache_dir, progress))
    targets = torch.from_numpy(labels(combinations()))
    train, test = split_indices(len(images), train_fraction, seed)

    def take(index):
        x = (images[index].float() / 255.0 - MEAN) / STD
        return x.unsqueeze(1).expand(-1, 3, -1, -1), targets[index]

    return (*take(train), *take(test))


def resnet18(num_classes: int = NUM_CLASSES, weights_path: Optional[Union[str, Path]] = None) -> torch.nn.Module:
    """ResNet-18 as torchvision defines it (:mod:`neuralgrok.experiments.resnet`, no torchvision needed; standard ImageNet
    stem: 7x7 stride-2 convolution and max pooling, kept for small images too, so ImageNet weights fit and the
    model stays the paper's; at 64 px the last feature map is 2x2), randomly initialised as torchvision does.
    Nothing is downloaded: ``weights_path`` names a local state dict (e.g. torchvision's
    ``resnet18-f37072fd.pth``); its ``fc`` layer is skipped when its shape differs from ``num_classes``,
    every other tensor must match."""
    from .resnet import resnet18 as build_resnet18

    model = build_resnet18(num_classes=num_classes)
    if weights_path is not None:
        _load_weights(model, weights_path)
    return model


def _load_weights(model, weights_path):
    path = Path(weights_path)
    if not path.is_file():
        raise FileNotFoundError(f"ResNet-18 weights file {path} does not exist")
    try:
        state = load_weights(path)  # weights-only: a state dict needs nothing else
    except Exception as error:
        raise ValueError(f"cannot read ResNet-18 weights from {path}: {error}") from error
    state, problem = _fit_weights(state, {k: v.shape for k, v in model.state_dict().items()})
    if problem is not None:
        raise ValueError(f"{path} {problem}")
    model.load_state_dict(state, strict=False)


def resnet18_weights_problem(state: object) -> Optional[str]:
    """What keeps ``state`` (a loaded ``weights_path`` file) from starting :func:`resnet18`'s model, as
    "does not hold ..." (None: it fits); what the config check runs before anything is written."""
    return _fit_weights(state, _resnet18_shapes())[1]


@functools.lru_cache(maxsize=1)
def _resnet18_shapes():
    from .resnet import resnet18 as build_resnet18

    with torch.random.fork_rng(devices=[]):  # its random initialisation leaves the caller's RNG as it was
        return {k: v.shape for k, v in build_resnet18(num_classes=NUM_CLASSES).state_dict().items()}


def _fit_weights(state, own):
    """``(state to load with strict=False, None)``, or ``(None, what is wrong)``; ``own``: the shapes of
    the model's state dict, by name."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        return None, "is not a state dict (a mapping of names to tensors)"
    state = _strip_common_prefix(state)
    for name in ("fc.weight", "fc.bias"):
        if name in state and state[name].shape != own[name]:
            del state[name]  # a head for other classes: keep the fresh one
    missing = sorted(set(own) - set(state) - {"fc.weight", "fc.bias"})
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in set(state) & set(own) if state[k].shape != own[k])
    if missing or unexpected or mismatched:
        return None, (f"does not hold ResNet-18 weights: missing {missing[:5]}, unexpected {unexpected[:5]}, "
                      f"shape mismatch {mismatched[:5]}")
    return state, None


def _strip_common_prefix(state):
    # Checkpoints of wrapped models (DataParallel's "module.", a wrapper's "model.") prefix every key.
    for prefix in ("module.", "model."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return dict(state)


def _read_verified(path, image_size):
    """``(images, None)`` if ``path`` and its ``.json`` agree, else ``(None, what is wrong)``."""
    try:
        record = json.loads(path.with_suffix(".json").read_text())
        images = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        return None, f"unreadable ({error})"
    expected_shape = (NUM_IMAGES, image_size, image_size)
    if images.dtype != np.uint8 or images.shape != expected_shape:
        return None, f"holds {images.dtype} {images.shape}, not uint8 {expected_shape}"
    if record.get("sha256") != _sha256(images):
        return None, "content does not match its recorded SHA-256"
    return images, None


def _sha256(array):
    return hashlib.sha256(np.ascontiguousarray(array).data).hexdigest()


def check_image_size(image_size: int) -> None:
    """TypeError or ValueError unless ``image_size`` is an even int of at least :data:`MIN_IMAGE_SIZE`."""
    if isinstance(image_size, bool) or not isinstance(image_size, int):
        raise TypeError(f"image_size must be an int, not {type(image_size).__name__}")
    if image_size < MIN_IMAGE_SIZE or image_size % 2:
        raise ValueError(f"image_size={image_size} must be even and at least {MIN_IMAGE_SIZE}")
