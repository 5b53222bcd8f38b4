"""Signed-URL grants: the per-lake entry cache and the queued audit events they write."""

from __future__ import annotations

import time

import pytest

from neurolake.errors import NotFound


def test_grant_sees_this_process_changes_at_once(reg_lake, feature_files, tmp_path):
    """A draft re-pointed or deleted through this lake is granted from the new entry immediately."""
    import shutil

    from neurolake.catalog import FeatureRegistry

    reg = FeatureRegistry(reg_lake)
    reg.register(name="ct", datastack="hemibrain", location=str(feature_files["cell_types"]))
    g1 = reg.signed_urls("ct", base_url="http://h")
    assert reg.grant_cached("ct")
    copy = tmp_path / "moved" / "cells.parquet"
    copy.parent.mkdir()
    shutil.copy(feature_files["cell_types"], copy)
    reg.update("ct", location=str(copy))
    assert not reg.grant_cached("ct")
    g2 = reg.signed_urls("ct", base_url="http://h")
    assert g1["urls"][0].endswith("/cell_types.parquet") and g2["urls"][0].endswith("/cells.parquet")
    reg.delete("ct")
    with pytest.raises(NotFound):
        reg.signed_urls("ct", base_url="http://h")


def test_grant_sees_other_process_changes_after_the_cache_period(reg_lake, feature_files, monkeypatch):
    """Another process (here: another Lake on the same folder) deleting a draft is seen by grants once
    the cached entry is older than GRANT_CACHE_SECONDS."""
    import importlib

    from neurolake import open_lake
    from neurolake.catalog import FeatureRegistry

    registry_module = importlib.import_module("neurolake.catalog.registry")  # the package exports a registry()

    reg = FeatureRegistry(reg_lake)
    reg.register(name="ct", datastack="hemibrain", location=str(feature_files["cell_types"]))
    reg.signed_urls("ct", base_url="http://h")
    with open_lake(reg_lake.root) as other:
        FeatureRegistry(other).delete("ct")
    reg.signed_urls("ct", base_url="http://h")  # within the period: the cached entry (documented staleness)
    monkeypatch.setattr(registry_module, "GRANT_CACHE_SECONDS", 0.0)
    with pytest.raises(NotFound):
        reg.signed_urls("ct", base_url="http://h")


def test_grant_audit_events_written_in_background(reg_lake, feature_files):
    """Grant events are queued in memory and written by a background thread within about a second,
    visible to another process without any flush call by the granting one."""
    from neurolake import open_lake
    from neurolake.catalog import FeatureRegistry

    reg = FeatureRegistry(reg_lake)
    reg.register(name="ct", datastack="hemibrain", location=str(feature_files["cell_types"]))
    for _ in range(25):
        reg.signed_urls("ct", base_url="http://h")
    with open_lake(reg_lake.root) as other:
        deadline = time.monotonic() + 10
        while True:
            grants = other.access.audit_log(action="feature.url_grant")
            if len(grants) == 25 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert len(grants) == 25
    assert {(e["user"], e["target"], e["datastack"], e["detail"]["files"]) for e in grants} == {
        (reg_lake.settings.user, "ct", "hemibrain", 1)}
    assert not reg_lake.access._pending_audit


def test_grant_audit_kept_when_the_catalog_write_fails(reg_lake, feature_files, monkeypatch):
    """A failed flush puts the events back in the queue; the next flush writes them."""
    from neurolake.catalog import FeatureRegistry

    reg = FeatureRegistry(reg_lake)
    reg.register(name="ct", datastack="hemibrain", location=str(feature_files["cell_types"]))
    acc = reg_lake.access
    reg.signed_urls("ct", base_url="http://h")  # the entry is cached now: the next grant reads no catalog
    acc.flush_audit()
    real = reg_lake.catalog.session

    def broken():
        raise OSError("disk full")

    monkeypatch.setattr(reg_lake.catalog, "session", broken)
    reg.signed_urls("ct", base_url="http://h")
    with pytest.raises(OSError):
        acc.flush_audit()
    assert len(acc._pending_audit) == 1
    monkeypatch.setattr(reg_lake.catalog, "session", real)
    assert len(acc.audit_log(action="feature.url_grant")) == 2
