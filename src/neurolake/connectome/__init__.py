"""The connectome: a directed, weighted graph pre root → post root with node attributes.

Public face::

    from neurolake.connectome import Connectome
    c = Connectome.from_version(lake, "ds", version=1, synapse_table="synapses", cell_type_table="cell_types")
    c.upstream(root, min_synapses=3); c.connectivity_matrix("cell_type"); c.motifs(); c.reciprocal_pairs()
    c.shortest_path(a, b); c.degree_distribution("in"); c.to_parquet(p); c.to_graphml(p); c.to_networkx()
"""

from neurolake.connectome.graph import TRIADS, Connectome

__all__ = ["TRIADS", "Connectome"]
