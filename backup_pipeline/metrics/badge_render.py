"""Status badges for people: shields-style SVG (anybadge escapes the texts) and shields.io's
endpoint JSON (https://shields.io/badges/endpoint-badge)."""

from __future__ import annotations

import json

import anybadge

from backup_pipeline.metrics.badges import Badge

HEX = {"brightgreen": "#4c1", "lightgrey": "#9f9f9f", "red": "#e05d44"}
CACHE_SECONDS = 300  # shields.io's minimum: the badge is fetched again at most every 5 minutes


def badge_svg(badge: Badge) -> str:
    return anybadge.Badge(
        label=badge.label, value=badge.message, default_color=HEX[badge.colour]
    ).badge_svg_text


def badge_json(badge: Badge) -> str:
    return json.dumps(
        {
            "schemaVersion": 1,
            "label": badge.label,
            "message": badge.message,
            "color": badge.colour,
            "cacheSeconds": CACHE_SECONDS,
        }
    )
