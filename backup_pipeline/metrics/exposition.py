"""The families in Prometheus' text exposition format (version 0.0.4), byte for byte what
`prometheus_client.generate_latest` writes for the same families (the tests compare both).

Written here because the library's encoder costs about 6 µs a sample (it sorts, validates and
escapes every label of every sample): 2 s for the 380,000 samples of 20,000 expected backups, where
this costs a tenth of that. Floats are formatted by the library's own function.
"""

from __future__ import annotations

import math
from functools import lru_cache

from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.utils import floatToGoString

from backup_pipeline.metrics.families import Family

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
_cached = lru_cache(maxsize=65536)(floatToGoString)  # most values repeat: 0, 1, shared timestamps
_ZEROS = (floatToGoString(0.0), floatToGoString(-0.0))


def _number(value: float) -> str:
    if value == 0:  # 0.0 and -0.0 are one key for the cache, two texts for the library
        return _ZEROS[math.copysign(1.0, value) < 0]
    return _cached(value)


def encode(families: list[Family]) -> bytes:
    parts: list[str] = []
    for family in families:
        name = family.name
        help_text = family.help.replace("\\", r"\\").replace("\n", r"\n")
        parts.append(f"# HELP {name} {help_text}\n# TYPE {name} {family.kind}\n")
        parts.extend(
            f"{name}{{{labels.text}}} {_number(value)}\n" if labels.text else f"{name} {_number(value)}\n"
            for labels, value in family.samples
        )
    return "".join(parts).encode()
