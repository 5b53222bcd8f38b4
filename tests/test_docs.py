"""The documentation runs: every ```python block of README.md and docs/*.md is executed on a real demo lake.

- The demo lake is built once per session with the real demo code (:func:`neurolake.demo.run_demo`, Dask
  on threads), starting from the session's ingested ``demo_lake_path`` (tests/conftest.py) so the four
  demo layers are ingested only once per session.
- Each markdown file runs on its own copy of that lake, named ``demo-lake`` in a temporary folder that
  is the working directory, so ``neurolake.open_lake("demo-lake")`` in the docs finds it. The blocks of
  one file run in order and share one namespace; a traceback points at the markdown line.
- A block that talks to ``http://127.0.0.1:8000`` gets a real ``neurolake serve`` process on that
  file's lake (on a free port, written into the block text in place of ``127.0.0.1:8000``).
- A block preceded by ``<!-- not-run: reason -->`` is not executed; each one is reported as a skipped
  test item naming the file, the line and the reason.
- Every ``neurolake …`` command line of a ```bash block is checked against the real command: the command
  path exists, each ``--option``/``-o`` it uses is an option of that command, and ``… --help`` exits 0;
  commands quoted inline in the prose and tables get the same check (they may stop at a command group).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SERVER_HOST = "127.0.0.1:8000"  # the address the docs use for `neurolake serve` / `neurolake demo`
NOT_RUN = re.compile(r"<!--\s*not-run:\s*(.*?)\s*-->")
FENCE = re.compile(r"^(\s*)(`{3,})\s*([\w+-]*)")


@dataclass
class Block:
    path: Path
    line: int  # 1-based line of the first code line
    lang: str
    code: str
    not_run: str | None  # the reason of a `<!-- not-run: reason -->` marker on the line before the fence

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a markdown file, in order."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, lang, start = m.group(2), m.group(3).lower(), i
        i += 1
        body = []
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i])
            i += 1
        j = start - 1
        while j >= 0 and not lines[j].strip():
            j -= 1
        mark = NOT_RUN.search(lines[j]) if j >= 0 else None
        out.append(Block(path, start + 2, lang, textwrap.dedent("\n".join(body)) + "\n",
                         (mark.group(1) or "no reason given") if mark else None))
        i += 1
    return out


def _python_blocks(path: Path) -> list[Block]:
    return [b for b in blocks(path) if b.lang in ("python", "py")]


PY_FILES = [p for p in DOC_FILES if _python_blocks(p)]
NOT_RUN_BLOCKS = [b for p in DOC_FILES for b in _python_blocks(p) if b.not_run is not None]
BASH_FILES = [p for p in DOC_FILES if any(b.lang in ("bash", "sh", "shell", "console") for b in blocks(p))]


# -- the demo lake ------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def docs_demo_template(demo_lake_path, tmp_path_factory) -> Path:
    """The full demo lake (`neurolake demo` without serving): layers, membrane, supervoxels, proofreadable
    segmentations, the synapse table and materialization version 1 of both datastacks. A template: tests
    copy it."""
    from neurolake import open_lake
    from neurolake.demo import run_demo

    path = tmp_path_factory.mktemp("docs-template") / "demo-lake"
    shutil.copytree(demo_lake_path, path)
    said: list[str] = []
    with open_lake(path) as lake:
        run_demo(lake, said.append, scheduler="threads")
        assert lake.datastacks() == ["celegans", "ephys", "gala_fibsem", "gerhard2013", "pinky100"], said
        assert [v["version"] for v in lake["gerhard2013"].versions.list()] == [1], said
    return path


# -- python blocks ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("doc", PY_FILES, ids=[str(p.relative_to(ROOT)) for p in PY_FILES])
def test_doc_python_blocks_run(doc: Path, docs_demo_template, serve_lake, tmp_path, monkeypatch):
    """Every python block of ``doc`` (except `not-run` ones) runs, in order, in one namespace, on a fresh
    copy of the demo lake in the working directory."""
    from neurolake import Lake

    shutil.copytree(docs_demo_template, tmp_path / "demo-lake")
    home = tmp_path / "home"  # intern, cloud-volume and caveclient write under ~
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__main__"}
    server: str | None = None
    ran = 0
    try:
        for b in _python_blocks(doc):
            if b.not_run is not None:
                continue
            code = b.code
            if SERVER_HOST in code:
                if server is None:
                    server = serve_lake(tmp_path / "demo-lake").removeprefix("http://")
                code = code.replace(SERVER_HOST, server)
            # pad so that line numbers in a traceback are the markdown file's
            exec(compile("\n" * (b.line - 1) + code, str(doc), "exec"), namespace)  # noqa: S102
            ran += 1
    finally:
        for value in list(namespace.values()):
            if isinstance(value, Lake):
                value.close()
    assert ran, f"{doc}: no python block ran"


if NOT_RUN_BLOCKS:  # (no test item at all when every block runs)
    @pytest.mark.parametrize("block", NOT_RUN_BLOCKS, ids=[b.where for b in NOT_RUN_BLOCKS])
    def test_doc_python_block_not_run(block: Block):
        """Blocks marked `<!-- not-run: reason -->` are reported as skipped, never silently dropped."""
        pytest.skip(f"{block.where} not run: {block.not_run}")


# -- command lines ------------------------------------------------------------------------------------------
def command_lines(path: Path) -> list[tuple[int, str]]:
    """``(line, command)`` for every ``neurolake …`` command of the shell blocks of ``path`` (continuation
    lines joined, ``#`` comments dropped, commands split at ``&&`` and ``;``)."""
    out = []
    for b in blocks(path):
        if b.lang not in ("bash", "sh", "shell", "console"):
            continue
        lines = b.code.splitlines()
        k = 0
        while k < len(lines):
            first, text = k, lines[k]
            while text.rstrip().endswith("\\") and k + 1 < len(lines):
                k += 1
                text = text.rstrip()[:-1] + " " + lines[k].strip()
            k += 1
            text = re.sub(r"(^|\s)#.*$", "", text.strip().removeprefix("$ "))
            for part in re.split(r"&&|;", text):
                words = part.split()
                while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):  # VAR=value prefix
                    words.pop(0)
                if words and Path(words[0]).name == "neurolake":
                    out.append((b.line + first, " ".join(words)))
    return out


def _check_command(cli, app, words: list[str], where: str, partial: bool = False) -> list[str]:
    """Walk the command path of ``words`` (``a|b`` alternatives expanded: ``list|history [-t T]``); check that
    each option is an option of the command (of one of the alternatives) and that ``--help`` exits 0.
    ``partial``: the words may stop at a group (prose such as `neurolake proofread` or `neurolake COMMAND`).
    Returns the command paths checked."""
    from typer.testing import CliRunner

    line = " ".join(words)

    def leaves(cmd, path: list[str], rest: list[str]) -> list[tuple[list[str], object, list[str]]]:
        if not isinstance(getattr(cmd, "commands", None), dict):  # a command (Typer vendors its own click)
            return [(path, cmd, rest)]
        if partial and (not rest or rest[0].startswith("-") or rest[0].isupper()):
            return [(path, cmd, [w for w in rest if w.startswith("--help")])]
        assert rest, f"{where}: `{line}`: `{' '.join(['neurolake', *path])}` needs a command"
        out = []
        for name in rest[0].split("|"):
            sub = cmd.commands.get(name)
            assert sub is not None, (f"{where}: `{line}`: no command {name!r} in "
                                     f"`{' '.join(['neurolake', *path])}`; commands: {sorted(cmd.commands)}")
            out += leaves(sub, [*path, name], rest[1:])
        return out

    found = leaves(cli, [], words[1:])
    known = {"--help"}
    for _, cmd, _ in found:
        for p in cmd.params:
            known.update(getattr(p, "opts", []))
            known.update(getattr(p, "secondary_opts", []))
    names = " | ".join("neurolake " + " ".join(path) for path, _, _ in found)
    for w in found[0][2]:
        if w.startswith("-") and not re.match(r"^-\d", w) and w not in ("-", "--"):
            for name in w.split("=", 1)[0].split("|"):  # `--append|--overwrite`: each alternative
                assert name in known, f"{where}: `{line}`: `{names}` has no option {name!r}; options: {sorted(known)}"
    for path, _, _ in found:
        res = CliRunner().invoke(app, [*path, "--help"])
        assert res.exit_code == 0, f"{where}: `neurolake {' '.join(path)} --help` exited {res.exit_code}:\n{res.output}"
    return [" ".join(path) for path, _, _ in found]


def test_neurolake_command_runs():
    """The installed entry point starts (one real process; the per-line checks below run in-process)."""
    exe = Path(sys.executable).parent / "neurolake"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "neurolake.cli"]
    res = subprocess.run([*cmd, "--help"], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "COLUMNS": "200"})
    assert res.returncode == 0 and "Usage" in res.stdout, res.stderr


@pytest.mark.parametrize("doc", BASH_FILES, ids=[str(p.relative_to(ROOT)) for p in BASH_FILES])
def test_doc_command_lines_parse(doc: Path):
    """Each ``neurolake …`` line of the shell blocks names an existing command and only its options."""
    from typer.main import get_command

    from neurolake.cli import app

    cli = get_command(app)
    checked = []
    for line, text in command_lines(doc):
        words = shlex.split(text.replace("[", " ").replace("]", " ").replace("\\|", "|"))
        checked += _check_command(cli, app, words, f"{doc.relative_to(ROOT)}:{line}")
    if not checked:
        pytest.skip(f"{doc.relative_to(ROOT)}: no neurolake command lines")


INLINE = re.compile(r"`((?:\.venv/bin/)?neurolake [^`]+)`")
INLINE_FILES = [p for p in DOC_FILES if INLINE.search(p.read_text(encoding="utf-8"))]


@pytest.mark.parametrize("doc", INLINE_FILES, ids=[str(p.relative_to(ROOT)) for p in INLINE_FILES])
def test_doc_inline_commands_parse(doc: Path):
    """The same check for commands quoted in the prose and tables (`neurolake proofread merge\\|split`);
    these may stop at a command group (`neurolake users\\|tokens`)."""
    from typer.main import get_command

    from neurolake.cli import app

    cli = get_command(app)
    for n, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
        for m in INLINE.finditer(line):
            words = shlex.split(m.group(1).replace("[", " ").replace("]", " ").replace("\\|", "|"))
            _check_command(cli, app, words, f"{doc.relative_to(ROOT)}:{n}", partial=True)
