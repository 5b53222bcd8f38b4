"""2-D tiles of a layer (CATMAID tile convention) with a byte-bounded LRU cache and a prefetcher.

Tile geometry (CATMAID "tile source type 1", as NeuroData's tile service served it): a tile is a
512 × 512 image of one plane at one mip, addressed ``{plane}/{index}/{row}_{col}_{mip}.{png|jpg}``:

- ``xy``: ``index`` = z section; rows step along y, columns along x;
- ``xz``: ``index`` = y; rows step along z, columns along x;
- ``yz``: ``index`` = x; rows step along z, columns along y.

``index`` is given in mip-0 voxels (CATMAID's section number) and divided by the mip's downsampling
factor of that axis; ``row``/``col`` count 512-pixel tiles at the requested mip. Edge tiles are
padded with 0 to 512 × 512 so every tile has the same size. Out-of-range tiles raise NotFound.
Pixels come from ``Layer.cutout`` and are encoded by :func:`neurolake.volumes.formats.encode_plane`
(grayscale for images, a colour per id for segmentations).

:class:`TileCache` holds encoded tiles in memory, least recently used first out, bounded in bytes;
:class:`TileService` adds a background prefetcher (on a small thread pool): the next sections in the
direction the client scrolls, several sections per ``Layer.cutout``; the 4 neighbouring tiles and
both directions while it is not scrolling.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from neurolake.errors import InvalidArgument, NotFound
from neurolake.volumes.formats import encode_plane
from neurolake.volumes.layer import Layer

TILE = 512
PLANES = ("xy", "xz", "yz")
TILE_FORMATS = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg"}


@dataclass(frozen=True)
class TileKey:
    """Identifies one encoded tile. ``layer_id`` separates re-created layers of the same name and layer
    generations (a write in any process changes it, so tiles rendered before are never served again)."""

    datastack: str
    layer: str
    layer_id: str
    plane: str
    index: int  # mip-0 voxel index along the plane's normal
    row: int
    col: int
    mip: int
    fmt: str


class TileCache:
    """Thread-safe LRU of encoded tiles bounded by ``max_bytes`` (sum of tile sizes).

    Counters: ``hits``, ``misses``, ``evictions``, ``prefetched`` (tiles inserted by the
    prefetcher), ``prefetch_hits`` (hits on tiles that the prefetcher inserted). Entries older than
    ``max_age_s`` seconds count as misses. Writes in any process change the layer generation in the key
    (:meth:`neurolake.volumes.layer.Layer.generation`), so a landed write is never hidden by this cache.
    """

    def __init__(self, max_bytes: int, max_age_s: float = 300.0) -> None:
        if max_bytes < 0:
            raise InvalidArgument(f"tile cache size must be >= 0 bytes, got {max_bytes}", field="max_bytes",
                                  value=max_bytes)
        self.max_bytes = int(max_bytes)
        self.max_age_s = float(max_age_s)
        self._d: OrderedDict[TileKey, tuple[bytes, float, bool]] = OrderedDict()
        self._lock = threading.Lock()
        self.nbytes = 0
        self.hits = self.misses = self.evictions = self.prefetched = self.prefetch_hits = 0

    def __len__(self) -> int:
        return len(self._d)

    def __contains__(self, key: TileKey) -> bool:
        with self._lock:
            e = self._d.get(key)
            return e is not None and time.monotonic() - e[1] <= self.max_age_s

    def get(self, key: TileKey) -> bytes | None:
        with self._lock:
            e = self._d.get(key)
            if e is None or time.monotonic() - e[1] > self.max_age_s:
                self.misses += 1
                return None
            self._d.move_to_end(key)
            self.hits += 1
            if e[2]:
                self.prefetch_hits += 1
                self._d[key] = (e[0], e[1], False)  # count a prefetched tile's first use once
            return e[0]

    def put(self, key: TileKey, body: bytes, prefetched: bool = False) -> None:
        if len(body) > self.max_bytes:
            return
        with self._lock:
            old = self._d.pop(key, None)
            if old is not None:
                self.nbytes -= len(old[0])
            self._d[key] = (body, time.monotonic(), prefetched)
            self.nbytes += len(body)
            if prefetched:
                self.prefetched += 1
            while self.nbytes > self.max_bytes:
                _, (b, _, _) = self._d.popitem(last=False)
                self.nbytes -= len(b)
                self.evictions += 1

    def invalidate(self, datastack: str, layer: str | None = None) -> int:
        """Drop the tiles of a layer (or a whole datastack); returns how many were dropped."""
        with self._lock:
            keys = [k for k in self._d if k.datastack == datastack and (layer is None or k.layer == layer)]
            for k in keys:
                self.nbytes -= len(self._d.pop(k)[0])
            return len(keys)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            lookups = self.hits + self.misses
            return {"entries": len(self._d), "bytes": self.nbytes, "max_bytes": self.max_bytes,
                    "hits": self.hits, "misses": self.misses, "hit_ratio": self.hits / lookups if lookups else None,
                    "evictions": self.evictions, "prefetched": self.prefetched, "prefetch_hits": self.prefetch_hits,
                    "max_age_s": self.max_age_s}


def tile_box(layer: Layer, plane: str, index: int, row: int, col: int, mip: int):
    """The (x, y, z) half-open voxel box at ``mip`` of a tile. Raises InvalidArgument / NotFound."""
    if plane not in PLANES:
        raise InvalidArgument(f"plane {plane!r} is not allowed; use one of {', '.join(PLANES)}", field="plane",
                              value=plane, allowed=list(PLANES))
    if layer.num_mips <= mip or mip < 0:
        raise NotFound(f"mip {mip} does not exist; {layer.datastack}/{layer.name} has mips 0..{layer.num_mips - 1}",
                       field="mip", value=mip)
    m = layer.spec.mips[mip]
    sx, sy, sz = m.size_xyz
    fx, fy, fz = m.factor_xyz
    if row < 0 or col < 0 or index < 0:
        raise NotFound(f"tile {index}/{row}_{col}_{mip} is out of bounds", plane=plane)
    # (axis of rows, axis of columns, normal axis) with their sizes and factors
    if plane == "xy":
        normal, nsize, rows, cols = index // fz, sz, (row * TILE, sy), (col * TILE, sx)
    elif plane == "xz":
        normal, nsize, rows, cols = index // fy, sy, (row * TILE, sz), (col * TILE, sx)
    else:
        normal, nsize, rows, cols = index // fx, sx, (row * TILE, sz), (col * TILE, sy)
    if normal >= nsize or rows[0] >= rows[1] or cols[0] >= cols[1]:
        raise NotFound(f"{plane} tile {index}/{row}_{col}_{mip} is outside {layer.datastack}/{layer.name} "
                       f"(size x={sx} y={sy} z={sz} at mip {mip})", plane=plane, index=index, row=row, col=col)
    r = (rows[0], min(rows[0] + TILE, rows[1]))
    c = (cols[0], min(cols[0] + TILE, cols[1]))
    n = (normal, normal + 1)
    if plane == "xy":
        return c, r, n
    if plane == "xz":
        return c, n, r
    return n, c, r


def _planes(arr_zyx: np.ndarray, plane: str) -> list[np.ndarray]:
    """Split a cutout into 2-D tiles (rows, cols) along the plane's normal."""
    if plane == "xy":
        return [arr_zyx[i] for i in range(arr_zyx.shape[0])]
    if plane == "xz":
        return [arr_zyx[:, i, :] for i in range(arr_zyx.shape[1])]
    return [arr_zyx[:, :, i] for i in range(arr_zyx.shape[2])]


def _pad(plane: np.ndarray) -> np.ndarray:
    if plane.shape == (TILE, TILE):
        return np.ascontiguousarray(plane)
    out = np.zeros((TILE, TILE), plane.dtype)
    out[:plane.shape[0], :plane.shape[1]] = plane
    return out


def encode_tile(plane: np.ndarray, layer_type: str, fmt: str) -> bytes:
    """Pad a 2-D plane to 512 × 512 and encode it (``png`` or ``jpg``)."""
    return encode_plane(_pad(plane), layer_type, "jpg" if fmt in ("jpg", "jpeg") else "png")


def render_tiles(layer: Layer, plane: str, indices: list[int], row: int, col: int, mip: int,
                 fmt: str) -> dict[int, bytes]:
    """Render the tiles at several mip-0 ``indices`` of one (row, col) with ONE ``Layer.cutout``.

    Indices that map to the same voxel at ``mip`` render once. Returns ``{index: encoded bytes}``.
    """
    boxes = {i: tile_box(layer, plane, i, row, col, mip) for i in indices}
    axis = {"xy": 2, "xz": 1, "yz": 0}[plane]  # position of the normal in (x, y, z)
    lo = min(b[axis][0] for b in boxes.values())
    hi = max(b[axis][1] for b in boxes.values())
    first = next(iter(boxes.values()))
    box = list(first)
    box[axis] = (lo, hi)
    arr = layer.cutout(x=box[0], y=box[1], z=box[2], mip=mip)
    planes = _planes(arr, plane)
    encoded: dict[int, bytes] = {}
    out = {}
    for i, b in boxes.items():
        k = b[axis][0] - lo
        if k not in encoded:
            encoded[k] = encode_tile(planes[k], layer.layer_type, fmt)
        out[i] = encoded[k]
    return out


class TileService:
    """Tiles of any layer with a shared :class:`TileCache` and a background prefetcher.

    ``get(layer, plane, index, row, col, mip, fmt, client=...)`` returns encoded bytes and schedules
    prefetch: while ``client`` scrolls (its last two distinct indices at the same layer/plane/mip
    give the direction), the next ``depth`` sections ahead and one behind of the same (row, col),
    rendered by one ``Layer.cutout`` per task; when it is not scrolling (first request, or panning
    within a section), the 4 neighbouring tiles and ``depth // 2`` sections on both sides. A demand
    request for a tile that a prefetch task is rendering waits for it (up to ``wait_s``) instead of
    rendering it twice. Prefetch tasks beyond ``max_pending`` are dropped, not queued.
    """

    def __init__(self, cache: TileCache, *, depth: int = 8, workers: int = 2, max_pending: int = 16,
                 prefetch: bool = True, wait_s: float = 5.0) -> None:
        self.cache = cache
        self.depth = depth
        self.prefetch_enabled = prefetch and depth > 0
        self.max_pending = max_pending
        self.wait_s = wait_s
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tile-prefetch")
        self._pending = 0
        self._inflight: dict[TileKey, threading.Event] = {}
        self._lock = threading.Lock()
        self._last: OrderedDict[tuple, tuple[int, int]] = OrderedDict()
        self.dropped = 0
        self.prefetch_errors = 0
        self.waited = 0

    @staticmethod
    def key(layer: Layer, plane: str, index: int, row: int, col: int, mip: int, fmt: str,
            generation: str | None = None) -> TileKey:
        """The cache key; ``generation`` (:meth:`Layer.generation`, read once for many keys) by default read now."""
        gen = layer.generation() if generation is None else generation
        ident = f"{layer.root}:{layer.created}:{gen}"  # a landed write changes the key
        return TileKey(layer.datastack, layer.name, ident, plane, index, row, col, mip,
                       "jpg" if fmt == "jpeg" else fmt)

    def lookup(self, layer: Layer, plane: str, index: int, row: int, col: int, mip: int, fmt: str) -> bytes | None:
        return self.cache.get(self.key(layer, plane, index, row, col, mip, fmt))

    def render(self, layer: Layer, plane: str, index: int, row: int, col: int, mip: int, fmt: str) -> bytes:
        """Cache-miss path: wait for an in-flight prefetch of this tile, else render and cache it."""
        k = self.key(layer, plane, index, row, col, mip, fmt)
        with self._lock:
            ev = self._inflight.get(k)
        if ev is not None:
            ev.wait(self.wait_s)
            body = self.cache.get(k)
            if body is not None:
                self.waited += 1
                return body
        cacheable = not layer.pending_updates()  # checked after the key, before the read: see Layer._write
        body = render_tiles(layer, plane, [index], row, col, mip, fmt)[index]
        if cacheable:
            self.cache.put(k, body)
        return body

    def get(self, layer: Layer, plane: str, index: int, row: int, col: int, mip: int, fmt: str,
            client: str = "") -> bytes:
        if fmt not in TILE_FORMATS:
            raise InvalidArgument(f"tile format {fmt!r} is not allowed; use png or jpg", field="format",
                                  value=fmt, allowed=["png", "jpg"])
        body = self.lookup(layer, plane, index, row, col, mip, fmt)
        if body is None:
            body = self.render(layer, plane, index, row, col, mip, fmt)
        self.schedule(layer, plane, index, row, col, mip, fmt, client)
        return body

    # -- prefetch ---------------------------------------------------------------------------------
    def _direction(self, client: str, layer: Layer, plane: str, mip: int, index: int) -> int:
        """+1 / -1 while the client scrolls up / down through sections, 0 when it does not."""
        k = (client, layer.datastack, layer.name, plane, mip)
        with self._lock:
            current, d = self._last.get(k, (None, 0))
            if current is not None and index != current:
                d = 1 if index > current else -1
            elif current is None:
                d = 0
            self._last[k] = (index, d)
            self._last.move_to_end(k)
            while len(self._last) > 1024:
                self._last.popitem(last=False)
        return d

    def schedule(self, layer: Layer, plane: str, index: int, row: int, col: int, mip: int, fmt: str,
                 client: str = "") -> None:
        """Queue prefetch of the neighbourhood of a served tile (see class doc)."""
        if not self.prefetch_enabled:
            return
        d = self._direction(client, layer, plane, mip, index)
        m = layer.spec.mips[mip]
        step = {"xy": m.factor_xyz[2], "xz": m.factor_xyz[1], "yz": m.factor_xyz[0]}[plane]
        if d:
            self._submit(layer, plane, [index + d * step * k for k in range(1, self.depth + 1)], row, col, mip, fmt)
            self._submit(layer, plane, [index - d * step], row, col, mip, fmt)
            return
        half = max(1, self.depth // 2)
        self._submit(layer, plane, [index + step * k for k in range(1, half + 1)], row, col, mip, fmt)
        self._submit(layer, plane, [index - step * k for k in range(1, half + 1)], row, col, mip, fmt)
        for dr, dc in ((0, 1), (1, 0), (0, -1), (-1, 0)):
            self._submit(layer, plane, [index], row + dr, col + dc, mip, fmt)

    def _submit(self, layer: Layer, plane: str, indices: list[int], row: int, col: int, mip: int,
                fmt: str) -> None:
        candidates = []
        gen = None  # read once for all the keys (a catalog query on object storage)
        for i in indices:
            if i < 0 or row < 0 or col < 0:
                continue
            try:
                tile_box(layer, plane, i, row, col, mip)
            except (NotFound, InvalidArgument):
                continue
            if gen is None:
                gen = layer.generation()
            k = self.key(layer, plane, i, row, col, mip, fmt, gen)
            if k not in self.cache:
                candidates.append((i, k))
        if not candidates:
            return
        with self._lock:
            todo = [(i, k) for i, k in candidates if k not in self._inflight]
            if not todo:
                return
            if self._pending >= self.max_pending:
                self.dropped += 1
                return
            self._pending += 1
            for _, k in todo:
                self._inflight[k] = threading.Event()
        self._pool.submit(self._run, layer, plane, todo, row, col, mip, fmt)

    def _run(self, layer: Layer, plane: str, todo: list[tuple[int, TileKey]], row: int, col: int, mip: int,
             fmt: str) -> None:
        try:
            # keys made before the read (at submit), so a write landing meanwhile leaves these entries unused;
            # nothing is cached while a write is pending (in progress, or its writer died part-way)
            if layer.pending_updates():
                return
            bodies = render_tiles(layer, plane, [i for i, _ in todo], row, col, mip, fmt)
            for i, k in todo:
                self.cache.put(k, bodies[i], prefetched=True)
        except Exception:  # prefetch is best effort; the demand path reports errors
            self.prefetch_errors += 1
        finally:
            with self._lock:
                self._pending -= 1
                for _, k in todo:
                    ev = self._inflight.pop(k, None)
                    if ev is not None:
                        ev.set()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            pending = self._pending
        return {**self.cache.stats(), "prefetch_pending": pending, "prefetch_dropped": self.dropped,
                "prefetch_errors": self.prefetch_errors, "prefetch_depth": self.depth,
                "prefetch_enabled": self.prefetch_enabled, "waited_for_prefetch": self.waited}

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
