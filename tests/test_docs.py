"""The manual: README.md stays a front page, every link in it and in docs/ names a file that exists, and
the MkDocs site builds with --strict (a broken link, a missing page or a griffe warning fails it; the
flags reference is generated from the scripts' parsers by docs/hooks/flags.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

README = ROOT / "README.md"
DOCS = ROOT / "docs"
MAX_README_LINES = 150

FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
CODE_SPAN = re.compile(r"(`+).+?\1", re.S)
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def links(path: Path) -> list[str]:
    """The targets of the Markdown links and images of `path`, code blocks and code spans left out."""
    text = CODE_SPAN.sub("", FENCE.sub("", path.read_text()))
    return LINK.findall(text)


def slug(heading: str) -> str:
    """Python-Markdown's toc anchor of a heading (GitHub's agrees for the headings used here)."""
    text = re.sub(r"[^\w\s-]", "", heading).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text())
    return {slug(CODE_SPAN.sub(lambda m: m.group(0).strip("`"), h)) for h in re.findall(r"^#{1,6}\s+(.+?)\s*#*$",
                                                                                         text, re.M)}


def local_target(source: Path, target: str) -> Path | None:
    """The file a link names, or None for a web address or an anchor within the page. A link that starts
    with / is the repository's (GitHub resolves it against the repository root): the manual links so to
    files outside docs/, such as bench/RESULTS.md."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
        return None
    path = target.split("#", 1)[0]
    return ROOT / path.lstrip("/") if path.startswith("/") else source.parent / path


def test_readme_is_a_front_page():
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; the manual is docs/"


def test_every_relative_link_names_a_file_that_exists():
    broken = []
    for md in markdown_files():
        for target in links(md):
            path = local_target(md, target)
            if path is not None and not path.exists():
                broken.append(f"{md.relative_to(ROOT)}: {target}")
    assert broken == []


def test_the_readmes_links_into_the_manual_name_existing_headings():
    # GitHub shows README.md; mkdocs --strict checks the links between the manual's own pages
    broken = []
    for target in links(README):
        path = local_target(README, target)
        if path is not None and "#" in target and path.suffix == ".md":
            if slug(target.split("#", 1)[1]) not in anchors(path):
                broken.append(target)
    assert broken == []


def test_the_link_check_sees_links():
    # guards the checks above against a regular expression that finds nothing
    assert "docs/guide/kaggle.md" in links(README)
    assert "/bench/RESULTS.md" in links(DOCS / "benchmarks.md")
    assert local_target(DOCS / "benchmarks.md", "/bench/RESULTS.md") == ROOT / "bench" / "RESULTS.md"
    assert local_target(README, "https://doi.org/x") is None


def test_the_manual_builds_strict(tmp_path: Path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_MKDOCS_2_WARNING": "1"}
    site = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    scripts = (site / "reference" / "scripts" / "index.html").read_text()
    assert "flags: every script" not in scripts, "docs/hooks/flags.py did not replace its marker"
    for name in ("train_fold.py", "predict_tta.py", "export_bundle.py", "input_prep/make_folds.py", "run_all.sh"):
        assert name in scripts
    assert "usage:" in scripts
    api = (site / "reference" / "api" / "index.html").read_text()
    for anchor in ("hpa.api.train_fold", "hpa.prediction.bundle.load_bundle", "hpa.config.TrainConfig"):
        assert f'id="{anchor}"' in api


def test_commands_use_the_flag_vocabulary():
    """The renamed flags (--license, --out of export_bundle.py and embed.py, ablate.py's --n-folds)
    appear in README.md and the manual only where a line says what they were."""
    stale = []
    for md in markdown_files():
        for ln in md.read_text().splitlines():
            if re.search(r"\bwas\b", ln):
                continue
            if ("--license" in ln or re.search(r"(export_bundle|embed)\.py\b.*--out\b(?!-)", ln)
                    or re.search(r"ablate\.py\b.*--n-folds", ln)):
                stale.append(f"{md.relative_to(ROOT)}: {ln.strip()}")
    assert stale == []


def test_the_class_set_page_shows_the_table_the_code_uses():
    """docs/reference/class-sets.md pairs each Kaggle 2018 class with the SubCell class the code maps
    onto it (hpa.data.class_sets.TO_KAGGLE2018), or says it is left empty."""
    from hpa.data.class_sets import SUBCELL31, TO_KAGGLE2018
    from hpa.data.labels import CLASS_NAMES

    page = (ROOT / "docs" / "reference" / "class-sets.md").read_text()
    inverse = {v: k for k, v in TO_KAGGLE2018["subcell31"].items()}
    for k, name in enumerate(CLASS_NAMES):
        theirs = f"{inverse[k]} {SUBCELL31[inverse[k]]}" if k in inverse else "(none: left empty)"
        assert f"| {k} {name} | {theirs} |" in page, name
    from hpa.data.class_sets import HPA2021, KAGGLE2018_TO_HPA2021

    for k, name in enumerate(CLASS_NAMES):
        j = KAGGLE2018_TO_HPA2021.get(k)
        assert f"| {k} {name} | {f'{j} {HPA2021[j]}' if j is not None else '(none: not written)'} |" in page, name
