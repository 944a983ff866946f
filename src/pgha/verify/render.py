"""The verifier's outputs: a table for the terminal, a JSON document for scripts, a timeline PNG.

Rules
1. Times in outputs are seconds since the run started (the JSON also gives the start as epoch seconds).
2. The JSON has one object per fault with at least ``fault``, ``unavailability_s``, ``failed_tx``,
   ``lost_acked``, ``in_doubt``, ``invariant_ok``, ``overlapping_writers``; connection strings are never written
   with their password.
3. The PNG is drawn with matplotlib's Agg backend (no display): acknowledged commits per 100 ms per writer node,
   failed transactions below the axis, faults shaded from injection to recovery, leader changes as dashed lines.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from pgha.verify.report import FaultFigures, ok
from pgha.verify.runner import Result


def _rel(t: float | None, start: float) -> float | None:
    return None if t is None else round(t - start, 3)


def redact(dsn: str) -> str:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo
    try:
        params = conninfo_to_dict(dsn)
    except Exception:  # not parseable: say nothing of it rather than risk a password
        return "(unparsed)"
    if "password" in params:
        params["password"] = "***"
    return make_conninfo(**params)


def node_label(node: str, labels: dict[str, str]) -> str:
    return f"{labels[node]} ({node})" if node in labels else node


def _writer_label(label: str, labels: dict[str, str]) -> str:
    node, _, tl = label.partition(" ")
    return f"{node_label(node, labels)} {tl}".strip()


def fault_json(f: FaultFigures, start: float, labels: dict[str, str]) -> dict[str, Any]:
    data = asdict(f)
    for key in ("last_commit_before", "first_commit_after", "injected_at", "healed_at"):
        data[key] = _rel(data[key], start)
    data["overlapping_writers"] = [
        {**p, "a": _writer_label(p["a"], labels), "b": _writer_label(p["b"], labels),
         "from": _rel(p["from"], start), "to": _rel(p["to"], start)} for p in f.overlapping_writers]
    return data


def to_json(result: Result) -> dict[str, Any]:
    r, s = result.report, result.settings
    return {
        "run": result.run,
        "ok": ok(r),
        "start_epoch": r.start,
        "duration_s": round(r.end - r.start, 3),
        "dsns": [redact(d) for d in s.dsns],
        "clients": s.clients, "seed": s.seed, "rate_per_client": s.rate, "min_gap_s": s.min_gap,
        "acked": r.acked, "failed_tx": r.failed_tx, "lost_acked": r.lost_acked, "in_doubt": r.in_doubt,
        "connect_errors": result.connect_errors, "latency_ms": dict(r.latency_ms),
        "invariant_ok": r.invariant_ok, "expected_total": r.expected_total, "final_total": r.final_total,
        "ledger_matches_balances": r.ledger_matches_balances,
        "final_node": node_label(r.final_node, result.labels) if r.final_node else None,
        "writers": [{"node": node_label(w.node, result.labels), "system_id": w.system_id, "timeline": w.timeline,
                     "first": _rel(w.first, r.start), "last": _rel(w.last, r.start), "commits": w.commits}
                    for w in r.writers],
        "leader_changes": [{"at": _rel(t, r.start), "leader": name} for t, name in result.leader_changes],
        "faults": [fault_json(f, r.start, result.labels) for f in r.faults],
        "notes": result.notes,
    }


def _yes(value: bool) -> str:
    return "ok" if value else "BROKEN"


def table(result: Result) -> str:
    r = result.report
    head = ["fault", "unavail s", "longest gap s", "acked", "failed tx", "lost acked", "in doubt", "invariant",
            "overlapping writers", "notes"]
    rows = []
    for f in r.faults:
        overlap = "; ".join(f"{_writer_label(p['a'], result.labels)} / {_writer_label(p['b'], result.labels)}"
                            for p in f.overlapping_writers) or "none"
        notes = "; ".join(x for x in (f.note, f"ERROR {f.error}" if f.error else "",
                                      "" if f.recovered else "writes had not resumed at the end") if x)
        rows.append([f.fault, f"{f.unavailability_s:.2f}", f"{f.longest_gap_s:.2f}", str(f.acked), str(f.failed_tx),
                     str(f.lost_acked), str(f.in_doubt), _yes(f.invariant_ok), overlap, notes])
    widths = [max(len(head[i]), *(len(row[i]) for row in rows)) for i in range(len(head))]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def fmt(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"
    out = [line, fmt(head), line, *(fmt(row) for row in rows), line]
    final = node_label(r.final_node, result.labels) if r.final_node else "?"
    out.append(f"run {result.run}: {r.acked} acknowledged, {r.failed_tx} failed ({r.in_doubt} of them committed "
               f"all the same), {r.lost_acked} acknowledged and lost; final primary {final}")
    out.append(f"balances: sum {r.final_total} (expected {r.expected_total}): {_yes(r.invariant_ok)}; "
               f"ledger matches balances: {'?' if r.ledger_matches_balances is None else _yes(r.ledger_matches_balances)}")
    writers = ", ".join(f"{node_label(w.node, result.labels)} tl{w.timeline} {w.first - r.start:.2f}-"
                        f"{w.last - r.start:.2f}s ({w.commits})" for w in r.writers)
    out.append(f"writers: {writers or 'none'}")
    if r.latency_ms:
        out.append("latency of acknowledged transactions (ms): " +
                   ", ".join(f"{k} {v:.1f}" for k, v in r.latency_ms.items()))
    out.extend(result.notes)
    out.append("verdict: " + ("OK" if ok(r) else "FAILED (lost acknowledged commits, a broken invariant, "
                                                 "or two writers at once)"))
    return "\n".join(out)


def plot(result: Result, path: str) -> None:
    """Rule 3."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pgha.verify.report import buckets
    r = result.report
    times, by_node, failed = buckets(result.events, r.start, r.end, 0.1)
    fig, ax = plt.subplots(figsize=(14, 4.5), dpi=100)
    bottom = [0] * len(times)
    for node in sorted(by_node):
        counts = by_node[node]
        ax.bar(times, counts, width=0.1, align="edge", bottom=bottom, label=f"commits on {node_label(node, result.labels)}",
               linewidth=0)
        bottom = [b + c for b, c in zip(bottom, counts)]
    if any(failed):
        ax.bar(times, [-x for x in failed], width=0.1, align="edge", color="tab:red", label="failed", linewidth=0)
    top = max(bottom + [1])
    for f in r.faults:
        if f.injected_at is None:
            continue
        a = f.injected_at - r.start
        b = (f.healed_at - r.start) if f.healed_at else r.end - r.start
        ax.axvspan(a, max(b, a + 0.1), color="tab:orange", alpha=0.15)
        ax.axvline(a, color="tab:orange", linewidth=1.5)
        ax.text(a, top * 1.02, f.fault, fontsize=8, color="tab:orange", rotation=0, va="bottom")
    # leader changes as the DCS showed them; without a cluster target, the first commit of each new writer
    marks = [(t, f"leader {name}") for t, name in result.leader_changes[1:]] or [
        (w.first, f"writer {node_label(w.node, result.labels)} tl{w.timeline}") for w in r.writers[1:]]
    for t, text in marks:
        ax.axvline(t - r.start, color="black", linestyle="--", linewidth=1)
        ax.text(t - r.start, top * 0.9, f" {text}", fontsize=8, va="top")
    ax.set_xlim(0, max(0.1, r.end - r.start))
    ax.set_ylim(-max(failed + [1]) * 1.1, top * 1.15)
    ax.set_xlabel("seconds since the start of the run")
    ax.set_ylabel("transactions per 100 ms")
    ax.set_title(f"pgha verify {result.run}: {r.acked} acknowledged, {r.lost_acked} lost, "
                 f"invariant {'ok' if r.invariant_ok else 'BROKEN'}")
    ax.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
