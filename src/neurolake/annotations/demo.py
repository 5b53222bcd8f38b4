"""Demo step: the Gerhard et al. (2013) synapse label (value 223 in layer ``labels``) becomes the
synapse table ``gerhard2013/synapses`` (50 synapses), supervoxels looked up in ``labels``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from neurolake.errors import NotFound

DATASTACK, MASK, VALUE, TABLE = "gerhard2013", "labels", 223, "synapses"


def demo_synapses(lake: Any, say: Callable[[str], None]) -> None:
    from neurolake.annotations.detect import detect_synapses
    from neurolake.annotations.table import get_table

    try:
        t = get_table(lake, DATASTACK, TABLE)
        if t.count():
            say(f"{DATASTACK}/{TABLE}: already has {t.count()} synapses")
            return
    except NotFound:
        pass
    t = detect_synapses(lake, DATASTACK, MASK, VALUE, TABLE, segmentation_layer=MASK,
                        description="synapses of Gerhard et al. 2013: connected components of label 223")
    say(f"{DATASTACK}/{TABLE}: {t.count()} synapses detected from {MASK} == {VALUE}")


def example_urls(base: str) -> list[tuple[str, str]]:
    return [
        ("synapse rows (JSON)", f"{base}/api/v1/datastacks/{DATASTACK}/tables/{TABLE}/rows?limit=5"),
        ("synapses, precomputed", f"{base}/precomputed/{DATASTACK}/annotations/{TABLE}/info"),
    ]
