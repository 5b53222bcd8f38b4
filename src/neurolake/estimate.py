"""Storage and access cost of a lake, or of a scenario given as sizes and counts (``neurolake estimate``).

Two ways in, one price model out:

- **lake mode** (:func:`lake_usage`, :func:`estimate_lake`): walk the lake — a folder, or an
  ``s3://bucket/prefix`` (one object listing, sizes from it) — and add up the bytes really stored, by category:
  volumes (``datastacks/<ds>/volumes/``), annotation tables (``datastacks/<ds>/tables/``), materializations,
  proofreading, ephys tables (``datastacks/<ds>/ephys/<table>/``), ephys traces
  (``datastacks/<ds>/ephys/traces/``), query results (``runs/``), the catalog, other; plus the raw source files
  the ephys ``files`` tables list (their ``bytes`` column: the files themselves live outside the lake). For
  Zarr arrays the uncompressed size is the arrays' shape × item size (from ``zarr.json`` / ``.zarray``); for
  Parquet files the uncompressed column data of their row groups (Parquet footer ``total_byte_size``). A
  catalog on PostgreSQL (every S3 lake's) is outside the store: its size (``pg_database_size``) is reported in
  a note, not priced.
- **scenario mode** (:func:`estimate` with :class:`Item` s, :func:`load_scenario`, :func:`parse_item`): items
  of a size and a count, plus requests and egress.

Prices (:class:`Prices`): per GB-month of object storage, per 1,000 GET and PUT requests, per GB of egress
(defaults: $0.023, $0.0004, $0.005, $0.09), overridable by a TOML/JSON file (:func:`load_prices`) or values.

Rules (printed with every estimate, :attr:`Estimate.rules`):

- GB means 10^9 bytes (decimal, as the object stores bill), MB 10^6.
- Storage is priced on the exact size (no rounding up to whole GB) for one month.
- Requests are priced pro rata, per request (``requests_billing="pro-rata"``), or by whole started units of
  1,000 (``"per-1000-ceil"``: 1 to 1,000 requests cost one unit).
- Amounts are computed exactly (decimal arithmetic) and rounded only for display: half up to the cent;
  a non-zero amount below one cent is shown to two significant digits (e.g. $0.00023).

Errors: :class:`~neurolake.errors.InvalidArgument` for a malformed item, price, scenario or option (naming
field, value and what is allowed); :class:`~neurolake.errors.NotFound` for a missing lake or file.

A core module: it imports the standard library, numpy (dtype sizes) and, when it meets them, pyarrow
(Parquet footers), deltalake (ephys ``files`` tables), the storage configuration and s3fs (S3 lakes) and
SQLAlchemy (a PostgreSQL catalog's size); never the faces.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import Any, BinaryIO

from neurolake.errors import InvalidArgument, NotFound

__all__ = ["GB", "Prices", "Item", "Requests", "Line", "Estimate", "CategoryUsage", "LakeUsage",
           "Scenario", "REQUESTS_BILLING", "CATEGORIES", "estimate", "estimate_lake", "lake_usage",
           "load_prices", "load_scenario", "make_requests", "parse_item", "money", "price_text", "rules_text"]

GB = 10**9  # bytes in a GB (decimal, as object stores bill)
UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
REQUESTS_BILLING = ("pro-rata", "per-1000-ceil")

# lake categories, in display order
VOLUMES = "volumes"
ANNOTATIONS = "annotation tables"
MATERIALIZATIONS = "materializations"
PROOFREADING = "proofreading"
EPHYS_TABLES = "ephys tables"
EPHYS_TRACES = "ephys traces"
RUNS = "query results"
CATALOG = "catalog"  # catalog.sqlite (+ -wal, -journal), catalog.generation|layers.json|migrated, lake.json
OTHER = "other"
RAW_SOURCES = "raw source files"
CATEGORIES = (VOLUMES, ANNOTATIONS, MATERIALIZATIONS, PROOFREADING, EPHYS_TABLES, EPHYS_TRACES, RUNS, CATALOG,
              OTHER)
_DS_KINDS = {"volumes": VOLUMES, "tables": ANNOTATIONS, "annotations": ANNOTATIONS,
             "materializations": MATERIALIZATIONS, "proofreading": PROOFREADING}


# -- numbers --------------------------------------------------------------------------------------
def _dec(value: Any, what: str, *, minimum: Decimal | None = Decimal(0)) -> Decimal:
    """A finite Decimal from a number or numeric text (floats via their shortest repr: 0.023 → 0.023)."""
    if isinstance(value, bool):
        raise InvalidArgument(f"{what} {value!r} must be a number", field=what, value=value)
    try:
        d = Decimal(str(value).strip().replace("_", "").replace(",", "")) if not isinstance(value, Decimal) else value
    except (InvalidOperation, ValueError):
        raise InvalidArgument(f"{what} {value!r} must be a number", field=what, value=value) from None
    if not d.is_finite():
        raise InvalidArgument(f"{what} {value!r} must be a finite number", field=what, value=str(value))
    if minimum is not None and d < minimum:
        raise InvalidArgument(f"{what} {value!r} must be >= {minimum}", field=what, value=str(value))
    return d


def _count(value: Any, what: str) -> int:
    d = _dec(value, what)
    if d != d.to_integral_value():
        raise InvalidArgument(f"{what} {value!r} must be a whole number >= 0", field=what, value=str(value))
    return int(d)


def money(usd: Decimal | float | int, currency: str = "USD") -> str:
    """An amount for display: half up to the cent (``$30.54``), thousands separated; a non-zero amount below
    one cent to at most two significant digits (``$0.00023``, ``$0.0004``). Non-USD currencies are prefixed by their code."""
    d = Decimal(str(usd)) if not isinstance(usd, Decimal) else usd
    sign, d = ("-" if d < 0 else ""), abs(d)
    if 0 < d < Decimal("0.01"):
        exp = math.floor(math.log10(d)) - 1  # two significant digits
        d = d.quantize(Decimal(1).scaleb(exp), rounding=ROUND_HALF_UP)
    if d == 0 or d >= Decimal("0.01"):
        text = f"{d.quantize(Decimal('0.01'), rounding=ROUND_HALF_UP):,}"
    else:
        text = f"{d:f}".rstrip("0")  # $0.00023, $0.0004
    return f"{sign}${text}" if currency == "USD" else f"{sign}{text} {currency}"


def price_text(price: Decimal | float, currency: str = "USD") -> str:
    """A unit price exactly as given, no rounding: ``$0.023``, ``$0.0004``."""
    d = Decimal(str(price)) if not isinstance(price, Decimal) else price
    text = f"{d.normalize():f}"
    return f"${text}" if currency == "USD" else f"{text} {currency}"


def _gb_text(gb: Decimal) -> str:
    """GB for display: up to 6 decimals, trailing zeros dropped, thousands separated (1,326.13)."""
    q = gb.quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP)
    text = f"{q:,f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


# -- prices ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Prices:
    """The price table (USD unless ``currency`` says otherwise).

    ``storage_gb_month``: object storage per GB (10^9 bytes) per month; ``get_per_1000`` / ``put_per_1000``:
    per 1,000 GET / PUT (and LIST, COPY, POST) requests; ``egress_per_gb``: data transfer out per GB.
    Defaults: a typical S3 Standard list price. ``source`` says where the values came from.
    """

    storage_gb_month: Decimal = Decimal("0.023")
    get_per_1000: Decimal = Decimal("0.0004")
    put_per_1000: Decimal = Decimal("0.005")
    egress_per_gb: Decimal = Decimal("0.09")
    currency: str = "USD"
    source: str = "defaults"

    KEYS = ("storage_gb_month", "get_per_1000", "put_per_1000", "egress_per_gb", "currency")

    def override(self, values: dict[str, Any] | None, source: str | None = None) -> Prices:
        """A copy with ``values`` (keys of :attr:`KEYS`; numbers >= 0) replaced.
        Raises InvalidArgument for an unknown key or a bad value."""
        if not values:
            return self
        new: dict[str, Any] = {}
        for k, v in values.items():
            if k not in self.KEYS:
                raise InvalidArgument(f"unknown price {k!r}; prices: {list(self.KEYS)}", field="prices", value=k,
                                      allowed=list(self.KEYS))
            if k == "currency":
                if not isinstance(v, str) or not v.strip():
                    raise InvalidArgument(f"currency {v!r} must be a code like 'USD'", field="currency", value=v)
                new[k] = v.strip().upper()
            else:
                new[k] = _dec(v, k)
        src = source or "overrides"
        return replace(self, **new, source=src if self.source == "defaults" else f"{self.source}, {src}")

    def to_dict(self) -> dict[str, Any]:
        return {"storage_gb_month": float(self.storage_gb_month), "get_per_1000": float(self.get_per_1000),
                "put_per_1000": float(self.put_per_1000), "egress_per_gb": float(self.egress_per_gb),
                "currency": self.currency, "source": self.source}


def _read_mapping(path: Path, what: str) -> dict[str, Any]:
    """A TOML (``.toml``) or JSON (``.json``) file as a dict. Raises NotFound / InvalidArgument."""
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"{what} file {str(path)!r} does not exist", field=what, value=str(path))
    suffix = path.suffix.lower()
    text = path.read_text(encoding="utf-8")
    try:
        if suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif suffix == ".json":
            data = json.loads(text)
        else:
            raise InvalidArgument(f"{what} file {path.name!r} must end in .toml or .json", field=what,
                                  value=str(path), allowed=[".toml", ".json"])
    except (ValueError, UnicodeDecodeError) as exc:  # tomllib.TOMLDecodeError and JSONDecodeError are ValueErrors
        raise InvalidArgument(f"{what} file {str(path)!r} is not valid {suffix[1:].upper()}: {exc}", field=what,
                              value=str(path)) from None
    if not isinstance(data, dict):
        raise InvalidArgument(f"{what} file {str(path)!r} must hold a table/object at the top", field=what,
                              value=str(path))
    return data


def load_prices(path: str | Path, base: Prices | None = None) -> Prices:
    """Prices from a TOML or JSON file: the keys of :attr:`Prices.KEYS` at the top or in a ``prices``
    table, e.g. ``storage_gb_month = 0.021``; keys left out keep ``base`` (default: the defaults).
    Raises NotFound (no file) or InvalidArgument (bad syntax, unknown key, negative price)."""
    data = _read_mapping(Path(path), "prices")
    if isinstance(data.get("prices"), dict):
        data = data["prices"]
    return (base or Prices()).override(data, source=str(path))


# -- items and requests ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Item:
    """``count`` things of ``gb`` GB (10^9 bytes) each. Lake mode fills ``objects`` (files stored) and
    ``uncompressed_gb`` (total size before compression, when known); ``note`` explains a number."""

    name: str
    gb: Decimal
    count: int = 1
    objects: int | None = None
    uncompressed_gb: Decimal | None = None
    note: str = ""

    @property
    def total_gb(self) -> Decimal:
        return self.gb * self.count

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "gb": float(self.gb), "count": self.count, "total_gb": float(self.total_gb),
                "objects": self.objects,
                "uncompressed_gb": None if self.uncompressed_gb is None else float(self.uncompressed_gb),
                "note": self.note}


_ITEM = re.compile(r"^\s*([0-9][0-9_.,]*(?:[eE][+-]?\d+)?)\s*([kKmMgGtT]?[bB])?\s*(?:[x×*]\s*([0-9_,]+))?\s*$")


def parse_item(text: str) -> Item:
    """``NAME=SIZE[UNIT][xCOUNT]`` → :class:`Item`; SIZE in GB unless a unit (B, KB, MB, GB, TB; decimal)
    follows: ``mea_raw=5.5x240``, ``abf=1.3MBx100``, ``csv=6``. Raises InvalidArgument otherwise."""
    name, sep, rest = str(text).partition("=")
    m = _ITEM.match(rest) if sep else None
    if not m or not name.strip():
        raise InvalidArgument(f"item {text!r} must look like NAME=GB or NAME=GBxCOUNT (e.g. mea_raw=5.5x240, "
                              "abf=1.3MBx100)", field="item", value=text)
    size = _dec(m.group(1), f"item {name.strip()} size")
    unit = UNITS[(m.group(2) or "GB").lower()]
    return Item(name.strip(), size * unit / GB, _count(m.group(3), "count") if m.group(3) else 1)


def _item_from(d: Any, i: int) -> Item:
    if not isinstance(d, dict):
        raise InvalidArgument(f"items[{i}] must be a table with name and gb (or mb, tb, bytes)", field="items",
                              value=d)
    unknown = set(d) - {"name", "gb", "mb", "tb", "bytes", "count", "note"}
    sizes = [k for k in ("gb", "mb", "tb", "bytes") if k in d]
    if unknown or len(sizes) != 1 or not str(d.get("name", "")).strip():
        raise InvalidArgument(f"items[{i}] {d!r} must have a name and exactly one size (gb, mb, tb or bytes), "
                              "and optionally count and note", field="items", value=d,
                              allowed=["name", "gb", "mb", "tb", "bytes", "count", "note"])
    k = sizes[0]
    per = {"gb": GB, "mb": 10**6, "tb": 10**12, "bytes": 1}[k]
    return Item(str(d["name"]).strip(), _dec(d[k], f"items[{i}].{k}") * per / GB,
                _count(d.get("count", 1), f"items[{i}].count"), note=str(d.get("note", "")))


@dataclass(frozen=True)
class Requests:
    """Monthly access: ``get`` / ``put`` requests (counts) and ``egress_gb`` GB transferred out."""

    get: int = 0
    put: int = 0
    egress_gb: Decimal = Decimal(0)

    def to_dict(self) -> dict[str, Any]:
        return {"get": self.get, "put": self.put, "egress_gb": float(self.egress_gb)}


def make_requests(get: Any = 0, put: Any = 0, egress_gb: Any = 0) -> Requests:
    """:class:`Requests` from numbers or text, validated (whole counts >= 0, GB >= 0). Raises InvalidArgument."""
    return Requests(_count(get or 0, "get"), _count(put or 0, "put"), _dec(egress_gb or 0, "egress_gb"))


@dataclass(frozen=True)
class Scenario:
    """What a scenario file holds: items, requests, and price overrides (or None)."""

    name: str
    items: list[Item]
    requests: Requests
    prices: dict[str, Any] | None


def load_scenario(path: str | Path) -> Scenario:
    """A scenario from TOML or JSON: ``name`` (optional), ``[[items]]`` (``name``, one of ``gb``/``mb``/``tb``/
    ``bytes`` per item, ``count``), ``[requests]`` (``get``, ``put``, ``egress_gb``) and ``[prices]``
    (optional overrides). Raises NotFound or InvalidArgument (naming the bad entry)."""
    data = _read_mapping(Path(path), "scenario")
    unknown = set(data) - {"name", "items", "requests", "prices"}
    if unknown:
        raise InvalidArgument(f"scenario file {str(path)!r} has unknown keys {sorted(unknown)}", field="scenario",
                              value=sorted(unknown), allowed=["name", "items", "requests", "prices"])
    items = data.get("items") or []
    if not isinstance(items, list) or not items:
        raise InvalidArgument(f"scenario file {str(path)!r} needs a non-empty items list", field="items",
                              value=items)
    req = data.get("requests") or {}
    if not isinstance(req, dict) or set(req) - {"get", "put", "egress_gb"}:
        raise InvalidArgument(f"requests {req!r} may hold get, put and egress_gb", field="requests", value=req,
                              allowed=["get", "put", "egress_gb"])
    prices = data.get("prices")
    if prices is not None and not isinstance(prices, dict):
        raise InvalidArgument(f"prices {prices!r} must be a table", field="prices", value=prices)
    return Scenario(str(data.get("name") or Path(path).stem), [_item_from(d, i) for i, d in enumerate(items)],
                    make_requests(req.get("get", 0), req.get("put", 0), req.get("egress_gb", 0)), prices)


# -- the estimate ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Line:
    """One priced quantity. ``kind``: ``storage`` | ``get`` | ``put`` | ``egress``; ``quantity`` in ``unit``
    (GB-month, requests, GB); ``billed`` the quantity after the rounding rule; ``usd`` the exact amount."""

    kind: str
    name: str
    quantity: Decimal
    unit: str
    billed: Decimal
    unit_price: Decimal
    price_unit: str
    usd: Decimal

    def to_dict(self, currency: str = "USD") -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "quantity": float(self.quantity), "unit": self.unit,
                "billed": float(self.billed), "unit_price": float(self.unit_price), "price_unit": self.price_unit,
                "amount": float(self.usd), "amount_text": money(self.usd, currency)}


@dataclass
class Estimate:
    """A priced estimate: the items stored, the requests, the prices, and the cost lines of one month.

    ``storage_gb`` the total stored (GB, 10^9 bytes); ``storage_usd``, ``requests_usd``, ``egress_usd``,
    ``total_usd`` exact monthly amounts (Decimal; :func:`money` rounds them for display); ``rules`` the rounding
    and unit rules applied; ``usage`` the lake walk (lake mode).
    """

    mode: str
    items: list[Item]
    requests: Requests
    prices: Prices
    requests_billing: str
    lines: list[Line]
    storage_gb: Decimal
    storage_usd: Decimal
    requests_usd: Decimal
    egress_usd: Decimal
    total_usd: Decimal
    rules: list[str]
    notes: list[str] = field(default_factory=list)
    usage: LakeUsage | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: amounts as numbers (exact, unrounded) and as display text."""
        cur = self.prices.currency
        out = {"mode": self.mode, "gb_bytes": GB, "storage_gb": float(self.storage_gb),
               "items": [i.to_dict() for i in self.items], "requests": self.requests.to_dict(),
               "requests_billing": self.requests_billing, "prices": self.prices.to_dict(),
               "lines": [ln.to_dict(cur) for ln in self.lines],
               "monthly": {k: {"amount": float(v), "text": money(v, cur)} for k, v in
                           (("storage", self.storage_usd), ("requests", self.requests_usd),
                            ("egress", self.egress_usd), ("total", self.total_usd))},
               "rules": self.rules, "notes": self.notes}
        if self.usage is not None:
            out["lake"] = self.usage.to_dict()
        return out


def _requests_line(kind: str, n: int, per_1000: Decimal, billing: str) -> Line:
    if billing == "pro-rata":
        billed = Decimal(n)
        usd = billed * per_1000 / 1000
    else:
        units = (Decimal(n) / 1000).to_integral_value(rounding=ROUND_CEILING)
        billed = units * 1000
        usd = units * per_1000
    return Line(kind, f"{kind.upper()} requests", Decimal(n), "requests", billed, per_1000, "per 1,000 requests", usd)


def rules_text(requests_billing: str) -> list[str]:
    """The unit and rounding rules of an estimate, as printed."""
    req = ("requests priced pro rata, per request (price per 1,000 / 1,000 × count)" if requests_billing == "pro-rata"
           else "requests billed in whole started units of 1,000 (1 to 1,000 requests = one unit)")
    return ["GB = 10^9 bytes (decimal); MB = 10^6 bytes",
            "storage priced on the exact size for one month (no rounding up to whole GB)", req,
            "amounts computed exactly, rounded only for display: half up to the cent; non-zero amounts "
            "below one cent to two significant digits; line amounts may not add up to the rounded total"]


def estimate(items: list[Item], requests: Requests | None = None, prices: Prices | None = None, *,
             requests_billing: str = "pro-rata", mode: str = "scenario") -> Estimate:
    """Price ``items`` (stored for one month) and ``requests`` with ``prices``.

    ``requests_billing``: ``"pro-rata"`` (per request; 580 GET at $0.0004/1,000 → $0.000232) or
    ``"per-1000-ceil"`` (whole started units of 1,000 → $0.0004). Storage: total GB (10^9 bytes) × price per
    GB-month, exact. Raises InvalidArgument for an unknown billing rule or no items and no requests.
    """
    if requests_billing not in REQUESTS_BILLING:
        raise InvalidArgument(f"requests_billing {requests_billing!r} must be one of {list(REQUESTS_BILLING)}",
                              field="requests_billing", value=requests_billing, allowed=list(REQUESTS_BILLING))
    prices = prices or Prices()
    requests = requests or Requests()
    if not items and not (requests.get or requests.put or requests.egress_gb):
        raise InvalidArgument("nothing to estimate: give items (sizes and counts) or requests", field="items",
                              value=[])
    p = prices.storage_gb_month
    lines = [Line("storage", it.name, it.total_gb, "GB-month", it.total_gb, p, "per GB-month", it.total_gb * p)
             for it in items]
    storage_gb = sum((it.total_gb for it in items), Decimal(0))
    req_lines = [_requests_line("get", requests.get, prices.get_per_1000, requests_billing),
                 _requests_line("put", requests.put, prices.put_per_1000, requests_billing)]
    egress = Line("egress", "egress", requests.egress_gb, "GB", requests.egress_gb, prices.egress_per_gb, "per GB",
                  requests.egress_gb * prices.egress_per_gb)
    lines += [ln for ln in req_lines if ln.quantity] + ([egress] if requests.egress_gb else [])
    storage_usd = storage_gb * p
    requests_usd = sum((ln.usd for ln in req_lines), Decimal(0))
    return Estimate(mode, list(items), requests, prices, requests_billing, lines, storage_gb, storage_usd,
                    requests_usd, egress.usd, storage_usd + requests_usd + egress.usd, rules_text(requests_billing))


# -- the lake walk --------------------------------------------------------------------------------
@dataclass
class CategoryUsage:
    """Bytes of one category: ``bytes`` stored, ``files`` (objects), ``uncompressed_bytes`` (None when not
    known for every file of the category), ``by_datastack`` bytes per datastack (``""``: lake-wide files)."""

    category: str
    bytes: int = 0
    files: int = 0
    uncompressed_bytes: int | None = 0
    by_datastack: dict[str, int] = field(default_factory=dict)
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"category": self.category, "bytes": self.bytes, "files": self.files,
                "uncompressed_bytes": self.uncompressed_bytes, "by_datastack": dict(self.by_datastack),
                "note": self.note}


@dataclass
class LakeUsage:
    """What :func:`lake_usage` found: per-category usage (only categories with files, in
    :data:`CATEGORIES` order) and the raw source files listed by the ephys ``files`` tables (None if none)."""

    root: str
    categories: list[CategoryUsage]
    raw_sources: CategoryUsage | None
    notes: list[str] = field(default_factory=list)
    catalog_database_bytes: int | None = None  # a PostgreSQL catalog (pg_database_size): outside the store

    @property
    def total_bytes(self) -> int:
        """Bytes stored in the lake folder (raw sources excluded: they live outside it)."""
        return sum(c.bytes for c in self.categories)

    def to_dict(self) -> dict[str, Any]:
        return {"root": self.root, "total_bytes": self.total_bytes,
                "categories": [c.to_dict() for c in self.categories],
                "raw_sources": None if self.raw_sources is None else self.raw_sources.to_dict(), "notes": self.notes,
                "catalog_database_bytes": self.catalog_database_bytes}


def _category(parts: tuple[str, ...]) -> tuple[str, str]:
    """(category, datastack) of a file from its path parts relative to the lake root."""
    if parts[0] == "datastacks" and len(parts) >= 4:
        ds, kind = parts[1], parts[2]
        if kind == "ephys":
            return (EPHYS_TRACES if parts[3] == "traces" else EPHYS_TABLES), ds
        return _DS_KINDS.get(kind, OTHER), ds
    if parts[0] == "ephys" and len(parts) >= 3:  # lake-wide ephys tables, should the ETL keep them there
        return (EPHYS_TRACES if parts[1] == "traces" else EPHYS_TABLES), ""
    if parts[0] == "runs":
        return RUNS, ""
    if len(parts) == 1 and (parts[0].startswith("catalog.") or parts[0] == "lake.json"):
        return CATALOG, ""
    return OTHER, parts[1] if parts[0] == "datastacks" and len(parts) > 2 else ""


Opener = Callable[[], BinaryIO]  # opens one file of a lake for reading: binary, seekable
Walk = Iterator[tuple[tuple[str, ...], int, Opener]]  # (path parts under the lake root, bytes stored, opener)


def _zarr_array_bytes(meta_path: str | Path, opener: Opener | None = None) -> int | None:
    """Uncompressed bytes of the Zarr array whose metadata is ``meta_path`` (v3 ``zarr.json`` of an array
    node, or v2 ``.zarray``): prod(shape) × item size; 0 for a group; None when the data type is unknown.
    The metadata is read through ``opener`` when given (an object on S3), else from the local file."""
    import numpy as np

    try:
        if opener is None:
            raw = Path(meta_path).read_bytes()
        else:
            with opener() as f:
                raw = f.read()
        meta = json.loads(raw)
    except (OSError, ValueError):
        return None
    if Path(meta_path).name == "zarr.json":
        if meta.get("node_type") != "array":
            return 0
        dt = meta.get("data_type")
        if isinstance(dt, dict):
            dt = dt.get("name")
        if isinstance(dt, str) and re.fullmatch(r"r\d+", dt):  # raw bits
            size = int(dt[1:]) // 8
        else:
            try:
                size = np.dtype(dt).itemsize
            except TypeError:
                return None
    else:
        try:
            dt = meta.get("dtype")
            size = np.dtype([tuple(f) for f in dt] if isinstance(dt, list) else dt).itemsize
        except (TypeError, ValueError):
            return None
    return int(math.prod(int(s) for s in meta.get("shape", ()))) * size


def _parquet_uncompressed(opener: Opener) -> int | None:
    """Uncompressed column data of a Parquet file (sum of its row groups' total_byte_size, from the footer:
    pyarrow reads the file's tail only, by seeking to its end)."""
    import pyarrow.parquet as pq

    try:
        with opener() as f:
            md = pq.ParquetFile(f).metadata
    except Exception:  # noqa: BLE001 - an unreadable file just has no known uncompressed size
        return None
    return sum(md.row_group(i).total_byte_size for i in range(md.num_row_groups))


def _local_files(root: Path) -> Walk:
    """Every file under the lake folder ``root``, sorted: sizes as stored (``lstat``, symlinks not followed)."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        d = Path(dirpath)
        rel_dir = d.relative_to(root).parts
        dirnames.sort()
        for name in sorted(filenames):
            p = d / name
            try:
                size = p.lstat().st_size
            except OSError:
                continue
            yield (*rel_dir, name), size, functools.partial(open, p, "rb")


def _s3_files(fs: Any, base: str) -> Walk:
    """Every object under ``base`` (``bucket/prefix``) of the s3fs filesystem ``fs``, sorted by key. Sizes come
    from the listing (ListObjectsV2 without delimiter: one request per 1,000 keys, no HEAD per object); the
    opener knows the size and reads by range (64 KB blocks: a Parquet footer, a ``zarr.json``)."""
    listing = fs.find(base, detail=True)
    for key in sorted(listing):
        info = listing[key]
        if info.get("type", "file") != "file" or not key.startswith(base + "/"):
            continue
        rel = tuple(key[len(base) + 1:].split("/"))
        yield rel, int(info.get("size") or 0), functools.partial(_s3_open, fs, info)


def _s3_open(fs: Any, info: dict[str, Any]) -> BinaryIO:
    """The object of the listing entry ``info``, open for ranged reads (64 KB blocks). The entry (size, ETag)
    is the file's details, so s3fs sends no HEAD before its GETs (and each GET is conditional on the ETag)."""
    f = fs.open(info["name"], "rb", size=int(info["size"]), block_size=2**16)
    f.details = info
    return f


def _add_up(files: Walk, notes: list[str]) -> tuple[list[CategoryUsage], list[tuple[str, ...]]]:
    """The walk of :func:`lake_usage`, for a folder and an S3 prefix alike: usage by category (in
    :data:`CATEGORIES` order) and the ephys ``files`` Delta tables met (path parts of each table)."""
    cats: dict[str, CategoryUsage] = {}
    files_tables: dict[tuple[str, ...], None] = {}
    for parts, size, opener in files:
        name = parts[-1]
        if "_delta_log" in parts:
            i = parts.index("_delta_log")
            if i >= 2 and parts[i - 2:i] == ("ephys", "files"):
                files_tables[parts[:i]] = None
        cat, ds = _category(parts)
        cu = cats.setdefault(cat, CategoryUsage(cat))
        cu.bytes += size
        cu.files += 1
        cu.by_datastack[ds] = cu.by_datastack.get(ds, 0) + size
        if cat in (VOLUMES, EPHYS_TRACES):
            if name in ("zarr.json", ".zarray"):
                extra = _zarr_array_bytes(name, opener)
                if extra is None:
                    cu.uncompressed_bytes = None
                    notes.append(f"{'/'.join(parts)}: unknown data type, uncompressed size not known")
                elif cu.uncompressed_bytes is not None:
                    cu.uncompressed_bytes += extra
                if cu.uncompressed_bytes is not None:
                    cu.uncompressed_bytes += size  # the metadata file itself
        elif cat in (CATALOG, OTHER):
            cu.uncompressed_bytes = None
        elif cu.uncompressed_bytes is not None:
            un = _parquet_uncompressed(opener) if name.endswith(".parquet") else size
            cu.uncompressed_bytes = None if un is None else cu.uncompressed_bytes + un
    return [cats[c] for c in CATEGORIES if c in cats], list(files_tables)


def _raw_sources(files_tables: list[tuple[str, ...]], notes: list[str],
                 locate: Callable[[tuple[str, ...]], tuple[str, dict[str, str]]]) -> CategoryUsage | None:
    """Raw files listed by the ephys ``files`` Delta tables (current version; ``locate``: path parts → table
    URI and delta-rs storage options): their ``bytes``, each file (by ``file_sha256``) once."""
    if not files_tables:
        return None
    from deltalake import DeltaTable

    seen: dict[str, int] = {}
    by_ds: dict[str, int] = defaultdict(int)
    for parts in files_tables:
        rel = "/".join(parts)
        ds = parts[1] if parts[0] == "datastacks" else ""
        uri, options = locate(parts)
        try:
            dt = DeltaTable(uri, storage_options=options or None)
            names = {f.name for f in dt.schema().fields}
            if "bytes" not in names:
                notes.append(f"{rel}: no bytes column, raw files not counted")
                continue
            cols = ["bytes"] + (["file_sha256"] if "file_sha256" in names else [])
            tab = dt.to_pyarrow_table(columns=cols)
        except Exception as exc:  # noqa: BLE001 - a broken table must not stop the estimate; say so
            notes.append(f"{rel}: not readable as a Delta table ({type(exc).__name__}: "
                         f"{str(exc)[:200]}), raw files not counted")
            continue
        sizes = tab.column("bytes").to_pylist()
        keys = tab.column("file_sha256").to_pylist() if "file_sha256" in tab.column_names else [None] * len(sizes)
        for i, (k, b) in enumerate(zip(keys, sizes, strict=True)):
            if b is None:
                continue
            key = k if k is not None else f"{uri}#{i}"
            if key not in seen:
                seen[key] = int(b)
                by_ds[ds] += int(b)
    if not seen:
        return None
    return CategoryUsage(RAW_SOURCES, sum(seen.values()), len(seen), None, dict(by_ds),
                         note="outside the lake: sizes from the ephys files tables, each file (sha256) once")


def _open_s3_lake(url: str) -> tuple[str, Walk, Callable[[tuple[str, ...]], tuple[str, dict[str, str]]], bytes]:
    """(root URL, walk, table locator, ``lake.json`` bytes) of the lake under ``s3://bucket/prefix``, reached
    with the process's storage configuration. Raises NotFound (no bucket, no lake.json under the prefix)."""
    from neurolake.storage.config import split_s3, storage_config

    bucket, key = split_s3(url)
    base = f"{bucket}/{key}".rstrip("/")
    cfg = storage_config()
    fs = cfg.path(f"s3://{base}").fs
    try:
        marker = fs.cat_file(f"{base}/lake.json", max_concurrency=1)  # one GET (no HEAD for its size first)
    except (FileNotFoundError, PermissionError):
        if not fs.exists(bucket):
            raise NotFound(f"bucket {bucket!r} of lake {url!r} does not exist (or is not visible with these "
                           "credentials)", field="lake", value=url) from None
        raise NotFound(f"{url!r} is not a lake (no lake.json under that prefix)", field="lake", value=url) from None

    def locate(parts: tuple[str, ...]) -> tuple[str, dict[str, str]]:
        uri = f"s3://{base}/{'/'.join(parts)}"
        return uri, cfg.delta_options(uri)

    return f"s3://{base}", _s3_files(fs, base), locate, marker


def _catalog_database(marker: bytes, notes: list[str]) -> int | None:
    """Bytes of the lake's catalog database when it is a PostgreSQL server (``pg_database_size`` through the
    catalog's URL: ``NEUROLAKE_DATABASE_URL``, else the one ``lake.json`` names); None for SQLite (a file of
    the lake, already counted) or when it cannot be read (a note says why)."""
    from neurolake.base.settings import settings

    try:
        url = settings().database_url or json.loads(marker).get("database_url")
    except (ValueError, AttributeError):
        url = None
    if not url or url.startswith("sqlite"):
        return None
    from sqlalchemy import create_engine, make_url, pool, text

    try:
        name = make_url(url).database
        if not make_url(url).get_backend_name().startswith("postgresql"):
            notes.append(f"catalog database {name!r} ({make_url(url).get_backend_name()}) is outside the lake's "
                         "storage; its size is not counted")
            return None
        engine = create_engine(url, poolclass=pool.NullPool, connect_args={"connect_timeout": 10})
        try:
            with engine.connect() as conn:
                n = int(conn.execute(text("SELECT pg_database_size(current_database())")).scalar_one())
        finally:
            engine.dispose()
    except Exception as exc:  # noqa: BLE001 - the walk's figures stand without it; say why it is missing
        notes.append(f"catalog database size not read ({type(exc).__name__}: {str(exc)[:200]})")
        return None
    notes.append(f"catalog database {name!r} on PostgreSQL: {n:,} bytes ({_gb_text(Decimal(n) / GB)} GB, "
                 "pg_database_size) outside the object store, not priced here; the catalog category counts only "
                 "the catalog's marker files stored with the lake")
    return n


def lake_usage(root: str | Path) -> LakeUsage:
    """Walk the lake ``root`` — a local folder holding ``lake.json``, or ``s3://bucket/prefix`` (reached with
    :func:`neurolake.storage.config.storage_config`) — and add up its bytes by category (:data:`CATEGORIES`):
    file sizes as stored (folder: ``lstat``, symlinks not followed; S3: the object listing), objects = files,
    and the uncompressed size — Zarr arrays: shape × item size (every chunk, written or not); Parquet: the row
    groups' uncompressed column data (footers only are read: ranged GETs on S3); other files as stored. Delta
    tables count every version's files still stored. Also the raw source files listed by ephys ``files``
    tables (``datastacks/<ds>/ephys/files/``). A catalog on PostgreSQL (every S3 lake) is not in the store:
    its size (``pg_database_size``) is in :attr:`LakeUsage.catalog_database_bytes` and a note, not in a category.
    Raises NotFound when ``root`` holds no lake (no folder or bucket, no ``lake.json``), InvalidArgument for a
    malformed ``s3://`` URL, Unsupported for another URL scheme."""
    from neurolake.errors import Unsupported
    from neurolake.storage.config import is_s3

    if is_s3(root):
        label, files, locate, marker = _open_s3_lake(str(root))
    elif "://" in str(root):
        raise Unsupported(f"lake {str(root)!r}: the estimate of a lake's bytes walks a lake folder or an s3:// "
                          "prefix; for other stores list the sizes (e.g. with the store's inventory) and use the "
                          "scenario mode", field="lake", value=str(root))
    else:
        folder = Path(root)
        if not (folder / "lake.json").is_file():
            raise NotFound(f"{str(folder)!r} is not a lake folder (no lake.json)", field="lake", value=str(folder))
        label, files, marker = str(folder), _local_files(folder), (folder / "lake.json").read_bytes()

        def locate(parts: tuple[str, ...]) -> tuple[str, dict[str, str]]:
            return str(folder.joinpath(*parts)), {}

    notes: list[str] = []
    cats, files_tables = _add_up(files, notes)
    raw = _raw_sources(files_tables, notes, locate)
    return LakeUsage(label, cats, raw, notes, _catalog_database(marker, notes))


def estimate_lake(root: str | Path, requests: Requests | None = None, prices: Prices | None = None, *,
                  requests_billing: str = "pro-rata", include_raw_sources: bool = True) -> Estimate:
    """Price the bytes of the lake ``root`` (a folder or ``s3://bucket/prefix``: :func:`lake_usage`), one item
    per category, plus the raw source files the ephys ``files`` tables list (unless ``include_raw_sources`` is
    False: they live outside the lake, but storing them in the same object store costs the same). Raises
    NotFound / InvalidArgument / Unsupported as :func:`lake_usage`, InvalidArgument as :func:`estimate`."""
    usage = lake_usage(root)
    cats = list(usage.categories) + ([usage.raw_sources] if include_raw_sources and usage.raw_sources else [])
    items = [Item(c.category, Decimal(c.bytes) / GB, 1, c.files,
                  None if c.uncompressed_bytes is None else Decimal(c.uncompressed_bytes) / GB, c.note) for c in cats]
    est = estimate(items, requests, prices, requests_billing=requests_billing, mode="lake") if items else \
        estimate([Item("(empty lake)", Decimal(0))], requests, prices, requests_billing=requests_billing, mode="lake")
    est.usage = usage
    est.notes = list(usage.notes)
    if usage.raw_sources and not include_raw_sources:
        est.notes.append(f"raw source files ({_gb_text(Decimal(usage.raw_sources.bytes) / GB)} GB, outside the "
                         "lake) not priced")
    est.notes.append("objects = files stored; uploading the lake once takes about that many PUT requests, "
                     "reading it once at least that many GET requests (sharded arrays: one GET per chunk read)")
    return est
