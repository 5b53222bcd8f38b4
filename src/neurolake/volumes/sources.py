"""Readers for ingest sources, each read by z-slabs so memory stays bounded.

Accepted ``SOURCE`` strings:

- a folder of 2-D TIFF or PNG slices (natural sort of file names: ``2.tif`` before ``10.tif``); a folder holding
  one multi-page TIFF reads that stack, a folder of several is refused (InvalidArgument: ingest each file);
- a multi-page TIFF (``stack.tif``; one page per section);
- an HDF5 dataset ``file.h5:/path/in/file`` (or ``file.h5`` holding a single dataset);
- a Zarr array folder (v2 or v3; an OME-Zarr group reads its full-resolution array ``0``);
- a ``.npy`` file (memory-mapped).

On object storage (``s3://bucket/key``, the endpoint and credentials of
:class:`neurolake.storage.config.StorageConfig`): a prefix of TIFF/PNG slices, a Zarr array, an HDF5
``file.h5:/path`` (read through ranged GETs) and a multi-page TIFF.

Every source is 3-D (z, y, x); a single 2-D image is one section. ``read(z0, z1, y0, y1)`` returns
sections z0..z1-1, rows y0..y1-1, all columns. TIFF (strips or tiles, through tifffile's zarr view),
HDF5, Zarr and .npy read only the requested rows; PNG slices are decoded whole, one at a time.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from neurolake.errors import CorruptData, InvalidArgument, NotFound
from neurolake.storage.config import is_s3

SLICE_SUFFIXES = (".tif", ".tiff", ".png")


def natural_key(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _fingerprint(paths: list[Path], extra: str = "") -> str:
    h = hashlib.sha256(extra.encode())
    for p in paths:
        st = p.stat()
        h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]


class Source:
    """A 3-D (z, y, x) source. ``read(z0, z1, y0, y1)`` returns a C-order (z, y, x) block."""

    shape: tuple[int, int, int]
    dtype: np.dtype
    fingerprint: str
    description: str

    def read(self, z0: int, z1: int, y0: int = 0, y1: int | None = None) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def _as3d(self, arr: np.ndarray, what: str) -> np.ndarray:
        if arr.ndim == 2:
            return arr[None]
        if arr.ndim != 3:
            raise InvalidArgument(f"{what} has shape {list(arr.shape)}; neurolake ingests 3-D grayscale or label "
                                  "volumes (z, y, x) or 2-D sections", field="source", shape=list(arr.shape))
        return arr


class SliceFolder(Source):
    """A folder of 2-D TIFF/PNG sections, one file per z, naturally sorted."""

    def __init__(self, folder: Path) -> None:
        files = sorted((p for p in folder.iterdir() if p.suffix.lower() in SLICE_SUFFIXES and p.is_file()),
                       key=lambda p: natural_key(p.name))
        if not files:
            raise InvalidArgument(f"folder {str(folder)!r} holds no .tif, .tiff or .png slices",
                                  field="source", value=str(folder))
        self.files = files
        first_shape, first_dtype = self._header(files[0])
        for p in files[1:]:
            shape, dtype = self._header(p)
            if shape != first_shape or dtype != first_dtype:
                raise InvalidArgument(
                    f"slice {p.name} has shape {list(shape)} and dtype {dtype}, but {files[0].name} has "
                    f"{list(first_shape)} and {first_dtype}: all slices must match",
                    field="source", file=str(p))
        self.shape = (len(files), *first_shape)
        self.dtype = np.dtype(first_dtype)
        self.fingerprint = _fingerprint(files)
        self.description = f"{len(files)} slices in {folder}"

    @staticmethod
    def _header(p: Path) -> tuple[tuple[int, int], np.dtype]:
        try:
            if p.suffix.lower() in (".tif", ".tiff"):
                import tifffile

                with tifffile.TiffFile(p) as tf:
                    page = tf.pages[0]
                    shape, dtype = tuple(page.shape), page.dtype
                    if len(tf.pages) > 1:
                        raise InvalidArgument(
                            f"slice {p.name} is a multi-page TIFF ({len(tf.pages)} pages): a folder must hold one "
                            "2-D section per file; ingest the multi-page TIFF itself (its path as the source)",
                            field="source", file=str(p))
            else:
                from PIL import Image

                with Image.open(p) as im:
                    mode_dtype = {"1": np.bool_, "L": np.uint8, "P": np.uint8, "I;16": np.uint16,
                                  "I;16B": np.uint16, "I": np.int32, "F": np.float32}
                    if im.mode not in mode_dtype:
                        raise InvalidArgument(f"slice {p.name} is a {im.mode} image; only grayscale or label "
                                              "images can be ingested", field="source", file=str(p))
                    shape, dtype = (im.height, im.width), np.dtype(mode_dtype[im.mode])
        except InvalidArgument:
            raise
        except Exception as exc:  # tifffile/PIL raise many kinds on a damaged file
            raise CorruptData(f"cannot read slice {p.name}: {exc}", file=str(p)) from exc
        if len(shape) != 2:
            raise InvalidArgument(f"slice {p.name} has shape {list(shape)}; expected a 2-D grayscale image",
                                  field="source", file=str(p))
        return shape, np.dtype(dtype)

    def _read_one(self, p: Path, y0: int, y1: int) -> np.ndarray:
        whole = (y0, y1) == (0, self.shape[1])
        try:
            if p.suffix.lower() in (".tif", ".tiff"):
                import tifffile

                if whole:
                    arr = tifffile.imread(p)
                else:  # only the strips/tiles holding rows y0..y1
                    import zarr

                    with tifffile.imread(p, aszarr=True) as store:
                        arr = zarr.open_array(store, mode="r")[y0:y1]
            else:
                from PIL import Image

                with Image.open(p) as im:
                    arr = np.asarray(im)
                if arr.shape == self.shape[1:]:
                    arr = arr[y0:y1]
        except Exception as exc:
            raise CorruptData(f"cannot read slice {p.name}: {exc}", file=str(p)) from exc
        want = (y1 - y0, self.shape[2])
        if arr.shape != want:
            raise CorruptData(f"slice {p.name} rows {y0}:{y1} decoded to shape {list(arr.shape)}, expected "
                              f"{list(want)}", file=str(p))
        return arr.astype(self.dtype, copy=False)

    def read(self, z0: int, z1: int, y0: int = 0, y1: int | None = None) -> np.ndarray:
        y1 = self.shape[1] if y1 is None else y1
        out = np.empty((z1 - z0, y1 - y0, self.shape[2]), dtype=self.dtype)
        for i, p in enumerate(self.files[z0:z1]):
            out[i] = self._read_one(p, y0, y1)
        return out


class TiffStack(Source):
    """A multi-page TIFF; each page is one section."""

    def __init__(self, path: Path) -> None:
        import tifffile

        try:
            self._tf = tifffile.TiffFile(path)
            series = self._tf.series[0]
        except Exception as exc:
            raise CorruptData(f"cannot read TIFF {path.name}: {exc}", file=str(path)) from exc
        shape = tuple(series.shape)
        if len(shape) == 2:
            shape = (1, *shape)
        if len(shape) != 3:
            raise InvalidArgument(f"TIFF {path.name} has shape {list(shape)}; expected (z, y, x) grayscale pages",
                                  field="source", file=str(path))
        self.shape = shape
        self.dtype = np.dtype(series.dtype)
        self.fingerprint = _fingerprint([path])
        self.description = f"multi-page TIFF {path}"
        self._path = path

    def read(self, z0: int, z1: int, y0: int = 0, y1: int | None = None) -> np.ndarray:
        y1 = self.shape[1] if y1 is None else y1
        try:
            if (y0, y1) == (0, self.shape[1]):
                arr = self._tf.asarray(key=range(z0, z1)) if self.shape[0] > 1 else self._tf.asarray()
                return self._as3d(np.asarray(arr), self._path.name)
            import zarr

            with self._tf.aszarr() as store:
                za = zarr.open_array(store, mode="r")
                arr = za[z0:z1, y0:y1] if za.ndim == 3 else za[y0:y1][None]
        except Exception as exc:
            raise CorruptData(f"cannot read pages {z0}:{z1} of {self._path.name}: {exc}", file=str(self._path)) from exc
        return np.ascontiguousarray(arr)

    def close(self) -> None:
        self._tf.close()


class HDF5Dataset(Source):
    """An HDF5 dataset ``file.h5:/path`` (LZF and gzip filters included with h5py)."""

    def __init__(self, path: Path, dataset: str | None) -> None:
        import h5py

        try:
            self._f = h5py.File(path, "r")
        except Exception as exc:
            raise CorruptData(f"cannot open HDF5 file {path.name}: {exc}", file=str(path)) from exc
        if not dataset:
            names: list[str] = []
            self._f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
            if len(names) != 1:
                raise InvalidArgument(f"HDF5 file {path.name} holds {len(names)} datasets ({', '.join(names[:10])}); "
                                      f"name one as {path.name}:/path", field="source", datasets=names[:50])
            dataset = names[0]
        if dataset not in self._f or not isinstance(self._f[dataset], h5py.Dataset):
            raise NotFound(f"HDF5 file {path.name} has no dataset {dataset!r}", file=str(path), dataset=dataset)
        self._d = self._f[dataset]
        shape = tuple(self._d.shape)
        if len(shape) == 2:
            shape = (1, *shape)
        if len(shape) != 3:
            raise InvalidArgument(f"dataset {dataset} has shape {list(shape)}; expected (z, y, x)",
                                  field="source", dataset=dataset)
        self.shape = shape
        self.dtype = np.dtype(self._d.dtype)
        self.fingerprint = _fingerprint([path], dataset)
        self.description = f"HDF5 {path}:{dataset}"

    def read(self, z0: int, z1: int, y0: int = 0, y1: int | None = None) -> np.ndarray:
        y1 = self.shape[1] if y1 is None else y1
        try:
            arr = self._d[z0:z1, y0:y1] if self._d.ndim == 3 else self._d[y0:y1][None]
        except Exception as exc:
            raise CorruptData(f"cannot read {self.description} z={z0}:{z1}: {exc}") from exc
        return np.ascontiguousarray(arr)

    def close(self) -> None:
        self._f.close()


class ZarrArray(Source):
    """A Zarr v2/v3 array folder (an OME-Zarr multiscales group reads its array ``0``)."""

    def __init__(self, path: Path) -> None:
        import zarr

        try:
            node = zarr.open(str(path), mode="r")
            if isinstance(node, zarr.Group):
                node = node["0"]
        except Exception as exc:
            raise CorruptData(f"cannot open Zarr array {path}: {exc}", file=str(path)) from exc
        self._a = node
        shape = tuple(node.shape)
        if len(shape) == 2:
            shape = (1, *shape)
        if len(shape) != 3:
            raise InvalidArgument(f"Zarr array {path} has shape {list(shape)}; expected (z, y, x)", field="source")
        self.shape = shape
        self.dtype = np.dtype(node.dtype)
        meta = [p for p in (path / "zarr.json", path / ".zarray", path / "0" / "zarr.json") if p.exists()]
        self.fingerprint = _fingerprint(meta, str(shape))
        self.description = f"Zarr {path}"

    def read(self, z0: int, z1: int, y0: int = 0, y1: int | None = None) -> np.ndarray:
        y1 = self.shape[1] if y1 is None else y1
        arr = self._a[z0:z1, y0:y1] if self._a.ndim == 3 else self._a[y0:y1][None]
        return np.ascontiguousarray(arr)


class NpyFile(Source):
    """A ``.npy`` file, read slab by slab with plain file reads (no memory map, so the pages of
    sections already ingested are not kept resident in this process)."""

    def __init__(self, path: Path) -> None:
        try:
            with open(path, "rb") as f:
                version = np.lib.format.read_magic(f)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, fortran, dtype = read_header(f)
                self._offset = f.tell()
        except Exception as exc:
            raise CorruptData(f"cannot read {path.name}: {exc}", file=str(path)) from exc
        if dtype.hasobject:
            raise InvalidArgument(f"{path.name} holds Python objects, not voxels", field="source", file=str(path))
        if len(shape) not in (2, 3):
            raise InvalidArgument(f"{path.name} has shape {list(shape)}; expected (z, y, x) or (y, x)",
                                  field="source", shape=list(shape))
        self._fortran = fortran
        self._path = path
        self.shape = tuple(shape) if len(shape) == 3 else (1, *shape)
        self.dtype = np.dtype(dtype)
        need = self._offset + int(np.prod(self.shape)) * self.dtype.itemsize
        if path.stat().st_size < need:
            raise CorruptData(f"{path.name} is truncated: {path.stat().st_size} bytes, header promises {need}",
                              file=str(path))
        self.fingerprint = _fingerprint([path])
        self.description = f"npy {path}"

    def read(self, z0: int, z1: int, y0: int = 0, y1: int | None = None) -> np.ndarray:
        y1 = self.shape[1] if y1 is None else y1
        if self._fortran:  # rare: sections are not contiguous, fall back to a memory map
            return np.ascontiguousarray(np.load(self._path, mmap_mode="r").reshape(self.shape)[z0:z1, y0:y1])
        plane = self.shape[1] * self.shape[2]
        rows = (y1 - y0) * self.shape[2]
        out = np.empty((z1 - z0, y1 - y0, self.shape[2]), dtype=self.dtype)
        with open(self._path, "rb") as f:  # the rows of each section are contiguous in a C-order .npy
            for i, z in enumerate(range(z0, z1)):
                f.seek(self._offset + (z * plane + y0 * self.shape[2]) * self.dtype.itemsize)
                out[i] = np.fromfile(f, dtype=self.dtype, count=rows).reshape(y1 - y0, self.shape[2])
        return out


def open_source(source: str | os.PathLike) -> Source:
    """Open an ingest source (see module doc). Raises NotFound, InvalidArgument, CorruptData."""
    text = str(source)
    if is_s3(text):
        return _open_s3(text)
    dataset = None
    path = Path(text)
    if not path.exists() and ":" in text:
        file_part, _, dataset = text.rpartition(":")
        path = Path(file_part)
    if not path.exists():
        raise NotFound(f"ingest source {text!r} does not exist", field="source", value=text)
    suffix = path.suffix.lower()
    if path.is_dir():
        if (path / "zarr.json").exists() or (path / ".zarray").exists() or (path / ".zgroup").exists():
            return ZarrArray(path)
        images = [p for p in path.iterdir() if p.suffix.lower() in SLICE_SUFFIXES and p.is_file()]
        if len(images) == 1 and images[0].suffix.lower() in (".tif", ".tiff") and _tiff_pages(images[0]) > 1:
            return TiffStack(images[0])  # a folder holding one multi-page TIFF: that stack
        return SliceFolder(path)
    if suffix in (".h5", ".hdf5", ".hdf") or dataset is not None:
        return HDF5Dataset(path, dataset)
    if suffix in (".tif", ".tiff"):
        return TiffStack(path)
    if suffix == ".npy":
        return NpyFile(path)
    if suffix == ".png":
        return _single_png(path)
    raise InvalidArgument(f"cannot ingest {path.name}: use a folder of TIFF/PNG slices, a .tif, an HDF5 "
                          "file.h5:/dataset, a Zarr folder or a .npy", field="source", value=text)


def _tiff_pages(path: Path) -> int:
    """Pages of a TIFF file (0 when it cannot be parsed: the slice reader then says what is wrong)."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tf:
            return len(tf.pages)
    except Exception:  # tifffile raises many kinds on a damaged file
        return 0


def _single_png(path: Path) -> Source:
    src = SliceFolder.__new__(SliceFolder)
    shape, dtype = SliceFolder._header(path)
    src.files = [path]
    src.shape = (1, *shape)
    src.dtype = np.dtype(dtype)
    src.fingerprint = _fingerprint([path])
    src.description = f"PNG {path}"
    return src


# -- sources on object storage ------------------------------------------------------------------------------
def _s3_fingerprint(fs: Any, keys: list[str], extra: str = "") -> str:
    """:func:`_fingerprint` of objects: name, size and ETag of each (one HEAD each, or from a listing)."""
    h = hashlib.sha256(extra.encode())
    for k in keys:
        info = k if isinstance(k, dict) else fs.info(k)
        h.update(f"{info['name'].rsplit('/', 1)[-1]}:{info.get('size')}:{info.get('ETag')}\n".encode())
    return h.hexdigest()[:32]


def _remote_file(fs: Any, key: str) -> Any:
    """A seekable binary file object of the object ``key`` (ranged GETs of 1 MiB blocks) with the ``name``,
    ``suffix`` and ``stat()`` (size, modification time) the readers above look at."""
    from types import SimpleNamespace

    f = fs.open(key, "rb", block_size=1 << 20)
    info = f.details
    name = key.rsplit("/", 1)[-1]
    modified = info.get("LastModified")
    mtime_ns = int(modified.timestamp() * 1e9) if hasattr(modified, "timestamp") else 0
    f.name, f.suffix = name, Path(name).suffix
    f.stat = lambda: SimpleNamespace(st_size=int(info.get("size") or 0), st_mtime_ns=mtime_ns)
    return f


class S3SliceFolder(SliceFolder):
    """A prefix of 2-D TIFF/PNG slices on object storage (one LIST; headers read by ranged GETs, each slice
    fetched whole when read)."""

    def __init__(self, fs: Any, prefix: str) -> None:
        infos = [i for i in fs.ls(prefix, detail=True)
                 if i.get("type") == "file" and Path(i["name"]).suffix.lower() in SLICE_SUFFIXES]
        infos.sort(key=lambda i: natural_key(i["name"].rsplit("/", 1)[-1]))
        if not infos:
            raise InvalidArgument(f"s3://{prefix} holds no .tif, .tiff or .png slices", field="source",
                                  value=f"s3://{prefix}")
        self._fs = fs
        self.files = [i["name"] for i in infos]
        first_shape, first_dtype = self._header(self.files[0])
        for k in self.files[1:]:
            shape, dtype = self._header(k)
            if shape != first_shape or dtype != first_dtype:
                raise InvalidArgument(
                    f"slice {k.rsplit('/', 1)[-1]} has shape {list(shape)} and dtype {dtype}, but "
                    f"{self.files[0].rsplit('/', 1)[-1]} has {list(first_shape)} and {first_dtype}: all slices must "
                    "match", field="source", file=f"s3://{k}")
        self.shape = (len(self.files), *first_shape)
        self.dtype = np.dtype(first_dtype)
        self.fingerprint = _s3_fingerprint(fs, infos)
        self.description = f"{len(self.files)} slices in s3://{prefix}"

    def _header(self, key: str) -> tuple[tuple[int, int], np.dtype]:  # type: ignore[override]
        with _remote_file(self._fs, key) as f:
            return SliceFolder._header(f)

    def _read_one(self, key: str, y0: int, y1: int) -> np.ndarray:  # type: ignore[override]
        import io

        blob = io.BytesIO(self._fs.cat_file(key))
        blob.name = key.rsplit("/", 1)[-1]
        blob.suffix = Path(blob.name).suffix
        return super()._read_one(blob, 0, self.shape[1])[y0:y1]  # the whole object is here: decode it whole


def _open_s3(text: str) -> Source:
    """:func:`open_source` of an ``s3://`` location."""
    from neurolake.storage.config import storage_config

    cfg = storage_config()
    rest, dataset = text[len("s3://"):], None
    fs = cfg.path("s3://" + rest.split("/", 1)[0]).fs
    if not fs.exists(rest) and ":" in rest:
        rest, _, dataset = rest.rpartition(":")
    key = rest.rstrip("/")
    if not fs.exists(key):
        raise NotFound(f"ingest source {text!r} does not exist", field="source", value=text)
    suffix = Path(key).suffix.lower()
    if fs.isdir(key):
        if any(fs.exists(f"{key}/{m}") for m in ("zarr.json", ".zarray", ".zgroup")):
            return _s3_zarr(fs, key, cfg)
        return S3SliceFolder(fs, key)
    if suffix in (".h5", ".hdf5", ".hdf") or dataset is not None:
        src = HDF5Dataset(_remote_file(fs, key), dataset)
        src.description = f"HDF5 s3://{key}:{src.description.rsplit(':', 1)[-1]}"
        return src
    if suffix in (".tif", ".tiff"):
        src = TiffStack(_remote_file(fs, key))
        src.description = f"multi-page TIFF s3://{key}"
        return src
    raise InvalidArgument(f"cannot ingest s3://{key}: on object storage use a prefix of TIFF/PNG slices, a .tif, an "
                          "HDF5 file.h5:/dataset or a Zarr array", field="source", value=text)


def _s3_zarr(fs: Any, key: str, cfg: Any) -> Source:
    import zarr
    from zarr.storage import FsspecStore

    src = ZarrArray.__new__(ZarrArray)
    try:
        node = zarr.open(FsspecStore(fs=_async_fs(cfg), path=key, read_only=True), mode="r")
        if isinstance(node, zarr.Group):
            node = node["0"]
    except Exception as exc:
        raise CorruptData(f"cannot open Zarr array s3://{key}: {exc}", file=f"s3://{key}") from exc
    shape = tuple(node.shape)
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3:
        raise InvalidArgument(f"Zarr array s3://{key} has shape {list(shape)}; expected (z, y, x)", field="source")
    src._a, src.shape, src.dtype = node, shape, np.dtype(node.dtype)
    meta = [f"{key}/{m}" for m in ("zarr.json", ".zarray", "0/zarr.json") if fs.exists(f"{key}/{m}")]
    src.fingerprint = _s3_fingerprint(fs, meta, str(shape))
    src.description = f"Zarr s3://{key}"
    return src


def _async_fs(cfg: Any) -> Any:
    """An asynchronous s3fs filesystem (zarr-python's FsspecStore needs one) with the store's settings."""
    import s3fs

    return s3fs.S3FileSystem(asynchronous=True, **cfg.fsspec_options())
