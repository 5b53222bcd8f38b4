"""Layer specs: dtype, size, voxel size, chunking, compression and the mip pyramid plan.

A layer is a small JSON-able :class:`LayerSpec` plus a store (as TensorStore separates array drivers
from kvstores). Coordinates in specs are named: ``*_xyz`` lists are (x, y, z); ``*_zyx`` lists are the
array axis order (z, y, x) used by the stored Zarr arrays and every numpy array neurolake returns.

Storage format: each mip is a Zarr v3 array with the ``sharding_indexed`` codec (Zarr v3 spec,
ZEP 2), grouped under an OME-Zarr 0.5 ``multiscales`` group (https://ngff.openmicroscopy.org/0.5/).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from neurolake.errors import InvalidArgument

IMAGE_DTYPES = ("uint8", "uint16", "float32")
SEGMENTATION_DTYPES = ("uint32", "uint64")
LAYER_TYPES = ("image", "segmentation")
COMPRESSIONS = ("zstd", "blosc")
DEFAULT_CHUNK_ZYX = (16, 128, 128)  # 16 sections x 128 x 128: near-isotropic in nm for ssTEM/FIB
DEFAULT_SHARD_ZYX = (16, 1024, 1024)  # 64 chunks per shard file; ingest streams one shard-deep slab


def _triple(kind: str, value: Any, *, positive: bool = True, integer: bool = True) -> tuple:
    try:
        items = tuple(value)
    except TypeError:
        items = ()
    if len(items) != 3:
        raise InvalidArgument(f"{kind} must have 3 values, got {value!r}", field=kind, value=repr(value))
    out = []
    for v in items:
        try:
            num = int(v) if integer else float(v)
        except (TypeError, ValueError) as exc:
            raise InvalidArgument(f"{kind} must be numbers, got {value!r}", field=kind, value=repr(value)) from exc
        if integer and float(v) != num:
            raise InvalidArgument(f"{kind} must be whole numbers, got {value!r}", field=kind, value=repr(value))
        if positive and not (num > 0 and math.isfinite(num)):
            raise InvalidArgument(f"{kind} must be > 0, got {value!r}", field=kind, value=repr(value))
        out.append(num)
    return tuple(out)


@dataclass(frozen=True)
class Mip:
    """One resolution level. ``factor_xyz`` is the downsampling relative to mip 0."""

    mip: int
    size_xyz: tuple[int, int, int]
    voxel_size_nm: tuple[float, float, float]
    factor_xyz: tuple[int, int, int]
    step_xyz: tuple[int, int, int]  # factor relative to the previous mip (1,1,1 at mip 0)
    chunk_zyx: tuple[int, int, int]
    shard_zyx: tuple[int, int, int]

    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        x, y, z = self.size_xyz
        return (z, y, x)

    @property
    def key(self) -> str:
        """The scale key used by precomputed (e.g. ``4.6_4.6_50``) — x_y_z voxel size in nm."""
        return "_".join(f"{v:g}" for v in self.voxel_size_nm)


def plan_mips(
    size_xyz: tuple[int, int, int],
    voxel_size_nm: tuple[float, float, float],
    chunk_zyx: tuple[int, int, int],
    shard_zyx: tuple[int, int, int],
    max_mips: int | None = None,
) -> list[Mip]:
    """Plan the pyramid.

    Each level halves x and y; z is halved too once voxels are near isotropic (the z voxel size is
    less than twice the x/y voxel size), as igneous/CloudVolume's anisotropy-aware plans do.
    Levels stop when one fits in a single chunk, or at ``max_mips`` levels.
    """
    mips: list[Mip] = []
    size = tuple(size_xyz)
    vox = tuple(voxel_size_nm)
    factor = (1, 1, 1)
    step = (1, 1, 1)
    while True:
        shape_zyx = (size[2], size[1], size[0])
        chunk = tuple(min(c, s) for c, s in zip(chunk_zyx, shape_zyx, strict=True))
        shard = tuple(
            min(sh, math.ceil(s / c) * c) for sh, c, s in zip(shard_zyx, chunk, shape_zyx, strict=True)
        )
        # shard must stay a multiple of the chunk after clipping
        shard = tuple(max(c, (sh // c) * c) for sh, c in zip(shard, chunk, strict=True))
        mips.append(Mip(len(mips), size, vox, factor, step, chunk, shard))
        fits = all(s <= c for s, c in zip(shape_zyx, chunk_zyx, strict=True))
        if fits or (max_mips is not None and len(mips) >= max_mips):
            break
        fz = 2 if vox[2] < 2 * max(vox[0], vox[1]) else 1
        step = (2 if size[0] > 1 else 1, 2 if size[1] > 1 else 1, fz if size[2] > 1 else 1)
        if step == (1, 1, 1):
            break
        size = tuple(math.ceil(s / f) for s, f in zip(size, step, strict=True))
        vox = tuple(v * f for v, f in zip(vox, step, strict=True))
        factor = tuple(a * f for a, f in zip(factor, step, strict=True))
    return mips


@dataclass
class LayerSpec:
    """Everything needed to (re)open a layer's arrays. JSON round-trips through :meth:`to_json`."""

    layer_type: str
    dtype: str
    size_xyz: tuple[int, int, int]
    voxel_size_nm: tuple[float, float, float]
    chunk_zyx: tuple[int, int, int] = DEFAULT_CHUNK_ZYX
    shard_zyx: tuple[int, int, int] = DEFAULT_SHARD_ZYX
    compression: str = "zstd"
    compression_level: int = 3
    num_mips: int | None = None  # None: until a level fits one chunk
    mips: list[Mip] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.layer_type not in LAYER_TYPES:
            raise InvalidArgument(
                f"layer type {self.layer_type!r} is not allowed; use one of {', '.join(LAYER_TYPES)}",
                field="layer_type", value=self.layer_type, allowed=list(LAYER_TYPES))
        allowed = IMAGE_DTYPES if self.layer_type == "image" else SEGMENTATION_DTYPES
        if self.dtype not in allowed:
            raise InvalidArgument(
                f"dtype {self.dtype!r} is not allowed for a {self.layer_type} layer; use one of {', '.join(allowed)}",
                field="dtype", value=self.dtype, allowed=list(allowed))
        if self.compression not in COMPRESSIONS:
            raise InvalidArgument(
                f"compression {self.compression!r} is not allowed; use one of {', '.join(COMPRESSIONS)}",
                field="compression", value=self.compression, allowed=list(COMPRESSIONS))
        self.size_xyz = _triple("size", self.size_xyz)
        self.voxel_size_nm = _triple("voxel_size", self.voxel_size_nm, integer=False)
        self.chunk_zyx = _triple("chunk", self.chunk_zyx)
        self.shard_zyx = _triple("shard", self.shard_zyx)
        for c, s in zip(self.chunk_zyx, self.shard_zyx, strict=True):
            if s % c:
                raise InvalidArgument(
                    f"shard shape {list(self.shard_zyx)} must be a multiple of the chunk shape "
                    f"{list(self.chunk_zyx)} (both z, y, x)",
                    field="shard", value=list(self.shard_zyx))
        if not self.mips:
            self.mips = plan_mips(self.size_xyz, self.voxel_size_nm, self.chunk_zyx, self.shard_zyx, self.num_mips)
        else:
            self.mips = [m if isinstance(m, Mip) else Mip(**{k: tuple(v) if isinstance(v, list) else v
                                                             for k, v in m.items()}) for m in self.mips]

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["mips"] = [asdict(m) for m in self.mips]
        return d

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LayerSpec:
        return cls(**data)

    def zarr_metadata(self, mip: int) -> dict[str, Any]:
        """Zarr v3 array metadata (tensorstore ``zarr3`` driver form) for one mip."""
        m = self.mips[mip]
        if self.compression == "zstd":
            codec = {"name": "zstd", "configuration": {"level": self.compression_level}}
        else:
            typesize = {"uint8": 1, "uint16": 2, "uint32": 4, "uint64": 8, "float32": 4}[self.dtype]
            codec = {"name": "blosc", "configuration": {
                "cname": "zstd", "clevel": self.compression_level, "shuffle": "bitshuffle" if typesize == 1 else "shuffle",
                "typesize": typesize, "blocksize": 0}}
        return {
            "shape": list(m.shape_zyx),
            "data_type": self.dtype,
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(m.shard_zyx)}},
            "chunk_key_encoding": {"name": "default"},
            "fill_value": 0,
            "codecs": [{
                "name": "sharding_indexed",
                "configuration": {
                    "chunk_shape": list(m.chunk_zyx),
                    "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}, codec],
                    "index_codecs": [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "crc32c"}],
                    "index_location": "end",
                },
            }],
            "dimension_names": ["z", "y", "x"],
        }

    def ome_attributes(self, name: str) -> dict[str, Any]:
        """OME-Zarr 0.5 ``multiscales`` attributes for the layer group.

        Scales are (z, y, x) voxel sizes in nm; the translation of level m is half a voxel of mip 0
        times (factor - 1), so pixel centres of averaged levels stay in place (OME-Zarr practice).
        """
        v0 = self.voxel_size_nm
        datasets = []
        for m in self.mips:
            scale = [m.voxel_size_nm[2], m.voxel_size_nm[1], m.voxel_size_nm[0]]
            trans = [(m.factor_xyz[i] - 1) * v0[i] / 2 for i in (2, 1, 0)]
            transforms: list[dict[str, Any]] = [{"type": "scale", "scale": scale}]
            if any(trans):
                transforms.append({"type": "translation", "translation": trans})
            datasets.append({"path": str(m.mip), "coordinateTransformations": transforms})
        return {
            "ome": {
                "version": "0.5",
                "multiscales": [{
                    "name": name,
                    "axes": [{"name": a, "type": "space", "unit": "nanometer"} for a in ("z", "y", "x")],
                    "datasets": datasets,
                    "type": "mean" if self.layer_type == "image" else "mode",
                }],
            },
            "neurolake": {"layer_type": self.layer_type, "spec": self.to_json()},
        }
