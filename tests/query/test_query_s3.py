"""Feature tables on an S3-compatible store (a moto server process) read by SQL, pinned by fingerprint;
the locked engine still refuses other objects of the bucket."""

from __future__ import annotations

import pytest

from neurolake.errors import PermissionDenied
from tests.registry.conftest import build_tables
from tests.registry.test_registry_s3 import BUCKET, s3  # noqa: F401 - the moto fixture


@pytest.fixture(scope="module")
def feature_files(tmp_path_factory):
    return build_tables(tmp_path_factory.mktemp("s3features") / "tables")


def test_sql_reads_s3_feature_tables(s3, feature_files, tmp_path):  # noqa: F811
    import lance
    import pyarrow.parquet as pq
    from deltalake import DeltaTable

    from neurolake import init_lake

    lake = init_lake(tmp_path / "lake")
    lake.create_datastack("hemibrain", (8, 8, 8))
    reg = lake.features
    reg.register(name="cell_types", datastack="hemibrain", location=f"s3://{BUCKET}/lab/cell_types.parquet")
    reg.register(name="synapse_counts", datastack="hemibrain", location=f"s3://{BUCKET}/lab/synapse_counts")
    reg.register(name="counts_lance", datastack="hemibrain", location=f"s3://{BUCKET}/lab/synapse_counts.lance")
    got = lake.sql("SELECT type, count(*) AS n FROM features.cell_types GROUP BY type").df()
    ref = pq.read_table(feature_files["cell_types"]).to_pandas().groupby("type", dropna=False).size()
    assert int(got["n"].sum()) == int(ref.sum()) == 25397
    assert dict(zip(got["type"].fillna("<NA>"), got["n"], strict=True)) == \
        {("<NA>" if k != k or k is None else k): int(v) for k, v in ref.items()}
    res = lake.sql("SELECT sum(pre) AS pre, sum(post) AS post FROM features.synapse_counts")
    delta = DeltaTable(str(feature_files["synapse_counts"])).to_pandas()
    assert res.df()["pre"][0] == pytest.approx(delta["pre"].sum())
    assert res.run["inputs"][0]["files"][0].startswith(f"s3://{BUCKET}/lab/synapse_counts/")
    lan = lake.sql("SELECT count(*) AS n FROM features.counts_lance").df()
    assert int(lan["n"][0]) == lance.dataset(str(feature_files["synapse_counts_lance"])).count_rows()
    # the locked engine reads only the inputs' own prefixes: another object in the same bucket is refused
    with pytest.raises(PermissionDenied):
        lake.sql(f"SELECT * FROM read_parquet('s3://{BUCKET}/lab/roi_counts/**/*.parquet'), features.cell_types "
                 "LIMIT 1")
    lake.close()
