"""The benchmark's closing line and its chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def bench_line(results: dict[str, Any]) -> str:
    """``bench: deliveries_per_s=N e2e_per_s=N raw_per_s=N ratio=R p50_ms=N p99_ms=N`` (0 for
    what did not run), ratio = deliveries_per_s / raw_per_s."""
    delivered = float(results.get("throughput", {}).get("deliveries_per_s") or 0.0)
    e2e = float(results.get("e2e", {}).get("e2e_per_s") or 0.0)
    raw = float(results.get("raw", {}).get("raw_per_s") or 0.0)
    latency = results.get("latency", {})
    ratio = delivered / raw if raw else 0.0
    return (
        f"bench: deliveries_per_s={round(delivered)} e2e_per_s={round(e2e)} "
        f"raw_per_s={round(raw)} ratio={ratio:.2f} "
        f"p50_ms={round(float(latency.get('p50_ms') or 0))} "
        f"p99_ms={round(float(latency.get('p99_ms') or 0))}"
    )


CPU_LINE_FIELDS = (
    "worker_ms",
    "scheduler_ms",
    "api_ms",
    "postgres_ms",
    "rabbitmq_ms",
    "receiver_ms",
)


def cpu_source(results: dict[str, Any]) -> str | None:
    """The scenario the CPU line reads: the end-to-end one (every component works in it), or
    the throughput one when it did not run."""
    for name in ("e2e", "throughput"):
        if results.get(name, {}).get("cpu_ms_per_delivery"):
            return name
    return None


def cpu_line(results: dict[str, Any]) -> str:
    """``bench-cpu: from=S worker_ms=… scheduler_ms=… api_ms=… postgres_ms=… rabbitmq_ms=…
    receiver_ms=… raw_ms_per_request=…``: CPU milliseconds per delivery of each component in
    scenario S (``e2e``, else ``throughput``; ``none`` and zeros when neither ran), and the
    raw sender's CPU milliseconds per request."""
    source = cpu_source(results)
    per_delivery = results[source]["cpu_ms_per_delivery"] if source else {}
    raw = float(results.get("raw", {}).get("cpu_ms_per_request") or 0.0)
    fields = " ".join(f"{n}={float(per_delivery.get(n) or 0):.3f}" for n in CPU_LINE_FIELDS)
    return f"bench-cpu: from={source or 'none'} {fields} raw_ms_per_request={raw:.3f}"


AUTH_VARIANTS = ("hmac", "oauth", "https", "mtls")


def auth_line(results: dict[str, Any]) -> str:
    """``bench-auth: hmac_per_s=N hmac_ms=N oauth_per_s=N oauth_ms=N oauth_tokens=N
    https_per_s=N https_ms=N mtls_per_s=N mtls_ms=N``: deliveries per second and the workers'
    CPU milliseconds per delivery of each variant of the auth scenario, and the OAuth tokens
    its token server issued (0 for what did not run)."""
    auth = results.get("auth", {})
    fields = []
    for variant in AUTH_VARIANTS:
        fields.append(f"{variant}_per_s={round(float(auth.get(f'{variant}_per_s') or 0))}")
        fields.append(f"{variant}_ms={float(auth.get(f'{variant}_ms') or 0):.3f}")
        if variant == "oauth":
            fields.append(f"oauth_tokens={int(auth.get('oauth_tokens') or 0)}")
    return "bench-auth: " + " ".join(fields)


def write_chart(results: dict[str, Any], path: Path) -> None:
    """Four panels: delivery rates, latency percentiles, fan-out and ingest, memory."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    fig.suptitle(f"make bench, {results.get('started', '')} (2 cores, everything co-located)")

    rates = {
        "raw sender\n(urllib3, 8 threads)": results.get("raw", {}).get("raw_per_s", 0),
        "platform\n(stored, released)": results.get("throughput", {}).get("deliveries_per_s", 0),
        "platform end to end\n(HTTP API)": results.get("e2e", {}).get("e2e_per_s", 0),
        "healthy, beside\na 10 s timeout": results.get("isolation", {}).get("deliveries_per_s", 0),
        "with 100k\nretries waiting": results.get("backlog", {})
        .get("throughput_with_backlog", {})
        .get("deliveries_per_s", 0),
    }
    ax = axes[0][0]
    colours = ["grey", "C0", "C3", "C1", "C2"]
    ax.bar(list(rates), [float(v or 0) for v in rates.values()], color=colours)
    ax.axhline(3000, color="red", linestyle="--", linewidth=1, label="target 3,000/s")
    ax.set_title("deliveries per second (50 endpoints)")
    ax.legend()

    latency = results.get("latency", {})
    ax = axes[0][1]
    names = ["p50", "p95", "p99"]
    ax.bar(names, [float(latency.get(f"{n}_ms", 0) or 0) for n in names], color="C0")
    ax.plot(names, [20, 60, 60], "r_", markersize=40, markeredgewidth=2, label="goal (p99 60)")
    ax.set_yscale("log")
    rate = latency.get("target_deliveries_per_s", 1000)
    ax.set_title(f"publish (HTTP API) to receipt at {rate} deliveries/s (ms)")
    ax.legend()

    ingest = results.get("ingest", {})
    fanout = results.get("fanout", {})
    ax = axes[1][0]
    labels = ["HTTP ingestion", "people producer"]
    ax.bar(
        labels,
        [
            float(ingest.get("http", {}).get("events_per_s", 0) or 0),
            float(ingest.get("producer", {}).get("events_per_s", 0) or 0),
        ],
        color="C4",
    )
    ax.axhline(2000, color="red", linestyle="--", linewidth=1, label="target 2,000/s")
    seconds = fanout.get("seconds_to_last_receipt")
    endpoints = fanout.get("endpoints", 0)
    ax.set_title(f"events accepted per second; fan-out to {endpoints}: {seconds} s")
    ax.legend()

    backlog = results.get("backlog", {})
    ax = axes[1][1]
    before = backlog.get("memory_before", {})
    after = backlog.get("memory_after", {})
    x = [0, 1]
    ax.bar(
        [i - 0.2 for i in x],
        [before.get("scheduler_mib", 0), before.get("workers_mib", 0)],
        width=0.4,
        label="before",
    )
    ax.bar(
        [i + 0.2 for i in x],
        [after.get("scheduler_mib", 0), after.get("workers_mib", 0)],
        width=0.4,
        label="after",
    )
    ax.set_xticks(x, ["scheduler", "workers (all processes)"])
    pending = backlog.get("pending_retries", 0)
    ax.set_title(f"resident memory (MiB), {pending} retries waiting")
    ax.legend()

    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
