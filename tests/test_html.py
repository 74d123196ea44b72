"""`subnetscope report`: one self-contained HTML page with every section, checked as text and, when
Chromium is installed, rendered in a real headless browser."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser

import pytest

from anatomy_helpers import adam_like_pair, run_main
from subnetscope.anatomy import ulp
from subnetscope.anatomy.rank import rank_report
from subnetscope.comparison import compare
from subnetscope.errors import SubnetscopeError, UsageError
from subnetscope.render import html as report_html

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two compare reports (lr 1e-5 with --ulp and an embedded rank; lr 3e-5 plain) and a rank report."""
    root = tmp_path_factory.mktemp("html")
    b1, t1 = adam_like_pair(root / "a", lr=1e-5, layers=2, hidden=32, inter=64, vocab=64)
    b2, t2 = adam_like_pair(root / "b", lr=3e-5, layers=2, hidden=32, inter=64, vocab=64)
    r1 = ulp.compare_ulp(b1, t1, step_size=1e-5)
    r1.extra["rank"] = rank_report(b1, t1, device="cpu").to_json()
    c1 = json.loads(r1.dumps())
    c2 = json.loads(compare(b2, t2).dumps())
    rk2 = rank_report(b2, t2, device="cpu").to_json()
    files = {}
    for name, obj in (("c1", c1), ("c2", c2), ("rk2", rk2)):
        files[name] = root / f"{name}.json"
        files[name].write_text(json.dumps(obj))
    return {"c1": c1, "c2": c2, "rk2": rk2, "files": files, "root": root}


@pytest.fixture(scope="module")
def full_page(runs):
    """The page of both compare reports and the rank report (rendered once for the module)."""
    return report_html.render_html([runs["c1"], runs["c2"], runs["rk2"]], labels=["lr 1e-5", "lr 3e-5"])


class Structure(HTMLParser):
    """Section ids, their h2 titles, tables and images of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.images: list[str] = []
        self.tables = 0
        self.external: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self.sections.append(a["id"])
        if tag == "img":
            self.images.append(a["src"])
        if tag == "table":
            self.tables += 1
        if tag == "script":
            self.scripts += 1
        for k in ("src", "href"):
            if k in a and not str(a[k]).startswith("data:"):
                self.external.append(a[k])


def parse(text: str) -> Structure:
    s = Structure()
    s.feed(text)
    return s


def test_every_section_for_two_compares_and_a_rank(runs, full_page):
    page = full_page
    s = parse(page)
    assert s.sections == ["headline", "comparison", "tolerance-table", "heatmap", "ulp", "rank"]
    # bar chart + 2 tolerance curves + 2 heatmaps + 1 ULP histogram + 2 rank charts
    assert len(s.images) == 8
    for src in s.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG_MAGIC)
    assert s.external == [] and s.scripts == 0  # self-contained, nothing fetched, nothing run
    # the headline and the Table-6 layout carry the reports' own numbers
    for obj in (runs["c1"], runs["c2"]):
        p = obj["tolerances"].index(obj["primary_tolerance"])
        assert f"{100 * obj['overall']['sparsity'][p]:.2f}%" in page
        for sp in obj["overall"]["sparsity"]:
            assert f"<td>{100 * sp:.2f}%</td>" in page
    assert "<td>lr 1e-5</td>" in page and "<td>lr 3e-5</td>" in page
    # rank table: the embedded rank of run 1 and the added rank report of run 2 (matched by paths)
    rank_sec = page[page.index('<section id="rank">') :]
    r1, r2 = runs["c1"]["rank"]["overall"], runs["rk2"]["overall"]
    assert "<th></th><th>lr 1e-5</th><th>lr 3e-5</th>" in rank_sec
    assert f"<td>matrices ranked</td><td>{r1['matrices']}</td><td>{r2['matrices']}</td>" in rank_sec
    assert (
        f"<td>update rank (mean)</td><td>{r1['mean_rank_pct']:.2f}%</td><td>{r2['mean_rank_pct']:.2f}%</td>"
        in rank_sec
    )
    # ULP section: the step-size line and the below-ULP table of run 1
    s1 = ulp.summarize(runs["c1"])
    assert f"{100 * s1['overall']['step_lost_share']:.2f}%" in page
    assert "no neighbour within tol" in page


def test_single_report_has_no_comparison_or_rank(runs):
    s = parse(report_html.render_html([runs["c2"]]))
    assert s.sections == ["headline", "tolerance-table", "heatmap"]
    assert len(s.images) == 2


def test_rank_report_alone(runs):
    s = parse(report_html.render_html([runs["rk2"]]))
    assert s.sections == ["rank"] and len(s.images) == 1


def test_findings_section(tmp_path):
    import torch

    from factory import save_checkpoint

    b = save_checkpoint({"model.norm.weight": torch.ones(4), "extra": torch.zeros(2)}, tmp_path / "b")
    t = save_checkpoint({"model.norm.weight": torch.ones(4)}, tmp_path / "t")
    page = report_html.render_html([json.loads(compare(b, t).dumps())])
    assert parse(page).sections[-1] == "findings" and "missing from target" in page


def test_bad_inputs(runs):
    with pytest.raises(UsageError, match=r"takes compare and rank reports, not 'subnetscope\.series'"):
        report_html.render_html([{"report": "subnetscope.series", "schema_version": "1.0"}])
    with pytest.raises(UsageError, match="no report given"):
        report_html.render_html([])
    with pytest.raises(SubnetscopeError, match=r"schema 7\.0 is not supported"):
        report_html.render_html([dict(runs["c2"], schema_version="7.0")])


def test_cli_writes_atomically(runs, tmp_path, capsys):
    f = runs["files"]
    out = tmp_path / "site" / "report.html"
    code, _, err = run_main(["report", str(f["c2"]), "--add", str(f["rk2"]), "--label", "rl",
                             "--title", "SFT vs RL", "-o", str(out)], capsys)  # fmt: skip
    assert code == 0, err
    assert f"report written to {out}" in err
    text = out.read_text()
    assert "<title>SFT vs RL</title>" in text and "<td>rl</td>" in text
    assert parse(text).sections == ["headline", "tolerance-table", "heatmap", "rank"]
    assert [p.name for p in out.parent.iterdir()] == ["report.html"]
    code, _, err = run_main(["report", str(tmp_path / "nope.json"), "-o", str(out)], capsys)
    assert code == 2 and "nope.json: no such file" in err


# -- a real browser ------------------------------------------------------------------------------------------

CHROMIUM = next(
    (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None
)

# appended to a copy of the page: records, in the DOM, what the browser laid out and decoded
PROBE = """<script>
window.addEventListener('load', () => {
  const secs = [...document.querySelectorAll('section')].map(s => s.id + ':' + s.offsetHeight);
  const imgs = [...document.images].map(i => i.complete + ':' + i.naturalWidth + 'x' + i.naturalHeight);
  const out = document.createElement('pre');
  out.id = 'probe';
  out.textContent = JSON.stringify({sections: secs, images: imgs});
  document.body.appendChild(out);
});
</script>"""


def chromium(*args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--hide-scrollbars", f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-')}"]  # fmt: skip
    env = dict(os.environ, HOME=tempfile.mkdtemp(prefix="chromium-home-"))
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install chromium); CI installs it"
)
def test_renders_in_headless_chromium(runs, full_page, tmp_path):
    f = runs["files"]
    page = tmp_path / "report.html"
    page.write_text(full_page)
    probe = tmp_path / "probe.html"
    probe.write_text(full_page.replace("</body>", PROBE + "</body>"))
    dom = chromium("--virtual-time-budget=10000", "--dump-dom", probe.as_uri())
    m = re.search(r'<pre id="probe">(.*?)</pre>', dom.stdout, re.S)
    assert m, dom.stderr[-2000:]
    seen = json.loads(m.group(1).replace("&quot;", '"'))
    heights = dict(s.rsplit(":", 1) for s in seen["sections"])
    assert list(heights) == ["headline", "comparison", "tolerance-table", "heatmap", "ulp", "rank"]
    assert all(int(h) > 100 for h in heights.values()), heights
    assert len(seen["images"]) == 8
    for im in seen["images"]:
        done, size = im.split(":")
        w, h = map(int, size.split("x"))
        assert done == "true" and w > 300 and h > 200, im  # decoded by the browser
    shot = tmp_path / "shot.png"
    res = chromium(f"--screenshot={shot}", "--window-size=1200,3000", page.as_uri())
    assert shot.exists(), res.stderr[-2000:]
    from PIL import Image

    with Image.open(shot) as img:
        assert img.size == (1200, 3000)
        gray = img.convert("L")
        lo, hi = gray.getextrema()
        assert lo < 80 and hi > 240  # text and background, not a blank page
        colours = img.convert("RGB").resize((120, 300)).getcolors(maxcolors=100_000)
        assert colours is not None and len(colours) > 50  # plots, not just text
    assert f["c1"].exists()  # inputs untouched
