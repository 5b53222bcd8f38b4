"""Decompression bombs and oversized request bodies (issue 11, finding 4).

Every bomb is a small body (~1 MB or less) that inflates to :data:`BOMB` (1 GiB) of zeros, built without
holding 1 GiB here: deflate streams repeat one full-flushed block of compressed zeros, a blosc frame points all
its blocks at one compressed block, the Arrow column is ``np.zeros`` (untouched calloc pages). Each one is sent
to a real server process (``neurolake serve``) whose peak RSS growth is read from ``/proc/<pid>/status``
(``VmHWM`` after resetting it through ``/proc/<pid>/clear_refs``): it must stay far below the bomb, the answer
must be a 4xx and the layer or table must be unchanged. Valid bodies (npz, zlib-compressed npy, blosc, zstd
Arrow IPC, JSON) still work. The decode functions themselves are also checked in-process with tracemalloc.
"""

from __future__ import annotations

import io
import struct
import sys
import tracemalloc
import zlib
from functools import cache
from pathlib import Path
from types import SimpleNamespace

import blosc
import httpx
import numpy as np
import pyarrow as pa
import pytest

MiB, GiB = 2**20, 2**30
BOMB = GiB  # what every bomb inflates to
MAX_GROWTH = 150 * MiB  # allowed peak RSS growth of the server while it refuses a bomb
MAX_BODY = 512 * 1024  # NEUROLAKE_MAX_BODY_BYTES of the test server (a whole-volume cutout upload is larger)
ONE = "5,6/5,6/5,6"  # a 1-voxel box (x, y, z)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak RSS from /proc (Linux)")


# -- bombs ----------------------------------------------------------------------------------------
def npy_header(shape, dtype="u1") -> bytes:
    b = io.BytesIO()
    np.lib.format.write_array_header_1_0(b, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                             "fortran_order": False, "shape": tuple(shape)})
    return b.getvalue()


@cache
def _deflate_zeros(prefix: bytes, zeros: int) -> tuple[bytes, int, int]:
    """A raw deflate stream of ``prefix`` + ``zeros`` zero bytes, with its crc32 and adler32: one full-flushed
    compressed MiB of zeros repeated (deflate blocks after a full flush do not refer back)."""
    assert zeros % MiB == 0
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = co.compress(prefix) + co.flush(zlib.Z_FULL_FLUSH)
    chunk = bytes(MiB)
    piece = co.compress(chunk) + co.flush(zlib.Z_FULL_FLUSH)
    assert co.compress(chunk) + co.flush(zlib.Z_FULL_FLUSH) == piece
    tail = co.flush(zlib.Z_FINISH)
    crc, adler = zlib.crc32(prefix), zlib.adler32(prefix)
    for _ in range(zeros // MiB):
        crc, adler = zlib.crc32(chunk, crc), zlib.adler32(chunk, adler)
    return head + piece * (zeros // MiB) + tail, crc, adler


def zlib_npy_bomb(shape) -> bytes:
    """Classic OCP body: zlib(.npy) whose header declares ``shape`` (uint8), followed by BOMB zero bytes."""
    prefix = npy_header(shape)
    raw, _, adler = _deflate_zeros(prefix, BOMB)
    return b"\x78\xda" + raw + struct.pack(">I", adler)


def npz_bomb(shape) -> bytes:
    """An npz (zip, deflate) with one member ``cutout.npy``: header declaring ``shape``, then BOMB zero bytes;
    the zip's sizes and CRC are the true ones."""
    prefix = npy_header(shape)
    raw, crc, _ = _deflate_zeros(prefix, BOMB)
    name, usize = b"cutout.npy", len(prefix) + BOMB
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0, crc, len(raw), usize, len(name), 0) + name
    central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0, crc, len(raw), usize, len(name),
                          0, 0, 0, 0, 0, 0) + name
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central), len(local) + len(raw), 0)
    return local + raw + central + end


def blosc_bomb(nbytes: int = BOMB, typesize: int = 1) -> bytes:
    """A valid blosc-1 frame of ``nbytes`` zeros: every block start points at the same compressed block."""
    bs = 1 << 18
    blosc.set_blocksize(bs)
    try:
        one = blosc.compress(bytes(bs), typesize=typesize, clevel=9, shuffle=blosc.NOSHUFFLE, cname="blosclz")
    finally:
        blosc.set_blocksize(0)
    ver, verlz, flags, ts = one[:4]
    block = one[struct.unpack_from("<I", one, 16)[0]:]
    n = -(-nbytes // bs)
    start = 16 + 4 * n
    return (struct.pack("<BBBBIII", ver, verlz, flags, ts, nbytes, bs, start + len(block))
            + struct.pack("<I", start) * n + block)


@cache
def arrow_bomb(file: bool = False) -> bytes:
    """A zstd-compressed Arrow IPC stream (or file) of one int8 column of BOMB zeros, in one batch."""
    tab = pa.table({"pt_position": pa.array(np.zeros(BOMB, np.int8))})  # calloc: pages never touched
    sink = pa.BufferOutputStream()
    opts = pa.ipc.IpcWriteOptions(compression="zstd")
    with (pa.ipc.new_file if file else pa.ipc.new_stream)(sink, tab.schema, options=opts) as w:
        w.write_table(tab)
    return sink.getvalue().to_pybytes()


def gzip_bomb(n: int = 256 * MiB) -> bytes:
    """gzip (``Content-Encoding: gzip``) of ``[`` and ``n`` zero bytes (~n/1000 bytes, within MAX_BODY)."""
    raw, crc, _ = _deflate_zeros(b"[", n)  # not JSON even when inflated
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + raw + struct.pack("<II", crc, (1 + n) % 2**32)


def test_bombs_are_what_they_claim():
    """The crafted bodies really inflate to BOMB bytes (checked on small copies and by streaming)."""
    body = zlib_npy_bomb((1, 1, 1))
    d, out, pos = zlib.decompressobj(), 0, 0
    while not d.eof:
        data = d.unconsumed_tail
        if not data and pos < len(body):
            data, pos = body[pos:pos + 65536], pos + 65536
        chunk = d.decompress(data, MiB)
        assert chunk or data, "truncated"
        out += len(chunk)
    assert d.eof and out == len(npy_header((1, 1, 1))) + BOMB
    small = blosc_bomb(64 * MiB)
    assert blosc.get_cbuffer_sizes(small)[0] == 64 * MiB and blosc.decompress(small) == bytes(64 * MiB)
    assert blosc.get_cbuffer_sizes(blosc_bomb())[0] == BOMB and len(blosc_bomb()) < 64 * 1024
    import zipfile

    with zipfile.ZipFile(io.BytesIO(npz_bomb((1024, 1024, 1024)))) as zf:
        (info,) = zf.infolist()
        assert info.file_size == len(npy_header((1024, 1024, 1024))) + BOMB
        with zf.open(info) as f:
            assert np.lib.format.read_magic(f) == (1, 0)
            assert np.lib.format.read_array_header_1_0(f)[0] == (1024, 1024, 1024)
    for body in (zlib_npy_bomb((1, 1, 1)), npz_bomb((1, 1, 1)), arrow_bomb(), arrow_bomb(True)):
        assert len(body) < 1.1 * MiB
    import gzip

    assert len(gzip_bomb()) < MAX_BODY and len(gzip.decompress(gzip_bomb(4 * MiB))) == 4 * MiB + 1


# -- in-process: the decoders ---------------------------------------------------------------------
def _peak_alloc(fn) -> tuple[Exception | None, int]:
    tracemalloc.start()
    try:
        fn()
        err = None
    except Exception as exc:  # noqa: BLE001 - returned to the test
        err = exc
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return err, peak


@pytest.mark.parametrize("bomb", ["npz", "npz-lying-header", "zlib-npy", "zlib-npy-lying-header", "blosc"])
def test_decode_refuses_bombs_within_bounded_memory(bomb):
    from neurolake.errors import NeurolakeError
    from neurolake.volumes.formats import decode

    body = {"npz": lambda: npz_bomb((1024, 1024, 1024)), "npz-lying-header": lambda: npz_bomb((1, 1, 1)),
            "zlib-npy": lambda: zlib_npy_bomb((1024, 1024, 1024)),
            "zlib-npy-lying-header": lambda: zlib_npy_bomb((1, 1, 1)), "blosc": blosc_bomb}[bomb]()
    fmt = "blosc" if bomb == "blosc" else "npz"
    err, peak = _peak_alloc(lambda: decode(body, fmt, np.uint8, (1, 1, 1)))
    assert isinstance(err, NeurolakeError) and 400 <= err.http_status < 500, err
    assert peak < 8 * MiB, f"decoding a {len(body)}-byte {bomb} body allocated {peak} bytes"


def test_decode_streams_many_chunks():
    """Bodies inflating to many 1 MiB steps (16 MiB) decode to the array they hold."""
    from neurolake.volumes.formats import decode

    arr = np.zeros((16, 1024, 1024), np.uint8)
    arr[::3, ::7, ::11] = 9
    npz, npy = io.BytesIO(), io.BytesIO()
    np.savez_compressed(npz, arr)
    np.save(npy, arr)
    for body in (npz.getvalue(), zlib.compress(npy.getvalue(), 1)):
        np.testing.assert_array_equal(decode(body, "npz", np.uint16, arr.shape), arr)
    np.testing.assert_array_equal(decode(blosc.compress(arr.tobytes(), typesize=1), "blosc", np.uint8, arr.shape), arr)


def test_decode_arrow_refuses_bombs_within_bounded_memory():
    from neurolake.errors import TooLarge
    from neurolake.server.bodies import read_arrow

    for file in (False, True):
        body = arrow_bomb(file)
        err, peak = _peak_alloc(lambda b=body: read_arrow(b, MAX_BODY))
        assert isinstance(err, TooLarge) and str(BOMB) in str(err), err
        assert peak < 8 * MiB, peak
    ok = pa.table({"a": np.arange(1000), "s": [str(i) for i in range(1000)]})
    for file in (False, True):
        sink = pa.BufferOutputStream()
        with (pa.ipc.new_file if file else pa.ipc.new_stream)(
                sink, ok.schema, options=pa.ipc.IpcWriteOptions(compression="zstd")) as w:
            w.write_table(ok, max_chunksize=300)
        assert read_arrow(sink.getvalue().to_pybytes(), MAX_BODY).equals(ok)


# -- against a real server ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(serve_lake, gala_lake_path):
    """A server (NEUROLAKE_MAX_BODY_BYTES = MAX_BODY) over this module's gala crop (``gala_lake_path`` of
    tests/serving/conftest.py: image uint8, segmentation uint32) with a point table ``pts``, and its process id."""
    import psutil

    from neurolake import open_lake

    path = gala_lake_path
    with open_lake(path) as lake:
        lake["gala"].create_table("pts", "point", write_permission="PUBLIC")
    base = serve_lake(path, env={"NEUROLAKE_MAX_BODY_BYTES": str(MAX_BODY)})
    port = base.rsplit(":", 1)[1]
    pid = next(p.pid for p in psutil.Process().children(recursive=True)
               if "serve" in p.cmdline() and port in p.cmdline())
    if not Path(f"/proc/{pid}/clear_refs").exists():
        pytest.skip("no /proc/<pid>/clear_refs to reset the peak RSS")
    return SimpleNamespace(base=base, pid=pid)


def _status(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


def send(server, method: str, path: str, **kw) -> tuple[httpx.Response, int]:
    """The response and the server's peak RSS growth (bytes) while answering it."""
    Path(f"/proc/{server.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = _status(server.pid)["VmRSS"]
    r = httpx.request(method, server.base + path, timeout=120, **kw)
    return r, _status(server.pid)["VmHWM"] - before


def _voxels(server, layer: str, box: str = ONE) -> np.ndarray:
    r = httpx.get(f"{server.base}/ocp/ca/gala/{layer}/npz/0/{box}/")
    assert r.status_code == 200, r.text
    return np.load(io.BytesIO(r.content))["cutout"]


ALL, ALL_ZYX = "0,200/0,100/0,50", (50, 100, 200)  # the whole gala volume: 1e6 voxels, so a 1 MB body fits
CUTOUT_BOMBS = {  # format, body, box, status, message
    "npz": ("npz", lambda: npz_bomb((1024, 1024, 1024)), ALL, 400, f"declares {BOMB + 128} bytes"),
    "npz-lying-header": ("npz", lambda: npz_bomb(ALL_ZYX), ALL, 400, f"declares {BOMB + 128} bytes"),
    "zlib-npy": ("npz", lambda: zlib_npy_bomb((1024, 1024, 1024)), ALL, 400, "shape [1024, 1024, 1024]"),
    "zlib-npy-lying-header": ("npz", lambda: zlib_npy_bomb(ALL_ZYX), ALL, 400, "more data"),
    "blosc": ("blosc", blosc_bomb, ONE, 400, f"holds {BOMB} bytes"),
    "npz-1-voxel": ("npz", lambda: npz_bomb((1024, 1024, 1024)), ONE, 413, "exceeds the limit of 65537 bytes"),
}


@pytest.mark.parametrize("name", list(CUTOUT_BOMBS))
def test_ocp_cutout_bombs_are_refused_before_inflating(server, name):
    """1 GiB of zeros in ~1 MB: refused from the declared shape/size (400) or, when it declares the box, as
    soon as the data runs past it; a body longer than any encoding of its box is refused unread (413)."""
    fmt, make, box, status, text = CUTOUT_BOMBS[name]
    body = make()
    before = _voxels(server, "image", box)
    r, growth = send(server, "POST", f"/ocp/ca/gala/image/{fmt}/0/{box}/", content=body)
    assert growth < MAX_GROWTH, f"{len(body)}-byte {name} body grew the server by {growth >> 20} MiB"
    assert r.status_code == status and text in r.json()["message"], r.text
    np.testing.assert_array_equal(_voxels(server, "image", box), before)


def test_bossdb_blosc_bomb_is_refused_before_inflating(server):
    before = _voxels(server, "segmentation")
    r, growth = send(server, "POST", "/v1/cutout/gala/gala/segmentation/0/5:6/5:6/5:6/",
                     content=blosc_bomb(BOMB, typesize=8))
    assert growth < MAX_GROWTH, f"grew by {growth >> 20} MiB"
    assert r.status_code == 400 and f"holds {BOMB} bytes" in r.json()["message"], r.text  # BossDB error body
    np.testing.assert_array_equal(_voxels(server, "segmentation"), before)


def test_cutout_body_larger_than_its_box_can_need_is_413_unread(server):
    """A body longer than any npz/blosc encoding of the box (box bytes + 1/64 + 64 KiB) is refused from its
    Content-Length, whatever it holds."""
    before = _voxels(server, "image")
    for fmt in ("npz", "blosc"):
        r, growth = send(server, "POST", f"/ocp/ca/gala/image/{fmt}/0/{ONE}/", content=bytes(2 * MiB))
        assert r.status_code == 413 and r.json()["error"] == "too_large", r.text
    np.testing.assert_array_equal(_voxels(server, "image"), before)


def _rows(server) -> int:
    r = httpx.get(f"{server.base}/api/v1/datastacks/gala/tables/pts/rows", params={"limit": 10_000})
    assert r.status_code == 200, r.text
    return r.json()["count"]


@pytest.mark.parametrize("file", [False, True], ids=["stream", "file"])
def test_arrow_rows_bomb_is_refused_before_inflating(server, file):
    n = _rows(server)
    body = arrow_bomb(file)
    ctype = "application/vnd.apache.arrow.file" if file else "application/vnd.apache.arrow.stream"
    r, growth = send(server, "POST", "/api/v1/datastacks/gala/tables/pts/rows", content=body,
                     headers={"Content-Type": ctype})
    assert growth < MAX_GROWTH, f"{len(body)}-byte Arrow body grew the server by {growth >> 20} MiB"
    assert r.status_code == 413 and r.json()["error"] == "too_large", r.text
    assert _rows(server) == n


def _stream(total: int, chunk: bytes = b" " * MiB):
    """A request body of ``total`` bytes sent chunked (no Content-Length), generated as it is sent."""
    for _ in range(total // len(chunk)):
        yield chunk


@pytest.mark.parametrize("route", ["annotation rows (JSON)", "annotation delete (model body)", "cave roots (JSON)",
                                   "cave roots_binary", "cutout"])
def test_bodies_beyond_the_limit_are_not_buffered(server, route):
    """256 MiB sent chunked (no Content-Length) is cut off at the limit (MAX_BODY, or the box's size for a
    cutout): 413, and the server never holds the body."""
    path = {"annotation rows (JSON)": "/api/v1/datastacks/gala/tables/pts/rows",
            "annotation delete (model body)": "/api/v1/datastacks/gala/tables/pts/rows/delete",
            "cave roots (JSON)": "/segmentation/api/v1/table/gala/roots",
            "cave roots_binary": "/segmentation/api/v1/table/gala/roots_binary",
            "cutout": f"/ocp/ca/gala/image/npz/0/{ONE}/"}[route]
    n = _rows(server)
    try:
        r, growth = send(server, "POST", path, content=_stream(256 * MiB),
                         headers={"Content-Type": "application/json"})
    except (httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadError):
        pytest.fail("the server dropped the connection instead of answering 413")
    assert growth < 64 * MiB, f"a 256 MiB body grew the server by {growth >> 20} MiB"
    assert r.status_code == 413 and r.json()["error"] == "too_large", r.text[:300]
    assert _rows(server) == n
    # and with Content-Length, refused before any of it is read
    r, _ = send(server, "POST", path, content=bytes(MAX_BODY + 1), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "Content-Length" in r.json()["message"], r.text[:300]


def test_gzip_request_bodies_are_not_inflated(server):
    """Nothing in the server stack decodes ``Content-Encoding`` of a request: a gzip bomb stays compressed and
    is refused as the JSON it is not. (A regression guard: the code before the fix behaved so too.)"""
    n = _rows(server)
    body = gzip_bomb()
    for path in ("/api/v1/datastacks/gala/tables/pts/rows", "/segmentation/api/v1/table/gala/roots"):
        r, growth = send(server, "POST", path, content=body,
                         headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
        assert 400 <= r.status_code < 500 and "JSON" in r.json()["message"], r.text
        assert growth < MAX_GROWTH, f"grew by {growth >> 20} MiB"
    assert _rows(server) == n


def test_valid_bodies_still_work(server):
    base = server.base
    box = "11,41/7,27/4,7"
    patch = np.arange(3 * 20 * 30, dtype=np.uint8).reshape(3, 20, 30)
    npz = io.BytesIO()
    np.savez_compressed(npz, patch)
    npy = io.BytesIO()
    np.save(npy, (patch + 1)[None])  # (c, z, y, x) with one channel, zlib-compressed: the classic OCP body
    for fmt, body, want in [("npz", npz.getvalue(), patch), ("npz", zlib.compress(npy.getvalue()), patch + 1),
                            ("blosc", blosc.compress((patch + 2).tobytes(), typesize=1), patch + 2)]:
        r = httpx.post(f"{base}/ocp/ca/gala/image/{fmt}/0/{box}/", content=body)
        assert r.status_code == 201, r.text
        np.testing.assert_array_equal(_voxels(server, "image", box), want)
    # a whole-volume upload larger than MAX_BODY: a cutout's own limit (its box) replaces the default
    vol = _voxels(server, "image", ALL)
    noisy = (vol ^ np.random.default_rng(0).integers(0, 256, vol.shape, dtype=np.uint8)).astype(np.uint8)
    npz = io.BytesIO()
    np.savez_compressed(npz, noisy)
    assert len(npz.getvalue()) > MAX_BODY
    r = httpx.post(f"{base}/ocp/ca/gala/image/npz/0/{ALL}/", content=npz.getvalue())
    assert r.status_code == 201, r.text
    np.testing.assert_array_equal(_voxels(server, "image", ALL), noisy)
    r = httpx.post(f"{base}/ocp/ca/gala/image/blosc/0/{ALL}/", content=blosc.compress(vol.tobytes(), typesize=1))
    assert r.status_code == 201, r.text
    np.testing.assert_array_equal(_voxels(server, "image", ALL), vol)
    ids = np.full((2, 10, 10), 77, np.uint64)
    r = httpx.post(f"{base}/v1/cutout/gala/gala/segmentation/0/0:10/0:10/0:2/",
                   content=blosc.compress(ids.tobytes(), typesize=8))
    assert r.status_code == 201, r.text
    np.testing.assert_array_equal(_voxels(server, "segmentation", "0,10/0,10/0,2"), ids.astype(np.uint32))
    n = _rows(server)
    rows = pa.table({"pt_position": pa.array([[1, 2, 3], [4, 5, 6]], pa.list_(pa.int64(), 3))})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, rows.schema, options=pa.ipc.IpcWriteOptions(compression="zstd")) as w:
        w.write_table(rows)
    r = httpx.post(f"{base}/api/v1/datastacks/gala/tables/pts/rows", content=sink.getvalue().to_pybytes(),
                   headers={"Content-Type": "application/vnd.apache.arrow.stream"})
    assert r.status_code == 201 and r.json()["count"] == 2, r.text
    r = httpx.post(f"{base}/api/v1/datastacks/gala/tables/pts/rows", json=[{"pt_position": [7, 8, 9]}])
    assert r.status_code == 201 and r.json()["count"] == 1, r.text
    assert _rows(server) == n + 3
    r = httpx.post(f"{base}/api/v1/datastacks/gala/tables/pts/rows/delete", json={"ids": r.json()["ids"]})
    assert r.status_code == 200 and r.json()["count"] == 1, r.text
    r = httpx.post(f"{base}/segmentation/api/v1/table/gala/roots", json={"node_ids": [0]})
    assert r.status_code in (200, 404), r.text  # a body within the limit reaches the route
