"""Type-checker tests for the public API: snippets in ``cases/`` run through mypy and pyright.

* ``cases/pass_*.py`` must produce no diagnostics at all under ``mypy --strict`` and pyright's
  strict mode.
* ``cases/fail_*.py`` must produce errors exactly where marked, and nowhere else. A marker is a
  comment naming the expected code for each checker (mypy's bracketed error code, pyright's
  rule name). On a line of its own it marks the next code line; after code it marks its own
  line. Prefer the line of its own: ``ruff format`` may split a long line and move a trailing
  comment away from the offending expression::

      # expect: mypy=arg-type pyright=reportArgumentType
      await queue.enqueue(defn, Wrong())

  Several codes may be listed comma-separated (``mypy=call-arg,arg-type``). On a marked line
  every error must carry one of the listed codes and every listed code must occur.

Each checker runs once per session over all case files (mypy start-up is slow), with a config
written to a temporary directory so the project's own ``[tool.mypy]`` / pyright settings do not
interfere. The checkers are taken from the virtualenv running the tests; a missing checker fails
the tests instead of skipping them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# The first test of each xdist worker runs both checkers cold: more than the suite-wide 120 s.
pytestmark = pytest.mark.timeout(600)

CASES_DIR = Path(__file__).resolve().parent / "cases"
PASS_CASES = sorted(CASES_DIR.glob("pass_*.py"))
FAIL_CASES = sorted(CASES_DIR.glob("fail_*.py"))
ALL_CASES = PASS_CASES + FAIL_CASES
CHECKERS = ("mypy", "pyright")
PYTHON_VERSION = "3.11"
CHECKER_TIMEOUT = 300

_MARKER = re.compile(r"#\s*expect:(?P<spec>.*)$")
_MARKER_ITEM = re.compile(r"^(?P<checker>[a-z]+)=(?P<codes>[A-Za-z0-9_,-]+)$")
_MYPY_LINE = re.compile(
    r"^(?P<path>.+?):(?P<line>\d+):(?:\d+:)? (?P<severity>error|warning|note): "
    r"(?P<message>.*?)(?:  \[(?P<code>[a-z0-9-]+)\])?$"
)


@dataclass(frozen=True)
class Diagnostic:
    line: int  # 1-based
    severity: str  # "error", "warning", "note"/"information"
    code: str | None
    message: str

    def __str__(self) -> str:
        return f"  line {self.line}: {self.severity} [{self.code}] {self.message}"


@dataclass
class CheckerRun:
    """One checker's verdict over every case file, split per file."""

    checker: str
    problem: str | None = None  # set when the checker could not run properly
    by_file: dict[Path, list[Diagnostic]] = field(default_factory=lambda: defaultdict(list))
    elsewhere: list[str] = field(default_factory=list[str])  # diagnostics in non-case files
    output: str = ""

    def diagnostics(self, path: Path) -> list[Diagnostic]:
        if self.problem is not None:
            pytest.fail(self.problem, pytrace=False)
        return self.by_file.get(path.resolve(), [])


def _executable(name: str) -> Path | None:
    exe = Path(sys.executable).parent / name
    return exe if exe.exists() else None


def _missing(name: str, package: str) -> str:
    return (
        f"{name} is not installed next to {sys.executable}; the typing tests need it. "
        f"Install it into this virtualenv: {sys.executable} -m pip install '{package}'"
    )


def _run(
    cmd: list[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=CHECKER_TIMEOUT,
        check=False,
    )


def _error_lines(run: CheckerRun, path: Path) -> dict[int, list[Diagnostic]]:
    lines: dict[int, list[Diagnostic]] = defaultdict(list)
    for diag in run.diagnostics(path):
        if diag.severity in ("error", "warning"):
            lines[diag.line].append(diag)
    return lines


def parse_markers(path: Path) -> dict[int, dict[str, set[str]]]:
    """``{line: {checker: {codes}}}`` for every ``# expect:`` marker in ``path``."""
    markers: dict[int, dict[str, set[str]]] = {}
    pending: tuple[int, dict[str, set[str]]] | None = None  # standalone marker awaiting code
    for lineno, text in enumerate(path.read_text().splitlines(), start=1):
        stripped = text.strip()
        match = _MARKER.search(text)
        if match is None:
            if pending is not None and stripped and not stripped.startswith("#"):
                markers[lineno] = pending[1]
                pending = None
            continue
        expected: dict[str, set[str]] = {}
        for item in match.group("spec").split():
            parsed = _MARKER_ITEM.match(item)
            if parsed is None or parsed.group("checker") not in CHECKERS:
                raise ValueError(f"{path.name}:{lineno}: bad expect marker item {item!r}")
            expected[parsed.group("checker")] = set(parsed.group("codes").split(","))
        if set(expected) != set(CHECKERS):
            raise ValueError(f"{path.name}:{lineno}: marker must name a code for {CHECKERS}")
        if pending is not None:
            raise ValueError(f"{path.name}:{pending[0]}: marker is followed by another marker")
        if stripped.startswith("#"):
            pending = (lineno, expected)
        else:
            markers[lineno] = expected
    if pending is not None:
        raise ValueError(f"{path.name}:{pending[0]}: marker is not followed by code")
    return markers


# -- running the checkers --------------------------------------------------------------------


@pytest.fixture(scope="session")
def mypy_run(tmp_path_factory: pytest.TempPathFactory) -> CheckerRun:
    run = CheckerRun("mypy")
    exe = _executable("mypy")
    if exe is None:
        run.problem = _missing("mypy", "mypy>=1.10")
        return run
    workdir = tmp_path_factory.mktemp("mypy")
    config = workdir / "mypy.ini"
    config.write_text(
        f"[mypy]\nstrict = True\npython_version = {PYTHON_VERSION}\n"
        f"cache_dir = {workdir / 'cache'}\n"
    )
    cmd = [
        str(exe),
        "--config-file",
        str(config),
        "--no-incremental",
        "--show-absolute-path",
        "--show-error-codes",
        "--no-error-summary",
        "--no-pretty",
        "--no-color-output",
        "--hide-error-context",
        *(str(p) for p in ALL_CASES),
    ]
    proc = _run(cmd, cwd=workdir)
    run.output = proc.stdout + proc.stderr
    if proc.returncode not in (0, 1):
        run.problem = f"mypy exited with {proc.returncode}:\n{run.output}"
        return run
    case_paths = {p.resolve() for p in ALL_CASES}
    for raw in proc.stdout.splitlines():
        match = _MYPY_LINE.match(raw)
        if match is None:
            run.problem = f"unexpected mypy output line {raw!r}:\n{run.output}"
            return run
        path = Path(match.group("path")).resolve()
        diag = Diagnostic(
            int(match.group("line")),
            match.group("severity"),
            match.group("code"),
            match.group("message"),
        )
        if path in case_paths:
            run.by_file[path].append(diag)
        elif diag.severity != "note":
            run.elsewhere.append(f"{path}:{diag}")
    return run


@pytest.fixture(scope="session")
def pyright_run(tmp_path_factory: pytest.TempPathFactory) -> CheckerRun:
    run = CheckerRun("pyright")
    exe = _executable("pyright")
    if exe is None:
        run.problem = _missing("pyright", "pyright[nodejs]>=1.1.380")
        return run
    workdir = tmp_path_factory.mktemp("pyright")
    config = workdir / "pyrightconfig.json"
    config.write_text(
        json.dumps({"typeCheckingMode": "strict", "pythonVersion": PYTHON_VERSION}, indent=2)
    )
    env = dict(os.environ)
    env.pop("PYRIGHT_PYTHON_FORCE_VERSION", None)  # use the bundled pyright, no download
    env["PYRIGHT_PYTHON_IGNORE_WARNINGS"] = "1"
    cmd = [
        str(exe),
        "--project",
        str(config),
        "--pythonpath",
        sys.executable,
        "--outputjson",
        *(str(p) for p in ALL_CASES),
    ]
    proc = _run(cmd, cwd=workdir, env=env)
    run.output = proc.stdout + proc.stderr
    if proc.returncode not in (0, 1):
        run.problem = f"pyright exited with {proc.returncode}:\n{run.output}"
        return run
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        run.problem = f"pyright did not print a JSON report:\n{run.output}"
        return run
    analyzed = report.get("summary", {}).get("filesAnalyzed")
    if analyzed != len(ALL_CASES):
        run.problem = f"pyright analyzed {analyzed} files, expected {len(ALL_CASES)}:\n{run.output}"
        return run
    case_paths = {p.resolve() for p in ALL_CASES}
    for item in report.get("generalDiagnostics", []):
        diag = Diagnostic(
            int(item["range"]["start"]["line"]) + 1,
            str(item["severity"]),
            item.get("rule"),
            str(item["message"]).replace("\n", " | "),
        )
        path = Path(item["file"]).resolve()
        if path in case_paths:
            run.by_file[path].append(diag)
        elif diag.severity != "information":
            run.elsewhere.append(f"{path}:{diag}")
    return run


@pytest.fixture(params=CHECKERS)
def checker_run(
    request: pytest.FixtureRequest, mypy_run: CheckerRun, pyright_run: CheckerRun
) -> CheckerRun:
    return mypy_run if request.param == "mypy" else pyright_run


# -- tests -----------------------------------------------------------------------------------


def test_cases_exist() -> None:
    assert len(PASS_CASES) >= 3, f"no pass_*.py cases found in {CASES_DIR}"
    assert len(FAIL_CASES) >= 8, f"no fail_*.py cases found in {CASES_DIR}"


@pytest.mark.parametrize("case", ALL_CASES, ids=lambda p: p.stem)
def test_markers_are_well_formed(case: Path) -> None:
    markers = parse_markers(case)
    if case.name.startswith("pass_"):
        assert not markers, f"{case.name} is a pass case but has expect markers"
    else:
        assert markers, f"{case.name} is a fail case without any '# expect:' marker"
    assert "reveal_type" not in case.read_text(), f"{case.name} must not use reveal_type"


def test_checker_ran_cleanly(checker_run: CheckerRun) -> None:
    if checker_run.problem is not None:
        pytest.fail(checker_run.problem, pytrace=False)
    if checker_run.elsewhere:
        pytest.fail(
            f"{checker_run.checker} reported errors outside the case files:\n"
            + "\n".join(checker_run.elsewhere),
            pytrace=False,
        )


@pytest.mark.parametrize("case", PASS_CASES, ids=lambda p: p.stem)
def test_pass_case(case: Path, checker_run: CheckerRun) -> None:
    diagnostics = checker_run.diagnostics(case)
    if diagnostics:
        pytest.fail(
            f"{checker_run.checker} reported on {case.name}, which must be clean:\n"
            + "\n".join(map(str, diagnostics)),
            pytrace=False,
        )


@pytest.mark.parametrize("case", FAIL_CASES, ids=lambda p: p.stem)
def test_fail_case(case: Path, checker_run: CheckerRun) -> None:
    checker = checker_run.checker
    markers = parse_markers(case)
    errors = _error_lines(checker_run, case)
    problems: list[str] = []
    for line, diags in sorted(errors.items()):
        if line not in markers:
            problems.append(f"unexpected error(s) on unmarked line {line}:")
            problems.extend(map(str, diags))
    for line, expected_by_checker in sorted(markers.items()):
        expected = expected_by_checker[checker]
        found = errors.get(line, [])
        codes = {d.code or "<no code>" for d in found}
        if not found:
            problems.append(f"line {line}: expected {sorted(expected)}, got no error")
            continue
        if missing := expected - codes:
            problems.append(f"line {line}: expected code(s) {sorted(missing)} not reported:")
            problems.extend(map(str, found))
        if extra := codes - expected:
            problems.append(f"line {line}: unexpected code(s) {sorted(extra)}:")
            problems.extend(str(d) for d in found if (d.code or "<no code>") in extra)
    if problems:
        pytest.fail(f"{checker} on {case.name}:\n" + "\n".join(problems), pytrace=False)
