"""report.html: one self-contained page per run and per grid, read as a person would."""

from __future__ import annotations

import base64
import io
import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from conftest import DEMO, one_line_error
from PIL import Image

from experiments.cli import main
from experiments.grid import run_grid
from experiments.grid_report import write_grid_report, write_report
from experiments.report import matrix_rows
from experiments.table import format_mean_std, group_runs, load_runs, rows

TINY = ["data.image_size=48", "train.epochs=1", "log.progress=false"]
MAX_BYTES = 2 * 1024 * 1024


class Page(HTMLParser):
    """Tables (by id: rows of cell texts), images' sources, links, scripts of a page."""

    def __init__(self, html: str):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.images, self.links, self.scripts, self.bold = [], [], 0, []
        self._table = self._cell = None
        self._in_bold = False
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self._table = self.tables.setdefault(attrs.get("id", f"t{len(self.tables)}"), [])
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = []
        elif tag == "img":
            self.images.append(attrs["src"])
        elif tag == "a":
            self.links.append(attrs["href"])
        elif tag == "script":
            self.scripts += 1
        elif tag == "b":
            self._in_bold = True

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._table[-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None
        elif tag == "b":
            self._in_bold = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._in_bold:
            self.bold.append(data.strip())


def shown(value) -> str:
    return "—" if value is None else f"{value:.3f}"


def decoded_png(src: str) -> Image.Image:
    assert src.startswith("data:image/png;base64,"), src[:40]
    image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
    image.load()
    return image


@pytest.fixture(scope="module")
def demo_run(tiny_demo, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "run"
    args = ["run", str(DEMO), "--out", str(out), f"stream.EVA.root={tiny_demo / 'EVA'}",
            f"stream.AVA.root={tiny_demo / 'AVA'}", *TINY]
    assert main(args) == 0
    return out


def check_run_page(run_dir: Path) -> Page:
    """The page's numbers are results.json's; every image is an inline PNG; no script."""
    results = json.loads((run_dir / "results.json").read_text())
    html = (run_dir / "report.html").read_text()
    assert len(html.encode()) < MAX_BYTES
    page = Page(html)
    assert page.scripts == 0 and not any(s.startswith("http") for s in page.images + page.links)
    for src in page.images:
        assert decoded_png(src).width > 100
    names = results["experiences"]
    for metric in ("srcc", "plcc", "krcc"):
        table = page.tables[f"matrix-{metric}"]
        assert table[0][1:] == names
        expected = [results["initial"][metric], *results["matrices"][metric]]
        assert [row[1:] for row in table[1:]] == [[shown(v) for v in row] for row in expected]
        assert table[1][0] == "initial"
    summary = {row[0]: row[1:] for row in page.tables["summary"][1:]}
    keys = ("acc", "bwt", "fwt", "forgetting", "mpi", "msi", "mpsi", "mpsr")
    for metric in ("srcc", "plcc", "krcc"):
        assert summary[metric.upper()] == [shown(results["summary"][metric][k]) for k in keys]
    counts = {row[0]: row for row in page.tables["counts"][1:]}
    for name in names:
        c = results["counts"][name]
        assert counts[name][1:8] == [str(c[k]) for k in ("labelled", "usable", "excluded",
                                                         "dropped", "train", "val", "test")]
    prov = dict(page.tables["provenance-table"])
    assert prov["commit"] == (results["commit"] or "not recorded (not a git checkout)")
    assert prov["weights sha256"] == (results["model"].get("sha256") or "—")
    assert prov["torch threads"] == str(results["threads"])
    return page


def test_a_run_writes_its_page_with_the_numbers_of_results_json(demo_run, capsys):
    page = check_run_page(demo_run)
    from experiments.files import umask

    assert (demo_run / "report.html").stat().st_mode & 0o777 == 0o666 & ~umask()  # shareable
    # heatmaps (3), curves, scatter: each a decodable PNG
    assert len(page.images) == 5
    results = json.loads((demo_run / "results.json").read_text())
    assert results["date"].endswith("+00:00")
    assert results["commit"] is None or len(results["commit"].removesuffix("+dirty")) == 40
    # `iqacl report RUN_DIR` rewrites the same page
    before = (demo_run / "report.html").read_text()
    (demo_run / "report.html").unlink()
    assert main(["report", str(demo_run)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == \
        f"report: {demo_run / 'report.html'}"
    assert (demo_run / "report.html").read_text() == before


def test_iqacl_run_names_the_report_last(tiny_demo, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", str(DEMO), "--out", str(out), f"stream.EVA.root={tiny_demo / 'EVA'}",
                 f"stream.AVA.root={tiny_demo / 'AVA'}", *TINY, "log.plots=false"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"report: {out / 'report.html'}"
    off = tmp_path / "off"
    main(["run", str(DEMO), "--out", str(off), f"stream.EVA.root={tiny_demo / 'EVA'}",
          f"stream.AVA.root={tiny_demo / 'AVA'}", *TINY, "log.report=false"])
    assert not (off / "report.html").exists() and (off / "results.json").exists()


def test_constant_predictions_are_flagged_cell_by_cell():
    results = {"experiences": ["A", "B"], "protocol": "stream",
               "constant_predictions": ["initial on B", "after_1 on A"],
               "initial": {"srcc": [0.1, 0.0]}, "matrices": {"srcc": [[0.5, 0.2], [0.0, 0.6]]}}
    flags = [[c["noise"] for c in row["cells"]] for row in matrix_rows(results, "srcc")]
    assert flags == [[False, True], [False, False], [True, False]]


@pytest.fixture(scope="module")
def two_row_grid(tiny_demo, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("grid")
    spec = {"base": str(DEMO), "seeds": [0],
            "overrides": [f"stream.EVA.root={tiny_demo / 'EVA'}",
                          f"stream.AVA.root={tiny_demo / 'AVA'}", *TINY],
            "variants": [{"label": "naive"},
                         {"label": "per-task heads", "overrides": ["model.heads=per_task"]}]}
    (root / "grid.yaml").write_text(yaml.safe_dump(spec))
    out = root / "runs"
    run_grid(root / "grid.yaml", out)
    (out / "later-s0" / "checkpoints" / "step_1").mkdir(parents=True)  # an unfinished run
    write_grid_report(out)
    return out


def test_a_grid_page_holds_the_table_links_every_run_and_lists_unfinished(two_row_grid):
    page = Page((two_row_grid / "report.html").read_text())
    groups = group_runs(load_runs([two_row_grid]))
    cols, body = rows(groups, "srcc", ("ACC", "BWT", "FWT", "forgetting", "mPI", "mSI",
                                       "mPSI", "mPSR"))
    table = [[row[0], *row[2:]] for row in page.tables["grid-table"]]  # [1]: run links
    assert table[0] == cols
    for row, expected in zip(table[1:], body, strict=True):
        assert row[0] == expected["strategy"]
        assert row[cols.index("ACC")] == format_mean_std(expected["ACC"])
        assert row[1] == ("yes" if expected["_task_aware"] else "no")
    assert {r[1] for r in table[1:]} == {"yes", "no"}  # one task-aware row, flagged
    assert [r[1] for r in page.tables["grid-table"][1:]] == ["seed 0", "seed 0"]
    assert len(page.links) == 2
    for href in page.links:  # each run's own page, written if it was missing
        target = two_row_grid / href
        assert target.name == "report.html" and target.is_file()
        check_run_page(target.parent)
    assert page.tables["unfinished-runs"][1] == ["later-s0", "last checkpoint step_1"]
    assert all(decoded_png(src).width > 100 for src in page.images) and len(page.images) == 2
    assert "later" not in "".join(r[0] for r in table)  # never averaged in


def test_iqacl_grid_report_html_writes_the_page_and_names_it_last(two_row_grid, capsys):
    page = two_row_grid / "report.html"
    page.unlink()
    grid_file = two_row_grid.parent / "grid.yaml"
    assert main(["grid", str(grid_file), "--out", str(two_row_grid), "--report-html",
                 "--column", "mPI"]) == 0  # both runs finished: nothing is run again
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"report: {page}"
    assert "mPI per row" in page.read_text()


def test_report_of_a_folder_without_runs_says_what_to_pass(tmp_path):
    assert "no results.json" in one_line_error(write_report, tmp_path)


# ---------------------------------------------------------------- in a real browser

def browser():
    """Headless Debian chromium through its chromedriver, or a skip saying what is missing."""
    from benchmarks.errors import UserError
    from experiments.browser import chrome

    try:
        return chrome()
    except UserError as err:
        pytest.skip(f"a real browser is needed ({err}); .ci/run installs one")


def rendered(path: Path, shot: Path) -> dict:
    """What the browser shows: console errors, images' decoded widths, table cells."""
    from selenium.webdriver.common.by import By

    from experiments.browser import full_page

    chrome = browser()
    try:
        chrome.get(path.resolve().as_uri())
        widths = chrome.execute_script(
            "return Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0)")
        tables = {t.get_attribute("id"): [[c.text for c in r.find_elements(By.XPATH, "./th|./td")]
                                          for r in t.find_elements(By.TAG_NAME, "tr")]
                  for t in chrome.find_elements(By.TAG_NAME, "table")}
        errors = [e for e in chrome.get_log("browser") if e["level"] == "SEVERE"]
        full_page(chrome)
        chrome.save_screenshot(str(shot))
    finally:
        chrome.quit()
    return {"widths": widths, "tables": tables, "errors": errors}


def test_the_run_page_in_chromium_shows_every_image_and_the_numbers(demo_run, tmp_path):
    seen = rendered(demo_run / "report.html", tmp_path / "run.png")
    assert seen["errors"] == []
    assert len(seen["widths"]) == 5 and all(w > 100 for w in seen["widths"])
    results = json.loads((demo_run / "results.json").read_text())
    table = seen["tables"]["matrix-srcc"]
    expected = [results["initial"]["srcc"], *results["matrices"]["srcc"]]
    assert [row[1:] for row in table[1:]] == [[shown(v) for v in row] for row in expected]
    shot = Image.open(tmp_path / "run.png")
    assert shot.width >= 1000 and shot.height > 2000  # the whole page, not a blank frame
    assert len(set(shot.convert("L").resize((64, 64)).getdata())) > 20


def test_the_grid_page_in_chromium_links_runs_and_decodes_its_charts(two_row_grid, tmp_path):
    seen = rendered(two_row_grid / "report.html", tmp_path / "grid.png")
    assert seen["errors"] == []
    assert len(seen["widths"]) == 2 and all(w > 100 for w in seen["widths"])
    table = Page((two_row_grid / "report.html").read_text()).tables["grid-table"]
    assert seen["tables"]["grid-table"][1:] == [
        [c.replace("\n", " ") for c in row] for row in table[1:]]
