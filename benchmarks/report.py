"""Turning measurements into the targets (ratios from one run), a Markdown report and a chart."""

from __future__ import annotations

import re
import statistics
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

ORDER = (
    "c",
    "c-again",
    "c-threaded",
    "compiled",
    "compiled-metrics",
    "compiled-otel",
    "pure",
    "confluent",
    "aiokafka",
    "kafka-python",
)
COLORS = {
    "c": "#7f7f7f",
    "c-again": "#c7c7c7",
    "c-threaded": "#bcbd22",
    "compiled": "#d62728",
    "compiled-metrics": "#e377c2",
    "compiled-otel": "#8c564b",
    "pure": "#ff9896",
    "confluent": "#1f77b4",
    "aiokafka": "#2ca02c",
    "kafka-python": "#9467bd",
}


def size_label(size: int) -> str:
    return f"{size // 1024} KB" if size % 1024 == 0 else f"{size} B"


def case_key(size: int, partitions: int, batch: int = 0) -> str:
    return f"{size}B-{partitions}p" + (f"-{batch}" if batch else "")


def case_label(size: int, partitions: int, batch: int = 0) -> str:
    calls = f", calls of {batch:,}" if batch else ""
    return f"{size_label(size)}, {partitions} partition{'s' if partitions != 1 else ''}{calls}"


def _key(m: dict[str, Any]) -> str:
    return case_key(m["size"], m["partitions"], m.get("batch", 0))


def _label_of(m: dict[str, Any]) -> str:
    return case_label(m["size"], m["partitions"], m.get("batch", 0))


Case = tuple[int, int, int]  # size, partitions, events per call (0: none)


def _fmt_rate(rate: float) -> str:
    return f"{rate / 1000:,.1f}k/s" if rate < 1e6 else f"{rate / 1e6:,.2f}M/s"


def summary_of(scenario: str, result: dict[str, Any], size: int) -> str:
    """One line for the progress display."""
    if scenario == "restart":
        return (
            f"first event {result['restart_s']:.2f} s after the SIGKILL (partitions assigned "
            f"{result['consume_to_assigned_s']:.2f} s after consume())"
        )
    if scenario == "coldstart":
        return (
            f"first call {result['first_ms']:.1f} ms (max {result['first_ms_max']:.1f}), later "
            f"calls {result['later_p50_ms']:.2f} ms, producer made in {result['make_ms']:.1f} ms"
        )
    if scenario in ("produce", "consume", "async"):
        rate = result["events"] / result["seconds"] if result.get("seconds") else 0.0
        cpu = result.get("cpu_seconds")
        per = f", client CPU {cpu / result['events'] * 1e6:.2f} µs/event" if cpu else ""
        stats = thread_stats(result)
        if stats:
            per += (
                f", {stats['measured_role']} thread {stats['measured_us']:.2f} µs/event and "
                f"{stats['measured_faults_1k']:.1f} faults/1k events"
            )
        return f"{_fmt_rate(rate)} ({rate * size / 1e6:.1f} MB/s){per}"
    lat = result.get("latency", {})
    if not lat.get("samples"):
        return "no samples"
    return f"p50 {lat['p50_ms']:.3f} ms, p99 {lat['p99_ms']:.3f} ms ({lat['samples']:,} samples)"


# --------------------------------------------------------------------------- aggregation


def _ok(measurements: Iterable[dict[str, Any]]) -> Iterable[dict[str, Any]]:
    return (m for m in measurements if not m.get("error"))


ROLES = ("calling", "consuming", "eventstream", "librdkafka", "other")


def thread_stats(r: dict[str, Any]) -> dict[str, Any]:
    """Per-event CPU (µs) and page faults per 1,000 events of a result's threads, by role:
    ``{role: {"us": ..., "faults_1k": ..., "threads": n}}``, the measured (calling or
    consuming) thread's as ``measured_*``, and librdkafka's by thread name. Empty when the
    result has no per-thread figures (results from before they were recorded)."""
    rows = r.get("threads")
    events = r.get("events")
    if not rows or not events:
        return {}
    out: dict[str, Any] = {"roles": {}, "librdkafka_by_name": {}}
    for t in rows:
        role = out["roles"].setdefault(t["role"], {"us": 0.0, "faults_1k": 0.0, "threads": 0})
        role["us"] += (t["cpu_s"] or 0.0) * 1e6 / events
        role["faults_1k"] += (t["minflt"] + t["majflt"]) * 1000 / events
        role["threads"] += 1
        if t["role"] == "librdkafka":
            name = t["name"]
            by = out["librdkafka_by_name"]
            by[name] = by.get(name, 0.0) + (t["cpu_s"] or 0.0) * 1e6 / events
    roles = out["roles"]
    measured = "consuming" if "consuming" in roles else "calling"
    mine = roles.get(measured, {"us": None, "faults_1k": None})
    out["measured_role"] = measured
    out["measured_us"] = mine["us"]
    out["measured_faults_1k"] = mine["faults_1k"]
    out["total_us"] = sum(v["us"] for v in roles.values())
    out["total_faults_1k"] = sum(v["faults_1k"] for v in roles.values())
    return out


def metric(m: dict[str, Any], name: str) -> float | None:
    r = m["result"]
    if name.startswith("thread:"):  # thread:<role>:us|faults_1k, thread:measured:us|faults_1k
        _, role, what = name.split(":")
        stats = thread_stats(r)
        if not stats:
            return None
        if role == "measured":
            value = stats[f"measured_{what}"]
            return float(value) if value is not None else None
        if role == "total":
            return float(stats[f"total_{what}"])
        entry = stats["roles"].get(role)
        return float(entry[what]) if entry else 0.0
    if name == "rate":
        return r["events"] / r["seconds"] if r.get("seconds") else None
    if name == "cpu_us":
        cpu = r.get("cpu_seconds")
        return cpu / r["events"] * 1e6 if cpu and r.get("events") else None
    if name == "achieved_rate":
        p = r.get("producer", {})
        return p["events"] / p["seconds"] if p.get("seconds") else None
    if name == "calls":
        return r.get("producer", {}).get("calls")
    value = r.get("latency", {}).get(name)
    return float(value) if value is not None else None


def table(results: dict[str, Any], scenario: str, name: str) -> dict[tuple[str, str], float]:
    """``{(case_key, contender): median of metric over repeats}``."""
    return {k: statistics.median(v.values()) for k, v in rounds(results, scenario, name).items()}


def _round_of(m: dict[str, Any]) -> int:
    """The round a measurement ran in: its topic ends in ``-r<round>`` when the run had several."""
    found = re.search(r"-r(\d+)$", m.get("topic") or "")
    return int(found.group(1)) if found else 0


def rounds(
    results: dict[str, Any], scenario: str, name: str
) -> dict[tuple[str, str], dict[int, float]]:
    """``{(case_key, contender): {round: metric}}`` (the runner interleaves the contenders round
    by round, so two contenders' values of one round ran back to back)."""
    groups: dict[tuple[str, str], dict[int, float]] = {}
    for m in _ok(results["measurements"]):
        if m["scenario"] != scenario:
            continue
        value = metric(m, name)
        if value is not None:
            groups.setdefault((_key(m), m["contender"]), {})[_round_of(m)] = value
    return groups


def paired_ratio(mine: dict[int, float], theirs: dict[int, float]) -> tuple[float, int] | None:
    """The median of the rounds' own ratios (``mine`` over ``theirs`` in each round both have)
    and how many rounds that is, or None for fewer than two. Each round's pair ran back to back,
    so a change of the machine's speed between rounds (see benchmarks/README.md) moves both sides
    of a pair, where it would move one median and not the other."""
    both = [r for r in mine if theirs.get(r)]
    if len(both) < 2:
        return None
    return statistics.median(mine[r] / theirs[r] for r in both), len(both)


def cases(results: dict[str, Any], scenario: str) -> list[Case]:
    seen: list[Case] = []
    for m in results["measurements"]:
        case = (m["size"], m["partitions"], m.get("batch", 0))
        if m["scenario"] == scenario and case not in seen:
            seen.append(case)
    return seen


def contenders(results: dict[str, Any], scenario: str | None = None) -> list[str]:
    present = {
        m["contender"]
        for m in results["measurements"]
        if scenario is None or m["scenario"] == scenario
    }
    return [c for c in ORDER if c in present]


# --------------------------------------------------------------------------- targets


def _compare_target(
    results: dict[str, Any],
    scenario: str,
    name: str,
    other: str,
    need: dict[int, float] | float,
    text: str,
    tid: str,
    *,
    at_most: bool = False,
    unit: Callable[[float], str] = _fmt_rate,
) -> dict[str, Any]:
    """compiled's ``name`` over ``other``'s, per case: at least ``need`` (``at_most``: at
    most), which may depend on the event size (sizes it does not name are not judged)."""
    per_round = rounds(results, scenario, name)
    values = {k: statistics.median(v.values()) for k, v in per_round.items()}
    needs = need if isinstance(need, dict) else None
    rows = []
    for size, parts, batch in cases(results, scenario):
        key = case_key(size, parts, batch)
        want = needs.get(size) if needs is not None else need
        mine, theirs = values.get((key, "compiled")), values.get((key, other))
        if want is None or mine is None or not theirs:
            continue
        of_medians = mine / theirs
        paired = paired_ratio(per_round.get((key, "compiled"), {}), per_round.get((key, other), {}))
        if paired is None:
            ratio = of_medians
            display = f"{ratio:.2f}x ({unit(mine)} vs {unit(theirs)})"
        else:
            ratio = paired[0]
            display = (
                f"{ratio:.2f}x (median of {paired[1]} rounds' ratios; "
                f"medians {unit(mine)} vs {unit(theirs)}: {of_medians:.2f}x)"
            )
        row = {
            "case": case_label(size, parts, batch),
            "value": round(ratio, 3),
            "ratio_of_medians": round(of_medians, 3),
            "need": want,
            "display": display,
            "pass": ratio <= want if at_most else ratio >= want,
        }
        # Beside the ratio to the C program, the C program's own in the same rounds (when they
        # ran): against itself (c-again), the spread a ratio has here with no difference between
        # the programs at all; with its reports on a second thread (c-threaded, async only), the
        # structure of an event-loop client with no Python and no serialization in it.
        for peer, field, label in (
            ("c-again", "c_vs_c", "C vs itself"),
            ("c-threaded", "c_threaded_vs_c", "C with a reports thread"),
        ):
            beside = (
                paired_ratio(per_round.get((key, peer), {}), per_round.get((key, "c"), {}))
                if other == "c"
                else None
            )
            if beside is not None:
                row[field] = round(beside[0], 3)
                row["display"] = display = f"{display}; {label} {beside[0]:.2f}x"
        rows.append(row)
    sign = "<=" if at_most else ">="
    if needs is None:
        wording = f"{sign} {need}x"
    else:
        wording = ", ".join(f"{sign} {v}x at {size_label(k)}" for k, v in needs.items())
    return _target(tid, text, wording, rows)


def _value_target(
    results: dict[str, Any],
    scenario: str,
    name: str,
    limit: float,
    text: str,
    tid: str,
    unit: Callable[[float], str],
    need: str,
    *,
    below: bool = True,
    inclusive: bool = False,
) -> dict[str, Any]:
    values = table(results, scenario, name)
    rows = []
    for size, parts, batch in cases(results, scenario):
        value = values.get((case_key(size, parts, batch), "compiled"))
        if value is None:
            continue
        ok = (value <= limit if inclusive else value < limit) if below else value >= limit
        rows.append(
            {
                "case": case_label(size, parts, batch),
                "value": round(value, 4),
                "display": unit(value),
                "pass": ok,
            }
        )
    return _target(tid, text, need, rows)


def _latency_target(
    results: dict[str, Any], scenario: str, name: str, below_ms: float, text: str, tid: str
) -> dict[str, Any]:
    return _value_target(
        results, scenario, name, below_ms, text, tid, lambda v: f"{v:.3f} ms", f"< {below_ms:g} ms"
    )


def _target(tid: str, text: str, need: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    status = "N/A" if not rows else "PASS" if all(r["pass"] for r in rows) else "MISS"
    return {"id": tid, "target": text, "need": need, "status": status, "cases": rows}


def _us(v: float) -> str:
    return f"{v:.2f} µs"


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        _compare_target(
            results, "produce", "rate", "confluent", 2.5,
            "compiled produce vs the confluent-kafka typed loop", "produce_vs_confluent",
        ),
        _compare_target(
            results, "produce", "rate", "c", {100: 0.95, 1024: 0.85},
            "compiled produce vs the C program (blocking calls)", "produce_vs_c",
        ),
        _value_target(
            results, "produce", "thread:calling:faults_1k", 1.0,
            "compiled produce: page faults per 1,000 events on the calling thread (steady state)",
            "produce_faults", lambda v: f"{v:.2f}", "<= 1", inclusive=True,
        ),
        _compare_target(
            results, "consume", "rate", "confluent", 1.5,
            "compiled consume vs the confluent-kafka typed loop", "consume_vs_confluent",
        ),
        _compare_target(
            results, "consume", "rate", "c", 0.75,
            "compiled consume vs the C program", "consume_vs_c",
        ),
        _compare_target(
            results, "consume", "thread:consuming:us", "c", {100: 1.35},
            "compiled consume: consuming-thread CPU per event vs the C program's",
            "consume_cpu_vs_c", at_most=True, unit=_us,
        ),
        _compare_target(
            results, "async", "rate", "c", 1.0,
            "compiled pipelined produce_async vs the C program's pipelined calls", "async_vs_c",
        ),
        _latency_target(
            results, "latency", "p50_ms", 1.0, "compiled single-event produce p50", "latency_p50"
        ),
        _latency_target(
            results, "e2e", "p99_ms", 20.0, "compiled end-to-end p99 at 1,000 events/s", "e2e_p99"
        ),
    ]  # fmt: skip


def context(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Ratios that explain the targets (not targets themselves): against the other C variant,
    against the pure backend, and client CPU per event, which the broker's share of the two
    cores does not blur."""
    rows: list[dict[str, Any]] = []

    def ratio(a: dict[tuple[str, str], float], key: str, x: str, y: str) -> float | None:
        vx, vy = a.get((key, x)), a.get((key, y))
        return vx / vy if vx and vy else None

    for scenario in ("produce", "consume", "async"):
        rates = table(results, scenario, "rate")
        cpu = table(results, scenario, "cpu_us")
        mine = table(results, scenario, "thread:measured:us")
        for size, parts, batch in cases(results, scenario):
            key = case_key(size, parts, batch)
            rows.append(
                {
                    "scenario": scenario,
                    "case": case_label(size, parts, batch),
                    "rate compiled/pure": ratio(rates, key, "compiled", "pure"),
                    "CPU per event with metrics / without": ratio(
                        cpu, key, "compiled-metrics", "compiled"
                    ),
                    "CPU per event with OpenTelemetry / without": ratio(
                        cpu, key, "compiled-otel", "compiled"
                    ),
                    "CPU per event confluent/compiled": ratio(cpu, key, "confluent", "compiled"),
                    "CPU per event compiled/c": ratio(cpu, key, "compiled", "c"),
                    "calling/consuming-thread CPU per event compiled/c": ratio(
                        mine, key, "compiled", "c"
                    ),
                }
            )
    return rows


def targets_text(items: list[dict[str, Any]]) -> str:
    lines = ["targets (ratios from this run):"]
    for t in items:
        lines.append(f"  {t['status']:<4}  {t['target']} {t['need']}")
        for row in t["cases"]:
            mark = "ok  " if row["pass"] else "miss"
            lines.append(f"          {mark} {row['case']}: {row['display']}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- markdown


def _cell(value: float | None, fmt: Callable[[float], str]) -> str:
    return "—" if value is None else fmt(value)


def _name(results: dict[str, Any], contender: str) -> str:
    info = results.get("contenders", {}).get(contender, {})
    return str(info.get("name", contender))


def _throughput_section(results: dict[str, Any], scenario: str, what: str) -> list[str]:
    rows = cases(results, scenario)
    if not rows:
        return []
    rates = table(results, scenario, "rate")
    cpu = table(results, scenario, "cpu_us")
    keys = [case_key(*case) for case in rows]
    head = "| contender | " + " | ".join(case_label(*case) for case in rows) + " |"
    sep = "|---|" + "---:|" * len(rows)
    out = [f"## {what}", ""]
    out += [head, sep]
    for c in contenders(results, scenario):
        cells = [_cell(rates.get((k, c)), lambda v: f"{v:,.0f}") for k in keys]
        out.append(f"| {_name(results, c)} | " + " | ".join(cells) + " |")
    out += [
        "",
        "Events per second. Client CPU (all threads of the client process) per event, µs:",
        "",
    ]
    out += [head, sep]
    for c in contenders(results, scenario):
        cells = [_cell(cpu.get((k, c)), lambda v: f"{v:.2f}") for k in keys]
        out.append(f"| {_name(results, c)} | " + " | ".join(cells) + " |")
    out.append("")
    return out


def _threads_section(results: dict[str, Any], scenario: str) -> list[str]:
    """CPU per event of each kind of thread and page faults per 1,000 events, per case and
    contender (medians over rounds); librdkafka's threads by name from the first round."""
    rows = cases(results, scenario)
    names = ["measured", "eventstream", "librdkafka", "other", "total"]
    cpu = {n: table(results, scenario, f"thread:{n}:us") for n in names}
    faults = {n: table(results, scenario, f"thread:{n}:faults_1k") for n in ("measured", "total")}
    if not rows or not any(cpu["measured"].values()):
        return []
    first: dict[tuple[str, str], dict[str, Any]] = {}
    for m in _ok(results["measurements"]):
        if m["scenario"] == scenario and thread_stats(m["result"]):
            first.setdefault((_key(m), m["contender"]), thread_stats(m["result"]))
    who = "consuming" if scenario == "consume" else "calling"
    out = [
        f"CPU per event per thread (µs) and page faults per 1,000 events, {scenario} "
        f"(each thread's CPU time and minor + major faults over the measured section, from "
        f"/proc/self/task in the contender's process; *{who}* is the thread that "
        + ("runs the handler" if who == "consuming" else "makes the calls")
        + "; *eventstream*: its poll thread(s); *librdkafka*: its threads summed, and by name "
        "from the first round):",
        "",
        f"| case | contender | {who} thread µs | eventstream µs | librdkafka µs | other µs "
        f"| all threads µs | {who} thread faults/1k | all faults/1k | librdkafka by thread µs |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for case in rows:
        key = case_key(*case)
        for c in contenders(results, scenario):
            if (key, c) not in cpu["measured"]:
                continue
            stats = first.get((key, c), {})
            by_name = ", ".join(
                f"{n.removeprefix('rdk:')} {v:.2f}"
                for n, v in sorted(stats.get("librdkafka_by_name", {}).items())
            )
            cells = [_cell(cpu[n].get((key, c)), lambda v: f"{v:.2f}") for n in names]
            cells += [_cell(faults[n].get((key, c)), lambda v: f"{v:.2f}") for n in faults]
            out.append(
                f"| {case_label(*case)} | {_name(results, c)} | "
                + " | ".join(cells)
                + f" | {by_name or '—'} |"
            )
    out.append("")
    return out


def _coldstart_section(results: dict[str, Any]) -> list[str]:
    rows = [m for m in _ok(results["measurements"]) if m["scenario"] == "coldstart"]
    if not rows:
        return []
    st = results["settings"].get("coldstart", {})
    variants = st.get("variants", {})
    order = list(variants) or sorted({m["variant"] for m in rows})
    by = {(m["contender"], m["variant"]): m["result"] for m in rows}
    out = [
        "## First produce() of a new producer (cold start)",
        "",
        f"Each cell: fresh processes ({st.get('processes_per_variant', 1)} per cell, median and "
        "max), each makes a producer (eventstream: `new_topic` + `new_producer()`; the "
        "confluent-kafka loop: `Producer(conf)`), waits as the column says, then times its "
        "first call of one 100 B event, waited for; then "
        f"{st.get('later_calls', 0)} more calls for comparison (their median). Milliseconds.",
        "",
        "| contender | "
        + " | ".join(f"{variants.get(v, {}).get('label', v)}: first call ms (max)" for v in order)
        + " | making the producer ms | later calls p50 ms |",
        "|---|" + "---:|" * (len(order) + 2),
    ]
    for c in contenders(results, "coldstart"):
        cells = []
        for v in order:
            r = by.get((c, v))
            cells.append(f"{r['first_ms']:.1f} ({r['first_ms_max']:.1f})" if r else "—")
        made = [by[(c, v)]["make_ms"] for v in order if (c, v) in by]
        later = [by[(c, v)]["later_p50_ms"] for v in order if (c, v) in by]
        cells.append(f"{statistics.median(made):.1f}" if made else "—")
        cells.append(f"{statistics.median(later):.2f}" if later else "—")
        out.append(f"| {_name(results, c)} | " + " | ".join(cells) + " |")
    out.append("")
    return out


def _latency_section(results: dict[str, Any], scenario: str, what: str, extra: bool) -> list[str]:
    if not cases(results, scenario):
        return []
    names = ["p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms"]
    values = {n: table(results, scenario, n) for n in names}
    achieved = table(results, scenario, "achieved_rate")
    calls = table(results, scenario, "calls")
    size, parts, batch = cases(results, scenario)[0]
    key = case_key(size, parts, batch)
    out = [f"## {what} ({case_label(size, parts, batch)})", ""]
    head = "| contender | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms |"
    sep = "|---|---:|---:|---:|---:|---:|"
    if extra:
        head += " produced/s | produce calls |"
        sep += "---:|---:|"
    out += [head, sep]
    for c in contenders(results, scenario):
        cells = [_cell(values[n].get((key, c)), lambda v: f"{v:.3f}") for n in names]
        if extra:
            cells.append(_cell(achieved.get((key, c)), lambda v: f"{v:,.0f}"))
            cells.append(_cell(calls.get((key, c)), lambda v: f"{v:,.0f}"))
        out.append(f"| {_name(results, c)} | " + " | ".join(cells) + " |")
    out.append("")
    return out


def _restart_section(results: dict[str, Any]) -> list[str]:
    rows = [m for m in _ok(results["measurements"]) if m["scenario"] == "restart"]
    failed = [m for m in results["measurements"] if m["scenario"] == "restart" and m.get("error")]
    if not rows and not failed:
        return []
    st = results["settings"].get("restart", {})
    variants = st.get("variants", {})
    out = [
        "## Consumer restart after SIGKILL",
        "",
        f"A consumer process handles a stream paced at {st.get('rate_per_s', 0):,.0f} events/s "
        f"({st.get('partitions')} partitions); after {st.get('events_before_kill', 0):,} events "
        "it is SIGKILLed and the same command, with the same instance id, is started at once. "
        "Measured: seconds from the SIGKILL to the first event the new process handles "
        "(CLOCK_MONOTONIC in both processes), split into starting the process up to "
        "`consume()`, `consume()` to the partitions being assigned (the group's doing), and "
        "assigned to the first event handled. One run per variant.",
        "",
        "| variant | contender | SIGKILL → first event s | start → consume() s | "
        "consume() → assigned s | assigned → first event s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    order = list(variants) or sorted({m["variant"] for m in rows})
    for name in order:
        for m in sorted(
            (m for m in rows if m.get("variant") == name), key=lambda m: ORDER.index(m["contender"])
        ):
            r = m["result"]
            label = variants.get(name, {}).get("label", name)
            out.append(
                f"| {label} | {_name(results, m['contender'])} | {r['restart_s']:.2f} | "
                f"{r['spawn_to_consume_s']:.2f} | {r['consume_to_assigned_s']:.2f} | "
                f"{r['assigned_to_first_event_s']:.2f} |"
            )
    out.append("")
    return out


def _kv(d: dict[str, Any]) -> str:
    return ", ".join(f"`{k}={v}`" for k, v in d.items() if not isinstance(v, dict)) + "".join(
        f"; {k}: " + ", ".join(f"`{a}={b}`" for a, b in v.items())
        for k, v in d.items()
        if isinstance(v, dict)
    )


def _foreign_load_line(results: dict[str, Any]) -> str:
    by_scenario: dict[str, list[float]] = {}
    for m in results["measurements"]:
        other = (m.get("load") or {}).get("other_cpu_pct")
        if other is not None:
            by_scenario.setdefault(m["scenario"], []).append(float(other))
    if not by_scenario:
        return "- **Foreign load**: not measured (external broker)"
    parts = [
        f"{scenario} median {statistics.median(v):.0f}% (max {max(v):.0f}%)"
        for scenario, v in by_scenario.items()
    ]
    return (
        "- **Foreign load** (share of the machine used by processes other than the client and "
        "the broker during each measurement; see the end): " + ", ".join(parts)
    )


def markdown(results: dict[str, Any]) -> str:
    mach, sw, broker, st = (
        results["machine"], results["software"], results["broker"], results["settings"]
    )  # fmt: skip
    out = [
        "# eventstream benchmarks",
        "",
        f"`{results['command'].strip()}` — {results['started_utc']}, {results['duration_s']:.0f} s"
        + (" (**quick**: small N, not for judging speed)" if results.get("quick") else ""),
        "",
        f"- **Machine**: {mach['cpu_model']}, {mach['cores']} cores"
        f" ({mach.get('cores_usable')} usable), {mach['memory_gib']} GiB, {mach['os']}"
        + (f", {mach['virtualization']}" if mach.get("virtualization") else "")
        + f"; {mach['python']}",
        f"- **Broker**: Apache Kafka {broker.get('kafka')} — {broker.get('kind')}"
        + (
            f", {broker['nodes']} node(s), heap {broker['heap']}, {broker.get('java')}, "
            f"JVM flags `{' '.join(broker.get('jvm_opts', []))}` (a later flag wins)"
            + (f", data on {broker['data']}" if broker.get("data") else "")
            + "".join(f", `{k}={v}`" for k, v in broker.get("broker_config", {}).items())
            if "nodes" in broker
            else ""
        )
        + f", on the same machine; replication factor {st['replication_factor']}",
        "- **Software**: " + ", ".join(f"{k} {v}" for k, v in sw.items() if v),
        f"- **Workload**: protobuf events of 100 B and 1 KB (encoded), {st['compression']}, "
        f"{st['keys']}; produce in blocking calls of "
        + " and ".join(
            f"{b:,}" for b in st.get("produce_events_per_call", [st["batch_events_per_call"]])
        )
        + " events; "
        "every contender in a fresh process, on a fresh topic, one after the other; "
        f"throughput figures of C, eventstream compiled and the confluent-kafka loop are medians "
        f"of {st.get('repeat', 1)} rounds, the others ran once",
        _foreign_load_line(results),
        "",
        "## Targets",
        "",
        "| target | need | case | measured | verdict |",
        "|---|---|---|---|---|",
    ]
    for t in results["targets"]:
        if not t["cases"]:
            out.append(f"| {t['target']} | {t['need']} | — | not measured | N/A |")
        for row in t["cases"]:
            verdict = "PASS" if row["pass"] else "**MISS**"
            out.append(
                f"| {t['target']} | {t['need']} | {row['case']} | {row['display']} | {verdict} |"
            )
    out.append("")
    ctx = context(results)
    if ctx:
        names = [k for k in ctx[0] if k not in ("scenario", "case")]
        out += [
            "Context (not targets): throughput ratios against the pure backend, and the client "
            "CPU spent per event (all threads of the client process), "
            "which the broker's share of the machine does not blur.",
            "",
            "| scenario | case | " + " | ".join(names) + " |",
            "|---|---|" + "---:|" * len(names),
        ]
        for row in ctx:
            cells = [_cell(row[n], lambda v: f"{v:.2f}x") for n in names]
            out.append(f"| {row['scenario']} | {row['case']} | " + " | ".join(cells) + " |")
        out.append("")
    out += _throughput_section(results, "produce", "Produce throughput (blocking calls, acks=all)")
    out += _threads_section(results, "produce")
    out += _throughput_section(
        results, "consume", "Consume throughput (topic pre-filled; first to last event handled)"
    )
    out += _threads_section(results, "consume")
    in_flight = st.get("async", {}).get("calls_in_flight")
    out += _throughput_section(
        results, "async",
        f"Pipelined produce_async throughput ({in_flight} calls in flight on one event loop; "
        "C: the same pipelining over rd_kafka_flush)",
    )  # fmt: skip
    out += _threads_section(results, "async")
    out += _coldstart_section(results)
    out += _latency_section(
        results, "latency",
        f"Single-event produce latency ({st['latency_calls']:,} sequential calls)", extra=False,
    )  # fmt: skip
    out += _latency_section(
        results, "e2e",
        f"End-to-end latency, produce in one process to handler in another, at "
        f"{st['e2e_rate_per_s']:,.0f} events/s ({st['e2e_events'] - st['e2e_warmup_events']:,} "
        "events measured)",
        extra=True,
    )  # fmt: skip
    out += _restart_section(results)
    errors = [m for m in results["measurements"] if m.get("error")]
    if errors:
        out += ["## Failed measurements", ""]
        for m in errors:
            first = m["error"].splitlines()[0]
            variant = f" ({m['variant']})" if m.get("variant") else ""
            out.append(
                f"- {m['scenario']} {_label_of(m)}{variant}, "
                f"{_name(results, m['contender'])}: `{first}`"
            )
        out.append("")
    out += ["## Settings of each contender", ""]
    for info in results["contenders"].values():
        out.append(f"- **{info['name']}** — {info.get('client', '')}")
        out.append(f"  - produce: {info.get('produce call', '')}; {_kv(info.get('producer', {}))}")
        out.append(f"  - consume: {info.get('consume', '')}; {_kv(info.get('consumer', {}))}")
        for what in ("async call", "cold start"):
            if info.get(what):
                out.append(f"  - {what}: {info[what]}")
    out += [
        "",
        "## Load around each measurement",
        "",
        "The broker shares the machine with the clients. `busy` is the share of all cores in use "
        "during the measurement (setup included), `broker` the broker JVM's CPU seconds, "
        "`other` the share used by processes that were neither the client nor the broker "
        "(`before`: just before it started; a measurement waits up to 10 s, 90 s per run, for "
        "that to drop below 20%).",
        "",
        "<details><summary>per measurement</summary>",
        "",
        "| scenario | case | contender | wall s | busy % | client CPU s | broker CPU s | other % "
        "| other % before | waited s |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in results["measurements"]:
        ld = m.get("load") or {}
        out.append(
            f"| {m['scenario']} | {_label_of(m)} | {m['contender']} | "
            f"{ld.get('wall_s', '—')} | {ld.get('machine_busy_pct', '—')} | "
            f"{ld.get('client_cpu_s', '—')} | {ld.get('broker_cpu_s', '—')} | "
            f"{ld.get('other_cpu_pct', '—')} | {ld.get('other_cpu_pct_before', '—')} | "
            f"{ld.get('waited_for_quiet_s', '—')} |"
        )
    out += ["", "</details>", ""]
    if results.get("notes"):
        out += ["## Notes", ""] + [f"- {n}" for n in results["notes"]] + [""]
    out += [
        "## Method",
        "",
        "- Produce: each contender publishes N events in blocking calls of a fixed batch size "
        "and waits for every acknowledgement of a call before the next (eventstream: "
        "`producer.produce(*batch)`; the peers: send the batch, then flush/await it); a "
        "warm-up of at least two calls of the case's size is not timed (so that buffers have "
        "grown to it before the measured calls). The same pre-built events are reused by every "
        "call, but every call serializes them again (the C program sends a pre-serialized "
        "payload). Every event carries the 5 CloudEvents headers with a unique `ce_id`.",
        "- Consume: the topic is pre-filled with N events (by the C program), and the time runs "
        "from the first to the last event handled by a no-op (counting) handler.",
        "- Single-event latency: sequential `produce` of one event, each waited for.",
        "- End-to-end: a consumer process of the contender is started and assigned first; a "
        "producer process then publishes at a fixed rate (each call sends what is due, normally "
        "one event, and waits for its acknowledgement); the event carries CLOCK_MONOTONIC at "
        "the produce call, the handler subtracts it from the time it runs. The first events are "
        "a warm-up and are not counted.",
        "- Pipelined produce_async: the same calls as produce, but up to "
        f"{st.get('async', {}).get('calls_in_flight', '?')} of them awaiting their "
        "acknowledgements at a time on one asyncio event loop (a new call starts when the "
        "oldest completes); the C program pipelines the same way in one thread.",
        "- Cold start: see its section.",
        "- Per thread: each contender's process reads /proc/self/task/<tid>/{stat,schedstat,comm} "
        "for all its threads right before and after the measured section (the C program in C); "
        "CPU is schedstat's time on a CPU, faults are minflt + majflt; the measured thread's "
        "own counters are read last before and first after the section.",
        "- Consumer restart: eventstream only (the peers leave group membership to their "
        "users); see its section for the method.",
        "- Ratios in the targets are from this run only; never compare across runs. Where both "
        "contenders ran several rounds, a target's ratio is the median of the rounds' own ratios "
        "(each round's pair ran back to back), and the ratio of the medians is shown beside it: "
        "this machine's speed changes between rounds, for every client alike (see "
        "benchmarks/README.md).",
        "",
    ]
    return "\n".join(out)


# --------------------------------------------------------------------------- chart


def chart(results: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return False
    shown = ("produce", "consume", "async", "coldstart", "latency", "e2e")
    if not any(cases(results, s) for s in shown):
        return False  # e.g. --only restart: nothing this chart shows
    names = contenders(results)
    fig, axes = plt.subplots(3, 2, figsize=(14, 13.5))
    panels = [
        (axes[0][0], "produce", "rate", "Produce throughput (events/s)"),
        (axes[0][1], "consume", "rate", "Consume throughput (events/s)"),
        (axes[1][0], "async", "rate", "Pipelined produce_async throughput (events/s)"),
    ]
    for ax, scenario, name, title in panels:
        rows = cases(results, scenario)
        names = contenders(results, scenario)
        values = table(results, scenario, name)
        width = 0.8 / max(1, len(names))
        for i, c in enumerate(names):
            xs = [j + i * width for j in range(len(rows))]
            ys = [values.get((case_key(*case), c), 0.0) for case in rows]
            ax.bar(xs, ys, width, label=_name(results, c), color=COLORS.get(c))
        ax.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(rows))])
        labels = [case_label(*case).replace(", calls", "\ncalls") for case in rows]
        ax.set_xticklabels(labels, fontsize=7)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
        if names:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "not measured", ha="center", transform=ax.transAxes)
    ax = axes[1][1]
    cold = {(m["contender"], m["variant"]): m["result"] for m in _ok(results["measurements"])
            if m["scenario"] == "coldstart"}  # fmt: skip
    variants = list(results["settings"].get("coldstart", {}).get("variants", {}))
    names = contenders(results, "coldstart")
    for i, v in enumerate(variants):
        xs = [j + (i - (len(variants) - 1) / 2) * 0.4 for j in range(len(names))]
        ys = [cold.get((c, v), {}).get("first_ms") or 0.0 for c in names]
        ax.bar(xs, ys, 0.4, color=[COLORS.get(c) for c in names], alpha=1.0 - 0.5 * i)
    if names:
        ax.set_xticks(list(range(len(names))))
        ax.set_xticklabels([_name(results, c) for c in names], fontsize=7)
        ax.set_yscale("log")  # a few ms beside half a second
        ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    else:
        ax.text(0.5, 0.5, "not measured", ha="center", transform=ax.transAxes)
    ax.set_title(
        "First produce() of a new producer (ms): solid made just before, light 1 s before",
        fontsize=10,
    )
    ax.grid(axis="y", alpha=0.3)
    latency_panels = [
        (axes[2][0], "latency", "Single-event produce latency (ms)"),
        (axes[2][1], "e2e", "End-to-end latency at 1,000 events/s (ms)"),
    ]
    for ax, scenario, title in latency_panels:
        p50, p99 = table(results, scenario, "p50_ms"), table(results, scenario, "p99_ms")
        rows = cases(results, scenario)
        names = contenders(results, scenario)
        if rows:
            key = case_key(*rows[0])
            xs = range(len(names))
            ax.bar([x - 0.2 for x in xs], [p50.get((key, c), 0.0) for c in names], 0.4,
                   label="p50", color=[COLORS.get(c) for c in names])  # fmt: skip
            ax.bar([x + 0.2 for x in xs], [p99.get((key, c), 0.0) for c in names], 0.4,
                   label="p99", color=[COLORS.get(c) for c in names], alpha=0.45)  # fmt: skip
            ax.set_xticks(list(xs))
            ax.set_xticklabels([_name(results, c) for c in names], fontsize=7, rotation=15)
            ax.set_yscale("log")
            plain = matplotlib.ticker.FormatStrFormatter("%g")
            ax.yaxis.set_major_formatter(plain)
            ax.yaxis.set_minor_formatter(plain)
            ax.tick_params(axis="y", which="minor", labelsize=7)
        ax.set_title(title + " — solid p50, light p99")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(
        f"eventstream benchmarks — {results['started_utc']}"
        + (" (quick)" if results.get("quick") else ""),
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True
