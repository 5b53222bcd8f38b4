import numpy as np


def test_demo_lake_matches_source(demo_lake, gerhard_source):
    la = demo_lake.layer("gerhard2013", "image")
    assert la.status == "ready"
    np.testing.assert_array_equal(la[:, :, :], gerhard_source)
