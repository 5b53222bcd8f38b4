"""Feature tables built from real data in ../shared/data, in all four formats.

- ``cell_types`` (Parquet, one file): hemibrain neuron annotations (Schlegel et al. 2024, file 5):
  bodyId, type, instance, cell_class, side, cellBodyFiber — 25,397 rows.
- ``synapse_counts`` (Delta, partitioned by ``side``): per-neuron synapse counts of the same table
  (bodyId, pre, post, pre_con2, side).
- ``cell_types_iceberg`` (Iceberg, SqlCatalog on SQLite; identity-partitioned by side).
- ``synapse_counts_lance`` (Lance).
- ``roi_counts`` (Parquet folder, Hive-partitioned by ``type=pre|post``): synapse counts per neuron and
  ROI of the three hemibrain DA1 projection neurons shipped with navis.
"""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
HEMI = SHARED / "annotations_flywire_hemibrain_meta_schlegel2024" / "Supplemental_file5_hemibrain_meta.csv"
NAVIS = SHARED / "synapses_hemibrain_da1_pn_navis" / "synapses"


def hemibrain_table():
    import pyarrow.csv as pc

    t = pc.read_csv(HEMI, convert_options=pc.ConvertOptions(strings_can_be_null=True))
    return t


def build_tables(root: Path) -> dict[str, Path]:
    import lance
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq
    from deltalake import write_deltalake
    from pyiceberg.catalog.sql import SqlCatalog
    from pyiceberg.transforms import IdentityTransform

    root.mkdir(parents=True, exist_ok=True)
    t = hemibrain_table()
    cells = t.select(["bodyId", "type", "instance", "cell_class", "side", "cellBodyFiber"])
    counts = t.select(["bodyId", "pre", "post", "pre_con2", "side"])
    counts = counts.set_column(4, "side", pc.fill_null(counts["side"], "unknown"))
    out = {}
    pq.write_table(cells, root / "cell_types.parquet", row_group_size=8192)
    out["cell_types"] = root / "cell_types.parquet"
    write_deltalake(str(root / "synapse_counts"), counts, partition_by=["side"])
    out["synapse_counts"] = root / "synapse_counts"
    lance.write_dataset(counts, str(root / "synapse_counts.lance"))
    out["synapse_counts_lance"] = root / "synapse_counts.lance"
    wh = root / "iceberg"
    wh.mkdir()
    cat = SqlCatalog("t", uri=f"sqlite:///{wh}/catalog.db", warehouse=f"file://{wh}")
    cat.create_namespace("hemibrain")
    ice_cells = cells.cast(pa.schema([pa.field(f.name, f.type) for f in cells.schema]))
    tbl = cat.create_table("hemibrain.cell_types", schema=ice_cells.schema)
    with tbl.update_spec() as upd:
        upd.add_field("side", IdentityTransform(), "side")
    tbl = cat.load_table("hemibrain.cell_types")
    tbl.append(ice_cells)
    out["cell_types_iceberg"] = Path(tbl.location().removeprefix("file://"))
    # per-neuron x ROI synapse counts from the navis DA1 PN synapse tables
    parts = []
    for f in sorted(NAVIS.glob("*.csv")):
        s = pcsv.read_csv(f, convert_options=pcsv.ConvertOptions(strings_can_be_null=True))
        s = s.set_column(s.schema.get_field_index("roi"), "roi", pc.fill_null(s["roi"], "none"))
        g = s.group_by(["type", "roi"]).aggregate([("connector_id", "count"), ("confidence", "mean")])
        g = g.append_column("bodyId", pa.array([int(f.stem)] * g.num_rows, pa.int64()))
        parts.append(g.rename_columns(["type", "roi", "n_synapses", "mean_confidence", "bodyId"]))
    roi = pa.concat_tables(parts)
    pq.write_to_dataset(roi, root / "roi_counts", partition_cols=["type"])
    out["roi_counts"] = root / "roi_counts"
    return out


@pytest.fixture(scope="session")
def feature_files(tmp_path_factory) -> dict[str, Path]:
    return build_tables(tmp_path_factory.mktemp("features") / "tables")


@pytest.fixture
def reg_lake(tmp_path):
    from neurolake import init_lake

    lake = init_lake(tmp_path / "lake")
    lake.create_datastack("hemibrain", (8, 8, 8), public=False)
    lake.create_datastack("open_ds", (8, 8, 8), public=True)
    yield lake
    lake.close()
