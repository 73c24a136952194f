"""Content fingerprints that name their algorithm, and the one way two of them are compared.

A fingerprint is stored as `algorithm:hexdigest` tokens separated by spaces. One token is usual;
a cycle measured while its previous success carries an older algorithm holds one token of each, so
that comparison and every later one have an algorithm in common (see `wanted_with`).

- `blake3`: BLAKE3-256 of the decompressed content (of the file's bytes when it is not compressed):
  what the server measures now.
- `sha256`: SHA-256 of the same content: what it measured before revision 0009.
- `sha256-file`: SHA-256 of the file as stored, not decompressed: the fingerprint when archive
  checks are off (or the archive is corrupt), in which header times count.

Two fingerprints are compared only through an algorithm both carry; without one, the content
policy cannot say whether the content changed, and says so instead of guessing.
"""

from __future__ import annotations

BLAKE3 = "blake3"
SHA256 = "sha256"
SHA256_FILE = "sha256-file"
CONTENT = BLAKE3  # the algorithm the server fingerprints content with
KNOWN = (BLAKE3, SHA256, SHA256_FILE)


def make(tokens: dict[str, str]) -> str:
    """The stored form of {algorithm: hex digest}, current algorithm first."""
    order = sorted(tokens, key=lambda a: (KNOWN.index(a) if a in KNOWN else len(KNOWN), a))
    return " ".join(f"{algorithm}:{tokens[algorithm]}" for algorithm in order)


def parse(value: str | None) -> dict[str, str]:
    """{algorithm: hex digest} of a stored fingerprint; an unnamed legacy value is a SHA-256."""
    tokens: dict[str, str] = {}
    for token in (value or "").split():
        algorithm, separator, digest = token.rpartition(":")
        tokens[algorithm if separator else SHA256] = digest
    return tokens


def algorithms(value: str | None) -> list[str]:
    return list(parse(value))


def same_content(previous: str | None, current: str | None) -> bool | None:
    """Whether two fingerprints show the same content; None when they share no algorithm."""
    before, now = parse(previous), parse(current)
    common = [a for a in KNOWN if a in before and a in now] + sorted(
        a for a in before.keys() & now.keys() if a not in KNOWN
    )
    if not common:
        return None
    return all(before[a] == now[a] for a in common)


def wanted_with(previous: str | None, current: str) -> frozenset[str]:
    """The algorithms a new measurement should add to `current` so that it can be compared with
    the previous success: none when that one carries `current`, else those of its algorithms the
    measurement can compute (a legacy SHA-256 of the content, the file's own SHA-256)."""
    held = parse(previous)
    if current in held:
        return frozenset()
    return frozenset(a for a in held if a in (SHA256, SHA256_FILE))
