"""Plain-text and CSV tables of dict rows (status, collect)."""
from __future__ import annotations

import csv
import io
import json
import math
from typing import Any


def columns(rows: list[dict]) -> list[str]:
    """Every key of every row, in the order first seen."""
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_table(rows: list[dict]) -> str:
    if not rows:
        return "(no runs)"
    cols = columns(rows)
    cells = [[cell(row.get(c)) for c in cols] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in cells]
    return "\n".join(lines)


def to_csv(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns(rows), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def finite(value: Any) -> Any:
    """NaN and the infinities as None, everywhere in a tree: JSON has no word for them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def to_json(rows: list[dict]) -> str:
    """Strict JSON (a NaN figure, a diverged loss, is null), which every JSON reader accepts."""
    return json.dumps(finite(rows), indent=1, allow_nan=False)
