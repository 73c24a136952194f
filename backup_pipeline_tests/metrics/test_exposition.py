"""The exporter's text encoder against prometheus_client's, for any label value and number."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from backup_pipeline.metrics.exposition import encode
from backup_pipeline.metrics.families import Family, LabelSet

# Any character, and often the ones the text format escapes or quotes.
characters = st.sampled_from('\\"\n{}=, é') | st.characters(exclude_categories=("Cs",))
texts = st.text(characters, max_size=20)
numbers = st.one_of(st.floats(allow_nan=False), st.integers(-(2**62), 2**62).map(float))


@given(st.lists(st.tuples(texts, texts, texts, numbers), max_size=8), st.text(characters, max_size=40))
def test_any_samples_encode_as_the_library_encodes_them(
    samples: list[tuple[str, str, str, float]], help_text: str
) -> None:
    gauge = Family("backup_job_x", "gauge", help_text or "h", ("agent_id", "database", "schedule", "status"))
    counter = Family("backup_things_total", "counter", "things", ("outcome",))
    for agent, database, status, value in samples:
        key = LabelSet.of(agent_id=agent, database=database, schedule="13:00 UTC")
        gauge.add(key.extended("status", status), value)
        counter.add(LabelSet.of(outcome=status), abs(value))
    families = [gauge, counter]

    class Library(Collector):
        def collect(self):  # type: ignore[no-untyped-def]
            return [as_library_metric(f) for f in families]

    assert encode(families) == generate_latest(Library())


def as_library_metric(family: Family) -> Metric:
    """The same samples as prometheus_client's own metric family (the library adds `_total` itself)."""
    if family.kind == "counter":
        metric: Metric = CounterMetricFamily(
            family.name.removesuffix("_total"), family.help, labels=family.label_names
        )
    else:
        metric = GaugeMetricFamily(family.name, family.help, labels=family.label_names)
    for labels, value in family.samples:
        metric.add_metric([v for _, v in labels.items], value)  # type: ignore[attr-defined]
    return metric


def test_a_label_added_before_others_keeps_the_sorted_order() -> None:
    assert LabelSet.of(b="2", c="3").extended("a", "1") == LabelSet.of(a="1", b="2", c="3")
    assert LabelSet.of(b="2", c="3").extended("a", "1").text == 'a="1",b="2",c="3"'
