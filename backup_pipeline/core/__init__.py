"""The pure core: report parsing, cycle arithmetic and the decision rules (no I/O, no third-party imports)."""
