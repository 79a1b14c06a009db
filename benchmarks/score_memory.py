"""Peak memory of `mvtec-inspect score` against the number of images: it streams, so it should not grow.

Writes N images of IMAGE_SIZE px (smooth noise, JPEG), fits a detector on a few of them with
`mvtec-inspect fit`, then runs `mvtec-inspect score` on the first n of them for each n in --counts,
each in a fresh process, and prints the peak resident set size (RSS) the kernel reports for it.
Not a test: it takes minutes and its numbers depend on the machine. The README quotes one run:

    nice python benchmarks/score_memory.py --counts 200 2000 --image-size 256 --method mean_image
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage


def write_images(folder: Path, n: int, image_size: int, seed: int = 0) -> None:
    """n smooth grey images with noise (the same kind of part, nothing defective), as JPEG files."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    base = ndimage.gaussian_filter(rng.random((image_size, image_size)), image_size / 16)
    base = (base - base.min()) / (base.max() - base.min())
    for i in range(n):
        pixels = (0.3 + 0.4 * base + 0.02 * rng.standard_normal((image_size, image_size))).clip(0, 1)
        Image.fromarray((pixels * 255).astype(np.uint8)).convert("RGB").save(folder / f"part_{i:05d}.jpg", quality=90)


def peak_rss_mb(command: list[str]) -> float:
    """Run ``command`` and return its peak RSS in MB (Linux reports ru_maxrss in kB)."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) not in (0, 1):  # 1: images flagged, still a finished run
        raise RuntimeError(f"{' '.join(command)} failed with exit status {os.waitstatus_to_exitcode(status)}")
    return usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[200, 2000])
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--method", default="mean_image")
    parser.add_argument("--n-fit", type=int, default=40, help="normal images the detector is fitted on")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    inspect = [sys.executable, "-m", "mvtec_tutorial.inspect_cli"]
    with tempfile.TemporaryDirectory(prefix="score_memory_") as work:
        work = Path(work)
        write_images(work / "normal", args.n_fit, args.image_size, seed=1)
        write_images(work / "all", max(args.counts), args.image_size, seed=2)
        subprocess.run([*inspect, "fit", str(work / "normal"), "--out", str(work / "detector.pt"), "--method",
                        args.method, "--image-size", str(args.image_size), "--quiet"], check=True)
        paths = sorted((work / "all").iterdir())
        print(f"{args.method}, {args.image_size} px, batch size {args.batch_size}, Python {sys.version.split()[0]}")
        for count in args.counts:
            folder = work / f"first_{count}"
            folder.mkdir()
            for path in paths[:count]:
                (folder / path.name).symlink_to(path)
            peak = peak_rss_mb([*inspect, "score", str(work / "detector.pt"), str(folder), "--out",
                                str(work / f"report_{count}"), "--batch-size", str(args.batch_size), "--quiet"])
            print(f"scoring {count:5d} images: peak RSS {peak:7.1f} MB")


if __name__ == "__main__":
    main()
