"""``neurolake process …`` and ``neurolake evaluate``: preprocessing and segmentation jobs with provenance,
and segmentation quality (:mod:`neurolake.process`, docs/processing.md).

Every job reads layers of a datastack and writes a new layer; run again with the same inputs and parameters
it does nothing ("already derived"); an existing output made differently is refused unless ``--overwrite``.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from neurolake.cli._common import Bar, DsOpt, LakeOpt, echo_json, open_lake, parse_ids, say

app = typer.Typer(help="Preprocessing and segmentation jobs: intensity, align, train, classify, supervoxels, "
                       "agglomerate, initial-roots.", no_args_is_help=True)

OverwriteOpt = Annotated[bool, typer.Option(help="replace an output made differently")]
SchedOpt = Annotated[str | None, typer.Option(
    "--scheduler", help="threads (default), local (a LocalCluster) or tcp://host:port")]


def _sections(text: str | None) -> list[int] | None:
    """``"0-9"`` or ``"0,2,4"`` → a list of section indices."""
    if not text:
        return None
    if "-" in text and "," not in text:
        a, b = text.split("-", 1)
        return list(range(int(a), int(b) + 1))
    return parse_ids(text, "sections")


@app.command("intensity")
def intensity(datastack: DsOpt, input: Annotated[str, typer.Option(help="image layer")],
              output: Annotated[str, typer.Option(help="new image layer")], lake: LakeOpt = None,
              method: Annotated[str, typer.Option(help="meanstd or percentile")] = "meanstd",
              reference: Annotated[int | None, typer.Option(help="reference section (default: median brightness)")]
              = None,
              percentiles: Annotated[str, typer.Option(help="low,high percentiles (method percentile)")] = "1,99",
              clahe: Annotated[bool, typer.Option(help="also CLAHE per section (scikit-image)")] = False,
              clip_limit: float = 0.01, overwrite: OverwriteOpt = False, scheduler: SchedOpt = "threads") -> None:
    """Per-section intensity correction (normalise each section to a reference; optional CLAHE)."""
    from neurolake.process.intensity import intensity_layer

    lk = open_lake(lake)
    with Bar() as bar:
        pct = tuple(float(p) for p in percentiles.split(","))
        la = intensity_layer(lk, datastack, input, output, method=method, reference=reference, percentiles=pct,
                             clahe=clahe,
                             clip_limit=clip_limit, overwrite=overwrite, scheduler=scheduler, progress=bar, say=say)
    say(f"wrote {la!r}")


@app.command("align")
def align(datastack: DsOpt, input: Annotated[str, typer.Option(help="image layer")],
          output: Annotated[str, typer.Option(help="new aligned image layer")], lake: LakeOpt = None,
          reference: Annotated[int | None, typer.Option(help="section that stays fixed (default: the middle)")]
          = None,
          max_rotation_deg: float = 5.0, upsample_factor: int = 50,
          elastic: Annotated[bool, typer.Option(help="refine by TV-L1 optical flow after the rigid step")] = False,
          overwrite: OverwriteOpt = False, scheduler: SchedOpt = "threads") -> None:
    """Rigid section alignment (rotation by a coarse-to-fine normalised cross-correlation search, translation by
    phase correlation, against the neighbour, composed along z); the transforms are registered as feature table
    <output>_transforms (SQL: features.<output>_transforms)."""
    from neurolake.process.align import align_layer

    lk = open_lake(lake)
    with Bar() as bar:
        la = align_layer(lk, datastack, input, output, reference=reference, max_rotation_deg=max_rotation_deg,
                         upsample_factor=upsample_factor, elastic=elastic, overwrite=overwrite,
                         scheduler=scheduler, progress=bar, say=say)
    say(f"wrote {la!r}")


@app.command("train")
def train(datastack: DsOpt, image: Annotated[str, typer.Option(help="image layer")],
          labels: Annotated[str, typer.Option(help="label layer with the training labels")],
          name: Annotated[str, typer.Option(help="model name")],
          classes: Annotated[str, typer.Option(help='JSON: class → label values, e.g. {"membrane": [0, 32, 64, 96, '
                                                    '128], "mitochondrion": [191], "synapse": [223], '
                                                    '"cytoplasm": [255, 159]}')],
          sections: Annotated[str, typer.Option(help="training sections, e.g. 0-9 or 0,2,4")],
          lake: LakeOpt = None,
          test_sections: Annotated[str | None, typer.Option(help="held-out sections for the F1 report")] = None,
          n_estimators: int = 50, samples_per_class: int = 1000, seed: int = 0,
          overwrite: OverwriteOpt = False) -> None:
    """Train a voxel classifier (random forest on a filter bank) and store it in the lake."""
    from neurolake.errors import InvalidArgument
    from neurolake.process.classify import train_classifier

    try:
        mapping = json.loads(classes)
    except ValueError as exc:
        raise InvalidArgument(f"--classes must be JSON ({exc})", field="classes", value=classes) from None
    lk = open_lake(lake)
    with Bar() as bar:
        meta = train_classifier(lk, datastack, image, labels, name, mapping, _sections(sections),
                                test_sections=_sections(test_sections), n_estimators=n_estimators,
                                samples_per_class=samples_per_class, seed=seed, overwrite=overwrite, progress=bar,
                                say=say)
    echo_json(meta)


@app.command("classify")
def classify(datastack: DsOpt, image: Annotated[str, typer.Option(help="image layer")],
             model: Annotated[str, typer.Option(help="model name (neurolake process train)")],
             output_prefix: Annotated[str, typer.Option(help="layers <prefix>_<class> are written")],
             lake: LakeOpt = None,
             classes: Annotated[str | None, typer.Option(help="comma-separated classes (default: all)")] = None,
             overwrite: OverwriteOpt = False, scheduler: SchedOpt = "threads") -> None:
    """Per-class probability layers (uint8, p × 255) from a stored voxel classifier."""
    from neurolake.process.classify import classify_layer

    lk = open_lake(lake)
    with Bar() as bar:
        out = classify_layer(lk, datastack, image, model, output_prefix,
                             classes=[c.strip() for c in classes.split(",")] if classes else None,
                             overwrite=overwrite, scheduler=scheduler, progress=bar, say=say)
    for cls, la in out.items():
        say(f"{cls}: {la!r}")


@app.command("supervoxels")
def supervoxels(datastack: DsOpt, boundary: Annotated[str, typer.Option(help="boundary probability layer")],
                output: Annotated[str, typer.Option(help="new supervoxel layer")], lake: LakeOpt = None,
                method: Annotated[str, typer.Option(help="3d (isotropic data) or 2d (per section, ssTEM)")] = "3d",
                h: Annotated[float, typer.Option(help="3d: h-minima depth of the seeds")] = 0.2,
                sigma: Annotated[float, typer.Option(help="3d: Gaussian smoothing (voxels)")] = 0.5,
                overwrite: OverwriteOpt = False, scheduler: SchedOpt = "threads") -> None:
    """Seeded watershed of a boundary map into supervoxels."""
    from neurolake.process.agglomerate import supervoxels_layer

    lk = open_lake(lake)
    with Bar() as bar:
        la = supervoxels_layer(lk, datastack, boundary, output, method=method, h=h, sigma=sigma,
                               overwrite=overwrite, scheduler=scheduler, progress=bar, say=say)
    say(f"wrote {la!r}")


@app.command("agglomerate")
def agglomerate(datastack: DsOpt, supervoxels: Annotated[str, typer.Option(help="supervoxel layer")],
                boundary: Annotated[str, typer.Option(help="boundary probability layer")],
                output: Annotated[str, typer.Option(help="new segmentation layer")],
                threshold: Annotated[float, typer.Option(help="merge while the mean boundary is below this")],
                lake: LakeOpt = None, overwrite: OverwriteOpt = False, scheduler: SchedOpt = "threads") -> None:
    """Agglomerate supervoxels by mean boundary probability along their shared faces."""
    from neurolake.process.agglomerate import agglomerate_layer

    lk = open_lake(lake)
    with Bar() as bar:
        la = agglomerate_layer(lk, datastack, supervoxels, boundary, output, threshold=threshold,
                               overwrite=overwrite, scheduler=scheduler, progress=bar, say=say)
    say(f"wrote {la!r}")


@app.command("initial-roots")
def initial_roots(datastack: DsOpt, supervoxels: Annotated[str, typer.Option(help="supervoxel layer")],
                  segmentation: Annotated[str, typer.Option(help="its agglomeration (neurolake process "
                                                                  "agglomerate)")],
                  lake: LakeOpt = None, overwrite: OverwriteOpt = False) -> None:
    """Make the supervoxels proofreadable with the agglomerated objects as the initial roots."""
    from neurolake.process.agglomerate import initial_roots as make_roots

    lk = open_lake(lake)
    res = make_roots(lk, datastack, supervoxels, segmentation, overwrite=overwrite)
    echo_json(res.info() if hasattr(res, "info") else res)


def evaluate(segmentation: Annotated[str, typer.Argument(help="segmentation layer to judge")],
             datastack: DsOpt, truth: Annotated[str, typer.Option(help="ground-truth segmentation layer")],
             lake: LakeOpt = None,
             keep_truth_zero: Annotated[bool, typer.Option(help="count truth label 0 as an object (default: "
                                                                 "ignore it, as for boundary voxels)")] = False) -> None:
    """Variation of information (split, merge), adapted Rand error and split/merge counts of a segmentation
    against ground truth; stored with the segmentation layer's provenance."""
    from neurolake.process.evaluate import evaluate_layers

    lk = open_lake(lake)
    echo_json(evaluate_layers(lk, datastack, segmentation, truth, ignore_truth_zero=not keep_truth_zero, say=say))
