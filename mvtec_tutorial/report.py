"""What scoring a folder leaves behind: a CSV for scripts and one self-contained HTML page for people.

:class:`ReportWriter` takes the batches of :func:`mvtec_tutorial.own_images.score_images` one at a
time: each image's row goes to ``scores.csv`` at once, and only the ``max_images`` most anomalous
images are kept as small JPEG panels, so memory stays bounded however many images are scored
(besides one score per image, for the histogram).
``report.html`` embeds every picture as base64 (no other file needed): a summary (counts, the
threshold and how it was chosen, the false-reject bound), the score histogram with the threshold,
then the shown images, flagged ones first, each as the image, its anomaly map and the image with
the flagged regions outlined.
"""
from __future__ import annotations

import base64
import csv
import heapq
import html
import io
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from PIL import Image
from scipy import ndimage

from mvtec_tutorial import metrics, viz
from mvtec_tutorial.own_images import Inspection, Scored

CSV_NAME, HTML_NAME = "scores.csv", "report.html"
CSV_COLUMNS = ["file", "score", "decision", "largest_region_px"]
#: Images shown as panels in the HTML page (the most anomalous); every image is in the CSV.
MAX_IMAGES = 60
#: Longest side of a panel in the page, in pixels.
PANEL_SIDE = 256
#: Colour of the outline around flagged regions (ground truth is cyan course-wide, so not cyan).
REGION_COLOUR = (0, 255, 0)
JPEG_QUALITY = 85


def _data_uri(picture: np.ndarray | Image.Image) -> str:
    image = picture if isinstance(picture, Image.Image) else Image.fromarray(picture)
    image.thumbnail((PANEL_SIDE, PANEL_SIDE))
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def colour_map(anomaly_map: np.ndarray, inspection: Inspection) -> np.ndarray:
    """The map in the course's colour map, uint8 (H, W, 3); the threshold sits at mid-scale."""
    low = inspection.map_low
    high = max(2 * inspection.threshold - low, low + 1e-6)
    scaled = np.clip((anomaly_map - low) / (high - low), 0, 1)
    return (matplotlib.colormaps[viz.ANOMALY_CMAP](scaled)[..., :3] * 255).astype(np.uint8)


def outlined(image: np.ndarray, anomaly_map: np.ndarray, inspection: Inspection) -> np.ndarray:
    """The image (3, H, W) in [0, 1] as uint8 (H, W, 3), flagged regions outlined in :data:`REGION_COLOUR`."""
    labelled, _ = metrics.label_regions(metrics.binarize(anomaly_map[None], inspection.threshold))
    sizes = np.bincount(labelled.ravel())
    sizes[0] = 0
    regions = sizes[labelled[0]] >= inspection.min_defect_area
    edge = regions & ~ndimage.binary_erosion(regions)
    picture = (image.transpose(1, 2, 0) * 255).round().astype(np.uint8)
    picture[ndimage.binary_dilation(edge)] = REGION_COLOUR  # two pixels wide, visible after shrinking
    return picture


class ReportWriter:
    """Write ``scores.csv`` as batches arrive and ``report.html`` at :meth:`close`.

    Parameters
    ----------
    out : str or Path
        Folder for both files (created).
    inspection : Inspection
        The decision rule the images were scored with.
    source : str
        What was scored, for the summary (e.g. the folder).
    root : Path, optional
        Files are written relative to it when they lie under it.
    max_images : int, default=:data:`MAX_IMAGES`
    labelled : bool, default=False
        Add a ``label`` column (ground truth, 1 = defective) that :meth:`add` then requires.
    """

    def __init__(self, out: str | Path, inspection: Inspection, *, source: str, root: Path | None = None,
                 max_images: int = MAX_IMAGES, labelled: bool = False) -> None:
        self.out, self.inspection, self.source, self.root, self.max_images = Path(out), inspection, source, root, max_images
        self.labelled = labelled
        self.out.mkdir(parents=True, exist_ok=True)
        self._file = open(self.out / CSV_NAME, "w", newline="")
        self._csv = csv.writer(self._file)
        self._csv.writerow(CSV_COLUMNS + ["label"] * labelled)
        self.scores: list[float] = []
        self.flagged: list[bool] = []
        self._shown: list[tuple[tuple[bool, float, int], str]] = []  # a min-heap: the least anomalous leaves first

    def _name(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix() if self.root and path.is_relative_to(self.root) else str(path)

    def add(self, batch: Scored, labels: np.ndarray | None = None) -> None:
        """Write the batch's rows (with ``labels`` (B,) if labelled) and keep panels of the most anomalous images."""
        if self.labelled != (labels is not None):
            raise ValueError("pass labels exactly when the writer was made with labelled=True")
        for i, path in enumerate(batch.paths):
            name, score, flagged = self._name(path), float(batch.scores[i]), bool(batch.flagged[i])
            self._csv.writerow([name, f"{score:.6g}", "flagged" if flagged else "ok", int(batch.largest_regions[i])]
                               + ([int(labels[i])] if self.labelled else []))
            key = (flagged, score, len(self.scores))
            self.scores.append(score)
            self.flagged.append(flagged)
            if len(self._shown) < self.max_images or key > self._shown[0][0]:
                panel = self._panel(name, batch, i)
                (heapq.heappush if len(self._shown) < self.max_images else heapq.heapreplace)(self._shown, (key, panel))
        self._file.flush()

    def _panel(self, name: str, batch: Scored, i: int) -> str:
        image, anomaly_map = batch.images[i], batch.maps[i]
        pictures = [(image.transpose(1, 2, 0) * 255).round().astype(np.uint8), colour_map(anomaly_map, self.inspection),
                    outlined(image, anomaly_map, self.inspection)]
        cells = "".join(f'<td><img src="{_data_uri(p)}" alt="{what} of {html.escape(name)}"></td>'
                        for p, what in zip(pictures, ("image", "anomaly map", "flagged regions")))
        decision = "flagged" if batch.flagged[i] else "ok"
        return (f'<tr class="{decision}"><td>{html.escape(name)}<br>score {batch.scores[i]:.4g}<br>'
                f'<b>{decision}</b><br>largest region {int(batch.largest_regions[i])} px</td>{cells}</tr>')

    def close(self, evaluation: dict[str, Any] | None = None, labels: np.ndarray | None = None) -> tuple[Path, Path]:
        """Finish the CSV and write the HTML page.

        ``evaluation`` adds rows to the summary; ``labels`` (N,), 1 = defective, colour the
        histogram by ground truth instead of by decision.
        """
        self._file.close()
        scores, flagged = np.array(self.scores), np.array(self.flagged)
        if not len(scores):
            raise ValueError("no image was scored; nothing to report")
        inspection = self.inspection
        summary = {
            "scored": self.source, "images": len(scores), "flagged": int(flagged.sum()), "ok": int((~flagged).sum()),
            "threshold": f"{inspection.threshold:.6g} (pixels of the anomaly map strictly above it)",
            "flagged when": (f"a region of at least {inspection.min_defect_area} px lies above the threshold"
                             if inspection.min_defect_area > 1 else "its score (highest pixel) is above the threshold"),
            "how it was chosen": inspection.rule_text,
            "held-out normal images": (f"{inspection.n_rejected} of {inspection.n_validation} flagged; the false-reject "
                                       f"rate on new good parts is at most {inspection.false_reject_bound:.1%} with "
                                       f"{inspection.confidence:.0%} confidence (order statistics)"),
            "images as the detector sees them": (f"{inspection.image_size} px square, {inspection.fit}"
                                                 + (f", tiles of {inspection.tile} px" if inspection.tile else "")
                                                 + (", with an ignore mask" if inspection.ignored is not None else "")),
            **(evaluation or {}),
        }
        rows = "".join(f'<tr><th>{html.escape(k)}</th><td id="{k.replace(" ", "-")}">{html.escape(str(v))}</td></tr>'
                       for k, v in summary.items())
        histogram = viz.score_histogram(scores, flagged.astype(int) if labels is None else labels,
                                        threshold=inspection.threshold)
        ax = histogram.axes[0]
        if labels is None:  # no ground truth: the colours are the decisions
            handles, names = ax.get_legend_handles_labels()
            ax.legend(handles, [name.replace("good", "ok").replace("defective", "flagged") for name in names])
        ax.set_title(f"Image scores by {'decision' if labels is None else 'label'}")
        buffer = io.BytesIO()
        histogram.savefig(buffer, format="png", dpi=80)
        shown = [panel for _, panel in sorted(self._shown, reverse=True)]
        page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Inspection report: {html.escape(self.source)}</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
th,td{{border:1px solid #ccc;padding:4px;text-align:left;vertical-align:top}} tr.flagged td:first-child{{background:#fdd}}</style>
</head><body>
<h1>Inspection report</h1>
<table id="summary">{rows}</table>
<h2>Score histogram</h2>
<p>The dashed line is the threshold; an image score is the highest value of its map, so an image right of the
line has a pixel above it (under the minimum-defect-area rule it is flagged only if its region is large enough).</p>
<img id="histogram" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}" alt="score histogram">
<h2>Images, flagged first (the {len(shown)} most anomalous of {len(scores)}; every image is in {CSV_NAME})</h2>
<p>Columns: the image as the detector sees it, its anomaly map (threshold at mid-scale), the flagged regions outlined.</p>
<table id="images"><tr><th>file</th><th>image</th><th>anomaly map</th><th>flagged regions</th></tr>{''.join(shown)}</table>
</body></html>
"""
        (self.out / HTML_NAME).write_text(page, encoding="utf-8")
        return self.out / CSV_NAME, self.out / HTML_NAME
