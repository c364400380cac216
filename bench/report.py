"""Medians over repeats, and the results as a text table, a markdown file and JSON lines."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

Row = dict[str, Any]


def median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an ascending sequence."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(p / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def summarise(runs: list[Row], key: Callable[[Row], tuple[Any, ...]]) -> list[Row]:
    """One row per configuration: its fixed fields, and the median (plus min and max) of every
    numeric measurement over its repeats."""
    groups: dict[tuple[Any, ...], list[Row]] = {}
    for row in runs:
        groups.setdefault(key(row), []).append(row)
    out = []
    for rows in groups.values():
        first = rows[0]
        summary: Row = {"kind": first["kind"] + "_summary", "repeats": len(rows)}
        for name, value in first.items():
            if name in ("kind", "rep"):
                continue
            fixed = isinstance(value, bool) or not isinstance(value, int | float)
            if fixed or name in _CONFIG_FIELDS:
                summary[name] = value
            else:
                values = [r.get(name) for r in rows]
                summary[name] = median(values)
                present = [v for v in values if v is not None]
                if name in _RANGED and present:
                    summary[name + "_min"] = min(present)
                    summary[name + "_max"] = max(present)
        out.append(summary)
    return out


_CONFIG_FIELDS = {"workers", "concurrency", "claim_batch", "prefetch", "runs", "rate", "seconds"}
_RANGED = {"runs_per_s", "p50_ms", "p99_ms"}


def fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.0f}%"


def drain_table(summaries: list[Row]) -> tuple[list[str], list[list[str]]]:
    head = [
        "variant", "W", "C", "K", "runs/s (median)", "min-max", "enqueue runs/s",
        "CPU producer", "workers", "Redis", "PostgreSQL", "total", "worker RSS MiB",
        "runs seq_scan Δ", "seq_tup_read Δ", "other load",
    ]  # fmt: skip
    rows = []
    for s in summaries:
        rows.append(
            [
                s["variant"], str(s["workers"]), str(s["concurrency"]), str(s["claim_batch"]),
                fmt(s["runs_per_s"]),
                f"{fmt(s.get('runs_per_s_min'))}-{fmt(s.get('runs_per_s_max'))}",
                fmt(s.get("enqueue_runs_per_s")),
                fmt(s.get("cpu_ms_per_1k_producer"), 1), fmt(s.get("cpu_ms_per_1k_workers"), 1),
                fmt(s.get("cpu_ms_per_1k_redis"), 1), fmt(s.get("cpu_ms_per_1k_postgres"), 1),
                fmt(s.get("cpu_ms_per_1k_total"), 1), fmt(s.get("worker_peak_rss_mb"), 1),
                fmt(s.get("seq_scan_delta")), fmt(s.get("seq_tup_read_delta")),
                percent(s.get("other_load")),
            ]
        )  # fmt: skip
    return head, rows


def latency_table(summaries: list[Row]) -> tuple[list[str], list[list[str]]]:
    head = ["rate/s", "seconds", "W", "C", "K", "measured runs", "p50 ms", "p99 ms", "max ms"]
    head.append("other load")
    rows = []
    for s in summaries:
        rows.append(
            [
                fmt(s["rate"]), fmt(s["seconds"], 1), str(s["workers"]), str(s["concurrency"]),
                str(s["claim_batch"]), fmt(s["measured"]), fmt(s["p50_ms"], 2),
                fmt(s["p99_ms"], 2), fmt(s["max_ms"], 2), percent(s.get("other_load")),
            ]
        )  # fmt: skip
    return head, rows


def _line(cells: list[str], widths: list[int]) -> str:
    """First column left-aligned, the others right-aligned."""
    out = [cells[0].ljust(widths[0])]
    out += [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
    return "  ".join(out).rstrip()


def text_table(head: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(c) for c in column) for column in zip(head, *rows, strict=True)]
    lines = [_line(head, widths), _line(["-" * w for w in widths], widths)]
    lines += [_line(r, widths) for r in rows]
    return "\n".join(lines)


def markdown_table(head: list[str], rows: list[list[str]]) -> str:
    align = ["---"] + ["---:"] * (len(head) - 1)
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def write_jsonl(path: Path, rows: list[Row]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    tmp.replace(path)


def write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
