"""Question: for a set of cells, every synapse they make in materialization version 1, with a per-cell and
a per-connection feature joined on — one production query, pinned and reproducible.

Data: MICrONS phase-1 "pinky100" layer 2/3 pyramidal cells, 1,981 synapses among 363 somata
(``data/pinky100``: MicronsBinder ``soma.csv`` and ``synapses.csv``; Turner et al., "Reconstruction of
neocortex: organelles, compartments, cells, circuits, and activity", Cell 2022; bioRxiv 10.1101/2020.10.14.338681).

Two feature tables, each written as Parquet by a pipeline step below and registered with
``lake.features.register``; both are plain derivations of the published files, nothing modelled:

- ``cell_morphology`` (one row per cell): ``axon_len_um`` and ``dendrite_len_um`` as given in ``soma.csv``
  (MicronsBinder's readme uses µm for these lengths), the soma position in µm (``loc`` read as nm, taken from
  the lake's version-1 ``somas`` table by a production query);
- ``soma_distance`` (one row per connected pair of version 1): the straight-line distance between the
  presynaptic and postsynaptic somata in µm, computed by a production query over ``pinky100.v1.connectome``
  and ``pinky100.v1.somas``.

The cells: by default the three cells with the most output synapses (``--roots`` names others).

Run: ``python examples/01_synapses_with_features.py [LAKE] [--out DIR] [--roots ID ID …]``. Prints the joined
rows, the run id and the result's SHA-256; ``neurolake reproduce RUN_ID --lake LAKE`` re-runs it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _data  # noqa: E402

SQL = """
SELECT s.id                  AS synapse_id,
       s.pre_pt_root_id      AS pre,
       s.post_pt_root_id     AS post,
       pre_m.axon_len_um     AS pre_axon_len_um,
       post_m.dendrite_len_um AS post_dendrite_len_um,
       d.soma_distance_um
FROM pinky100.v1.synapses AS s
JOIN features.cell_morphology AS pre_m  ON pre_m.root_id = s.pre_pt_root_id
JOIN features.cell_morphology AS post_m ON post_m.root_id = s.post_pt_root_id
JOIN features.soma_distance   AS d      ON d.pre = s.pre_pt_root_id AND d.post = s.post_pt_root_id
WHERE list_contains($roots, s.pre_pt_root_id)
ORDER BY synapse_id
"""


def _registered(lake, name: str) -> bool:
    from neurolake.errors import NotFound

    try:
        lake.features.get(name, "pinky100")
        return True
    except NotFound:
        return False


def build_features(lake, version: int) -> None:
    """The pipeline step: write both feature tables as Parquet beside the lake and register them."""
    folder = Path(lake.root) / "feature-tables" / "pinky100"
    folder.mkdir(parents=True, exist_ok=True)
    if not _registered(lake, "cell_morphology"):
        pos = lake.sql(f"""SELECT pt_root_id AS root_id, pt_position_x / 1000 AS soma_x_um,
                                  pt_position_y / 1000 AS soma_y_um, pt_position_z / 1000 AS soma_z_um
                           FROM pinky100.v{version}.somas ORDER BY root_id""", mode="production").df()
        lengths = _data.pinky_somas()[["root_id", "axon_len", "dendrite_len"]].rename(
            columns={"axon_len": "axon_len_um", "dendrite_len": "dendrite_len_um"})
        feat = pos.merge(lengths, on="root_id", validate="one_to_one")
        pq.write_table(pa.Table.from_pandas(feat, preserve_index=False), folder / "cell_morphology.parquet")
        lake.features.register(
            name="cell_morphology", datastack="pinky100", location=str(folder / "cell_morphology.parquet"),
            description="per pinky100 cell: axon and dendrite length (soma.csv) and soma position",
            materialization_version=version, pipeline="examples/01_synapses_with_features.py",
            citation="Turner et al., Cell 2022 (MICrONS pinky100; MicronsBinder soma.csv)",
            column_descriptions={"axon_len_um": "axon length as given in soma.csv (µm)",
                                 "dendrite_len_um": "dendrite length as given in soma.csv (µm)",
                                 "soma_x_um": "soma x (µm; soma.csv loc read as nm)"}, tags=["pinky100", "example"])
    if not _registered(lake, "soma_distance"):
        dist = lake.sql(f"""
            SELECT c.pre, c.post,
                   sqrt(power(a.pt_position_x - b.pt_position_x, 2) + power(a.pt_position_y - b.pt_position_y, 2)
                        + power(a.pt_position_z - b.pt_position_z, 2)) / 1000 AS soma_distance_um
            FROM pinky100.v{version}.connectome AS c
            JOIN pinky100.v{version}.somas AS a ON a.pt_root_id = c.pre
            JOIN pinky100.v{version}.somas AS b ON b.pt_root_id = c.post
            ORDER BY c.pre, c.post""", mode="production")
        pq.write_table(dist.arrow(), folder / "soma_distance.parquet")
        lake.features.register(
            name="soma_distance", datastack="pinky100", location=str(folder / "soma_distance.parquet"),
            description="per connected pair of pinky100 cells: distance between their somata (µm)",
            materialization_version=version, pipeline=f"examples/01_synapses_with_features.py (run {dist.run_id})",
            citation="Turner et al., Cell 2022 (MICrONS pinky100; MicronsBinder soma.csv, synapses.csv)",
            column_descriptions={"soma_distance_um": "straight-line distance between the two somata (µm)"},
            tags=["pinky100", "example"])


def main() -> None:
    lake, _out, args = _data.lake_from_args(__doc__, lambda ap: ap.add_argument(
        "--roots", nargs="+", type=int, default=None, help="root ids of the cells (default: the 3 with most outputs)"))
    version = _data.ensure_pinky(lake)
    build_features(lake, version)
    if args.roots:
        roots = list(args.roots)
    else:
        top = lake.sql(f"""SELECT pre, sum(n_synapses) AS n FROM pinky100.v{version}.connectome
                           GROUP BY pre ORDER BY n DESC, pre LIMIT 3""", mode="production").df()
        roots = [int(r) for r in top["pre"]]
    res = lake.sql(SQL.replace("v1.", f"v{version}."), {"roots": roots}, mode="production",
                   job="examples.synapses_with_features")
    df = res.df()
    print(f"cells: {roots}")
    print(df.to_string(max_rows=12))
    print(f"{len(df)} synapses; run {res.run_id}; sha256 {res.sha256}")
    print("inputs: " + ", ".join(f"{i['name']} {i['pin']}" for i in res.run["inputs"]))
    _data.report(run_id=res.run_id, sha256=res.sha256, rows=len(df), roots=roots, lake=str(lake.root),
                 version=version)


if __name__ == "__main__":
    main()
