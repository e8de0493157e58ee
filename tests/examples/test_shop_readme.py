"""The README's section on examples/shop says what the example is and does: its excerpts are
the example's code, its layout is the example's, and ``make example`` prints what it shows."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SECTION_TITLE = "## A complete service: examples/shop"


def section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(SECTION_TITLE)
    end = text.index("\n## ", start + 1)
    assert text[end:].startswith("\n## Progress, results and retention")
    return text[start:end]


def blocks(language: str) -> list[str]:
    """The section's fenced blocks of ``language`` ("" for plain ones), in order."""
    found: list[str] = []
    fences = re.finditer(r"^```(\w*)\n(.*?)^```$", section(), re.S | re.M)
    for fence in fences:
        if fence[1] == language:
            found.append(fence[2])
    return found


def test_the_excerpts_are_the_examples_code() -> None:
    excerpts = blocks("python")
    assert len(excerpts) == 2
    for excerpt in excerpts:
        header, _, code = excerpt.partition("\n")
        match = re.fullmatch(r"# (examples/shop/[\w/]+\.py) \(excerpt\)", header)
        assert match is not None, header
        assert code in (ROOT / match[1]).read_text(), f"not in {match[1]}:\n{code}"


def test_the_layout_is_the_examples() -> None:
    layout = blocks("")[0]
    assert layout.startswith("examples/shop/\n")
    names = re.findall(r"── (\S+)", layout)
    assert len(names) == 7
    for name in names:
        assert (ROOT / "examples/shop" / name).exists(), name
    assert (ROOT / "examples/shop/README.md").exists()


@pytest.mark.process
@pytest.mark.timeout(180)
def test_make_example_prints_what_the_readme_shows(tmp_path: Path) -> None:
    (command,) = [line.split("#")[0].strip() for line in blocks("bash")[0].splitlines()]
    assert command == "make example"
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^example: .*\n\t(.*)\n", makefile, re.M)
    assert recipe is not None and recipe[1] == "$(BIN)/python -m examples.shop.local.run"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHOP_", "CONVEYOR_"))}
    env["SHOP_WORKDIR"] = str(tmp_path / "shop")
    done = subprocess.run(
        [sys.executable, "-m", "examples.shop.local.run"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    (shown,) = [b for b in blocks("") if b.startswith("webhook deliveries")]
    assert shown in done.stdout
    assert "emails received (6):" in done.stdout
    assert re.search(r"stopped: worker exited 0, api (exited 0|stopped by SIGTERM)", done.stdout)
