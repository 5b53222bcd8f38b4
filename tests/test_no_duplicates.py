"""Helpers that must exist once (neurolake issue 10); each duplicate found is reported as file:line.

- timestamps are parsed only by :func:`neurolake.base.time.parse_timestamp` (no ``fromisoformat`` /
  ``strptime`` and no ``to_timestamp``-like helper anywhere else);
- "unknown x 'y'; known: a, b" messages are built only by :func:`neurolake.base.names.not_found`;
- who an edit is recorded as is decided only by :func:`neurolake.server.deps.author_of`;
- the segmentation of a datastack is :attr:`neurolake.datastack.Datastack.segmentation`: no ``_seg``
  helper in the server, at most one shorthand in the whole tree;
- the HTTP cutout chain (check the box, the size limit, read, remap to roots, encode; decode, write,
  invalidate tiles) lives in :mod:`neurolake.server.cutouts`: routers only call it.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "neurolake"
TIME_PARSERS = {"to_timestamp", "_as_utc_ts", "_ts", "_time", "_parse_time", "parse_time", "_to_ts",
                "_timestamp"}
AUTHOR_HELPERS = {"_author", "author_of", "_author_of"}
ROUTERS = ("ocp", "boss", "precomputed", "zarr", "tiles", "proofreading")
KNOWN = re.compile(r"\bknown\s*:")
Hit = tuple[str, int, str]


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def _rel(root: Path, path: Path) -> str:
    return path.relative_to(root.parent).as_posix()


def _tokens(path: Path) -> list[tokenize.TokenInfo]:
    return list(tokenize.generate_tokens(io.StringIO(path.read_text(encoding="utf-8")).readline))


def _is_docstring(tok: tokenize.TokenInfo) -> bool:
    quotes = ('"""', "'''", 'r"""')
    return tok.line.lstrip().startswith(quotes) and tok.string.startswith(quotes)


def defs(root: Path, names: set[str]) -> list[Hit]:
    """(file, line, name) of every function or method definition named one of ``names``."""
    out = []
    for p in _files(root):
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"), filename=str(p))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name in names:
                out.append((_rel(root, p), node.lineno, node.name))
    return out


def time_parsers(root: Path) -> list[Hit]:
    """``fromisoformat``/``strptime`` in code (not comments or strings) and parser-named functions,
    outside ``base/time.py``."""
    hits = []
    for p in _files(root):
        if _rel(root, p) == "neurolake/base/time.py":
            continue
        for tok in _tokens(p):
            if tok.type == tokenize.NAME and tok.string in ("fromisoformat", "strptime"):
                hits.append((_rel(root, p), tok.start[0], tok.line.strip()))
    hits += [(f, line, f"def {name}(…)") for f, line, name in defs(root, TIME_PARSERS)
             if f != "neurolake/base/time.py"]
    return hits


def known_builders(root: Path) -> list[Hit]:
    """String literals (f-strings included, docstrings excluded) holding ``known:`` outside base/names.py."""
    hits = []
    for p in _files(root):
        if _rel(root, p) == "neurolake/base/names.py":
            continue
        for tok in _tokens(p):
            if tok.type == tokenize.STRING and KNOWN.search(tok.string) and not _is_docstring(tok):
                hits.append((_rel(root, p), tok.start[0], tok.string[:80]))
    return hits


def router_cutout_steps(root: Path) -> list[Hit]:
    """Calls in the volume routers that do a step of the cutout chain themselves instead of calling
    ``neurolake.server.cutouts``: remap_to_roots, check_size, decode, encode, read_chunk, invalidate,
    and ``x.cutout(…)`` / ``x.write(…)`` on a layer or segmentation."""
    functions = {"remap_to_roots", "check_size", "decode", "encode", "read_chunk", "invalidate"}
    methods = {"remap_to_roots", "read_chunk", "cutout", "write"}
    hits = []
    for name in ROUTERS:
        p = root / "server" / f"{name}.py"
        if not p.is_file():
            continue
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            if isinstance(f, ast.Name) and f.id in functions:
                hits.append((_rel(root, p), node.lineno, ast.unparse(node)[:90]))
            elif isinstance(f, ast.Attribute) and f.attr in methods:
                owner = f.value.id if isinstance(f.value, ast.Name) else ""
                if owner == "cutouts" or owner[:1].isupper():  # Need.write() & co. declare access
                    continue
                hits.append((_rel(root, p), node.lineno, ast.unparse(node)[:90]))
    # the Boss ids route checks the size of an ids region, not of a cutout: the one allowed exception
    return [h for h in hits if not (h[0].endswith("server/boss.py") and "ids region" in h[2])]


def _where(hits: list[Hit]) -> str:
    return "\n  " + "\n  ".join(f"{f}:{line}: {what}" for f, line, what in hits)


# -- the source tree --------------------------------------------------------------------------------
def test_src_tree_is_found():
    assert (SRC / "base" / "time.py").is_file() and (SRC / "server" / "cutouts.py").is_file()
    assert len(_files(SRC)) > 50


def test_timestamps_are_parsed_only_by_parse_timestamp():
    hits = time_parsers(SRC)
    assert not hits, "parse times with neurolake.base.time.parse_timestamp, not a parser of your own:" + _where(hits)


def test_known_lists_are_built_only_by_not_found():
    hits = known_builders(SRC)
    assert not hits, "build 'unknown …; known: …' errors with neurolake.base.names.not_found:" + _where(hits)


def test_author_rule_exists_once():
    hits = defs(SRC, AUTHOR_HELPERS)
    assert [(f, name) for f, _, name in hits] == [("neurolake/server/deps.py", "author_of")], (
        "who an edit is recorded as is decided by neurolake.server.deps.author_of only:" + _where(hits))


def test_segmentation_helper_exists_at_most_once_and_not_in_the_server():
    hits = defs(SRC, {"_seg"})
    server = [h for h in hits if h[0].startswith("neurolake/server/")]
    assert not server, "use lake.datastack(ds).segmentation in routers:" + _where(server)
    assert len(hits) <= 1, "one shorthand for Datastack.segmentation at most:" + _where(hits)


def test_cutout_chain_lives_in_server_cutouts():
    hits = router_cutout_steps(SRC)
    assert not hits, "call neurolake.server.cutouts from routers:" + _where(hits)


# -- the detectors find planted duplicates, with file:line ------------------------------------------
def test_detectors_report_planted_duplicates(tmp_path):
    root = tmp_path / "neurolake"
    (root / "base").mkdir(parents=True)
    (root / "server").mkdir()
    (root / "base" / "time.py").write_text("import datetime as dt\n\ndef parse_timestamp(v):\n"
                                           "    return dt.datetime.fromisoformat(v)\n")
    (root / "base" / "names.py").write_text('def not_found(kind, name, known):\n'
                                            '    return f"unknown {kind} {name!r}; known: {known}"\n')
    (root / "server" / "deps.py").write_text("def author_of(request, given=None):\n    return given\n")
    (root / "mod.py").write_text(
        '"""A module whose docstring may say known: freely."""\nimport datetime as dt\n\n\n'
        "def _ts(v):  # a private parser\n    return dt.datetime.fromisoformat(v)\n\n\n"
        'def lookup(name, names):\n    raise KeyError(f"no {name!r} (known: {names})")\n')
    (root / "server" / "ocp.py").write_text(
        "from neurolake.server import cutouts\n\n\ndef _author(request):\n    return None\n\n\n"
        "def _seg(lake, ds):\n    return lake.datastack(ds).segmentation\n\n\n"
        "def get(request, la, x, y, z):\n    check_size(request, la, (1, 1, 1))\n"
        "    arr = la.cutout(x, y, z)\n    cutouts.read(request, la, x, y, z)\n    return encode(arr, 'npz')\n")

    assert time_parsers(root) == [("neurolake/mod.py", 6, "return dt.datetime.fromisoformat(v)"),
                                  ("neurolake/mod.py", 5, "def _ts(…)")]
    assert [(f, line) for f, line, _ in known_builders(root)] == [("neurolake/mod.py", 10)]
    assert sorted(defs(root, AUTHOR_HELPERS)) == [("neurolake/server/deps.py", 1, "author_of"),
                                                  ("neurolake/server/ocp.py", 4, "_author")]
    assert defs(root, {"_seg"}) == [("neurolake/server/ocp.py", 8, "_seg")]
    assert [(f, line) for f, line, _ in sorted(router_cutout_steps(root), key=lambda h: h[1])] == [
        ("neurolake/server/ocp.py", 13), ("neurolake/server/ocp.py", 14), ("neurolake/server/ocp.py", 16)]
    assert "neurolake/server/ocp.py:13: check_size(" in _where(router_cutout_steps(root))
