"""Demo step: the Gerhard et al. (2013) synapse label (value 223 in layer ``labels``) becomes the
synapse table ``gerhard2013/synapses`` (50 synapses), supervoxels looked up in ``labels``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from neurolake.errors import AlreadyExists

DATASTACK, MASK, VALUE, TABLE = "gerhard2013", "labels", 223, "synapses"


def demo_synapses(lake: Any, say: Callable[[str], None]) -> None:
    """Detect the demo synapses; idempotent (a second run reports "already derived"). A table that holds
    other rows (e.g. duplicates written by an older neurolake) is left alone with a hint to repair it."""
    from neurolake.annotations.detect import detect_synapses

    try:
        detect_synapses(lake, DATASTACK, MASK, VALUE, TABLE, segmentation_layer=MASK, say=say,
                        description="synapses of Gerhard et al. 2013: connected components of label 223")
    except AlreadyExists as exc:
        say(f"{DATASTACK}/{TABLE}: left as it is: {exc.message} (re-derive with `neurolake annotations detect "
            f"-d {DATASTACK} --mask {MASK} --value {VALUE} --overwrite`)")


def example_urls(base: str) -> list[tuple[str, str]]:
    return [
        ("synapse rows (JSON)", f"{base}/api/v1/datastacks/{DATASTACK}/tables/{TABLE}/rows?limit=5"),
        ("synapses, precomputed", f"{base}/precomputed/{DATASTACK}/annotations/{TABLE}/info"),
    ]
