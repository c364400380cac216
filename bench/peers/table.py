"""The side-by-side table: jobhost and the peers, medians of their measurements."""

from __future__ import annotations

from typing import Any

from bench import report
from bench.peers.run import peer

Row = dict[str, Any]


def summaries(results: list[Row]) -> list[Row]:
    """Medians of the peers' measurements and of jobhost's single-call enqueues."""
    kept = [r for r in results if not r.get("discarded")]
    out = []
    for kind, key in (
        ("peer_drain", lambda r: (r["system"], r["workers"], r["concurrency"])),
        ("peer_enqueue", lambda r: (r["system"],)),
        ("enqueue", lambda r: (r["system"],)),
        ("peer_latency", lambda r: (r["system"],)),
    ):
        out += report.summarise([r for r in kept if r["kind"] == kind], key)
    return out


def _find(rows: list[Row], **match: Any) -> Row | None:
    for r in rows:
        if all(r.get(k) == v for k, v in match.items()):
            return r
    return None


def side_by_side(
    systems: list[str], configs: list[tuple[int, int]], sums: list[Row]
) -> tuple[list[str], list[list[str]], list[str]]:
    """Head, rows, and notes (ratios to BullMQ) of the combined table."""
    head = ["system"]
    for n, c in configs:
        head += [f"W{n} C{c} jobs/s", f"W{n} C{c} CPU ms/1k (prod/workers/Redis/PG = total)"]
    head += ["enqueue bulk/s (API)", "enqueue single/s", "pickup p50 / p99 ms", "worker RSS MiB"]
    head += ["other load"]
    rows, by_system = [], {}
    for name in systems:
        jobhost = name == "jobhost"
        cells, figures = [name], {}
        loads, rss = [], []
        for n, c in configs:
            if jobhost:
                d = _find(
                    sums, kind="drain_summary", variant="end-to-end", workers=n, concurrency=c,
                    claim_batch=200, prefetch=None,
                )  # fmt: skip
            else:
                d = _find(sums, kind="peer_drain_summary", system=name, workers=n, concurrency=c)
            figures[(n, c)] = d
            if d is None:
                cells += ["n/a", "n/a"]
                continue
            cpu = "/".join(
                report.fmt(d.get(f"cpu_ms_per_1k_{role}"))
                for role in ("producer", "workers", "redis", "postgres")
            )
            cells += [
                report.fmt(d["runs_per_s"]),
                f"{cpu} = {report.fmt(d['cpu_ms_per_1k_total'])}",
            ]
            loads.append(d.get("other_load") or 0.0)
            rss.append(d.get("worker_peak_rss_mb"))
        first = figures.get(configs[0]) if configs else None
        api = "enqueue_many 500" if jobhost else (peer(name).INFO.bulk or "")
        bulk = report.fmt(first["enqueue_runs_per_s"]) if first and api else "no bulk API"
        cells.append(f"{bulk} ({api})" if api and first else bulk)
        kind = "enqueue_summary" if jobhost else "peer_enqueue_summary"
        e = _find(sums, kind=kind, system=name)
        cells.append(report.fmt(e["enqueue_runs_per_s"]) if e else "n/a")
        lat = (
            _find(sums, kind="latency_summary")
            if jobhost
            else _find(sums, kind="peer_latency_summary", system=name)
        )
        cells.append(
            f"{report.fmt(lat['p50_ms'], 2)} / {report.fmt(lat['p99_ms'], 2)}" if lat else "n/a"
        )
        cells.append(report.fmt(max((r for r in rss if r is not None), default=None), 1))
        cells.append(report.percent(max(loads, default=None)))
        rows.append(cells)
        by_system[name] = figures
    notes = []
    if "jobhost" in by_system and "bullmq" in by_system:
        for cfg in configs:
            j, b = by_system["jobhost"].get(cfg), by_system["bullmq"].get(cfg)
            if not (j and b):
                continue
            tp = j["runs_per_s"] / b["runs_per_s"]
            cpu = (
                f"{j['cpu_ms_per_1k_total'] / b['cpu_ms_per_1k_total']:.2f}"
                if j.get("cpu_ms_per_1k_total") and b.get("cpu_ms_per_1k_total")
                else "n/a"
            )
            notes.append(
                f"jobhost / BullMQ at W{cfg[0]} C{cfg[1]}: throughput {tp:.2f}x,"
                f" CPU per 1,000 jobs {cpu}x"
            )
    return head, rows, notes
