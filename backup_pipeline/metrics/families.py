"""Metric families as the exporter builds them: names, types, help, and samples whose label text is
escaped once per label set (an expected backup's labels are shared by all its series)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import NamedTuple


def escape_label_value(value: str) -> str:
    """Prometheus' text format: backslash, double quote and line feed escaped."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


class LabelSet(NamedTuple):
    """Label names and values, sorted by name (as the exposition writes them), with their text.
    A tuple: a scrape makes hundreds of thousands of them."""

    items: tuple[tuple[str, str], ...]
    text: str

    @classmethod
    def of(cls, **labels: str) -> LabelSet:
        items = tuple(sorted(labels.items()))
        return cls(items, ",".join(f'{name}="{escape_label_value(value)}"' for name, value in items))

    def extended(self, name: str, value: str) -> LabelSet:
        """These labels and one more (built from the shared text when it sorts last, as `status`)."""
        if self.items and name > self.items[-1][0]:
            return LabelSet((*self.items, (name, value)), self.text + _label_suffix(name, value))
        return LabelSet.of(**dict(self.items), **{name: value})


@lru_cache(maxsize=1024)
def _label_suffix(name: str, value: str) -> str:
    return f',{name}="{escape_label_value(value)}"'


NO_LABELS = LabelSet((), "")


@dataclass
class Family:
    """One metric family. `name` is the exposition's name (a counter's ends in `_total`)."""

    name: str
    kind: str  # gauge | counter
    help: str
    label_names: tuple[str, ...] = ()
    unit: str = ""
    samples: list[tuple[LabelSet, float]] = field(default_factory=list)

    def add(self, labels: LabelSet, value: float) -> None:
        self.samples.append((labels, value))
