"""The docs a user reads (issue 35): a short README whose test command is CI's, a configuration reference and
results pages that match their sources, every page in the nav, and a site that builds with ``--strict``."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README = ROOT / "README.md"


def _script(path: Path):
    """Import a generator script (not part of the package) by its path."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _nav_pages(nav) -> list[str]:
    pages = []
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        pages.extend(_nav_pages(value) if isinstance(value, list) else [value])
    return pages


def test_readme_is_short():
    lines = len(README.read_text(encoding="utf-8").splitlines())
    assert lines <= 200, f"README.md has {lines} lines; the detail belongs in docs/"


def test_readme_test_command_is_what_ci_runs():
    """The README's test command is ``make test``, and ``.ci/run`` runs exactly that command."""
    readme = README.read_text(encoding="utf-8")
    assert re.search(r"^make test +# ", readme, re.M), "README.md: the test command line `make test` is missing"
    assert re.search(r"^make test-fast +# ", readme, re.M), "README.md: `make test-fast` is missing"
    commands = [line.strip() for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
                if line.strip() and not line.lstrip().startswith("#")
                and not line.startswith(("set ", "cd "))]
    assert commands == ["make test"], f".ci/run runs {commands}, not the README's `make test`"


def test_readme_links_exist():
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README.read_text(encoding="utf-8")):
        if "://" not in target:
            assert (ROOT / target).exists(), f"README.md links to {target}, which does not exist"


def test_configuration_reference_is_current():
    """docs/configuration.md is what docs/gen_reference.py makes from ferd.settings.config.FerdConfig now."""
    generator = _script(DOCS / "gen_reference.py")
    assert generator.PAGE.read_text(encoding="utf-8") == generator.render(), (
        "docs/configuration.md differs from the schema: run python docs/gen_reference.py")


def test_configuration_reference_lists_every_field():
    from ferd.settings.config import FerdConfig

    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    for key in ("method", "synthesis.generator.kind", "distill.utae.gamma", "storage.retries.max_attempts",
                "baseline.fast.meta_lr", "compute.pool_on_device"):
        assert f"| `{key}` |" in text, key
    assert f"| `epochs` | int | `{FerdConfig.model_fields['epochs'].default!r}` |" in text


def test_results_pages_are_current():
    """Every generated block of docs/results/*.md, and every copied figure, equals what
    benchmarks/results_pages.py makes from benchmarks/results/ now."""
    generator = _script(ROOT / "benchmarks" / "results_pages.py")
    pages = generator.pages()
    assert any("<!-- results:" in p.read_text(encoding="utf-8") for p in pages), "no generated results block"
    for page in pages:
        text = page.read_text(encoding="utf-8")
        assert generator.render_page(text, str(page)) == text, (
            f"{page.relative_to(ROOT)} differs from benchmarks/results: run python benchmarks/results_pages.py")
    for dest, src in generator.COPIES.items():
        assert dest.read_bytes() == src.read_bytes(), f"{dest.relative_to(ROOT)} differs from {src}"


def test_results_generator_refuses_an_unknown_source():
    generator = _script(ROOT / "benchmarks" / "results_pages.py")
    with pytest.raises(ValueError, match="no entry in SOURCES"):
        generator.render_page("<!-- results: runs nowhere -->\n<!-- /results -->\n")


def test_every_page_is_in_the_nav():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    nav = set(_nav_pages(config["nav"]))
    pages = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    assert pages - nav == set(), f"pages not in mkdocs.yml's nav: {sorted(pages - nav)}"
    assert nav - pages == set(), f"nav entries with no page: {sorted(nav - pages)}"


def test_site_builds_strict(tmp_path):
    mkdocs = shutil.which("mkdocs") or str(Path(sys.executable).parent / "mkdocs")
    if importlib.util.find_spec("mkdocs") is None or not Path(mkdocs).exists():
        pytest.skip("mkdocs is not installed (it is in the dev extra: pip install -e '.[dev]')")
    done = subprocess.run([mkdocs, "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
                           "--site-dir", str(tmp_path / "site")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "site" / "configuration" / "index.html").exists()


def test_every_quoted_number_has_a_source():
    """Every decimal number and percentage a docs page quotes comes from a file under benchmarks/results/: a
    results page's from the sources of its own generated blocks, any other page's from those of the results pages
    it links to (or the configuration reference's settings, or the few named constants)."""
    generator = _script(ROOT / "benchmarks" / "results_pages.py")
    missing = {str(page.relative_to(ROOT)): generator.unsourced(page) for page in generator.pages()}
    assert {page: numbers for page, numbers in missing.items() if numbers} == {}


def test_an_unsourced_number_fails_the_check():
    """The check finds a number no source holds, on a results page and on another page, and accepts a number on
    another page once it links to the results page whose source holds it."""
    generator = _script(ROOT / "benchmarks" / "results_pages.py")
    tier1 = DOCS / "results" / "tier1.md"
    assert generator.unsourced(tier1, tier1.read_text(encoding="utf-8") + "\nFERD keeps 99.9 % here.\n") == [
        "99.9 %"]
    dvc = DOCS / "dvc.md"
    quote = "\n`ferd run` took 3 min 51.9 s.\n"
    assert generator.unsourced(dvc, quote) == ["51.9"]
    assert generator.unsourced(dvc, quote + "[measured](results/embedded-default.md)\n") == []
    assert generator.quoted("`lr 0.001` in code, [a link](x-1.5.md), <!-- 2.5 -->, but 3.5 and 45 %") == [
        "3.5", "45 %"]


def test_every_source_is_registered_and_shown():
    """Each folder under benchmarks/results/ is a registered source that some page's block renders; each record
    names its command, date, machine and the commit it was transcribed from."""
    generator = _script(ROOT / "benchmarks" / "results_pages.py")
    folders = {p.name for p in generator.RESULTS.iterdir() if p.is_dir()}
    assert folders - set(generator.SOURCES) == set(), "unregistered sources"
    shown = set().union(*(generator.block_sources(p.read_text(encoding="utf-8")) for p in generator.pages()))
    shown |= {src.parent.name for src in generator.COPIES.values()}
    assert set(generator.SOURCES) - shown == set(), "sources no page shows"
    for name in generator.RECORDS:
        generator._record(name)  # raises on a missing field


def test_a_record_missing_a_field_is_refused(tmp_path, monkeypatch):
    generator = _script(ROOT / "benchmarks" / "results_pages.py")
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "record.json").write_text('{"command": "ferd run", "recorded": "2026-11-30"}')
    monkeypatch.setattr(generator, "RESULTS", tmp_path)
    with pytest.raises(ValueError, match="record.json: field 'machine' missing"):
        generator._record("x")


def test_a_fairness_block_needs_a_source_that_names_its_compare_preset():
    generator = _script(ROOT / "benchmarks" / "results_pages.py")
    with pytest.raises(ValueError, match="results block verdicts tier2-budget: its source names no compare preset"):
        generator.render_page("<!-- results: verdicts tier2-budget -->\n<!-- /results -->\n")
