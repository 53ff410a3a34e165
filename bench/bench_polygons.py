"""Cost of the polygon dataset (drawing, cache) and of one ResNet-18 training step on it.

    .venv/bin/python bench/bench_polygons.py        (or: make bench)

Drawing all 14,641 images is timed against reading the verified cache; the training step (batch 200,
Adam lr 1e-3, weight decay 1e-4, the paper's recipe) against the standard model's AdamW step
(bench/common.py), both measured in this run. The cache goes to a temporary directory.
"""
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, median_seconds, standard_setup  # noqa: E402

from neuralgrok.experiments import models, polygons  # noqa: E402

IMAGE_SIZE = 64
BATCH = 200


def main():
    print(f"python bench/bench_polygons.py; {machine()}")
    with tempfile.TemporaryDirectory() as cache_dir:
        start = time.perf_counter()
        polygons.load_images(IMAGE_SIZE, cache_dir=cache_dir, progress=False)  # draws and writes the cache
        first_load = time.perf_counter() - start
        path = polygons.cache_path(IMAGE_SIZE, cache_dir=cache_dir)
        cache_mib = path.stat().st_size / 2**20
        draw = median_seconds(lambda: polygons.generate_images(IMAGE_SIZE, progress=False), repeats=3, warmup=0)
        cached = median_seconds(lambda: polygons.load_images(IMAGE_SIZE, cache_dir=cache_dir), repeats=5, warmup=1)
        train_x, train_y, test_x, _ = polygons.polygon_split(IMAGE_SIZE, cache_dir=cache_dir)

    torch.manual_seed(0)
    model = polygons.resnet18()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    images, labels = train_x[:BATCH], train_y[:BATCH]

    def resnet_step():
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()

    def resnet_eval_batch():
        with torch.no_grad():
            model(test_x[:BATCH])

    standard, (inputs, targets) = standard_setup()
    standard_optimizer = torch.optim.AdamW(standard.parameters(), lr=1e-3, weight_decay=1.0)

    def standard_step():
        standard_optimizer.zero_grad()
        models.answer_loss(standard, inputs, targets)[0].backward()
        standard_optimizer.step()

    step = median_seconds(resnet_step, repeats=5, warmup=1)
    model.eval()
    evaluation = median_seconds(resnet_eval_batch, repeats=3, warmup=1)
    baseline = median_seconds(standard_step, repeats=15)
    epoch = len(train_y) / BATCH * step
    test_pass = len(test_x) / BATCH * evaluation

    print(f"\n{IMAGE_SIZE}px, all 14,641 images; cache file {cache_mib:.1f} MiB")
    print("| operation | time | vs baseline |")
    print("|---|---|---|")
    print(f"| draw all images (median of 3) | {draw:.2f} s | {draw / cached:.0f}x the cached load |")
    print(f"| first load: draw + write cache | {first_load:.2f} s | |")
    print(f"| cached load, SHA-256 verified (median of 5) | {cached * 1e3:.0f} ms | 1 (baseline) |")
    print(f"| ResNet-18 training step, batch {BATCH} (median of 5) | {step * 1e3:.0f} ms "
          f"| {step / baseline:.1f}x the standard AdamW step ({baseline * 1e3:.1f} ms) |")
    print(f"| ResNet-18 forward, batch {BATCH}, eval mode (median of 3) | {evaluation * 1e3:.0f} ms | |")
    print(f"\nprojected: one epoch ({math.ceil(len(train_y) / BATCH)} steps) {epoch:.0f} s, "
          f"one test pass ({len(test_x)} images) {test_pass:.0f} s, "
          f"20,000 epochs {20000 * epoch / 86400:.0f} days")


if __name__ == "__main__":
    main()
