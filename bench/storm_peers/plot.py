"""Plots for bench/storm: token-endpoint calls and 401s per second, one panel per row.
usage: plot.py bench/out/storm.json OUTDIR"""
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot(data, field, title, ylabel, path, note):
    rows = [r for r in data["rows"] if r["series"]]
    cols = 4
    nrows = (len(rows) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(12, 2.6 * nrows + 0.8), sharex=True,
                             sharey=True, dpi=80, squeeze=False)
    top = max([p[field] for r in rows for p in r["series"]] + [1])
    for ax, r in zip(axes.flat, rows):
        xs = [p["t"] - 1 for p in r["series"]]  # the count over (t-1, t]
        ys = [p[field] for p in r["series"]]
        color = "#1a7f37" if r["authkeeper"] else "#cf222e"
        ax.bar(xs, ys, width=0.85, align="edge", color=color)
        ax.set_yscale("symlog", linthresh=1)
        ax.set_ylim(0, top * 1.5)
        total = sum(ys)
        verdict = "grant alive" if r["grant_survived"] else "GRANT REVOKED"
        ax.set_title(f"{r['label']}\n{total:,} in {data['duration']:g} s · {verdict}",
                     fontsize=9, color=color)
        ax.grid(axis="y", alpha=0.3)
        ax.tick_params(labelsize=8)
    for ax in axes.flat[len(rows):]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("seconds", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel(ylabel, fontsize=8)
    fig.suptitle(f"{title} — P={data['processes']} processes × W={data['workers']} workers, "
                 f"T={data['ttl']:g} s tokens, rotation + reuse revocation (green: authkeeper)",
                 fontsize=10)
    fig.text(0.5, 0.005, note, ha="center", va="bottom", fontsize=8, color="#555555")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=80)
    plt.close(fig)
    print(f"wrote {path} ({os.path.getsize(path) // 1024} KB)", file=sys.stderr)


def main():
    data = json.load(open(sys.argv[1]))
    out = sys.argv[2]
    plot(data, "refresh_calls", "Token-endpoint calls per second", "calls/s (symlog)",
         os.path.join(out, "storm-refresh-calls.png"),
         "Counted by the mock IdP (GET /admin/stats every second); failed refreshes (invalid_grant "
         "after the revocation) count too. authkeeper in-process (demo) has its IdP in-process: "
         "totals in the table.")
    plot(data, "api_401", "401s at the protected API per second", "401s/s (symlog)",
         os.path.join(out, "storm-401s.png"),
         "401s answered by the mock API. Once the grant is revoked, the authlib and "
         "requests-oauthlib clients fail at refresh (invalid_grant) before calling the API, so "
         "their requests fail without a 401.")


if __name__ == "__main__":
    main()
