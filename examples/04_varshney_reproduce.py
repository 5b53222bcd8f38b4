"""Question: does the C. elegans wiring data in the lake give the numbers its publication states — and can
anyone re-check that next year with one command?

Data: ``NeuronConnect`` (``data/celegans``), the hermaphrodite somatic wiring diagram released with
Varshney LR, Chen BL, Paniagua E, Hall DH, Chklovskii DB (2011) "Structural properties of the
Caenorhabditis elegans neuronal network", PLoS Comput Biol 7:e1001066. The release describes itself as
"280 nonpharyngeal neurons … covering 6393 chemical synapses, 890 electrical junctions, and 1410
neuromuscular junctions" (WormAtlas, "Neuronal Connectivity II" by Varshney, Chen, Paniagua, Hall and
Chklovskii). The file lists each chemical synapse from both sides (``S``/``Sp`` presynaptic, ``R``/``Rp``
postsynaptic rows), each gap junction (``EJ``) from both sides (a neuron's junction with itself once) and
``NMJ`` rows per motor neuron.

One production SQL over the lake's ``celegans.v1.wiring`` table (the file's rows) recomputes the counts;
they are compared with the stated numbers: neurons, gap junctions and neuromuscular junctions match exactly;
the file has 6,394 chemical synapses (from either side), one more than stated — printed, not hidden. A
second production SQL gives the chemical network's in- and out-degree (distinct partners per neuron, from
``celegans.v1.connectome``), drawn as an SVG figure whose ``<metadata>`` holds both runs' manifests (and a
``.manifest.json`` beside it). Both runs are then reproduced (``lake.reproduce``: same pinned inputs, same
SHA-256); from a shell: ``neurolake reproduce RUN_ID --lake LAKE``.

Run: ``python examples/04_varshney_reproduce.py [LAKE] [--out DIR]``; exits 1 if a count that should match
does not, or a reproduction is not identical.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from xml.sax.saxutils import escape

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _data  # noqa: E402

STATED = {"neurons": 280, "chemical_synapses": 6393, "gap_junctions": 890, "neuromuscular_junctions": 1410}
SOURCE = ("Varshney et al. 2011, PLoS Comput Biol 7:e1001066; release text of NeuronConnect "
          "('Neuronal Connectivity II', WormAtlas)")

COUNTS = """
WITH w AS (SELECT upper(neuron_1) AS n1, upper(neuron_2) AS n2, type, nbr FROM celegans.v{v}.wiring),
     names AS (SELECT n1 AS name FROM w UNION SELECT n2 FROM w)
SELECT (SELECT count(*) FROM names WHERE name <> 'NMJ')                         AS neurons,
       sum(nbr) FILTER (WHERE type IN ('S', 'Sp'))                               AS chemical_synapses,
       sum(nbr) FILTER (WHERE type IN ('R', 'Rp'))                               AS chemical_synapses_postsynaptic_rows,
       sum(nbr) FILTER (WHERE type = 'EJ' AND n1 <> n2) // 2
         + sum(nbr) FILTER (WHERE type = 'EJ' AND n1 = n2)                       AS gap_junctions,
       sum(nbr) FILTER (WHERE type = 'NMJ')                                      AS neuromuscular_junctions,
       count(DISTINCT (n1, n2)) FILTER (WHERE type IN ('S', 'Sp'))               AS chemical_connections,
       count(*) FILTER (WHERE type = 'EJ' AND n1 <= n2)                          AS gap_junction_connections
FROM w
"""

DEGREES = """
WITH outd AS (SELECT pre AS neuron, count(*) AS k FROM celegans.v{v}.connectome GROUP BY pre),
     ind  AS (SELECT post AS neuron, count(*) AS k FROM celegans.v{v}.connectome GROUP BY post)
SELECT 'out' AS direction, k AS degree, count(*) AS neurons FROM outd GROUP BY k
UNION ALL
SELECT 'in', k, count(*) FROM ind GROUP BY k
ORDER BY direction, degree
"""


def svg_figure(deg, manifests: list[dict], title: str) -> str:
    """A two-series bar chart (neurons per degree, in and out) as SVG text; ``manifests`` go into
    ``<metadata>`` as JSON so the figure carries its provenance."""
    w, h, left, bottom, top = 760, 360, 60, 50, 40
    kmax = int(deg["degree"].max())
    nmax = int(deg["neurons"].max())
    bw = (w - left - 20) / (kmax + 1)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}">',
             "<metadata id=\"neurolake-manifests\">" + escape(json.dumps(manifests)) + "</metadata>",
             f'<text x="{w / 2}" y="22" text-anchor="middle" font-family="sans-serif" font-size="14">'
             f"{escape(title)}</text>"]
    y0 = h - bottom
    scale = (y0 - top) / nmax
    colours = {"out": "#1f77b4", "in": "#ff7f0e"}
    for _, r in deg.iterrows():
        x = left + int(r["degree"]) * bw + (0 if r["direction"] == "out" else bw / 2)
        bh = int(r["neurons"]) * scale
        parts.append(f'<rect x="{x:.2f}" y="{y0 - bh:.2f}" width="{bw / 2:.2f}" height="{bh:.2f}" '
                     f'fill="{colours[r["direction"]]}"><title>{r["direction"]}-degree {int(r["degree"])}: '
                     f'{int(r["neurons"])} neurons</title></rect>')
    parts.append(f'<line x1="{left}" y1="{y0}" x2="{w - 20}" y2="{y0}" stroke="black"/>')
    parts.append(f'<line x1="{left}" y1="{y0}" x2="{left}" y2="{top}" stroke="black"/>')
    for k in range(0, kmax + 1, 10):
        parts.append(f'<text x="{left + k * bw:.1f}" y="{y0 + 16}" font-size="11" font-family="sans-serif" '
                     f'text-anchor="middle">{k}</text>')
    for n in range(0, nmax + 1, max(1, nmax // 5)):
        parts.append(f'<text x="{left - 6}" y="{y0 - n * scale + 4:.1f}" font-size="11" font-family="sans-serif" '
                     f'text-anchor="end">{n}</text>')
    parts.append(f'<text x="{w / 2}" y="{h - 12}" text-anchor="middle" font-family="sans-serif" font-size="12">'
                 "degree (distinct chemical-synapse partners)</text>")
    parts.append(f'<text x="16" y="{h / 2}" transform="rotate(-90 16 {h / 2})" text-anchor="middle" '
                 'font-family="sans-serif" font-size="12">neurons</text>')
    for i, (d, c) in enumerate(colours.items()):
        parts.append(f'<rect x="{w - 140}" y="{top + i * 18}" width="12" height="12" fill="{c}"/>'
                     f'<text x="{w - 122}" y="{top + i * 18 + 10}" font-size="12" font-family="sans-serif">'
                     f"{d}-degree</text>")
    parts.append("</svg>")
    return "\n".join(parts)


def main() -> int:
    lake, out, _args = _data.lake_from_args(__doc__)
    v = _data.ensure_celegans(lake)
    counts = lake.sql(COUNTS.format(v=v), mode="production", job="examples.varshney2011.counts")
    got = {k: int(x) for k, x in counts.df().iloc[0].items()}
    print(f"counts from celegans.v{v}.wiring (run {counts.run_id}):")
    ok = True
    for k, stated in STATED.items():
        same = got[k] == stated
        note = "matches" if same else f"differs by {got[k] - stated:+d}"
        print(f"  {k:24s} {got[k]:6d}   stated {stated:6d}   {note}")
        ok &= same or k == "chemical_synapses"
    print(f"  (chemical synapses from the postsynaptic rows: {got['chemical_synapses_postsynaptic_rows']}; "
          f"directed chemical connections {got['chemical_connections']}, gap-junction pairs "
          f"{got['gap_junction_connections']})")

    deg = lake.sql(DEGREES.format(v=v), mode="production", job="examples.varshney2011.degrees")
    d = deg.df()
    fig = out / "celegans_chemical_degree.svg"
    manifests = [counts.manifest, deg.manifest]
    fig.write_text(svg_figure(d, manifests, "C. elegans chemical synapse network: degree distribution "
                                            "(Varshney et al. 2011 data)"))
    Path(str(fig) + ".manifest.json").write_text(json.dumps(deg.manifest, indent=2, default=str))
    print(f"figure: {fig} (manifests in its <metadata>; {fig.name}.manifest.json beside it)")

    reps = [lake.reproduce(r.run_id) for r in (counts, deg)]
    for r in reps:
        print(f"reproduce {r['run_id']}: {r['message']}")
    print(f"from a shell: neurolake reproduce {counts.run_id} --lake {lake.root}")
    ok &= all(r["status"] == "identical" for r in reps)
    _data.report(run_id=counts.run_id, sha256=counts.sha256, counts=got, stated=STATED, source=SOURCE,
                 degrees_run_id=deg.run_id, figure=str(fig), reproduce=[r["status"] for r in reps],
                 lake=str(lake.root), ok=ok)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
