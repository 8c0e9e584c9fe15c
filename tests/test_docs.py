"""The Markdown documents: links that resolve, examples that run, a README that stays short.

- Every relative link (and image) in every Markdown file of the repository points at a
  file or folder that exists in it; a link to a heading (`FILE.md#heading`, `#heading`)
  names a heading that the target has. Web links are not followed.
- An inline code span that is a repository path (`daemon/frontend/vad.py`, `models/rnnt-v1`) names
  one that exists, so a moved or deleted file cannot stay quoted.
- Every ```python block of README.md runs, from the repository root with the project's
  Python, as a user would paste it. A daemon with no audio source of its own serves on
  `$XDG_RUNTIME_DIR/edge-asr.sock` meanwhile, for the gRPC examples; so blocks must be
  quick and offline (the shipped model, the clips in tests/data).
- README.md has at most README_MAX_LINES lines.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import unquote

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
README_MAX_LINES = 320
EXAMPLE_TIMEOUT_S = 120
# Folders at the repository's top level whose paths a code span may quote.
TOP_LEVEL = ("bench", "daemon", "models", "protos", "simulator", "tests")
# Never searched for Markdown when git cannot list the files.
NOT_SOURCES = {".git", ".venv", "build", "sim-reports", ".pytest_cache", ".ruff_cache",
               "node_modules", "__pycache__"}

_FENCE = re.compile(r"^\s*(```|~~~)")
_INLINE_CODE = re.compile(r"`[^`]*`")
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_REPO_PATH = re.compile(r"^(?:" + "|".join(TOP_LEVEL) + r")(?:/[A-Za-z0-9_.+-]+)*/?$")


def markdown_files() -> list[Path]:
    """The repository's Markdown files: tracked, or new and not ignored by git."""
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard",
                              "-z", "--", "*.md"], cwd=REPO, capture_output=True, check=True,
                             timeout=60).stdout.decode()
        files = {REPO / name for name in out.split("\0") if name}
    except (OSError, subprocess.SubprocessError):  # no git, or not a checkout
        files = {p for p in REPO.rglob("*.md")
                 if not NOT_SOURCES.intersection(p.relative_to(REPO).parts)}
    return sorted(p for p in files if p.is_file())


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks, inline code spans removed."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((number, _INLINE_CODE.sub("", line)))
    return lines


def links(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every inline, image and reference-style link."""
    found = []
    for number, line in prose_lines(text):
        found += [(number, m.group(1)) for m in _LINK.finditer(line)]
        if m := _REFERENCE.match(line):
            found.append((number, m.group(1)))
    return found


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to '-'."""
    heading = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file, repeats numbered as GitHub numbers them."""
    found: set[str] = set()
    repeats: dict[str, int] = {}
    text, fenced = path.read_text(encoding="utf-8"), False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced and (m := _HEADING.match(line)):
            base = slug(m.group(2))
            n = repeats.get(base, 0)
            found.add(f"{base}-{n}" if n else base)
            repeats[base] = n + 1
    return found


def broken_links(path: Path) -> list[str]:
    """What is wrong with the relative links of one Markdown file, in words."""
    problems = []
    rel = path.relative_to(REPO)
    for number, target in links(path.read_text(encoding="utf-8")):
        if _SCHEME.match(target):  # http:, https:, mailto: ...
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / unquote(file_part)).resolve() if file_part else path
        where = f"{rel}:{number}: ({target})"
        if not dest.is_relative_to(REPO):
            problems.append(f"{where} points outside the repository")
        elif not dest.exists():
            problems.append(f"{where} points at {dest.relative_to(REPO)}, which does not exist")
        elif anchor and dest.suffix == ".md" and unquote(anchor).lower() not in anchors(dest):
            problems.append(f"{where}: {dest.relative_to(REPO)} has no heading #{anchor}")
    return problems


def missing_quoted_paths(path: Path) -> list[str]:
    """Inline code spans that are repository paths which do not exist."""
    problems = []
    rel = path.relative_to(REPO)
    text, fenced = path.read_text(encoding="utf-8"), False
    for number, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if fenced:
            continue
        for span in re.findall(r"`([^`\s]+)`", line):
            if _REPO_PATH.match(span) and not (REPO / span).exists():
                problems.append(f"{rel}:{number}: `{span}` does not exist")
    return problems


def python_blocks(path: Path) -> list[tuple[int, str]]:
    """(first line number, code) of every ```python block."""
    blocks, current, start = [], None, 0
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if current is None:
            if re.match(r"^\s*```python\s*$", line):
                current, start = [], number + 1
        elif _FENCE.match(line):
            blocks.append((start, "\n".join(current) + "\n"))
            current = None
        else:
            current.append(line)
    return blocks


def project_python() -> str:
    venv = REPO / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


# -- the tests -------------------------------------------------------------------------


def test_the_repository_has_markdown_files_to_check():
    names = {p.relative_to(REPO).as_posix() for p in markdown_files()}
    assert {"README.md", "ARCHITECTURE.md", "CHANGELOG.md", "RESULTS.md"} <= names


MARKDOWN = markdown_files()
MARKDOWN_IDS = [p.relative_to(REPO).as_posix() for p in MARKDOWN]
README_BLOCKS = python_blocks(README)


@pytest.mark.parametrize("path", MARKDOWN, ids=MARKDOWN_IDS)
def test_relative_links_point_at_files_that_exist(path):
    assert broken_links(path) == []


@pytest.mark.parametrize("path", MARKDOWN, ids=MARKDOWN_IDS)
def test_quoted_repository_paths_exist(path):
    assert missing_quoted_paths(path) == []


def test_the_link_checks_catch_what_they_are_for(tmp_path, monkeypatch):
    """A missing file, a missing heading and a missing quoted path are each reported; web
    links, anchors of existing headings and links inside code are not."""
    tmp_path = tmp_path.resolve()
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    (tmp_path / "daemon" / "frontend").mkdir(parents=True)
    (tmp_path / "daemon" / "frontend" / "vad.py").write_text("")
    (tmp_path / "B.md").write_text("# Title\n\n## The two end-pointers\n")
    doc = tmp_path / "A.md"
    doc.write_text(
        "See [b](B.md), [b's section](B.md#the-two-end-pointers), [web](https://x.org/y.md),\n"
        "[here](#top), ![img](daemon/frontend/vad.py) and `daemon/frontend/vad.py`.\n"
        "Broken: [gone](models/EXPERIMENTS.md), [section](B.md#no-such-heading),\n"
        "[ref]: daemon/TUNING.md\n"
        "`daemon/gone.py` and `[not a link](nowhere.md)`\n"
        "```sh\n[inside](code.md) `models/none`\n```\n"
        "# Top\n")
    problems = broken_links(doc)
    assert len(problems) == 3, problems
    assert "models/EXPERIMENTS.md" in problems[0] and "no heading #no-such-heading" in \
        problems[1] and "daemon/TUNING.md" in problems[2]
    assert missing_quoted_paths(doc) == ["A.md:5: `daemon/gone.py` does not exist"]


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines (at most {README_MAX_LINES})"


def test_readme_has_python_examples():
    assert README_BLOCKS, "README.md should show the Python API in a ```python block"


@pytest.fixture(scope="module")
def example_env():
    """Environment for the README's examples: a daemon serving on the default socket of a
    fresh $XDG_RUNTIME_DIR (kept short: a Unix socket path has a length limit)."""
    from edge_asr.daemon.api.client import wait_for_socket

    runtime = tempfile.mkdtemp(prefix="edge-asr-docs-")
    env = {**os.environ, "XDG_RUNTIME_DIR": runtime}
    socket = os.path.join(runtime, "edge-asr.sock")
    daemon = subprocess.Popen(
        [project_python(), "-m", "edge_asr.daemon.cli", "daemon", "--source", "none",
         "--model", str(REPO / "models" / "rnnt-v1"), "--socket", socket],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        if not wait_for_socket(daemon, socket, timeout=60):
            daemon.kill()
            pytest.fail("the daemon for the README's examples did not start: "
                        + daemon.communicate(timeout=10)[1].decode(errors="replace")[-2000:])
        yield env
    finally:
        if daemon.poll() is None:
            daemon.terminate()
            try:
                daemon.wait(timeout=15)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
        shutil.rmtree(runtime, ignore_errors=True)


@pytest.mark.parametrize("line, code", README_BLOCKS,
                         ids=[f"README.md:{line}" for line, _ in README_BLOCKS])
def test_readme_python_example_runs(line, code, example_env, tmp_path):
    script = tmp_path / f"readme_line_{line}.py"
    script.write_text(code, encoding="utf-8")
    try:
        run = subprocess.run([project_python(), str(script)], cwd=REPO, env=example_env,
                             capture_output=True, text=True, timeout=EXAMPLE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the ```python block at README.md:{line} ran over {EXAMPLE_TIMEOUT_S} s")
    assert run.returncode == 0, (f"the ```python block at README.md:{line} failed:\n"
                                 f"{run.stdout[-2000:]}\n{run.stderr[-4000:]}")
