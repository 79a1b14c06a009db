"""Tests for mvtec_tutorial.report: the CSV, the outline, and the HTML page opened in a real headless Chromium."""
import csv
import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from mvtec_tutorial import inspect_cli, own_images, report, synthetic

#: Debian's package installs `chromium`; other systems name it otherwise. `make browser` installs it.
BROWSER = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome") if shutil.which(name)),
               None)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
#: Appended to a copy of the page: after every image has loaded, write what the page shows into the DOM.
CHECK = """<script>
window.addEventListener("load", () => {
  const text = id => document.getElementById(id).textContent;
  const result = {images: document.images.length,
                  loaded: Array.from(document.images).filter(i => i.complete && i.naturalWidth > 0).length,
                  count: Number(text("images")), flagged: Number(text("flagged")), ok: Number(text("ok")),
                  rows: document.querySelectorAll("#images tr.flagged, #images tr.ok").length,
                  flagged_rows: document.querySelectorAll("#images tr.flagged").length};
  const out = document.createElement("pre");
  out.id = "check";
  out.textContent = JSON.stringify(result);
  document.body.appendChild(out);
});
</script>"""


def test_outline_surrounds_only_regions_of_the_minimum_area():
    inspection = own_images.Inspection(rule="min-defect-area", rule_text="", threshold=0.5, min_defect_area=4,
                                       image_size=12, fit="pad", tile=None, ignored=None, n_validation=1, n_rejected=0,
                                       false_reject_bound=0.95, confidence=0.95,
                                       validation_scores=np.zeros(1, np.float32), map_low=0.0)
    anomaly_map = np.zeros((12, 12), np.float32)
    anomaly_map[2:6, 2:6] = 1.0   # 16 px: outlined
    anomaly_map[9, 9] = 1.0       # 1 px: too small
    picture = report.outlined(np.zeros((3, 12, 12), np.float32), anomaly_map, inspection)
    coloured = (picture == report.REGION_COLOUR).all(axis=-1)
    assert coloured[2, 2] and coloured[1, 2] and not coloured[9, 9] and not coloured[8:11, 8:11].any()


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """A report of the demo folder's new images, written by the command with room for 10 panels."""
    folder = synthetic.demo_folder(tmp_path_factory.mktemp("parts") / "parts", image_size=48, n_normal=12, n_new_good=6,
                              n_new_per_defect=2)
    out = folder.parent / "report"
    detector = folder.parent / "detector.pt"
    inspect_cli.main(["fit", str(folder / "normal"), "--out", str(detector), "--method", "mean_image",
                      "--image-size", "32", "--quiet"])
    inspect_cli.main(["score", str(detector), str(folder / "new"), "--out", str(out), "--max-images", "10", "--quiet"])
    with open(out / report.CSV_NAME, newline="") as file:
        return out, list(csv.DictReader(file))


@pytest.mark.skipif(BROWSER is None, reason="Chromium is not installed: `make browser` installs it with apt-get "
                                            "(Debian: apt-get install chromium)")
def test_the_page_shows_every_image_and_the_counts_of_the_csv(scored, tmp_path):
    out, rows = scored
    page = (out / report.HTML_NAME).read_text()
    assert "src=\"http" not in page and "src=\"file" not in page  # self-contained: nothing fetched
    checked = tmp_path / "checked.html"
    checked.write_text(page.replace("</body>", CHECK + "</body>"))
    dom = subprocess.run([BROWSER, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000",
                          "--dump-dom", checked.as_uri()], capture_output=True, text=True, timeout=120).stdout
    found = re.search(r'<pre id="check">(.*?)</pre>', dom)
    assert found, f"the check did not run; Chromium printed: {dom[:500]}"
    result = json.loads(found.group(1))
    n_flagged = sum(row["decision"] == "flagged" for row in rows)
    assert result["images"] == 1 + 3 * 10  # the histogram and three panels per shown image
    assert result["loaded"] == result["images"]
    assert (result["count"], result["flagged"], result["ok"]) == (len(rows), n_flagged, len(rows) - n_flagged)
    assert result["rows"] == 10 and result["flagged_rows"] == min(n_flagged, 10)
