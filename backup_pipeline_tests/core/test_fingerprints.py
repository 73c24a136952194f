"""Content fingerprints name their algorithm, and two are only ever compared through one they share."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from backup_pipeline.core import fingerprints
from backup_pipeline.core.fingerprints import BLAKE3, SHA256, SHA256_FILE

hexes = st.text("0123456789abcdef", min_size=64, max_size=64)
token_sets = st.dictionaries(st.sampled_from([BLAKE3, SHA256, SHA256_FILE]), hexes, min_size=1)


@given(token_sets)
def test_a_stored_fingerprint_reads_back_as_written(tokens: dict[str, str]) -> None:
    stored = fingerprints.make(tokens)
    assert fingerprints.parse(stored) == tokens
    assert len(stored) <= 256  # the column's width, with every known algorithm at once


def test_the_current_algorithm_is_written_first_and_an_unnamed_digest_is_a_legacy_sha256() -> None:
    assert fingerprints.make({SHA256: "aa", BLAKE3: "bb"}) == "blake3:bb sha256:aa"
    assert fingerprints.parse("ab" * 32) == {SHA256: "ab" * 32}
    assert fingerprints.parse(None) == {}


@given(token_sets, token_sets)
def test_fingerprints_are_compared_only_through_an_algorithm_they_share(
    before: dict[str, str], now: dict[str, str]
) -> None:
    same = fingerprints.same_content(fingerprints.make(before), fingerprints.make(now))
    common = before.keys() & now.keys()
    if not common:
        assert same is None
    else:
        assert same is all(before[a] == now[a] for a in common)


def test_equal_digests_of_two_algorithms_are_not_the_same_content() -> None:
    digest = "cd" * 32
    assert fingerprints.same_content(f"sha256:{digest}", f"blake3:{digest}") is None
    assert fingerprints.same_content(f"sha256-file:{digest}", f"sha256:{digest}") is None
    assert fingerprints.same_content(None, f"blake3:{digest}") is None


def test_a_measurement_after_a_change_of_algorithm_adds_the_previous_one_it_can_compute() -> None:
    assert fingerprints.wanted_with("sha256:" + "a" * 64, BLAKE3) == {SHA256}
    assert fingerprints.wanted_with("sha256-file:" + "a" * 64, BLAKE3) == {SHA256_FILE}
    # the cycle measured across the change holds both: the chain carries on in BLAKE3 alone
    assert fingerprints.wanted_with("blake3:" + "a" * 64 + " sha256:" + "b" * 64, BLAKE3) == frozenset()
    assert fingerprints.wanted_with("blake3:" + "a" * 64, BLAKE3) == frozenset()
    assert fingerprints.wanted_with("md5:" + "a" * 32, BLAKE3) == frozenset()  # cannot be computed
    assert fingerprints.wanted_with(None, BLAKE3) == frozenset()
