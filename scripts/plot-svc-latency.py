#!/usr/bin/env python3
"""Plot connection latency through a ClusterIP against the number of services.

Reads the `BENCH svc_latency ...` lines printed by
`cargo bench -p cnikit-benches --bench svc_latency` and writes a PNG:

    scripts/plot-svc-latency.py docs/data/ebpf-dataplane-svc-latency.txt \
        docs/img/ebpf-dataplane-svc-latency.png

Needs matplotlib (scripts/pip-requirements.txt).
"""
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def parse(path):
    rows, summary = [], {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.startswith("BENCH svc_latency "):
                continue
            fields = dict(kv.split("=", 1) for kv in line.split()[2:])
            if "services" in fields:
                rows.append({k: float(v) for k, v in fields.items()})
            else:
                summary = fields
    rows.sort(key=lambda r: r["services"])
    return rows, summary


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    rows, summary = parse(sys.argv[1])
    if not rows:
        sys.exit(f"no `BENCH svc_latency services=...` lines in {sys.argv[1]}")
    x = [r["services"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for name, color in (("ebpf", "tab:blue"), ("iptables", "tab:red")):
        label = "cnikit eBPF (tc)" if name == "ebpf" else "kube-proxy iptables (nft)"
        ax.plot(x, [r[f"{name}_p50_us"] for r in rows], "o-", color=color, label=f"{label}, p50")
        ax.plot(x, [r[f"{name}_p99_us"] for r in rows], "o--", color=color, alpha=0.6,
                label=f"{label}, p99")
    if "floor_p50_us" in summary:
        ax.axhline(float(summary["floor_p50_us"]), color="gray", linestyle=":",
                   label="no service (direct to pod), p50")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(x)
    ax.set_xticklabels([f"{int(v):,}" for v in x])
    ax.set_xlabel("ClusterIP services installed (10 backends each)")
    ax.set_ylabel("connect + 1-byte request/response (µs)")
    ax.set_title("New connection through a VIP vs number of services")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(sys.argv[2])
    print(f"wrote {sys.argv[2]}")


if __name__ == "__main__":
    main()
