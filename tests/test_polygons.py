"""The polygon-counting dataset (labels, drawing, cache, split) and the ResNet-18 of Gu et al."""
import json
import math

import numpy as np
import pytest
import torch

from neuralgrok.experiments import polygons
from neuralgrok.experiments.polygons import (CLASS_SIDES, NUM_CLASSES, SIDES, combinations, draw, labels, load_images,
                                             polygon, polygon_split, resnet18, split_indices)

SIZE = 32  # small images keep the whole-dataset tests fast


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("polygon-cache")


@pytest.fixture(scope="module")
def images(cache_dir):
    return load_images(SIZE, cache_dir=cache_dir, progress=False)


@pytest.fixture(scope="module")
def drawn_16px():
    return polygons.generate_images(16, progress=False)


@pytest.fixture
def counted_generation(monkeypatch, drawn_16px):
    """Counts calls of the drawing; answers 16-pixel requests from one drawing made for the module."""
    calls = []
    generate = polygons.generate_images

    def counting(image_size, *args, **kwargs):
        calls.append(image_size)
        return drawn_16px.copy() if image_size == 16 else generate(image_size, *args, **kwargs)

    monkeypatch.setattr(polygons, "generate_images", counting)
    return calls


def test_labels_match_brute_force_counting_for_all_combinations():
    brute_contents, brute_totals = [], []
    for a in SIDES:
        for b in SIDES:
            for c in SIDES:
                for d in SIDES:
                    brute_contents.append((a, b, c, d))
                    brute_totals.append(a + b + c + d)
    distinct_totals = sorted(set(brute_totals))
    assert len(brute_contents) == 14641 and distinct_totals == [0] + list(range(3, 49))

    assert combinations().tolist() == [list(c) for c in brute_contents]
    classes = labels(combinations())
    assert classes.tolist() == [distinct_totals.index(t) for t in brute_totals]
    assert sorted(set(classes.tolist())) == list(range(NUM_CLASSES)) and NUM_CLASSES == 47
    assert [CLASS_SIDES[c] for c in classes] == brute_totals


def _cells(images):
    """``(N, 4, h, h)``: the cells 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right."""
    n, size, _ = images.shape
    h = size // 2
    return images.reshape(n, 2, h, 2, h).transpose(0, 1, 3, 2, 4).reshape(n, 4, h, h)


def test_blank_cells_are_white_and_polygon_cells_drawn_in_black(images):
    assert images.shape == (14641, SIZE, SIZE) and images.dtype == np.uint8
    assert set(np.unique(images).tolist()) == {0, 255}
    darkest = _cells(images).min(axis=(2, 3))  # (N, 4)
    blank = combinations() == 0
    assert (darkest[blank] == 255).all()
    assert (darkest[~blank] == 0).all()


def _spokes_crossed(image, centre, radius):
    """Black runs on a circle around ``centre``: one per spoke when the circle stays inside the polygon.
    Black is thickened by a pixel first, since a 1-pixel diagonal line can cross the sampled circle
    between two of its pixels."""
    padded = np.pad(image, 1, constant_values=255)
    image = np.min([padded[1 + dy:padded.shape[0] - 1 + dy, 1 + dx:padded.shape[1] - 1 + dx]
                    for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=0)
    angles = np.linspace(0, 2 * np.pi, 1440, endpoint=False)
    x = np.rint(centre[0] + radius * np.cos(angles)).astype(int)
    y = np.rint(centre[1] + radius * np.sin(angles)).astype(int)
    black = image[y, x] == 0
    return int((black & ~np.roll(black, 1)).sum())


@pytest.mark.parametrize("faithful", [False, True])
def test_vertex_count_is_readable_from_the_pixels(faithful):
    size = 224
    inner = 0.4 * polygons.RADIUS_FRACTION * size / 2  # inside every polygon (a triangle's inradius is 0.5 r)
    for cell in range(4):
        drawn = {}
        for sides in SIDES[1:]:
            contents = [0, 0, 0, 0]
            contents[cell] = sides
            image = draw(contents, size, faithful)
            centre, points = polygon(cell, sides, size, faithful)
            assert _spokes_crossed(image, centre, inner) == sides
            for x, y in points:  # every vertex is drawn (within a pixel: rasterisation rounds)
                assert image[max(round(y) - 1, 0):round(y) + 2, max(round(x) - 1, 0):round(x) + 2].min() == 0
            drawn[sides] = image
        assert not np.array_equal(drawn[3], drawn[4])


def test_faithful_flag_rotates_and_enlarges_three_cells_only():
    size, half = 64, 32
    for cell in range(4):
        centre, clean = polygon(cell, 3, size)
        _, faithful = polygon(cell, 3, size, faithful=True)
        if cell == 0:
            assert faithful == clean
        else:  # radius -half/2: the first vertex points left and touches the cell border
            assert faithful[0] == pytest.approx((centre[0] - half / 2, centre[1]))
            assert clean[0] == pytest.approx((centre[0] + polygons.RADIUS_FRACTION * half, centre[1]))
    contents = (3, 3, 3, 3)
    clean_image, faithful_image = draw(contents, size), draw(contents, size, faithful=True)
    assert np.array_equal(clean_image[:half, :half], faithful_image[:half, :half])
    assert clean_image[16, 48 - 16] == 255 and faithful_image[16, 48 - 16] == 0  # cell 1's left vertex


def test_cache_hit_returns_identical_arrays_without_regenerating(tmp_path, counted_generation):
    first = load_images(16, cache_dir=tmp_path, progress=False)
    path = polygons.cache_path(16, cache_dir=tmp_path)
    assert path.is_file() and json.loads(path.with_suffix(".json").read_text())["shape"] == [14641, 16, 16]
    second = load_images(16, cache_dir=tmp_path, progress=False)
    assert len(counted_generation) == 1
    assert np.array_equal(first, second)
    assert not list(tmp_path.glob(".*.tmp"))


def _flip_last_byte(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage, message", [
    (_flip_last_byte, "SHA-256"),
    (lambda path: path.write_bytes(path.read_bytes()[:1000]), "unreadable|not uint8"),
    (lambda path: path.with_suffix(".json").unlink(), "unreadable"),
])
def test_damaged_cache_is_detected_and_regenerated(tmp_path, counted_generation, damage, message):
    original = load_images(16, cache_dir=tmp_path, progress=False)
    damage(polygons.cache_path(16, cache_dir=tmp_path))
    with pytest.warns(UserWarning, match=message):
        repaired = load_images(16, cache_dir=tmp_path, progress=False)
    assert len(counted_generation) == 2 and np.array_equal(repaired, original)
    load_images(16, cache_dir=tmp_path, progress=False)  # now verified: no third drawing
    assert len(counted_generation) == 2


def test_cache_file_names_follow_every_generation_parameter(tmp_path, monkeypatch):
    base = polygons.cache_path(64, cache_dir=tmp_path)
    others = {polygons.cache_path(32, cache_dir=tmp_path), polygons.cache_path(64, True, cache_dir=tmp_path)}
    monkeypatch.setattr(polygons, "GENERATOR_VERSION", polygons.GENERATOR_VERSION + 1)
    others.add(polygons.cache_path(64, cache_dir=tmp_path))
    assert base not in others and len(others) == 3
    monkeypatch.setenv("NEURALGROK_CACHE", str(tmp_path / "env"))
    assert polygons.cache_path(64).parent == tmp_path / "env"


def test_split_sizes_disjoint_and_deterministic_by_seed():
    train, test = split_indices(14641, 0.25, seed=0)
    assert (len(train), len(test)) == (3660, 10981)
    assert sorted(torch.cat([train, test]).tolist()) == list(range(14641))
    again = split_indices(14641, 0.25, seed=0)
    other = split_indices(14641, 0.25, seed=1)
    assert torch.equal(train, again[0]) and torch.equal(test, again[1])
    assert not torch.equal(train, other[0])


def test_polygon_split_returns_normalised_three_channel_tensors(images, cache_dir):
    state = torch.get_rng_state()
    train_x, train_y, test_x, test_y = polygon_split(SIZE, 0.25, seed=3, cache_dir=cache_dir)
    assert torch.equal(torch.get_rng_state(), state)
    assert train_x.shape == (3660, 3, SIZE, SIZE) and test_x.shape == (10981, 3, SIZE, SIZE)
    assert train_x.dtype == torch.float32 and train_y.dtype == torch.long
    train, test = split_indices(14641, 0.25, seed=3)
    all_labels = torch.from_numpy(labels(combinations()))
    assert torch.equal(train_y, all_labels[train]) and torch.equal(test_y, all_labels[test])
    expected = (torch.from_numpy(images[test[:50]]).float() / 255 - polygons.MEAN) / polygons.STD
    for channel in range(3):
        assert torch.equal(test_x[:50, channel], expected)
    white = (1 - polygons.MEAN) / polygons.STD
    assert train_x.max().item() == pytest.approx(white)


@pytest.mark.parametrize("call, error", [
    (lambda: draw((0, 0, 0, 0), 31), ValueError),
    (lambda: draw((0, 0, 0, 0), 8), ValueError),
    (lambda: draw((0, 0, 0, 0), 64.0), TypeError),
    (lambda: draw((2, 0, 0, 0), 32), ValueError),
    (lambda: split_indices(14641, 0.0), ValueError),
    (lambda: split_indices(14641, 1.0), ValueError),
    (lambda: split_indices(3, 0.1), ValueError),
])
def test_bad_arguments_are_refused(call, error):
    with pytest.raises(error):
        call()


def test_resnet18_maps_images_to_47_logits():
    model = resnet18()
    logits = model(torch.randn(2, 3, SIZE, SIZE))
    assert logits.shape == (2, NUM_CLASSES)
    assert math.isfinite(logits.sum().item())


def test_resnet18_loads_local_weights_and_replaces_a_foreign_head(tmp_path):
    source = resnet18(num_classes=10)
    path = tmp_path / "resnet18.pth"
    torch.save({f"model.{k}": v for k, v in source.state_dict().items()}, path)  # a wrapper's checkpoint
    fresh = resnet18()
    model = resnet18(weights_path=path)
    assert torch.equal(model.conv1.weight, source.conv1.weight)
    assert torch.equal(model.layer4[1].bn2.running_var, source.layer4[1].bn2.running_var)
    assert model.fc.weight.shape == (NUM_CLASSES, 512)
    assert not torch.equal(model.conv1.weight, fresh.conv1.weight)


def test_resnet18_weight_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resnet18(weights_path=tmp_path / "missing.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read"):
        resnet18(weights_path=garbage)
    other_model = tmp_path / "linear.pth"
    torch.save(torch.nn.Linear(3, 4).state_dict(), other_model)
    with pytest.raises(ValueError, match="does not hold ResNet-18 weights"):
        resnet18(weights_path=other_model)


def test_every_class_stays_distinct_at_the_reduced_image_sizes():
    # README ("Gu et al.: where it stands"): one cell holding 3..12 sides (the others blank); the closest two
    # drawings still differ in 37 of a 16 x 16 cell's pixels at 32 px (147 at 64 px, 558 at 224 px).
    closest = {}
    for size in (32, 64, 224):
        inked = {sides: draw([sides, 0, 0, 0], image_size=size) < 128 for sides in range(3, 13)}
        distances = {(a, b): int((inked[a] != inked[b]).sum()) for a in inked for b in inked if a < b}
        closest[size] = min(distances.values()), min(distances, key=distances.get)
    assert closest == {32: (37, (10, 12)), 64: (147, (8, 12)), 224: (558, (4, 8))}
