"""The demo: real EM data shipped in ``data/`` ingested into a lake, then served.

Datasets (see each folder's SOURCE.md for authors and licences):

- ``gerhard2013``: Gerhard, Funke, Martel, Cardona, Fetter (2013), ssTEM of Drosophila L3 VNC,
  20 x 1024 x 1024 uint8 at 4.6 x 4.6 x 50 nm (layer ``image``) and its merged label image (layer
  ``labels``, CC BY-NC-SA 3.0, doi:10.6084/m9.figshare.856713);
- ``gala_fibsem``: the FIB-SEM crop of the gala test data (Nunez-Iglesias et al. 2014, Janelia FlyEM),
  50 x 100 x 200 uint8 (``image``) with its 88-label ground-truth neuron segmentation
  (``segmentation``). The source states no voxel size; 8 nm isotropic (FlyEM FIB-SEM) is assumed;
- ``pinky100`` and ``celegans``: connectomes without image layers (:mod:`neurolake.connectome.demo`): the
  MICrONS pinky100 pyramidal cells (MicronsBinder ``soma.csv``/``synapses.csv``; Turner et al., Cell 2022),
  tables ``somas`` and ``synapses``; the C. elegans wiring of Varshney et al. (PLoS Comput Biol 2011,
  ``NeuronConnect``), tables ``neurons`` (cell classes, names), ``chemical``, ``electrical``, ``wiring``;
  each materialized as version 1, so ``neurolake connectome summary -d pinky100`` shows real numbers;
- ``ephys``: the patch-clamp and MEA recordings of ``data/ephys`` as ephys tables (:mod:`neurolake.ephys`).

Other packages add steps to :data:`STEPS` (a step gets the lake and a ``say`` function).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from neurolake.base.settings import settings
from neurolake.errors import NotFound
from neurolake.lake import Lake

GERHARD_VOXEL = (4.6, 4.6, 50.0)
GALA_VOXEL = (8.0, 8.0, 8.0)


def data_dir() -> Path:
    """The folder of shipped demo data (``NEUROLAKE_DEMO_DATA`` or ``<repo>/data``)."""
    env = settings().demo_data
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[2] / "data")
    for c in candidates:
        if (c / "gerhard2013" / "raw").is_dir():
            return c
    raise NotFound("demo data not found; set NEUROLAKE_DEMO_DATA to the repository's data/ folder",
                   searched=[str(c) for c in candidates])


LAYERS = [
    # (datastack, layer, source relative to data/, type, voxel size, description)
    ("gerhard2013", "image", "gerhard2013/raw", "image", GERHARD_VOXEL,
     "ssTEM, Drosophila L3 VNC (Gerhard et al. 2013, doi:10.6084/m9.figshare.856713, CC BY-NC-SA 3.0)"),
    ("gerhard2013", "labels", "gerhard2013/labels", "segmentation", GERHARD_VOXEL,
     "merged labels: 0-128 membrane, 159 glia, 191 mitochondria, 223 synapse, 255 intracellular"),
    ("gala_fibsem", "image", "gala_fibsem/train-image.h5:/stack", "image", GALA_VOXEL,
     "FIB-SEM crop, Janelia FlyEM via gala (Nunez-Iglesias et al. 2014); voxel size assumed"),
    ("gala_fibsem", "segmentation", "gala_fibsem/train-gt.lzf.h5:/stack", "segmentation", GALA_VOXEL,
     "ground-truth neuron segmentation, 88 labels"),
]

Step = Callable[[Lake, Callable[[str], None]], None]
STEPS: list[Step] = []


def _proofreading_step(lake: Lake, say: Callable[[str], None]) -> None:  # issue 5: supervoxels, roots, version 1
    from neurolake.proofreading.demo import demo_step

    demo_step(lake, say)


STEPS.append(_proofreading_step)


def _connectome_step(lake: Lake, say: Callable[[str], None]) -> None:  # issue 13: pinky100, celegans
    from neurolake.connectome.demo import demo_connectomes

    demo_connectomes(lake, say)


STEPS.append(_connectome_step)


def _ephys_step(lake: Lake, say: Callable[[str], None]) -> None:  # issue 18: patch clamp and MEA
    """Datastack ``ephys``: every recording of ``data/ephys`` (14 ABF files from pyABF's samples, the Hippocampus
    Hub NWB file, the meaRtools Axion spike list with its plate log, four retinal-wave HDF5 recordings)."""
    if "ephys" not in lake:
        lake.create_datastack("ephys", (1, 1, 1), description="patch-clamp and MEA recordings (data/ephys: "
                              "pyABF samples, Hippocampus Hub NWB, meaRtools Axion spike list, waverepo HDF5)")
    r = lake["ephys"].ephys.ingest(data_dir() / "ephys", lab="public samples")
    say(f"ephys: {len(r.loaded)} recordings loaded, {len(r.skipped)} already there, {len(r.errors)} errors "
        "(tables ephys.ephys.files, sweeps, spikes, cell_features, mea_wells …)")


STEPS.append(_ephys_step)


def _neurons_3d_step(lake: Lake, say: Callable[[str], None]) -> None:  # issue 17: meshes and skeletons
    """Meshes (zmesh) and skeletons (kimimaro) of the 88 gala FIB-SEM neurons, served at the precomputed routes
    (Neuroglancer's 3-D panel, cloud-volume ``vol.mesh.get`` / ``vol.skeleton.get``)."""
    from neurolake.meshes import build_meshes
    from neurolake.skeletons import skeletonize_layer

    build_meshes(lake, "gala_fibsem", "segmentation", scheduler="threads")
    r = skeletonize_layer(lake, "gala_fibsem", "segmentation", scheduler="threads")
    n = (r.get("statistics") or {}).get("skeletons", "")
    say(f"gala_fibsem: meshes and {n} skeletons of layer segmentation (Neuroglancer's 3-D panel; SQL "
        "gala_fibsem.skeletons.segmentation)")


STEPS.append(_neurons_3d_step)


def ingest_demo_layers(lake: Lake, say: Callable[[str], None], scheduler: str | None = None,
                       progress=None) -> None:
    """Ingest the demo layers that are not ready yet, sharing one Dask cluster for their pyramids."""
    from neurolake.jobs import dask_client

    data = data_dir()
    todo = []
    for ds, name, rel, kind, voxel, desc in LAYERS:
        try:
            if lake.layer(ds, name).status == "ready":
                say(f"{ds}/{name}: already ingested")
                continue
        except NotFound:
            pass
        todo.append((ds, name, rel, kind, voxel, desc))
    if not todo:
        return
    with dask_client(scheduler) as client:
        for ds, name, rel, kind, voxel, desc in todo:
            if ds not in lake:
                lake.create_datastack(ds, voxel, description=desc.split(";")[0])
            la = lake.ingest(str(data / rel), ds, name, voxel_size=voxel, layer_type=kind, description=desc,
                             client=client, progress=progress, say=say)
            say(f"{ds}/{name}: ingested ({la!r})")


def run_demo(lake: Lake, say: Callable[[str], None], scheduler: str | None = None, progress=None) -> None:
    ingest_demo_layers(lake, say, scheduler=scheduler, progress=progress)
    for step in STEPS:
        step(lake, say)
    from neurolake.annotations.demo import demo_synapses  # synapse table from the labels (issue 4)

    demo_synapses(lake, say)
    demo_materialize(lake, say)  # last: binds every table of the steps above
    demo_query(lake, say)


def demo_materialize(lake: Lake, say: Callable[[str], None]) -> None:
    """Version 1 of each demo datastack (run after every other step, so it holds their tables)."""
    for name in ("gerhard2013", "gala_fibsem", "pinky100", "celegans"):
        if name in lake and not lake[name].versions.list():
            v = lake[name].versions.create()
            say(f"{name}: materialization version {v['version']} ({v['rows']} rows, tables {sorted(v['tables'])})")


DENSITY_SQL = """
SELECT CAST(floor(ctr_pt_position_z / 5) AS INTEGER) AS block_z,
       CAST(floor(ctr_pt_position_y / 256) AS INTEGER) AS block_y,
       CAST(floor(ctr_pt_position_x / 256) AS INTEGER) AS block_x,
       count(*) AS n_synapses,
       count(*) / ($block_um3) AS synapses_per_um3
FROM gerhard2013.v1.synapses
GROUP BY ALL
ORDER BY block_z, block_y, block_x
"""


def demo_query(lake: Lake, say: Callable[[str], None]) -> None:
    """A production SQL run with provenance: synapse density per block of 256 x 256 voxels x 5 sections of
    version 1, saved with its manifest under ``<lake>/runs/`` (``neurolake reproduce RUN_ID``)."""
    ds = lake["gerhard2013"]
    if not ds.versions.list() or "synapses" not in ds.versions.tables(1):
        return
    vx, vy, vz = ds.voxel_size_nm
    block_um3 = (256 * vx / 1000) * (256 * vy / 1000) * (5 * vz / 1000)
    res = lake.sql(DENSITY_SQL, {"block_um3": block_um3}, mode="production", save=True,
                   job="demo.synapse_density")
    say(f"gerhard2013: synapse density of version 1 by SQL ({len(res)} blocks), run {res.run_id}, "
        f"sha256 {res.sha256[:16]}…; check it with `neurolake reproduce {res.run_id}`")


def example_urls(base: str) -> list[tuple[str, str]]:
    from neurolake.annotations.demo import example_urls as annotation_urls  # issue 4
    from neurolake.connectome.demo import example_urls as connectome_urls  # issue 13

    return [
        ("PNG of section 10", f"{base}/ocp/ca/gerhard2013/image/xy/0/0,1024/0,1024/10/"),
        ("npz cutout", f"{base}/ocp/ca/gerhard2013/image/npz/0/100,612/200,712/3,13/"),
        ("labels as colours", f"{base}/ocp/ca/gerhard2013/labels/xy/0/0,1024/0,1024/10/"),
        ("mip 2 PNG", f"{base}/ocp/ca/gerhard2013/image/xy/2/0,256/0,256/10/"),
        ("layer metadata", f"{base}/api/v1/datastacks/gerhard2013/layers/image"),
        ("proofread roots", f"{base}/ocp/ca/gerhard2013/supervoxels/xy/0/0,1024/0,1024/10/?roots=true"),
        ("edit log", f"{base}/api/v1/datastacks/gerhard2013/segmentation/operations"),
        ("versions", f"{base}/api/v1/datastacks/gerhard2013/versions"),
        ("SQL runs with their manifests", f"{base}/api/v1/runs"),
        ("CAVE datastack", f"{base}/info/api/v2/datastack/full/gerhard2013"),
        ("electrophysiology: files, sweeps, f-I curves, MEA plates", f"{base}/ui/ephys/ephys"),
        ("ephys cell features (JSON)", f"{base}/api/v1/datastacks/ephys/ephys/cell_features?limit=50"),
        ("API docs", f"{base}/docs"),
        # serving (issue 3)
        ("Neuroglancer viewer", f"{base}/viewer/gerhard2013"),
        ("Neuroglancer viewer (FIB-SEM)", f"{base}/viewer/gala_fibsem"),
        ("precomputed info (cloud-volume: precomputed://" + base + "/precomputed/gerhard2013/image)",
         f"{base}/precomputed/gerhard2013/image/info"),
        ("Zarr v3 / OME-Zarr group (zarr3://" + base + "/zarr/gerhard2013/image)",
         f"{base}/zarr/gerhard2013/image/zarr.json"),
        ("CATMAID tile", f"{base}/catmaid/gerhard2013/image/xy/10/0_0_0.jpg"),
        ("2-D image view over the tiles", f"{base}/ui/image/gerhard2013?layer=image&z=10"),
        ("BossDB channel (intern host " + base.removeprefix("http://") + ")",
         f"{base}/v1/collection/gerhard2013/experiment/gerhard2013/channel/image"),
        ("tile cache stats", f"{base}/api/v1/stats"),
    ] + annotation_urls(base) + connectome_urls(base)
