"""Question: how strongly does each cell class connect to each other class? A cell-type connectivity matrix
from a materialization version's connectome and its cell-type annotation table, in one SQL.

Data:

- C. elegans hermaphrodite somatic wiring of Varshney, Chen, Paniagua, Hall & Chklovskii, "Structural
  properties of the Caenorhabditis elegans neuronal network", PLoS Comput Biol 7:e1001066 (2011)
  (``data/celegans/NeuronConnect.csv``). The lake holds one row per chemical synapse (the presynaptic
  ``S``/``Sp`` rows, 6,394 synapses) and a ``neurons`` cell_type table whose ``cell_type`` is the neuron's
  class by the White et al. (1986) naming convention: a three-letter name is its own class; numbered
  motor neurons drop the number (VA08 → VA); otherwise a final L/R and then, for names still longer than
  three letters, a final D/V are dropped (ADAL → ADA, IL1DL → IL1, RMED → RME) — ``_data.neuron_class``.
- The hemibrain neuron table curated by Schlegel et al., "Whole-brain annotation and multi-connectome cell
  typing of Drosophila", Nature (2024) (``data/hemibrain_meta``). It has per-neuron synapse counts but no
  neuron-to-neuron edges, so for the fly the example shows what the table does support: presynapse totals
  per cell class and soma side (a PIVOT; sides other than left/right/center — empty, "none", "na" — are
  counted as "unknown"), not connectivity.

Run: ``python examples/02_celltype_connectivity.py [LAKE] [--out DIR]``. Writes the full class × class matrix
(long form: pre class, post class, synapses, connections) as Parquet with its manifest, prints a PIVOT of the
locomotion circuit's classes and the run ids.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _data  # noqa: E402

MATRIX = """
SELECT pre_n.cell_type  AS pre_class,
       post_n.cell_type AS post_class,
       CAST(sum(c.n_synapses) AS BIGINT) AS synapses,
       count(*)                          AS connections
FROM celegans.v{v}.connectome AS c
JOIN celegans.v{v}.neurons AS pre_n  ON pre_n.pt_root_id = c.pre
JOIN celegans.v{v}.neurons AS post_n ON post_n.pt_root_id = c.post
GROUP BY ALL
ORDER BY pre_class, post_class
"""

# the command interneurons and ventral-cord motor neuron classes of the locomotion circuit
LOCOMOTION = ["AVA", "AVB", "AVD", "AVE", "PVC", "DA", "DB", "VA", "VB", "AS", "DD", "VD"]
PIVOT = """
PIVOT (SELECT pre_n.cell_type AS pre_class, post_n.cell_type AS post_class, c.n_synapses
       FROM celegans.v{v}.connectome AS c
       JOIN celegans.v{v}.neurons AS pre_n  ON pre_n.pt_root_id = c.pre
       JOIN celegans.v{v}.neurons AS post_n ON post_n.pt_root_id = c.post
       WHERE list_contains($classes, pre_n.cell_type) AND list_contains($classes, post_n.cell_type))
ON post_class IN ({cols}) USING CAST(sum(n_synapses) AS BIGINT) GROUP BY pre_class ORDER BY pre_class
"""

HEMIBRAIN = """
PIVOT (SELECT coalesce(cell_class, '(none)') AS cell_class, pre,
              CASE WHEN side IN ('left', 'right', 'center') THEN side ELSE 'unknown' END AS side
       FROM hemibrain.v{v}.neurons)
ON side IN ('left', 'right', 'center', 'unknown') USING CAST(sum(pre) AS BIGINT) GROUP BY cell_class
ORDER BY cell_class
"""


def main() -> None:
    lake, out, _args = _data.lake_from_args(__doc__)
    v = _data.ensure_celegans(lake)
    matrix_file = out / "celegans_class_matrix.parquet"
    res = lake.sql(MATRIX.format(v=v), mode="production", output=matrix_file, job="examples.celltype_matrix")
    m = res.df()
    print(f"C. elegans: {m['pre_class'].nunique()} presynaptic × {m['post_class'].nunique()} postsynaptic classes, "
          f"{len(m)} non-zero cells, {int(m['synapses'].sum())} chemical synapses")
    print(m.sort_values(["synapses", "pre_class", "post_class"], ascending=[False, True, True]).head(8)
          .to_string(index=False))
    print(f"matrix: {matrix_file} (+ .manifest.json); run {res.run_id}; sha256 {res.sha256}")

    cols = ", ".join(f"'{c}'" for c in LOCOMOTION)
    piv = lake.sql(PIVOT.format(v=v, cols=cols), {"classes": LOCOMOTION}, mode="production",
                   job="examples.celltype_matrix.locomotion")
    print("\nlocomotion classes, chemical synapses (rows: presynaptic class):")
    print(piv.df().set_index("pre_class").fillna(0).astype(int).to_string())
    print(f"run {piv.run_id}; sha256 {piv.sha256}")

    hv = _data.ensure_hemibrain(lake)
    fly = lake.sql(HEMIBRAIN.format(v=hv), mode="production", job="examples.hemibrain_class_side")
    print("\nhemibrain (Schlegel et al. 2024): presynapses per cell class and soma side (no edges in this table):")
    print(fly.df().set_index("cell_class").fillna(0).astype(int).to_string())
    print(f"run {fly.run_id}; sha256 {fly.sha256}")
    _data.report(run_id=res.run_id, sha256=res.sha256, rows=len(m), matrix=str(matrix_file),
                 pivot_run_id=piv.run_id, pivot=piv.df().fillna(0).to_dict(orient="records"),
                 hemibrain_run_id=fly.run_id, hemibrain=fly.df().fillna(0).to_dict(orient="records"),
                 lake=str(lake.root))


if __name__ == "__main__":
    main()
