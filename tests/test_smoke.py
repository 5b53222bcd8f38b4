import numpy as np


def test_demo_lake_matches_source(demo_lake, gerhard_source):
    la = demo_lake.layer("gerhard2013", "image")
    assert la.status == "ready"
    np.testing.assert_array_equal(la[:, :, :], gerhard_source)


def test_lake_services_are_owned_by_the_lake_and_may_use_each_other(fresh_lake):
    """lake.features (whose constructor uses lake.access) is created once, shared, and released by close()."""
    import threading

    got = []
    threads = [threading.Thread(target=lambda: got.append(fresh_lake.features)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(got) == 4 and all(g is got[0] for g in got) and got[0].access is fresh_lake.access
