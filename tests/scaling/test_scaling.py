"""The scaling model (neurolake.scaling, `neurolake scale`) against real layouts and measured memory."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from neurolake import scaling
from neurolake.errors import InvalidArgument, NotFound


@pytest.mark.parametrize("ds,layer", [("gerhard2013", "image"), ("gerhard2013", "labels"),
                                      ("gala_fibsem", "segmentation")])
def test_model_counts_equal_the_stored_layout(demo_lake, ds, layer):
    """Chunks-to-shards and bytes: the model's shard objects per mip equal the shard files really written by
    ingest + pyramid, and its uncompressed bytes equal shape × itemsize of the stored arrays."""
    la = demo_lake.layer(ds, layer)
    spec = la.spec
    plan = scaling.LayerPlan(layer, spec.layer_type, spec.dtype, spec.size_xyz, spec.voxel_size_nm,
                             spec.chunk_zyx, spec.shard_zyx)
    fig = scaling._layer_figures(plan, 1.0)
    root = demo_lake.layer_path(ds, layer)
    assert len(fig.mips) == la.num_mips
    for m in fig.mips:
        files = [p for p in (root / str(m.mip) / "c").rglob("*") if p.is_file()]
        assert m.shards == len(files), (m.mip, m.shards, len(files))
        assert m.uncompressed_bytes == int(np.prod(la.shape(m.mip))) * la.dtype.itemsize


def test_measured_graph_constants_predict_a_third_size():
    """Bytes per supervoxel and per edge fitted at n and 2n predict the real GraphState at 3n within 5 %."""
    c = scaling.measure_constants(n_supervoxels=20_000)
    assert c.graph_bytes_per_supervoxel > 8 and c.graph_bytes_per_edge > 8
    n = 60_000
    st = scaling.random_graph_state(n, 6.0, seed=1)
    real = sum(v.nbytes for v in vars(st).values() if isinstance(v, np.ndarray))
    real += sum(v.data.nbytes + v.indices.nbytes + v.indptr.nbytes for v in vars(st).values()
                if hasattr(v, "indptr"))
    predicted = n * c.graph_bytes_per_supervoxel + len(st.eu) * c.graph_bytes_per_edge
    assert abs(predicted - real) / real < 0.05, (predicted, real)


def test_presets_match_the_published_sizes():
    c = scaling.Constants(54.0, 43.0, dict(scaling.DEFAULT_RATIO), "test")
    microns = scaling.model(scaling.preset("microns"), c)
    h01 = scaling.model(scaling.preset("h01"), c)
    # ~2 PB (MICrONS) and 1.4 PB (H01) of EM image with its pyramid, as published, within 15 %
    assert 1.8e15 < microns.layers[0].uncompressed_bytes < 2.4e15
    assert 1.2e15 < h01.layers[0].uncompressed_bytes < 1.6e15
    # the in-memory supervoxel graph is the first thing to break at MICrONS scale
    assert microns.limits[0].part.startswith("supervoxel")
    assert microns.limits[0].load > 1
    assert microns.ingest_puts == sum(la.shards for la in microns.layers)
    assert microns.cost_month["storage"] > 0
    json.dumps(microns.to_dict())


def test_bad_installations_are_refused(tmp_path):
    with pytest.raises(InvalidArgument, match="layers"):
        scaling.installation_from({"name": "x", "cells": 1})
    with pytest.raises(InvalidArgument, match="unknown installation field"):
        scaling.installation_from({"name": "x", "layers": [{}], "synapsez": 3})
    with pytest.raises(InvalidArgument, match="layer 0"):
        scaling.installation_from({"name": "x", "cells": 1, "synapses": 1, "supervoxels": 1,
                                   "layers": [{"name": "a"}]})
    with pytest.raises(InvalidArgument, match="dtype"):
        scaling.installation_from({"name": "x", "cells": 1, "synapses": 1, "supervoxels": 1, "layers": [
            {"name": "a", "layer_type": "image", "dtype": "int7", "size_xyz": [1, 1, 1], "voxel_size_nm": [1, 1, 1]}]})
    with pytest.raises(InvalidArgument, match="preset"):
        scaling.preset("hemibrain")
    with pytest.raises(NotFound):
        scaling.load_installation(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = ")
    with pytest.raises(InvalidArgument, match="cannot parse"):
        scaling.load_installation(bad)


def test_cli_scale_from_a_toml_file(tmp_path):
    f = tmp_path / "lab.toml"
    f.write_text('name = "lab"\ncells = 1000\nsynapses = 2000000\nsupervoxels = 5000000\n'
                 '[[layers]]\nname = "em"\nlayer_type = "image"\ndtype = "uint8"\n'
                 'size_xyz = [20000, 20000, 2000]\nvoxel_size_nm = [8, 8, 40]\n')
    out = subprocess.run([sys.executable, "-m", "neurolake.cli", "scale", "-i", str(f), "--json"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["installation"]["name"] == "lab"
    assert doc["layers"][0]["mips"][0]["shards"] == 2000 // 16 * (20000 // 1024 + 1) ** 2
    bad = subprocess.run([sys.executable, "-m", "neurolake.cli", "scale", "-i", "nowhere.toml"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "not found" in bad.stderr
