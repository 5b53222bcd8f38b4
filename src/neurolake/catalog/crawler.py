"""Crawler: find tables under a folder or ``s3://`` prefix and register them as drafts.

Like an AWS Glue crawler: one recursive listing, then each folder is classified by its markers —
``_delta_log/`` → Delta, ``_versions/`` → Lance, ``metadata/*.metadata.json`` → Iceberg, a folder
holding only ``.parquet`` files (possibly in Hive ``key=value`` sub-folders) → one Parquet table;
otherwise loose ``.parquet`` files are single-file tables and sub-folders are searched. A table's
folder is not searched further. Partitions are detected when each table is inspected. Names come from
the last path component (``.parquet``/``.lance`` removed, other characters than letters, digits,
``_ . -`` replaced by ``_``); a name already taken in the datastack gets the parent folder's name as
prefix. Locations already registered are skipped.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select

from neurolake.access.core import Principal
from neurolake.catalog.formats import _list
from neurolake.catalog.models import FeatureTable
from neurolake.errors import NeurolakeError, NotFound
from neurolake.storage import filesystem, normalize_location


def _tree(rels: list[str]) -> dict:
    root: dict = {}
    for r in rels:
        node = root
        parts = r.split("/")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if node is None:
                break
        else:
            node.setdefault(parts[-1], None)
    return root


def _only_parquet(node: dict, top: bool) -> bool:
    any_file = False
    for name, child in node.items():
        if name.startswith((".", "_")):
            continue
        if child is None:
            if not name.endswith(".parquet"):
                return False
            any_file = True
        else:
            if "=" not in name or not _only_parquet(child, False):
                return False
            any_file = True
    return any_file


def _classify(node: dict, rel: str, out: list[tuple[str, str]]) -> None:
    dirs = {n for n, c in node.items() if isinstance(c, dict)}
    if "_delta_log" in dirs:
        out.append((rel, "delta"))
        return
    if "_versions" in dirs:
        out.append((rel, "lance"))
        return
    if "metadata" in dirs and any(n.endswith(".metadata.json") for n, c in node["metadata"].items() if c is None):
        out.append((rel, "iceberg"))
        return
    if _only_parquet(node, True) and rel:
        out.append((rel, "parquet"))
        return
    for name, child in sorted(node.items()):
        if name.startswith((".", "_")):
            continue
        sub = f"{rel}/{name}" if rel else name
        if child is None:
            if name.endswith(".parquet"):
                out.append((sub, "parquet"))
        else:
            _classify(child, sub, out)


def find_tables(prefix: str) -> list[dict[str, str]]:
    """``[{"location", "format"}]`` of every table under ``prefix`` (a folder or ``s3://`` prefix)."""
    loc = normalize_location(prefix)
    fs, path = filesystem(loc)
    import pyarrow.fs as pafs

    fi = fs.get_file_info(path)
    if fi.type == pafs.FileType.File:
        return [{"location": loc, "format": "parquet"}] if loc.endswith(".parquet") else []
    rels = [r for r, _ in _list(fs, path)]
    if not rels:
        raise NotFound(f"nothing found under {prefix!r}", field="prefix", value=prefix)
    found: list[tuple[str, str]] = []
    tree = _tree(rels)
    # the prefix itself may be a table
    _classify(tree, "", found) if not _is_table_root(tree) else found.append(("", _root_format(tree)))
    return [{"location": f"{loc}/{r}" if r else loc, "format": f} for r, f in found]


def _is_table_root(tree: dict) -> bool:
    return _root_format(tree) is not None


def _root_format(tree: dict) -> str | None:
    dirs = {n for n, c in tree.items() if isinstance(c, dict)}
    if "_delta_log" in dirs:
        return "delta"
    if "_versions" in dirs:
        return "lance"
    if "metadata" in dirs and any(n.endswith(".metadata.json") for n, c in tree["metadata"].items() if c is None):
        return "iceberg"
    return None


def _name_for(location: str) -> tuple[str, str]:
    parts = location.rstrip("/").split("/")
    last = re.sub(r"\.(parquet|lance)$", "", parts[-1])
    clean = lambda x: re.sub(r"[^A-Za-z0-9_.-]", "_", x).lstrip("_.-")[:120] or "table"  # noqa: E731
    parent = clean(parts[-2]) if len(parts) > 1 else "t"
    return clean(last), f"{parent}_{clean(last)}"[:128]


def crawl(lake, prefix: str, datastack: str, *, principal: Principal | None = None, tags: list[str] | None = None,
          dry_run: bool = False) -> dict[str, Any]:
    """Register every table found under ``prefix`` in ``datastack`` as a *draft*.

    Returns ``{"found": [...], "registered": [entries], "skipped": [{location, reason}],
    "errors": [{location, error, message}]}``; a table that fails validation is reported in
    ``errors`` and not registered (the others still are). Needs *editor* on ``datastack``.
    """
    from neurolake.catalog.registry import FeatureRegistry

    reg = FeatureRegistry(lake, principal)
    # the role first: an unknown and a private datastack answer the same 403 to a principal without one
    reg.access.require(reg.principal, datastack, "editor", "crawling into a datastack")
    lake.datastack(datastack)
    from neurolake.catalog.registry import check_allowed_root

    check_allowed_root(lake, normalize_location(prefix))
    found = find_tables(prefix)
    with lake.catalog.session() as s:
        known_locs = set(s.scalars(select(FeatureTable.location)))
        taken = set(s.scalars(select(FeatureTable.name).where(FeatureTable.datastack == datastack)))
    out: dict[str, Any] = {"prefix": prefix, "datastack": datastack, "found": found, "registered": [], "skipped": [],
                           "errors": []}
    for t in found:
        if t["location"] in known_locs:
            out["skipped"].append({"location": t["location"], "reason": "already registered"})
            continue
        short, long = _name_for(t["location"])
        name = short if short not in taken else long
        n = 2
        while name in taken:
            name = f"{long[:120]}_{n}"
            n += 1
        if dry_run:
            out["registered"].append({"name": name, **t, "status": "draft (dry run)"})
            taken.add(name)
            continue
        try:
            e = reg.register(name=name, datastack=datastack, location=t["location"], format=t["format"],
                             status="draft", tags=list(tags or []) + ["crawled"],
                             description=f"found by the crawler under {prefix}")
        except NeurolakeError as exc:
            out["errors"].append({"location": t["location"], "error": exc.code, "message": exc.message})
            continue
        taken.add(name)
        out["registered"].append(e)
    reg.access.audit(reg.principal.name, "feature.crawl", prefix, datastack, found=len(found),
                     registered=len(out["registered"]), errors=len(out["errors"]))
    return out
