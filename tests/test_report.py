"""`pyml report`: one self-contained HTML file, rendered in headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from PIL import Image

from .conftest import Loans
from .support import system_package_missing

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _screenshot(html: Path, png: Path, tmp: Path) -> None:
    browser = _chromium()
    if browser is None:
        system_package_missing("chromium is not installed (Debian: apt-get install chromium; "
                               ".ci/run installs it)")
    done = subprocess.run(
        [browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp / 'chromium-profile'}",
         f"--screenshot={png}", "--window-size=1400,4000", html.as_uri()],
        capture_output=True, text=True, timeout=120, check=False)
    assert png.exists(), f"chromium wrote no screenshot:\n{done.stdout}{done.stderr}"


def test_binary_report_is_self_contained_and_renders(scored: Loans, tmp_path: Path) -> None:
    out = tmp_path / "default_risk.html"
    result = scored.ok("report", "default_risk", "--output", str(out))
    assert result.output.strip().splitlines()[-1] == f"wrote {out}"
    page = out.read_text()
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,', page)
    for expected in ("ROC curve", "Precision-recall curve", "Calibration", "Cumulative gains",
                     "Confusion matrix", "Mean |SHAP| per feature", "SHAP summary",
                     "SHAP dependence of", "PSI per feature"):
        assert any(alt.startswith(expected) for alt in images), expected
    # Nothing is fetched from elsewhere: no remote or local file references.
    assert not re.search(r'(src|href)="(?!data:)', page)
    for section in ("<h2>Metrics</h2>", "<h2>Performance</h2>", "<h2>Explanations</h2>",
                    "<h2>Drift</h2>", "<h2>Data profile</h2>", "<h2>Spec</h2>"):
        assert section in page
    assert "[0." in page  # intervals beside the metrics
    # The missing drift check and profile were computed for the page, not stored: the report
    # only reads (tests/test_store.py).
    assert scored.sql("select count(*) from ml.drift") == [(0,)]
    assert scored.sql("select count(*) from information_schema.tables where table_name = "
                      "'profile_loan_features'") == [(0,)]

    png = tmp_path / "default_risk.png"
    _screenshot(out, png, tmp_path)
    image = Image.open(png).convert("RGB")
    assert image.size == (1400, 4000)
    assert png.stat().st_size > 100_000
    colours = image.resize((350, 1000)).getcolors(maxcolors=1_000_000)
    assert colours is not None and len(colours) > 500  # figures, not a blank page
    white = max(count for count, rgb in colours if rgb == (249, 250, 251) or
                rgb == (255, 255, 255)) / (350 * 1000)
    assert white < 0.8


def test_regression_and_multiclass_reports(scored: Loans, tmp_path: Path) -> None:
    reg = tmp_path / "loss.html"
    scored.ok("report", "loss_amount", "-o", str(reg))
    page = reg.read_text()
    assert "Residuals vs predicted value" in page and "Actual vs predicted" in page
    assert "ROC curve" not in page
    multi = tmp_path / "grade.html"
    scored.ok("report", "grade", "-o", str(multi))
    assert "SHAP summary" in multi.read_text()
    missing = scored.pyml("report", "grade", "-o", str(tmp_path / "nope" / "x.html"))
    assert missing.exit_code == 1 and "folder" in missing.output
