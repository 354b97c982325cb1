"""The benchmark report as a reader sees it: report.html rendered by headless Chromium.

A small constructed results set (train outputs for three models × three seeds, one RUS table,
one sweep) goes through the real evaluate stage; Chromium then loads report.html, and the test
asserts on the rendered DOM (no raw Markdown, real tables, every figure captioned, decoded and
shown at least 600 px wide) and on the screenshot (not blank). Needs Debian's `chromium`
(`apt-get install chromium`; .ci/run installs it); skips and says so without it.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from timoe.evaluation import report as rep  # not `import tests_markdown`: pytest would collect it

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium not installed (apt-get install chromium)"
)
MIN_WIDTH = 600  # px: a figure narrower than this on a 1280 px window is a thumbnail, not readable
CLASSES = ["WALKING", "SITTING", "STANDING", "LAYING"]
# Appended to a copy of report.html: records what the browser decoded and laid out for each image.
PROBE = """<script>
window.addEventListener("load", () => {
  for (const img of document.images) {
    img.setAttribute("data-natural-width", img.naturalWidth);
    img.setAttribute("data-shown-width", Math.round(img.getBoundingClientRect().width));
  }
});
</script>"""


def _train_output(d: Path, model: str, seed: int, acc: float, rng: np.random.Generator) -> None:
    """metrics.json, predictions.parquet (and routing.json for routed models) as train writes them."""
    d.mkdir(parents=True)
    n = 80
    label = rng.integers(0, len(CLASSES), n)
    pred = np.where(rng.random(n) < acc, label, rng.integers(0, len(CLASSES), n))
    prob = np.full((n, len(CLASSES)), 0.1, dtype=np.float32)
    prob[np.arange(n), pred] = 0.7
    pl.DataFrame(
        {
            "split": ["test"] * n,
            "window_id": np.arange(n, dtype=np.int64),
            "subject": np.zeros(n, dtype=np.int32),
            "label": label.astype(np.int32),
            "pred": pred.astype(np.int32),
            "prob": pl.Series(prob.tolist(), dtype=pl.List(pl.Float32)),
        }
    ).write_parquet(d / "predictions.parquet")
    history = [
        {
            "epoch": e,
            "train_loss": 1.5 / (e + 1),
            "val_accuracy": acc * (1 - 0.5 / (e + 1)),
            "train_routing_entropy": None if model == "transformer" else 1.9,
        }
        for e in range(6)
        if model != "minirocket"  # the reference model trains without epochs
    ]
    meta = {
        "dataset": "hapt",
        "model": model,
        "seed": seed,
        "run_id": f"{model}{seed}",
        "classes": CLASSES,
        "history": history,
    }
    (d / "metrics.json").write_text(json.dumps(meta))
    if model in ("transformer", "minirocket"):
        return  # dense or the reference: no routing
    layer = {
        "layer": 0,
        "n_eff": 5.5,
        "mi_expert_class": 0.21,
        "mi_expert_regime": None,
        "topk_overlap": 0.4,
        "synergy_share": 0.45 if model == "timoe" else 0.26,
        "synergy_share_on_synergy_cells": 0.7 if model == "timoe" else None,
    }
    routing = {
        "n_synergy": 2,
        "n_experts": 8,
        "synergy_chance": 0.25,
        "topk_overlap_chance": 0.25,
        "diagnostics": {
            "per_layer": [layer, {**layer, "layer": 1}],
            "random_routing_accuracy": acc - 0.05,
            "accuracy": acc,
            "random_routing_drop": 0.05,
        },
    }
    if model == "timoe":  # usage by interaction regime exists only for models with a prior
        routing["regimes"] = {
            r: {"usage": list(rng.dirichlet(np.ones(8))), "assignments": 100.0, "synergy_share": 0.4}
            for r in ("redundancy", "uniqueness", "synergy")
        }
    (d / "routing.json").write_text(json.dumps(routing))


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """results/benchmark/ of the evaluate stage on a constructed results set."""
    from timoe.config import load_params, validate
    from timoe.stages.evaluate import run_evaluate

    base = tmp_path_factory.mktemp("report")
    root = Path(__file__).resolve().parents[1]
    raw = load_params(root / "params.yaml", root / "workflow" / "smoke.yaml").model_dump()
    raw["tracking"]["uri"] = f"sqlite:///{base / 'mlflow.db'}"
    rng = np.random.default_rng(0)
    dirs = []
    for model, acc in (("transformer", 0.85), ("moe", 0.80), ("timoe", 0.9), ("minirocket", 0.95)):
        for seed in range(3):
            d = base / "models" / "hapt" / model / f"seed{seed}"
            _train_output(d, model, seed, acc, rng)
            dirs.append(d)
    rus = base / "rus" / "hapt"
    rus.mkdir(parents=True)
    lags = [0, 1, 2, 4, 8]
    pl.DataFrame(
        {
            "pair": ["acc|gyro"] * 5,
            "lag": lags,
            "R": [0.24] * 5,
            "U1": [0.5, 0.4, 0.3, 0.2, 0.1],
            "U2": [0.4] * 5,
            "S": [0.05, 0.1, 0.08, 0.04, 0.02],
        }
    ).write_parquet(rus / "rus.parquet")
    sweep = base / "sweeps" / "hapt" / "timoe"
    sweep.mkdir(parents=True)
    pl.DataFrame({"number": [0, 1, 2, 3], "value": [0.8, 0.85, 0.83, 0.88]}).write_csv(sweep / "trials.csv")
    out = base / "benchmark"
    run_evaluate(validate(raw), model_dirs=dirs, out_dir=out, rus_dirs=[rus], sweep_dirs=[sweep])
    return out


class _Dom(HTMLParser):
    """Visible text, tables, and each <figure>'s images and caption text."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.tables = 0
        self.h2: list[str] = []
        self.figures: list[dict] = []
        self.imgs: list[dict] = []
        self._stack: list[str] = []

    def handle_starttag(self, tag, attrs):
        self._stack.append(tag)
        if tag == "table":
            self.tables += 1
        elif tag == "figure":
            self.figures.append({"imgs": [], "caption": ""})
        elif tag == "img":
            a = dict(attrs)
            self.imgs.append(a)
            if "figure" in self._stack:
                self.figures[-1]["imgs"].append(a)
            self._stack.pop()  # void element

    def handle_endtag(self, tag):
        while self._stack and self._stack.pop() != tag:
            pass

    def handle_data(self, data):
        if any(t in ("script", "style") for t in self._stack):
            return
        self.text.append(data)
        if "figcaption" in self._stack:
            self.figures[-1]["caption"] += data
        if self._stack and self._stack[-1] == "h2":
            self.h2.append(data.strip())


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


def _chromium(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--window-size=1280,4000",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


@needs_chromium
def test_report_renders_in_a_browser(report):
    probe = report.parent / "probe.html"
    probe.write_text((report / "report.html").read_text().replace("</body>", PROBE + "</body>"))
    res = _chromium("--virtual-time-budget=5000", "--dump-dom", probe.as_uri())
    assert res.returncode == 0 and "<body" in res.stdout, res.stderr[-2000:]
    dom = _Dom()
    dom.feed(res.stdout)
    text = "".join(dom.text)

    # the level first (against the reference), then the verdicts
    assert dom.h2[:2] == ["Where the models stand: against the reference", "Claims"]
    assert "HELD" in text or "FAILED" in text
    # no Markdown left raw: emphasis, strong, table rules, image syntax
    for marker in ("**", "|---", "| ---", "!["):
        assert marker not in text, f"raw Markdown {marker!r} in the page"
    assert not re.search(r"(?<![\w\\])_[^_\s][^_\n]*_(?!\w)", text), "raw _emphasis_ in the page"
    assert not any(line.lstrip().startswith("|") for line in text.splitlines()), "a table left as text"
    assert dom.tables >= 6  # reference gaps, claims, metrics, baseline tests, diagnostics, recall

    assert dom.figures and len(dom.imgs) == sum(len(f["imgs"]) for f in dom.figures)
    for fig in dom.figures:
        assert len(fig["imgs"]) == 1 and len(fig["caption"].strip()) > 40, fig["caption"]
        img = fig["imgs"][0]
        assert int(img["data-natural-width"]) >= MIN_WIDTH, img.get("alt")  # decoded by the browser
        assert int(img["data-shown-width"]) >= MIN_WIDTH, img.get("alt")  # and shown large enough
        width, _ = _png_size(base64.b64decode(img["src"].split(",", 1)[1]))
        assert width >= MIN_WIDTH


@needs_chromium
def test_screenshot_is_not_blank(report):
    from PIL import Image

    shot = report.parent / "report.png"
    res = _chromium(f"--screenshot={shot}", (report / "report.html").as_uri())
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (4000, 1280)
    ink = (pixels < 200).mean()  # text, table rules and plot lines
    assert 0.01 < ink < 0.6 and pixels.std() > 10


def test_report_files_agree(report):
    md = (report / "report.md").read_text()
    assert md.index("## Where the models stand") < md.index("## Claims") < md.index("## Test metrics")
    gaps = pl.read_csv(report / "reference_gaps.csv")
    assert sorted(gaps["model"].to_list()) == ["moe", "timoe", "transformer"]
    assert (gaps["value"] < 0).all() and (gaps["low"] <= gaps["value"]).all()  # all below minirocket
    assert "| hapt | **minirocket** (reference) |" in md and (report / "accuracy_levels.png").is_file()
    claims = pl.read_csv(report / "claims.csv")
    assert {"claim", "dataset", "verdict", "p_value", "reason"} <= set(claims.columns)
    moe = claims.filter(pl.col("claim") == "beats_moe").row(0, named=True)
    assert moe["verdict"] in ("HELD", "FAILED") and moe["n_pairs"] == 3
    assert "not run on hapt" in claims.filter(pl.col("claim") == "beats_hash_moe")["reason"][0]
    runs = pl.read_csv(report / "runs.csv")
    timoe = runs.filter(pl.col("model") == "timoe")
    assert timoe["diag.synergy_share"].to_list() == pytest.approx([0.45] * 3)
    # every figure in the Markdown report has its caption line under it
    for name in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (report / name).is_file()
    assert md.count("![") == len(re.findall(r"\)\n\n\*[^*]+\.\* \S", md))


def test_markdown_is_rendered_not_escaped(tmp_path):
    """The old bug: a non-table Markdown block went into the HTML escaped, `_..._` and all."""
    empty = pl.DataFrame(schema={"dataset": pl.String})
    html = rep.render_markdown(rep.tests_markdown(empty))
    assert "<em>No model to compare" in html and "_No" not in html
    png = tmp_path / "x.png"
    png.write_bytes(
        base64.b64decode(
            "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
        )
    )
    rep.write_html(
        tmp_path / "r.html", ["# t", "**bold** <script>x</script>", rep.Figure(png, "x", "look here")], {}
    )
    page = (tmp_path / "r.html").read_text()
    assert "<strong>bold</strong>" in page and "&lt;script&gt;" in page
    assert "<figcaption><b>x.</b> look here</figcaption>" in page
