"""Voxel classification: an ilastik-style random forest on filter-bank features (issue 16, step 3).

The method is ilastik's pixel classification (Sommer et al., "ilastik: Interactive learning and segmentation
toolkit", ISBI 2011; Berg et al., Nature Methods 16, 2019): every pixel of a section is described by smoothed
filter responses at several scales, a random forest (Breiman 2001) learns the classes from labelled pixels,
and its class probabilities are the output. Work is per section (2-D, axis 0 = z), as for anisotropic
ssTEM where z is ten times coarser than x/y.

**Feature set** (:func:`section_features`, ``skimage.feature.multiscale_basic_features``). The section is
scaled to float32 by ``skimage.util.img_as_float32`` (uint8 / 255, uint16 / 65535; floats unchanged), then for
each of ``num_sigma`` Gaussian scales ``sigma`` spaced logarithmically from ``sigma_min`` to ``sigma_max``
(pixels; default 1, 2, 4, 8, 16 px = 4.6 … 74 nm on the Gerhard stack):

- intensity: the Gaussian-smoothed section;
- edges: the Sobel gradient magnitude of the smoothed section;
- texture: the two eigenvalues of the Hessian of the smoothed section (ridges/valleys: membranes are
  dark ridges, mitochondria dark blobs);

that is 4 features per scale (20 with the defaults), in this order per scale. Borders: ``scipy.ndimage``'s
``nearest`` mode, so a crop of a section has slightly different features near its edge than the whole section.

**Forest**: ``sklearn.ensemble.RandomForestClassifier(n_estimators, max_depth, class_weight="balanced",
random_state=seed, n_jobs)``. Training pixels: for each training section and each class at most
``samples_per_class`` pixels drawn uniformly without replacement (``numpy.random.default_rng(seed)``), so the
memory is bounded by sections × classes × samples_per_class × n_features × 4 bytes whatever the section size;
``class_weight="balanced"`` then evens out classes that have fewer pixels than that (synapses).

**Classes** map a name to the label values it covers (``{"membrane": [0, 32, 64, 96, 128], …}``); label values
in no class are ignored (neither trained nor scored). :data:`GERHARD_CLASSES` is the mapping for the
Gerhard et al. 2013 labels, with glia/extracellular (159) counted as cytoplasm (it is not membrane, and the
question asked is membrane / mitochondrion / synapse / the rest); pass ``{"glia": [159], …}`` to keep it apart.

**Probability layers** (:func:`classify_layer`): one uint8 image layer per class holding
``round(p × 255)`` (p = the forest's class probability; read back p ≈ value / 255, resolution 1/255).

**Models in the lake** (:func:`save_model`, :func:`load_model`): ``<lake>/datastacks/<ds>/models/<name>/``
holds ``model.joblib`` (the fitted forest with its class mapping and feature settings) and ``model.json``
(classes, label values, feature settings, forest parameters, library versions, training sections, the
training layers with their :func:`neurolake.provenance.layer_identity` — the training data version — the
held-out per-class F1, and the SHA-256 of ``model.joblib``). ``model.joblib`` is a pickle: load only models of
lakes you trust (the SHA-256 check finds damage, not tampering by someone who can write the lake).

Arrays are numpy (z, y, x); probabilities are (class, z, y, x).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from neurolake.errors import AlreadyExists, CorruptData, InvalidArgument

#: The Gerhard et al. 2013 ssTEM labels as classes; glia/extracellular (159) is counted as cytoplasm.
GERHARD_CLASSES: dict[str, list[int]] = {
    "membrane": [0, 32, 64, 96, 128],
    "mitochondrion": [191],
    "synapse": [223],
    "cytoplasm": [255, 159],
}

MODEL_FORMAT = "neurolake.classify.random_forest/1"
TRAIN_ACTION = "process.train_classifier"
CLASSIFY_ACTION = "process.classify"
PREDICT_ROWS = 1 << 18  # pixels per predict_proba call: bounds the forest's per-call buffers


# -- model ---------------------------------------------------------------------------------------------------

@dataclass
class Model:
    """A trained pixel classifier.

    ``classes``: name → label values, in class order (index i of the probabilities is the i-th name);
    ``forest``: the fitted ``RandomForestClassifier`` (its classes_ are 0 … n-1); ``features``: the feature
    settings (:func:`feature_settings`); ``image_dtype``: the dtype of the training image (features depend on
    it, so prediction requires the same); ``training``: sections, sample counts, seed and forest parameters;
    ``metadata``: what the lake adds (training layers and their identities, held-out scores).
    """

    classes: dict[str, list[int]]
    forest: Any
    features: dict[str, Any]
    image_dtype: str
    training: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def class_names(self) -> list[str]:
        return list(self.classes)

    def describe(self) -> dict[str, Any]:
        """JSON-able description (what ``model.json`` holds besides versions, checksum and metadata)."""
        return {"format": MODEL_FORMAT, "classes": {k: list(v) for k, v in self.classes.items()},
                "class_order": self.class_names, "features": dict(self.features), "image_dtype": self.image_dtype,
                "training": dict(self.training)}


def feature_settings(sigma_min: float = 1.0, sigma_max: float = 16.0, num_sigma: int = 5, *, intensity: bool = True,
                     edges: bool = True, texture: bool = True) -> dict[str, Any]:
    """Checked feature settings with the resulting ``sigmas`` (px) and ``n_features``. Raises InvalidArgument."""
    try:
        smin, smax, ns = float(sigma_min), float(sigma_max), int(num_sigma)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"sigma_min, sigma_max and num_sigma must be numbers: {exc}", field="sigma") from exc
    if not (np.isfinite(smin) and np.isfinite(smax) and 0 < smin <= smax <= 256):
        raise InvalidArgument(f"sigmas must satisfy 0 < sigma_min <= sigma_max <= 256 px; got sigma_min={sigma_min}, "
                              f"sigma_max={sigma_max}", field="sigma_min", value=[sigma_min, sigma_max])
    if not 1 <= ns <= 16 or ns != num_sigma:
        raise InvalidArgument(f"num_sigma must be an integer 1-16; got {num_sigma!r}", field="num_sigma",
                              value=repr(num_sigma))
    if smin == smax and ns != 1:
        raise InvalidArgument("sigma_min == sigma_max needs num_sigma=1", field="num_sigma", value=ns)
    if not (intensity or edges or texture):
        raise InvalidArgument("at least one of intensity, edges, texture must be on", field="features")
    # the sigmas multiscale_basic_features uses (skimage.feature._basic_features)
    sigmas = np.logspace(np.log2(smin), np.log2(smax), num=ns, base=2, endpoint=True)
    per = int(bool(intensity)) + int(bool(edges)) + 2 * int(bool(texture))
    return {"method": "skimage.feature.multiscale_basic_features", "sigma_min": smin, "sigma_max": smax,
            "num_sigma": ns, "sigmas": [round(float(s), 6) for s in sigmas], "intensity": bool(intensity),
            "edges": bool(edges), "texture": bool(texture), "n_features": per * ns,
            "per_scale": [n for n, on in (("gaussian", intensity), ("sobel", edges),
                                          ("hessian_eig1", texture), ("hessian_eig2", texture)) if on]}


def section_features(section_yx: np.ndarray, features: Mapping[str, Any], *, workers: int = 1) -> np.ndarray:
    """The filter-bank features of one section (y, x) → (y, x, n_features) float32 (module doc: feature set).
    ``workers``: threads over the scales (skimage's ``workers``)."""
    from skimage.feature import multiscale_basic_features

    sec = np.asarray(section_yx)
    if sec.ndim != 2:
        raise InvalidArgument(f"a section must be 2-D (y, x); got shape {list(sec.shape)}", field="section",
                              value=list(sec.shape))
    out = multiscale_basic_features(sec, intensity=features["intensity"], edges=features["edges"],
                                    texture=features["texture"], sigma_min=features["sigma_min"],
                                    sigma_max=features["sigma_max"], num_sigma=features["num_sigma"], workers=workers)
    return out.astype(np.float32, copy=False)


# -- checks --------------------------------------------------------------------------------------------------

def _check_image(image: Any, what: str = "image") -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim != 3:
        raise InvalidArgument(f"{what} must be a 3-D (z, y, x) array; got shape {list(arr.shape)}", field=what,
                              value=list(arr.shape))
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)) or arr.dtype == np.bool_:
        raise InvalidArgument(f"{what} must be a grayscale integer or float array; got dtype {arr.dtype}",
                              field=what, value=str(arr.dtype))
    if min(arr.shape) == 0:
        raise InvalidArgument(f"{what} is empty (shape {list(arr.shape)})", field=what, value=list(arr.shape))
    return arr


def _check_labels(labels: Any, shape: tuple[int, ...]) -> np.ndarray:
    lab = np.asarray(labels)
    if lab.shape != tuple(shape):
        raise InvalidArgument(f"labels have shape {list(lab.shape)} (z, y, x) but the image has {list(shape)}: "
                              "they must match voxel for voxel", field="labels", value=list(lab.shape),
                              expected=list(shape))
    if not np.issubdtype(lab.dtype, np.integer):
        raise InvalidArgument(f"labels must be an integer array; got dtype {lab.dtype}", field="labels",
                              value=str(lab.dtype))
    return lab


REST = "*"  # a class whose label values are "every other value present" (e.g. {"boundary": [0], "cell": "*"})


def resolve_rest(classes: Mapping[str, Any], present: Iterable[int]) -> dict[str, list[int]]:
    """Replace a class given as ``"*"`` by the label values in ``present`` that no other class claims."""
    rest = [n for n, v in classes.items() if isinstance(v, str)]
    if not rest:
        return {n: list(v) for n, v in classes.items()}
    claimed = {int(x) for n, v in classes.items() if not isinstance(v, str) for x in v}
    return {n: ([int(x) for x in sorted(set(int(p) for p in present)) if int(x) not in claimed]
                if isinstance(v, str) else list(v)) for n, v in classes.items()}


def check_classes(classes: Any, label_dtype: Any = None) -> dict[str, list[int] | str]:
    """``classes`` as ``{name: [label values]}``, checked: at least 2 classes, non-empty names, each value an
    integer (within ``label_dtype``'s range when given) and in one class only. One class may be ``"*"``: every
    other label value present in the training sections (:func:`resolve_rest`). Raises InvalidArgument."""
    if not isinstance(classes, Mapping) or len(classes) < 2:
        raise InvalidArgument(f"classes must map at least 2 class names to label values, e.g. "
                              f"{GERHARD_CLASSES}; got {classes!r}"[:400], field="classes")
    info = np.iinfo(np.dtype(label_dtype)) if label_dtype is not None else None
    out: dict[str, list[int]] = {}
    owner: dict[int, str] = {}
    for name, values in classes.items():
        if not isinstance(name, str) or not name.strip():
            raise InvalidArgument(f"class names must be non-empty strings; got {name!r}", field="classes",
                                  value=repr(name))
        if values == REST:
            if any(v == REST for v in out.values()):
                raise InvalidArgument(f"only one class can be {REST!r} (every other label value)", field="classes",
                                      value=name)
            out[name] = REST
            continue
        if isinstance(values, (int, np.integer)):
            values = [values]
        if not isinstance(values, Iterable) or isinstance(values, (str, bytes)):
            raise InvalidArgument(f"class {name!r}: label values must be a list of integers; got {values!r}",
                                  field="classes", value=repr(values)[:200])
        vals = list(values)
        if not vals:
            raise InvalidArgument(f"class {name!r} has no label values", field="classes", value=name)
        clean = []
        for v in vals:
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise InvalidArgument(f"class {name!r}: label value {v!r} is not an integer", field="classes",
                                      value=repr(v))
            v = int(v)
            if info is not None and not info.min <= v <= info.max:
                raise InvalidArgument(f"class {name!r}: label value {v} cannot occur in {np.dtype(label_dtype)} "
                                      f"labels (range {info.min}-{info.max})", field="classes", value=v)
            if v in owner and owner[v] != name:
                raise InvalidArgument(f"label value {v} is in both class {owner[v]!r} and class {name!r}",
                                      field="classes", value=v)
            owner[v] = name
            if v not in clean:
                clean.append(v)
        out[name] = clean
    return out


def check_sections(sections: Any, nz: int, what: str = "sections") -> list[int]:
    """``sections`` as a list of distinct z indices in 0 … nz-1 (a list, range or iterable of ints).
    Raises InvalidArgument naming the offending value."""
    if sections is None or isinstance(sections, (str, bytes)) or not isinstance(sections, Iterable):
        raise InvalidArgument(f"{what} must be a list of section indices (z); got {sections!r}", field=what,
                              value=repr(sections)[:200])
    out: list[int] = []
    for s in sections:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)):
            raise InvalidArgument(f"{what}: {s!r} is not a section index", field=what, value=repr(s))
        s = int(s)
        if not 0 <= s < nz:
            raise InvalidArgument(f"{what}: section {s} is out of range; the volume has sections 0-{nz - 1}",
                                  field=what, value=s, allowed=[0, nz - 1])
        if s in out:
            raise InvalidArgument(f"{what}: section {s} is given twice", field=what, value=s)
        out.append(s)
    if not out:
        raise InvalidArgument(f"{what} is empty: give at least one section", field=what, value=[])
    return out


def _class_index(section_labels: np.ndarray, classes: Mapping[str, list[int]]) -> np.ndarray:
    """(y, x) int8 class index per pixel; -1 where the label value is in no class."""
    out = np.full(section_labels.shape, -1, np.int8)
    for i, values in enumerate(classes.values()):
        out[np.isin(section_labels, values)] = i
    return out


# -- array level ---------------------------------------------------------------------------------------------

def train(image_zyx: np.ndarray, labels_zyx: np.ndarray, classes: Mapping[str, Sequence[int]], sections: Iterable[int],
          *, sigma_min: float = 1.0, sigma_max: float = 16.0, num_sigma: int = 5, intensity: bool = True,
          edges: bool = True, texture: bool = True, n_estimators: int = 50, max_depth: int | None = 16,
          min_samples_leaf: int = 1, samples_per_class: int = 1000, seed: int = 0, n_jobs: int = 1,
          workers: int = 1, progress: Callable[[str, int, int], None] | None = None,
          section_names: Sequence[int] | None = None) -> Model:
    """Train a pixel classifier on ``sections`` of ``image_zyx`` (z, y, x; uint8/uint16/float) labelled by
    ``labels_zyx`` (same shape, integer label values) with ``classes`` (name → label values; module doc).

    Per training section and class at most ``samples_per_class`` pixels are drawn (seeded by ``seed``); the
    forest has ``n_estimators`` trees of depth ≤ ``max_depth`` (None: unbounded) and leaves of ≥
    ``min_samples_leaf`` samples, ``class_weight="balanced"``, ``random_state=seed``, fitted on ``n_jobs``
    threads; features on ``workers`` threads. ``progress(phase, done, total)`` is called per section.
    ``section_names``: the z of each section of the arrays in the volume they were cut from (messages and
    ``training["sections"]``; default: their index).

    Returns a :class:`Model`. Raises InvalidArgument: not 3-D, labels of another shape, bad classes, a class
    whose label values occur in none of the training sections, sections out of range, bad parameters.
    """
    from sklearn.ensemble import RandomForestClassifier

    image = _check_image(image_zyx)
    labels = _check_labels(labels_zyx, image.shape)
    secs = check_sections(sections, image.shape[0])
    cls = resolve_rest(check_classes(classes, labels.dtype), np.unique(labels[secs]))
    feats = feature_settings(sigma_min, sigma_max, num_sigma, intensity=intensity, edges=edges, texture=texture)
    for pname, v, lo in (("n_estimators", n_estimators, 1), ("samples_per_class", samples_per_class, 1),
                         ("min_samples_leaf", min_samples_leaf, 1), ("n_jobs", n_jobs, 1), ("workers", workers, 1)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise InvalidArgument(f"{pname} must be an integer >= {lo}; got {v!r}", field=pname, value=repr(v))
    if max_depth is not None and (isinstance(max_depth, bool) or not isinstance(max_depth, (int, np.integer))
                                  or max_depth < 1):
        raise InvalidArgument(f"max_depth must be None or an integer >= 1; got {max_depth!r}", field="max_depth",
                              value=repr(max_depth))
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InvalidArgument(f"seed must be an integer >= 0; got {seed!r}", field="seed", value=repr(seed))

    # every class must have pixels in the training sections (checked before computing any feature)
    idx_by_sec = {z: _class_index(labels[z], cls) for z in secs}
    counts = np.zeros(len(cls), np.int64)
    for ci in idx_by_sec.values():
        counts += np.bincount(ci[ci >= 0].ravel(), minlength=len(cls))[: len(cls)]
    names = list(section_names) if section_names is not None else list(range(image.shape[0]))
    missing = [n for n, c in zip(cls, counts, strict=True) if c == 0]
    if missing:
        present = np.unique(labels[secs])
        shown = ", ".join(str(v) for v in present[:20]) + (" …" if present.size > 20 else "")
        raise InvalidArgument(
            "; ".join(f"class {n!r}: label values {cls[n]} occur in none of the training sections {[names[z] for z in secs]}"
                      for n in missing) + f" (label values present there: {shown})",
            field="classes", value={n: cls[n] for n in missing})

    rng = np.random.default_rng(int(seed))
    xs, ys = [], []
    sampled = np.zeros(len(cls), np.int64)
    for k, z in enumerate(secs):
        f = section_features(image[z], feats, workers=workers)
        flat = f.reshape(-1, f.shape[-1])
        ci = idx_by_sec.pop(z).ravel()
        for c in range(len(cls)):
            where = np.flatnonzero(ci == c)
            if where.size > samples_per_class:
                where = np.sort(rng.choice(where, samples_per_class, replace=False))
            xs.append(flat[where])
            ys.append(np.full(where.size, c, np.int16))
            sampled[c] += where.size
        del f, flat
        if progress:
            progress("features", k + 1, len(secs))
    x = np.concatenate(xs)
    y = np.concatenate(ys)
    del xs, ys
    forest = RandomForestClassifier(n_estimators=int(n_estimators), max_depth=None if max_depth is None
                                    else int(max_depth), min_samples_leaf=int(min_samples_leaf),
                                    class_weight="balanced", random_state=int(seed), n_jobs=int(n_jobs))
    t0 = time.perf_counter()
    forest.fit(x, y)
    fit_s = time.perf_counter() - t0
    if progress:
        progress("fit", 1, 1)
    training = {"sections": [names[z] for z in secs], "shape_zyx": list(image.shape), "samples_per_class": int(samples_per_class),
                "pixels_per_class": {n: int(c) for n, c in zip(cls, counts, strict=True)},
                "samples": {n: int(c) for n, c in zip(cls, sampled, strict=True)}, "seed": int(seed),
                "forest": {"n_estimators": int(n_estimators), "max_depth": None if max_depth is None
                           else int(max_depth), "min_samples_leaf": int(min_samples_leaf),
                           "class_weight": "balanced", "random_state": int(seed)},
                "fit_seconds": round(fit_s, 3)}
    return Model(classes=cls, forest=forest, features=feats, image_dtype=str(image.dtype), training=training)


def _check_model(model: Any) -> Model:
    if not isinstance(model, Model):
        raise InvalidArgument(f"model must be a neurolake.process.classify.Model; got {type(model).__name__}",
                              field="model", value=type(model).__name__)
    return model


def predict_section(model: Model, section_yx: np.ndarray, *, n_jobs: int | None = None, workers: int = 1
                    ) -> np.ndarray:
    """Class probabilities of one section (y, x) → (class, y, x) float32 (class order = ``model.class_names``;
    they sum to 1 per pixel). ``n_jobs``: forest threads (None: as trained)."""
    sec = np.asarray(section_yx)
    if str(sec.dtype) != model.image_dtype:
        raise InvalidArgument(f"the model was trained on {model.image_dtype} images; this image is {sec.dtype} "
                              "(features depend on the dtype's range): convert it or train on this dtype",
                              field="image", value=str(sec.dtype), expected=model.image_dtype)
    f = section_features(sec, model.features, workers=workers)
    flat = f.reshape(-1, f.shape[-1])
    forest = model.forest
    if n_jobs is not None and forest.n_jobs != n_jobs:
        import copy

        forest = copy.copy(forest)  # shallow: shares the trees, own n_jobs (thread-safe with other callers)
        forest.n_jobs = int(n_jobs)
    n = len(model.classes)
    out = np.empty((flat.shape[0], n), np.float32)
    for r0 in range(0, flat.shape[0], PREDICT_ROWS):
        p = forest.predict_proba(flat[r0:r0 + PREDICT_ROWS])
        out[r0:r0 + PREDICT_ROWS] = 0
        out[r0:r0 + PREDICT_ROWS, forest.classes_.astype(int)] = p
    return np.ascontiguousarray(out.T.reshape(n, *sec.shape))


def predict(model: Model, image_zyx: np.ndarray, sections: Iterable[int] | None = None, *, n_jobs: int | None = None,
            workers: int = 1) -> np.ndarray:
    """Class probabilities (class, z, y, x) float32 of ``sections`` of ``image_zyx`` (z, y, x; None: all, in
    order; the z axis of the result follows ``sections``). Raises InvalidArgument (sections out of range, an
    image dtype other than the training one, not 3-D)."""
    model = _check_model(model)
    image = _check_image(image_zyx)
    secs = list(range(image.shape[0])) if sections is None else check_sections(sections, image.shape[0])
    out = np.empty((len(model.classes), len(secs), *image.shape[1:]), np.float32)
    for k, z in enumerate(secs):
        out[:, k] = predict_section(model, image[z], n_jobs=n_jobs, workers=workers)
    return out


def evaluate_classifier(model: Model, image: np.ndarray, labels: np.ndarray, sections: Iterable[int], *,
                        n_jobs: int | None = None, workers: int = 1) -> dict[str, dict[str, float | int]]:
    """Per-class scores of ``model`` on ``sections`` (held out from training, for an honest figure):
    ``{class: {"f1", "precision", "recall", "support"}}`` from ``sklearn.metrics.precision_recall_fscore_support``
    with the predicted class = argmax of the probabilities and the true class from ``labels`` (z, y, x; same
    shape as ``image``) through the model's class mapping; pixels whose label is in no class are left out;
    ``support`` = true pixels of the class; a score with a zero denominator is 0.
    Raises InvalidArgument (shapes, sections)."""
    from sklearn.metrics import precision_recall_fscore_support

    model = _check_model(model)
    image = _check_image(image)
    lab = _check_labels(labels, image.shape)
    secs = check_sections(sections, image.shape[0])
    trues, preds = [], []
    for z in secs:
        ci = _class_index(lab[z], model.classes).ravel()
        keep = ci >= 0
        if not keep.any():
            continue
        p = predict_section(model, image[z], n_jobs=n_jobs, workers=workers)
        pred = p.reshape(p.shape[0], -1).argmax(0).astype(np.int8)
        trues.append(ci[keep])
        preds.append(pred[keep])
    names = model.class_names
    if not trues:
        return {n: {"f1": 0.0, "precision": 0.0, "recall": 0.0, "support": 0} for n in names}
    t, p = np.concatenate(trues), np.concatenate(preds)
    prec, rec, f1, sup = precision_recall_fscore_support(t, p, labels=list(range(len(names))), zero_division=0)
    return {n: {"f1": round(float(f1[i]), 4), "precision": round(float(prec[i]), 4),
                "recall": round(float(rec[i]), 4), "support": int(sup[i])} for i, n in enumerate(names)}


# -- models in the lake --------------------------------------------------------------------------------------

def models_root(lake, datastack: str) -> Path | Any:
    """``<lake>/datastacks/<datastack>/models`` (the datastack must exist: NotFound); a ``upath.UPath`` on a lake on
    object storage."""
    from neurolake.base.names import check_name

    check_name("datastack", datastack)
    lake.datastack(datastack)  # NotFound naming the known datastacks
    return lake.root / "datastacks" / datastack / "models"


def list_models(lake, datastack: str) -> list[str]:
    """Names of the models stored for ``datastack``, sorted."""
    from neurolake.storage.config import is_s3

    root = models_root(lake, datastack)
    if is_s3(root):  # one LIST: the model prefixes
        try:
            entries = root.fs.ls(root.path, detail=True, refresh=True)
        except (FileNotFoundError, NotADirectoryError):
            return []
        names = (str(e["name"]).rstrip("/").rsplit("/", 1)[-1] for e in entries if e.get("type") == "directory")
        return sorted(n for n in names if not n.startswith("."))
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _versions() -> dict[str, Any]:
    import joblib
    import skimage
    import sklearn

    from neurolake.provenance import code_version

    return {"sklearn": sklearn.__version__, "skimage": skimage.__version__, "numpy": np.__version__,
            "joblib": joblib.__version__, "code": code_version()}


_RESERVED = {"format", "classes", "class_order", "features", "image_dtype", "training", "name", "datastack", "versions",
             "joblib", "user", "saved"}


def save_model(lake, datastack: str, name: str, model: Model, *, overwrite: bool = False) -> dict[str, Any]:
    """Store ``model`` as ``<lake>/datastacks/<datastack>/models/<name>/`` (``model.joblib`` + ``model.json``;
    module doc), atomically (a new folder renamed into place). Returns the JSON metadata written.
    Raises NotFound (datastack), InvalidArgument (name), AlreadyExists (unless ``overwrite``)."""
    import joblib

    from neurolake.base.names import check_name
    from neurolake.provenance import current_user
    from neurolake.storage.config import is_s3

    model = _check_model(model)
    check_name("model", name)
    root = models_root(lake, datastack)
    final = root / name
    if final.exists() and not overwrite:
        raise AlreadyExists(f"model {name!r} already exists in datastack {datastack!r}; pass overwrite=True "
                            "(--overwrite) to replace it", datastack=datastack, model=name)
    if is_s3(root):
        return _save_model_s3(final, name, datastack, model)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        payload = {"format": MODEL_FORMAT, "forest": model.forest, "classes": model.classes,
                   "features": model.features, "image_dtype": model.image_dtype, "training": model.training}
        joblib.dump(payload, tmp / "model.joblib", compress=3)
        digest = hashlib.sha256((tmp / "model.joblib").read_bytes()).hexdigest()
        # what the lake adds (training data, held-out scores) first; the fresh description wins over stale keys
        meta = {**{k: v for k, v in model.metadata.items() if k not in _RESERVED},
                **model.describe(), "name": name, "datastack": datastack, "versions": _versions(),
                "joblib": {"file": "model.joblib", "sha256": digest, "bytes": (tmp / "model.joblib").stat().st_size},
                "user": current_user(), "saved": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        (tmp / "model.json").write_text(json.dumps(meta, indent=1, sort_keys=False, default=_jsonable))
        if final.exists():
            trash = root / f".{name}.old-{uuid.uuid4().hex[:8]}"
            final.rename(trash)
            tmp.rename(final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            tmp.rename(final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return meta


def _save_model_s3(final: Any, name: str, datastack: str, model: Model) -> dict[str, Any]:
    """:func:`save_model` on object storage (no rename): the old ``model.json`` goes first (the model is then
    unreadable: NotFound/CorruptData, never a mix), ``model.joblib`` next, the new ``model.json`` last."""
    import io

    import joblib

    from neurolake.provenance import current_user

    payload = {"format": MODEL_FORMAT, "forest": model.forest, "classes": model.classes,
               "features": model.features, "image_dtype": model.image_dtype, "training": model.training}
    buf = io.BytesIO()
    joblib.dump(payload, buf, compress=3)
    blob = buf.getvalue()
    meta = {**{k: v for k, v in model.metadata.items() if k not in _RESERVED},
            **model.describe(), "name": name, "datastack": datastack, "versions": _versions(),
            "joblib": {"file": "model.joblib", "sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)},
            "user": current_user(), "saved": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (final / "model.json").unlink(missing_ok=True)
    (final / "model.joblib").write_bytes(blob)
    (final / "model.json").write_text(json.dumps(meta, indent=1, sort_keys=False, default=_jsonable))
    return meta


def _jsonable(o: Any) -> Any:
    if isinstance(o, (np.integer, np.floating)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def model_metadata(lake, datastack: str, name: str) -> dict[str, Any]:
    """The ``model.json`` of model ``name`` (NotFound, CorruptData)."""
    from neurolake.base.names import check_name, not_found

    check_name("model", name)
    d = models_root(lake, datastack) / name
    if not d.is_dir():
        raise not_found("model", name, list_models(lake, datastack), within=("datastack", datastack),
                        hint="train one with train_classifier (neurolake process train-classifier)")
    try:
        meta = json.loads((d / "model.json").read_text())
    except FileNotFoundError as exc:
        raise CorruptData(f"model {name!r} of datastack {datastack!r} has no model.json ({d})", model=name) from exc
    except (OSError, ValueError) as exc:
        raise CorruptData(f"model {name!r} of datastack {datastack!r}: model.json is unreadable: {exc}",
                          model=name) from exc
    if not isinstance(meta, dict) or meta.get("format") != MODEL_FORMAT:
        raise CorruptData(f"model {name!r}: model.json is not a {MODEL_FORMAT} description", model=name)
    return meta


def load_model(lake, datastack: str, name: str) -> Model:
    """The model stored as ``name`` (module doc), with ``model.metadata`` = its ``model.json``.

    Raises NotFound (no such datastack or model), CorruptData (a missing or unreadable file, ``model.joblib``
    whose SHA-256 differs from the one ``model.json`` records, or whose classes/features/dtype disagree)."""
    import joblib

    meta = model_metadata(lake, datastack, name)
    path = models_root(lake, datastack) / name / "model.joblib"
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise CorruptData(f"model {name!r} of datastack {datastack!r}: cannot read model.joblib: {exc}",
                          model=name) from exc
    want = (meta.get("joblib") or {}).get("sha256")
    got = hashlib.sha256(blob).hexdigest()
    if got != want:
        raise CorruptData(f"model {name!r} of datastack {datastack!r}: model.joblib (sha256 {got[:12]}…) is not the "
                          f"file model.json describes (sha256 {str(want)[:12]}…); retrain or restore the model",
                          model=name, sha256=got, expected=want)
    try:
        payload = joblib.load(io.BytesIO(blob))  # the bytes checked above (a local file or an S3 object)
    except Exception as exc:  # a damaged pickle raises many kinds
        raise CorruptData(f"model {name!r} of datastack {datastack!r}: cannot load model.joblib: {exc}",
                          model=name) from exc
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise CorruptData(f"model {name!r}: model.joblib holds no {MODEL_FORMAT} model", model=name)
    model = Model(classes=payload["classes"], forest=payload["forest"], features=payload["features"],
                  image_dtype=payload["image_dtype"], training=payload["training"], metadata=meta)
    desc = json.loads(json.dumps(model.describe(), default=_jsonable))
    for k in ("classes", "class_order", "features", "image_dtype"):
        if desc[k] != meta.get(k):
            raise CorruptData(f"model {name!r} of datastack {datastack!r}: model.joblib and model.json disagree "
                              f"on {k} ({desc[k]!r} vs {meta.get(k)!r})", model=name, field=k)
    if list(getattr(model.forest, "classes_", [])) != list(range(len(model.classes))):
        raise CorruptData(f"model {name!r}: the forest's classes do not match the class mapping", model=name)
    return model


# -- layer jobs ----------------------------------------------------------------------------------------------

def _read_sections(layer, sections: Sequence[int]) -> np.ndarray:
    sx, sy, _ = layer.size(0)
    out = np.empty((len(sections), sy, sx), layer.dtype)
    for k, z in enumerate(sections):
        out[k] = layer.cutout(x=(0, sx), y=(0, sy), z=(z, z + 1))[0]
    return out


def train_classifier(lake, datastack: str, image_layer: str, label_layer: str, name: str,
                     classes: Mapping[str, Sequence[int]], sections: Iterable[int], *,
                     test_sections: Iterable[int] | None = None, sigma_min: float = 1.0, sigma_max: float = 16.0,
                     num_sigma: int = 5, n_estimators: int = 50, max_depth: int | None = 16,
                     min_samples_leaf: int = 1, samples_per_class: int = 1000, seed: int = 0, n_jobs: int = 1,
                     overwrite: bool = False, progress: Callable[[str, int, int], None] | None = None,
                     say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train a pixel classifier (:func:`train`) on ``sections`` of ``image_layer`` labelled by ``label_layer``
    (an integer layer of the same shape) and store it as model ``name`` of ``datastack`` (:func:`save_model`),
    with the held-out per-class scores (:func:`evaluate_classifier`) on ``test_sections`` (default: all
    other sections; ``[]``: none) and the training layers' identities (the training data version).

    Idempotent: the same layers (same identities) and parameters → the stored model is kept ("already
    trained"); a model made differently → AlreadyExists unless ``overwrite``.
    Returns the model's JSON metadata. Raises NotFound (datastack, layer), InvalidArgument (shapes, classes,
    sections — also train/test overlap —, parameters), AlreadyExists.
    """
    from neurolake.base.names import check_name
    from neurolake.process.jobs import _differences, derivation_key

    check_name("model", name)
    img_l, lab_l = lake.layer(datastack, image_layer), lake.layer(datastack, label_layer)
    if tuple(lab_l.shape(0)) != tuple(img_l.shape(0)):
        raise InvalidArgument(f"label layer {label_layer!r} has shape {list(lab_l.shape(0))} (z, y, x) but image "
                              f"layer {image_layer!r} has {list(img_l.shape(0))}: they must match voxel for voxel",
                              field="label_layer", value=list(lab_l.shape(0)), expected=list(img_l.shape(0)))
    if not np.issubdtype(lab_l.dtype, np.integer):
        raise InvalidArgument(f"label layer {label_layer!r} is {lab_l.dtype}; labels must be integers",
                              field="label_layer", value=str(lab_l.dtype))
    nz = img_l.shape(0)[0]
    cls = check_classes(classes, lab_l.dtype)
    secs = check_sections(sections, nz)
    if test_sections is None:
        tests = [z for z in range(nz) if z not in secs]
    else:
        tests = [] if not list(test_sections) else check_sections(test_sections, nz, "test_sections")
    overlap = sorted(set(secs) & set(tests))
    if overlap:
        raise InvalidArgument(f"test_sections {overlap} are also training sections: held-out scores need "
                              "held-out sections", field="test_sections", value=overlap)
    params = {"classes": cls, "sections": secs, "test_sections": tests,
              "features": feature_settings(sigma_min, sigma_max, num_sigma),
              "n_estimators": n_estimators, "max_depth": max_depth, "min_samples_leaf": min_samples_leaf,
              "samples_per_class": samples_per_class, "seed": seed}
    key = derivation_key(lake, datastack, TRAIN_ACTION, [image_layer, label_layer], params)
    if name in list_models(lake, datastack):
        try:
            old = model_metadata(lake, datastack, name)
        except CorruptData:
            old = {}
        if old.get("key") == key and not overwrite:
            if say:
                say(f"{datastack}/models/{name}: already trained (same layers and parameters), nothing to do")
            return old
        if not overwrite:
            raise AlreadyExists(f"model {name!r} of datastack {datastack!r} already exists and differs from this "
                                f"training ({_differences(old.get('key'), key)}). Nothing was changed: pass "
                                "overwrite=True (--overwrite) to replace it", datastack=datastack, model=name)
    t0 = time.perf_counter()
    needed = secs + tests
    img = _read_sections(img_l, needed)
    lab = _read_sections(lab_l, needed)
    if say:
        say(f"training {name!r} on sections {secs} of {datastack}/{image_layer} ({list(img.shape[1:])} px each)")
    model = train(img, lab, cls, range(len(secs)), sigma_min=sigma_min, sigma_max=sigma_max, num_sigma=num_sigma,
                  n_estimators=n_estimators, max_depth=max_depth, min_samples_leaf=min_samples_leaf,
                  samples_per_class=samples_per_class, seed=seed, n_jobs=n_jobs, progress=progress,
                  section_names=needed)
    model.training["shape_zyx"] = list(img_l.shape(0))
    train_s = time.perf_counter() - t0
    scores = None
    if tests:
        if say:
            say(f"scoring on held-out sections {tests}")
        scores = evaluate_classifier(model, img, lab, range(len(secs), len(needed)), n_jobs=n_jobs)
    model.metadata = {
        "key": key,
        "training_data": {"datastack": datastack, "image_layer": image_layer, "label_layer": label_layer,
                          "layers": key["inputs"], "sections": secs},
        "held_out": {"sections": tests, "scores": scores,
                     "f1": None if scores is None else {n: s["f1"] for n, s in scores.items()}},
        "timings_s": {"train": round(train_s, 3), "evaluate": round(time.perf_counter() - t0 - train_s, 3)},
    }
    meta = save_model(lake, datastack, name, model, overwrite=True)
    if say and scores:
        say("held-out F1: " + ", ".join(f"{n} {s['f1']:.3f}" for n, s in scores.items()))
    return meta


def _predict_u8(model: Model, z: int, section: np.ndarray, class_idx: list[int], n_jobs: int) -> tuple[int, np.ndarray]:
    p = predict_section(model, section, n_jobs=n_jobs)[class_idx]
    return z, np.rint(p * 255.0).astype(np.uint8)


def classify_layer(lake, datastack: str, image_layer: str, model_name: str, output_prefix: str, *,
                   classes: Iterable[str] | None = None, n_jobs: int = 1, overwrite: bool = False,
                   scheduler: str | None = "threads", progress: Callable[[str, int, int], None] | None = None,
                   say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Classify every voxel of ``image_layer`` with model ``model_name`` and write one probability layer per
    class, ``<output_prefix>_<class>`` (uint8 image layer, value = round(p × 255); module doc), for ``classes``
    (names; None: all of the model's), each through :func:`neurolake.process.jobs.derive_layer` (action
    ``process.classify``; provenance: the model's name, checksum, training data version and held-out F1).
    The probabilities are computed once for all classes, per section on the Dask ``scheduler``, and only
    when some output is not already derived.

    Returns ``{class: Layer}``. Raises NotFound (datastack, layer, model), CorruptData (model),
    InvalidArgument (unknown class, output name, image dtype ≠ the model's), AlreadyExists, NotReady.
    """
    from neurolake.base.names import check_name
    from neurolake.jobs import dask_client, run_tasks
    from neurolake.process.jobs import derive_layer

    model = load_model(lake, datastack, model_name)
    meta = model.metadata
    layer = lake.layer(datastack, image_layer)
    if str(layer.dtype) != model.image_dtype:
        raise InvalidArgument(f"model {model_name!r} was trained on {model.image_dtype} images; layer "
                              f"{image_layer!r} is {layer.dtype}", field="image_layer", value=str(layer.dtype),
                              expected=model.image_dtype)
    names = model.class_names
    wanted = names if classes is None else list(classes)
    unknown = [c for c in wanted if c not in names]
    if unknown or not wanted:
        raise InvalidArgument(f"classes {unknown or wanted!r} are not classes of model {model_name!r}; its classes: "
                              f"{', '.join(names)}", field="classes", value=unknown or wanted, allowed=names)
    outputs = {c: check_name("layer", f"{output_prefix}_{c}") for c in wanted}
    idx = [names.index(c) for c in wanted]
    nz = layer.shape(0)[0]
    cache: dict[str, np.ndarray] = {}

    def probabilities() -> np.ndarray:
        if "p" not in cache:
            sx, sy, _ = layer.size(0)
            out = np.empty((len(idx), nz, sy, sx), np.uint8)
            done = 0
            with dask_client(scheduler) as client:
                m = client.scatter(model, broadcast=True)

                def args():
                    for z in range(nz):
                        yield (m, z, layer.cutout(x=(0, sx), y=(0, sy), z=(z, z + 1))[0], idx, n_jobs)

                def on_done(res):
                    nonlocal done
                    z, arr = res
                    out[:, z] = arr
                    done += 1
                    if progress:
                        progress("classify", done, nz)

                run_tasks(client, _predict_u8, list(args()), on_done=on_done)
            cache["p"] = out
        return cache["p"]

    model_info = {"name": model_name, "sha256": meta["joblib"]["sha256"], "classes": model.classes,
                  "training_data": meta.get("training_data"), "held_out_f1": (meta.get("held_out") or {}).get("f1"),
                  "held_out_sections": (meta.get("held_out") or {}).get("sections")}
    result = {}
    for k, c in enumerate(wanted):
        params = {"model": model_name, "model_sha256": meta["joblib"]["sha256"], "class": c,
                  "label_values": model.classes[c], "encoding": "uint8 = round(p * 255)"}
        result[c] = derive_layer(
            lake, datastack, outputs[c], action=CLASSIFY_ACTION, inputs=[image_layer], params=params,
            compute=lambda k=k: probabilities()[k], layer_type="image",
            description=f"P({c}) × 255 from model {model_name} on {image_layer}", overwrite=overwrite,
            scheduler=scheduler, progress=progress, say=say, extra={"model": model_info})
    return result


# -- benchmark on the Gerhard stack --------------------------------------------------------------------------

def gerhard_benchmark(data_dir: str | os.PathLike = "data/gerhard2013", *, size: int = 1024,
                      origin_yx: tuple[int, int] = (0, 0), train_sections: Iterable[int] = range(0, 20, 2),
                      test_sections: Iterable[int] = range(1, 20, 2), classes: Mapping[str, Sequence[int]] | None = None,
                      shuffle_labels: bool = False, n_jobs: int = 1, **train_kw: Any) -> dict[str, Any]:
    """Train on ``train_sections`` and score on ``test_sections`` of the Gerhard et al. 2013 stack
    (``<data_dir>/raw/*.tif``, ``<data_dir>/labels/*.png``), cropped to ``size`` × ``size`` px from
    ``origin_yx`` (1024: whole sections). ``shuffle_labels``: train on randomly permuted training labels
    (the chance baseline). ``train_kw`` go to :func:`train`.

    Returns ``{"scores": {class: {...}}, "model", "size", "origin_yx", "train_sections", "test_sections",
    "train_s", "evaluate_s", "predict_voxels_per_s", "params"}``.
    """
    from neurolake.volumes.sources import SliceFolder

    d = Path(data_dir)
    raw, lab = SliceFolder(d / "raw"), SliceFolder(d / "labels")
    y0, x0 = origin_yx
    img = raw.read(0, raw.shape[0])[:, y0:y0 + size, x0:x0 + size]
    labels = lab.read(0, lab.shape[0])[:, y0:y0 + size, x0:x0 + size]
    cls = dict(classes or GERHARD_CLASSES)
    tr, te = list(train_sections), list(test_sections)
    train_labels = labels
    if shuffle_labels:
        rng = np.random.default_rng(int(train_kw.get("seed", 0)) + 1)
        train_labels = labels.copy()
        for z in tr:
            train_labels[z] = rng.permutation(labels[z].ravel()).reshape(labels[z].shape)
    t0 = time.perf_counter()
    model = train(img, train_labels, cls, tr, n_jobs=n_jobs, **train_kw)
    t1 = time.perf_counter()
    scores = evaluate_classifier(model, img, labels, te, n_jobs=n_jobs)
    t2 = time.perf_counter()
    return {"scores": scores, "model": model, "size": [int(img.shape[1]), int(img.shape[2])], "origin_yx": [y0, x0],
            "train_sections": tr, "test_sections": te, "train_s": round(t1 - t0, 2), "evaluate_s": round(t2 - t1, 2),
            "predict_voxels_per_s": round(len(te) * img.shape[1] * img.shape[2] / (t2 - t1)),
            "params": {"features": model.features, **model.training["forest"],
                       "samples_per_class": model.training["samples_per_class"], "n_jobs": n_jobs,
                       "shuffle_labels": shuffle_labels}}
