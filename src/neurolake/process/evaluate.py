"""Segmentation quality against a ground truth: variation of information, adapted Rand error, split/merge counts.

Arrays are numpy label volumes with axes (z, y, x) (any integer dtype; 0 in the truth = boundary / unlabelled).

Measures (all computed from one contingency table ``n[t, s]`` = voxels labelled ``t`` in the truth and ``s`` in
the segmentation, truth-0 voxels left out when ``ignore_truth_zero``):

- **Variation of information** (Meilă 2007, "Comparing clusterings — an information based distance", J.
  Multivariate Anal. 98:873, doi:10.1016/j.jmva.2006.11.013), in bits, split into its two conditional
  entropies as gala and CREMI do (Nunez-Iglesias et al. 2013, PLoS ONE 8:e71715): ``split = H(seg | truth)``
  (over-segmentation: 0 when no truth object is cut) and ``merge = H(truth | seg)`` (under-segmentation: 0 when no
  segment joins two truth objects). Computed by :func:`skimage.metrics.variation_of_information` with
  ``image0 = truth``, ``image1 = segmentation``, which returns ``[H(image1|image0), H(image0|image1)]`` — its
  source labels them "false splits, false merges" — i.e. ``[split, merge]``.
- **Adapted Rand error** (SNEMI3D; Arganda-Carreras et al. 2015, Front. Neuroanat. 9:142,
  doi:10.3389/fnana.2015.00142) by :func:`skimage.metrics.adapted_rand_error` (``1 - F``, F the harmonic mean of
  precision and recall). Precision and recall are computed here from the same table with the definitions of that
  paper: ``precision = Σ n_ts² / Σ_s n_s²`` (pairs together in both / pairs together in the segmentation: 1 for a
  pure split), ``recall = Σ n_ts² / Σ_t n_t²`` (… / pairs together in the truth: 1 for a pure merge) (pairs
  counted as in skimage, ``Σ n² - N``). skimage 0.26 returns these two in the opposite order to its own docstring
  (scikit-image issue #6485, open), so its precision/recall are not used.
- **Split and merge counts**: a (truth object t, segment s) pair is a *significant overlap* when it shares at
  least ``min_overlap_voxels`` voxels and at least ``min_overlap_fraction`` of the smaller of the two (|t ∩ s| ≥
  f · min(|t|, |s|)), so a few voxels of boundary disagreement are not counted but a small fragment lying wholly
  inside an object (or a small object swallowed by a segment) is. A truth object with significant overlaps with
  k > 1 segments counts k − 1 splits; a segment with significant overlaps with k > 1 truth objects counts k − 1
  merges.
- **Worst objects**: the truth objects with the largest share of the split entropy (``-Σ_s p_ts log2(p_ts /
  p_t)``) and the segments with the largest share of the merge entropy, with their significant partners.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from neurolake.errors import InvalidArgument

ACTION = "process.evaluate"


def _table(seg: np.ndarray, truth: np.ndarray, ignore_truth_zero: bool):
    """Contingency table (csr, rows = truth, columns = segmentation, voxel counts) and the row/column label ids."""
    import scipy.sparse as sparse

    t = truth.ravel()
    s = seg.ravel()
    if ignore_truth_zero:
        keep = t != 0
        t, s = t[keep], s[keep]
    t_ids, ti = np.unique(t, return_inverse=True)
    s_ids, si = np.unique(s, return_inverse=True)
    ti, si = ti.ravel(), si.ravel()
    table = sparse.csr_array((np.ones(len(t), np.float64), (ti, si)), shape=(len(t_ids), len(s_ids)))
    table.sum_duplicates()
    return table, t_ids, s_ids, ti, si


def _check(segmentation_zyx, truth_zyx) -> tuple[np.ndarray, np.ndarray]:
    seg, truth = np.asarray(segmentation_zyx), np.asarray(truth_zyx)
    for name, a in (("segmentation", seg), ("truth", truth)):
        if a.dtype.kind not in "iub":
            raise InvalidArgument(f"{name} must be an integer label volume, got dtype {a.dtype}", field=name,
                                  value=str(a.dtype))
        if a.ndim != 3:
            raise InvalidArgument(f"{name} must be a (z, y, x) volume, got shape {list(a.shape)}", field=name,
                                  value=list(a.shape))
    if seg.shape != truth.shape:
        raise InvalidArgument(f"segmentation shape {list(seg.shape)} differs from truth shape {list(truth.shape)} "
                              "(z, y, x); evaluate needs the same voxels", field="truth",
                              value=list(truth.shape), allowed=list(seg.shape))
    return seg, truth


def evaluate(segmentation_zyx, truth_zyx, *, ignore_truth_zero: bool = True, min_overlap_voxels: int = 100,
             min_overlap_fraction: float = 0.1, worst: int = 10) -> dict[str, Any]:
    """Compare a (z, y, x) segmentation with a (z, y, x) ground truth of the same shape (module docstring).

    ``ignore_truth_zero``: leave out voxels whose truth label is 0 (boundary / unlabelled), as SNEMI3D and CREMI do.
    ``min_overlap_voxels`` / ``min_overlap_fraction``: what counts as a significant overlap for the split and
    merge counts. ``worst``: how many worst truth objects / segments to list.

    Returns a JSON-able dict: ``vi`` ``{split, merge, total}`` (bits), ``adapted_rand`` ``{error, precision,
    recall}``, ``counts`` ``{splits, merges, split_objects, merged_segments}``, ``objects`` ``{truth, segments}``
    (numbers of labels compared), ``voxels`` (compared), ``worst_splits`` (truth objects: ``truth_id``,
    ``split_entropy``, ``segments`` significant segment ids, ``voxels``) and ``worst_merges`` (segments:
    ``segment_id``, ``merge_entropy``, ``truth`` significant truth ids, ``voxels``), ``params``.
    Raises InvalidArgument: shapes differ, not 3-D, not integer labels, bad thresholds, nothing to compare.
    """
    from skimage.metrics import adapted_rand_error, variation_of_information

    seg, truth = _check(segmentation_zyx, truth_zyx)
    if int(min_overlap_voxels) < 1:
        raise InvalidArgument(f"min_overlap_voxels {min_overlap_voxels} must be >= 1", field="min_overlap_voxels",
                              value=min_overlap_voxels)
    if not 0.0 <= float(min_overlap_fraction) <= 1.0:
        raise InvalidArgument(f"min_overlap_fraction {min_overlap_fraction} must be within [0, 1]",
                              field="min_overlap_fraction", value=min_overlap_fraction)
    table, t_ids, s_ids, ti, si = _table(seg, truth, ignore_truth_zero)
    n = float(table.sum())
    if n == 0:
        raise InvalidArgument("no voxels to compare: the truth is all 0 (ignored)", field="truth")
    # skimage on the compared voxels relabelled 0..k-1 (its own table indexes by label value, so huge uint64 ids
    # would make a huge table; skimage 0.26 also rejects table= without images in variation_of_information)
    split, merge = (float(v) for v in variation_of_information(ti, si))
    are = float(adapted_rand_error(table=table)[0])
    counts = table.data
    same_both = float(counts @ counts - n)
    t_sizes = np.ravel(table.sum(axis=1))
    s_sizes = np.ravel(table.sum(axis=0))
    same_truth = float(t_sizes @ t_sizes - n)
    same_seg = float(s_sizes @ s_sizes - n)
    precision = same_both / same_seg if same_seg else 1.0
    recall = same_both / same_truth if same_truth else 1.0

    # per-object entropies and significant overlaps
    coo = table.tocoo()
    r, c, v = coo.row, coo.col, coo.data
    p = v / n
    split_h = np.zeros(len(t_ids))
    np.add.at(split_h, r, -p * np.log2(v / t_sizes[r]))
    merge_h = np.zeros(len(s_ids))
    np.add.at(merge_h, c, -p * np.log2(v / s_sizes[c]))
    sig = (v >= int(min_overlap_voxels)) & (v >= float(min_overlap_fraction) * np.minimum(t_sizes[r], s_sizes[c]))
    per_t = np.bincount(r[sig], minlength=len(t_ids))
    per_s = np.bincount(c[sig], minlength=len(s_ids))
    splits = int(np.maximum(per_t - 1, 0).sum())
    merges = int(np.maximum(per_s - 1, 0).sum())

    def partners(rows, cols, idx, ids):
        m = sig & (rows == idx)
        o = np.argsort(-v[m], kind="stable")
        return [int(x) for x in ids[cols[m][o]]]

    worst_splits = [{"truth_id": int(t_ids[i]), "split_entropy": float(split_h[i]),
                     "segments": partners(r, c, i, s_ids), "voxels": int(t_sizes[i])}
                    for i in np.argsort(-split_h, kind="stable")[:max(0, int(worst))] if split_h[i] > 0]
    worst_merges = [{"segment_id": int(s_ids[j]), "merge_entropy": float(merge_h[j]),
                     "truth": partners(c, r, j, t_ids), "voxels": int(s_sizes[j])}
                    for j in np.argsort(-merge_h, kind="stable")[:max(0, int(worst))] if merge_h[j] > 0]
    return {
        "vi": {"split": split, "merge": merge, "total": split + merge},
        "adapted_rand": {"error": are, "precision": precision, "recall": recall},
        "counts": {"splits": splits, "merges": merges, "split_objects": int((per_t > 1).sum()),
                   "merged_segments": int((per_s > 1).sum())},
        "objects": {"truth": int(len(t_ids)), "segments": int(len(s_ids))},
        "voxels": int(n),
        "worst_splits": worst_splits,
        "worst_merges": worst_merges,
        "params": {"ignore_truth_zero": bool(ignore_truth_zero), "min_overlap_voxels": int(min_overlap_voxels),
                   "min_overlap_fraction": float(min_overlap_fraction)},
    }


def evaluate_layers(lake, ds: str, segmentation_layer: str, truth_layer: str, *, ignore_truth_zero: bool = True,
                    min_overlap_voxels: int = 100, min_overlap_fraction: float = 0.1, worst: int = 10,
                    say=None) -> dict[str, Any]:
    """:func:`evaluate` segmentation layer ``segmentation_layer`` of datastack ``ds`` against ``truth_layer``
    (both read whole at mip 0, (z, y, x)) and store the result in the segmentation layer's provenance under
    ``"evaluations"``: a list with one entry per truth layer identity (a new evaluation against the same truth
    data replaces the old one; one against a re-ingested truth is added). Each entry is a provenance record
    (action ``process.evaluate``, user, time, code version) with ``segmentation`` and ``truth`` —
    ``{datastack, layer, identity}`` (:func:`neurolake.provenance.layer_identity`) — and the measures.

    Returns that entry. Raises NotFound (datastack or layer), InvalidArgument (a layer that is not a segmentation
    layer, shapes differ, or as :func:`evaluate`).
    """
    from neurolake.process.jobs import read_layer
    from neurolake.provenance import layer_identity, record

    seg_l = lake.layer(ds, segmentation_layer)
    tru_l = lake.layer(ds, truth_layer)
    for role, la in (("segmentation_layer", seg_l), ("truth_layer", tru_l)):
        if la.layer_type != "segmentation":
            raise InvalidArgument(f"layer {ds}/{la.name} is a {la.layer_type} layer; evaluation compares "
                                  "segmentation layers", field=role, value=la.name, allowed=["segmentation"])
    if tuple(seg_l.shape(0)) != tuple(tru_l.shape(0)):
        raise InvalidArgument(f"layer {ds}/{segmentation_layer} has shape {list(seg_l.shape(0))} and {ds}/"
                              f"{truth_layer} has {list(tru_l.shape(0))} (z, y, x); evaluate needs the same voxels",
                              field="truth_layer", value=truth_layer)
    seg_id, tru_id = layer_identity(lake, seg_l), layer_identity(lake, tru_l)
    result = evaluate(read_layer(lake, ds, segmentation_layer), read_layer(lake, ds, truth_layer),
                      ignore_truth_zero=ignore_truth_zero, min_overlap_voxels=min_overlap_voxels,
                      min_overlap_fraction=min_overlap_fraction, worst=worst)
    entry = record(ACTION, inputs=[{"datastack": ds, "layer": segmentation_layer},
                                   {"datastack": ds, "layer": truth_layer}],
                   params=result["params"],
                   segmentation={"datastack": ds, "layer": segmentation_layer, "identity": seg_id},
                   truth={"datastack": ds, "layer": truth_layer, "identity": tru_id},
                   **{k: val for k, val in result.items() if k != "params"})
    seg_l = lake.layer(ds, segmentation_layer)  # fresh provenance
    prov = dict(seg_l.provenance or {})
    kept = [e for e in prov.get("evaluations") or [] if (e.get("truth") or {}).get("identity") != tru_id]
    prov["evaluations"] = kept + [entry]
    lake.update_layer(ds, segmentation_layer, provenance=prov)
    if say:
        say(f"{ds}/{segmentation_layer} vs {truth_layer}: VI {result['vi']['total']:.3f} (split "
            f"{result['vi']['split']:.3f}, merge {result['vi']['merge']:.3f}), adapted Rand error "
            f"{result['adapted_rand']['error']:.3f}; {result['counts']['splits']} splits, "
            f"{result['counts']['merges']} merges")
    return entry
