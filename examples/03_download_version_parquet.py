"""Question: give me the whole synapse table of materialization version 1 as one Parquet file I can take
away — and let the file say exactly what it is.

Data: MICrONS phase-1 "pinky100" synapses among 363 layer 2/3 pyramidal cells (``data/pinky100``,
MicronsBinder ``synapses.csv`` and ``soma.csv``; Turner et al., Cell 2022), loaded as the datastack's
``synapses`` annotation table and frozen in version 1.

``lake.sql(..., output="….parquet")`` writes the rows with the run's OpenLineage manifest under the key
``openlineage`` of the Parquet file's key-value metadata, and the same manifest beside it as
``<file>.manifest.json``. Anyone holding only the file can check it (the SHA-256 over the rows) and
re-run it: ``neurolake reproduce FILE.parquet --lake LAKE``.

Run: ``python examples/03_download_version_parquet.py [LAKE] [--out DIR]``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _data  # noqa: E402


def main() -> None:
    lake, out, _args = _data.lake_from_args(__doc__)
    v = _data.ensure_pinky(lake)
    path = out / f"pinky100_v{v}_synapses.parquet"
    res = lake.sql(f"SELECT * FROM pinky100.v{v}.synapses ORDER BY id", mode="production", output=path,
                   job="examples.download_version")
    print(f"{res.num_rows} rows × {len(res.columns)} columns → {path} ({path.stat().st_size} bytes)")

    meta = pq.read_schema(path).metadata
    manifest = json.loads(meta[b"openlineage"])
    side = json.loads(Path(str(path) + ".manifest.json").read_text())
    facet = manifest["run"]["facets"]["neurolake"]
    print("\nthe file's key-value metadata 'openlineage' (the OpenLineage RunEvent), abridged:")
    print(json.dumps({"eventType": manifest["eventType"], "runId": manifest["run"]["runId"],
                      "job": manifest["job"], "inputs": [{"name": i["name"], "namespace": i["namespace"]}
                                                         for i in manifest["inputs"]],
                      "neurolake": {k: facet[k] for k in ("sql", "mode", "rows", "result_sha256", "duckdb")},
                      "pins": [i["pin"] for i in facet["inputs"]]}, indent=2))
    print(f"\nsidecar {path.name}.manifest.json equals the embedded manifest: {side == manifest}")

    from neurolake.query.manifest import result_sha256

    again = result_sha256(pq.read_table(path))
    print(f"SHA-256 of the file's rows {again} {'matches' if again == facet['result_sha256'] else 'DIFFERS from'} "
          "the manifest")
    rep = lake.reproduce(path)
    print(f"reproduce from the file: {rep['message']}")
    _data.report(run_id=res.run_id, sha256=res.sha256, rows=res.num_rows, file=str(path),
                 sidecar_equal=side == manifest, file_sha256=again, reproduce=rep["status"], lake=str(lake.root))


if __name__ == "__main__":
    main()
