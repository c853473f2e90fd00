"""The bench's summary (ratios against the targets), its Markdown tables and its plot."""

from __future__ import annotations

from pathlib import Path


def best(rows: list[dict]) -> dict | None:
    """The row with the most images/s (None for none)."""
    return max(rows, key=lambda r: r["images_per_s"]) if rows else None


def summary(res: dict) -> dict:
    """Ratios the targets are stated in, and the service's CPU per image at 4 clients, per
    variant, precision and photo size."""
    out: dict = {}
    engine, service, naive = res.get("engine", []), res.get("service", []), res.get("naive", {})
    archs = dict.fromkeys(r.get("arch", "bn") for r in [*engine, *service])
    for arch in archs:
        for precision in ("fp32", "int8"):
            out.update(_summary(arch, precision, engine, service, naive))
    for t in res.get("turns", []):  # bench.turns: raw and service one after the other
        s = out.setdefault(f"{t['arch']} {t['precision']} {t['size']}", {})
        s.update({"service_vs_raw_in_turns": t["ratio_median"],
                  "service_vs_raw_in_turns_range": [t["ratio_min"], t["ratio_max"]]})  # fmt: skip
        if flight := t.get("in_flight"):  # the raw engine with the clients' images in flight
            s.update({"service_vs_raw_same_in_flight_in_turns": flight["ratio_median"],
                      "service_vs_raw_same_in_flight_in_turns_range": [flight["ratio_min"],
                                                                       flight["ratio_max"]],
                      "raw_batch_same_in_flight": flight["batch"]})  # fmt: skip
    return out


def calls(r: dict) -> str:
    """How a row ran the session: concurrent calls x intra-op threads each ("1 x 2")."""
    return f"{r.get('instances', 1)} x {r.get('threads', '-')}"


def int8_speedups(engine: list[dict]) -> dict:
    """Raw engine images/s of int8 over fp32, per variant: at each batch size both were
    measured at (each precision in its fastest configuration of calls x threads there),
    and best batch over best batch."""
    out: dict = {}
    for arch in dict.fromkeys(r.get("arch", "bn") for r in engine):
        rate: dict = {}
        for r in engine:
            if r.get("arch", "bn") == arch:
                key = (r["precision"], r["batch"])
                rate[key] = max(rate.get(key, 0.0), r["images_per_s"])
        batches = sorted(b for p, b in rate if p == "int8" and ("fp32", b) in rate)
        if not batches:
            continue
        best = {p: max(v for (q, _), v in rate.items() if q == p) for p in ("fp32", "int8")}
        out[arch] = {"by_batch": {b: rate["int8", b] / rate["fp32", b] for b in batches},
                     "best_vs_best": best["int8"] / best["fp32"]}  # fmt: skip
    return out


def _summary(arch: str, precision: str, engine: list, service: list, naive: dict) -> dict:
    out: dict = {}
    mine = {"arch": arch, "precision": precision}
    engine = [r for r in engine if r.get("arch", "bn") == arch and r["precision"] == precision]
    service = [r for r in service if r.get("arch", "bn") == arch and r["precision"] == precision]
    raw = best(engine)  # the fastest batch and configuration of calls x threads
    b1 = min((r for r in engine if r["batch"] == 1), key=lambda r: r["call_ms_p50"], default=None)
    for size in ("500x375", "4000x3000"):
        s = {}
        loaded = [r for r in service if r["size"] == size and r["clients"] >= 4]
        idles = [r for r in service if r["size"] == size and r["clients"] == 1]
        idle = min(idles, key=lambda r: r["p50_ms"]) if idles else None
        fours = [r for r in service if r["size"] == size and r["clients"] == 4]
        four = best(fours)  # the served configuration that served most
        top = best(loaded)
        if four:
            s["calls_at_4_clients"] = calls(four)
        if raw and top:
            s["service_vs_raw_throughput"] = top["images_per_s"] / raw["images_per_s"]
        if raw and four:
            s["service_vs_raw_at_4_clients"] = four["images_per_s"] / raw["images_per_s"]
        if b1 and idle:
            s["idle_p50_vs_raw_call"] = idle["p50_ms"] / b1["call_ms_p50"]
        same = naive.get(size) if naive.get(size, {}).get("arch", "bn") == arch else None
        if top and same:
            s["service_vs_naive"] = top["images_per_s"] / same["images_per_s"]
        if raw and same:
            s["raw_vs_naive"] = raw["images_per_s"] / same["images_per_s"]
        if four and "overhead_cpu_ms_per_image" in four:
            s["overhead_cpu_ms_per_image_at_4_clients"] = four["overhead_cpu_ms_per_image"]
            s["ceiling_fraction_at_4_clients"] = four["ceiling_fraction"]
            cheapest = min((r["cpu_ms_per_image"] for r in engine if "cpu_ms_per_image" in r),
                           default=None)  # fmt: skip
            if cheapest:
                # what service / raw would be where both are CPU-bound on the same cores
                s["raw_vs_service_cpu_at_4_clients"] = cheapest / four["process_cpu_ms_per_image"]
        if s:
            out[f"{mine['arch']} {precision} {size}"] = s
    return out


def _f(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def table(res: dict) -> str:
    """Markdown tables of everything measured."""
    lines: list[str] = []
    if res.get("engine"):
        lines += [
            "Raw engine (onnxruntime, ten crops in the graph, 256x256 uint8 input):",
            "",
            "| arch | precision | calls x threads | batch | images/s | ms per call (p50) | "
            "CPU-ms per image |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        lines += [f"| {r.get('arch', 'bn')} | {r['precision']} | {calls(r)} | {r['batch']} | "
                  f"{_f(r['images_per_s'])} | {_f(r['call_ms_p50'])} | "
                  f"{_f(r.get('cpu_ms_per_image'))} |" for r in res["engine"]]  # fmt: skip
        lines.append("")
        for arch, x in int8_speedups(res["engine"]).items():
            at = ", ".join(f"batch {b} {v:.2f}x" for b, v in x["by_batch"].items())
            lines.append(f"{arch}: int8 vs fp32 images/s: {at}; best batch vs best batch "
                         f"{x['best_vs_best']:.2f}x")  # fmt: skip
        lines.append("")
    if res.get("service"):
        lines += ["Service, `POST /predict`, one JPEG per request; server CPU-ms per image: "
                  "the process, its onnxruntime session, the rest (the service's own work); "
                  "ceiling = cores / (decode + session CPU-s per image):", "",
                  "| arch | precision | calls x threads | photo | clients | images/s | p50 ms | "
                  "p95 ms | p99 ms | errors | images per engine call | process CPU-ms | "
                  "session CPU-ms | service CPU-ms | ceiling img/s | of ceiling | "
                  "load generator CPU-ms per request |",
                  "|" + " --- |" * 17]  # fmt: skip
        lines += [f"| {r.get('arch', 'bn')} | {r['precision']} | {calls(r)} | {r['size']} | "
                  f"{r['clients']} | "
                  f"{_f(r['images_per_s'])} | {_f(r['p50_ms'])} | {_f(r['p95_ms'])} | "
                  f"{_f(r['p99_ms'])} | {r['errors']} | {_f(r.get('batch_mean'), 2)} | "
                  f"{_f(r.get('process_cpu_ms_per_image'))} | "
                  f"{_f(r.get('engine_cpu_ms_per_image'))} | "
                  f"{_f(r.get('overhead_cpu_ms_per_image'))} | "
                  f"{_f(r.get('ceiling_images_per_s'))} | "
                  f"{_pct(r.get('ceiling_fraction'))} | "
                  f"{_f(r.get('client_cpu_ms_per_request'), 2)} |"
                  for r in res["service"]]  # fmt: skip
        lines.append("")
    if res.get("turns"):
        lines += ["Service / raw in turns (bench/turns.py; raw, service, service, raw, ...; "
                  "images/s of each turn's slices, and their ratio; \"in flight\": the raw "
                  "engine in the served configuration with as many images in flight as the "
                  "clients, a third part of the same turns where the fastest batch keeps another "
                  "number):",
                  "",
                  "| arch | precision | raw calls x threads, batch | served calls x threads | "
                  "clients | raw images/s | service images/s | ratio per turn | "
                  "**median ratio** | in flight: batch, raw images/s | ratio per turn | "
                  "**median ratio** |",
                  "|" + " --- |" * 12]  # fmt: skip
        for t in res["turns"]:
            raw, served, flight_rates = (
                " / ".join(_f(s["images_per_s"]) for s in
                           sorted((s for s in t["slices"] if s["part"] == part),
                                  key=lambda s: s["turn"]))
                for part in ("raw", "service", "in_flight"))  # fmt: skip
            flight = t.get("in_flight")
            if flight is None:
                flight_cells = "- | - | -"
            else:
                flight_cells = (f"{flight['batch']}, "
                                f"{flight_rates if flight['measured'] else 'the raw part'} | "
                                + " / ".join(f"{r:.2f}" for r in flight["ratios"])
                                + f" | **{flight['ratio_median']:.2f}x**")  # fmt: skip
            lines.append(f"| {t['arch']} | {t['precision']} | {calls(t['raw'])}, "
                         f"{t['raw']['batch']} | {calls(t['served'])} | {t['clients']} | "
                         f"{raw} | {served} | " + " / ".join(f"{r:.2f}" for r in t["ratios"])
                         + f" | **{t['ratio_median']:.2f}x** | {flight_cells} |")  # fmt: skip
        lines.append("")
    if res.get("naive"):
        lines += [
            "Naive baseline (PIL + torchvision Resize/TenCrop + eager PyTorch fp32, per request):",
            "",
            "| photo | images/s | p50 ms |",
            "| --- | --- | --- |",
        ]
        lines += [f"| {s} | {_f(r['images_per_s'], 2)} | {_f(r['p50_ms'])} |"
                  for s, r in res["naive"].items()]  # fmt: skip
        lines.append("")
    if res.get("decode"):
        lines += [
            "Decode (JPEG draft mode) + resize to 256x256:",
            "",
            "| photo | p50 ms | p95 ms | CPU-ms (mean) |",
            "| --- | --- | --- | --- |",
        ]
        lines += [f"| {s} | {_f(r['p50_ms'])} | {_f(r['p95_ms'])} | {_f(r.get('cpu_ms_mean'))} |"
                  for s, r in res["decode"].items()]  # fmt: skip
        lines.append("")
    if res.get("summary"):
        lines += ["Ratios (and the service's own CPU per image at 4 clients):", "",
                  "| arch, precision, photo | service / raw engine best (>= 4 clients) | "
                  "at 4 clients | at 4 clients, in turns (median) | in turns, raw with 4 in "
                  "flight (median) | idle p50 / one raw call | "
                  "service / naive | raw / naive | "
                  "CPU-bound service / raw (raw CPU-ms / service process CPU-ms, 4 clients) | "
                  "service CPU-ms at 4 clients | of ceiling at 4 clients | calls x threads "
                  "at 4 clients |",
                  "|" + " --- |" * 12]  # fmt: skip
        for key, s in res["summary"].items():
            keys = ("service_vs_raw_throughput", "service_vs_raw_at_4_clients",
                    "service_vs_raw_in_turns", "service_vs_raw_same_in_flight_in_turns",
                    "idle_p50_vs_raw_call", "service_vs_naive",
                    "raw_vs_naive", "raw_vs_service_cpu_at_4_clients")  # fmt: skip
            cells = [s.get(k) for k in keys]
            over = s.get("overhead_cpu_ms_per_image_at_4_clients")
            frac = s.get("ceiling_fraction_at_4_clients")
            lines.append(f"| {key} | " + " | ".join("-" if c is None else f"{c:.2f}x"
                                                    for c in cells)
                         + f" | {_f(over)} | {_pct(frac)} | "
                         f"{s.get('calls_at_4_clients', '-')} |")  # fmt: skip
        lines.append("")
    if res.get("similar"):
        lines += ["Similarity search, `GET /gallery/{id}/similar?k=10` (int8 model):", "",
                  "| backend | gallery | index | p50 ms | p95 ms | recall@10 | server RSS MB | "
                  "ready after s: first start | stop s | restart | recall@10 after restart | "
                  "`POST /similar` p50 ms | `POST /gallery` items/s |",
                  "|" + " --- |" * 13]  # fmt: skip
        for r in res["similar"]:
            lines.append(
                f"| {r.get('backend', 'folder')} | {r['size']:,} | {r.get('index', '-')}"
                f" | {_f(r['p50_ms'])} | {_f(r['p95_ms'])}"
                f" | {r['recall_at_10']:.3f} | {_f(r['server_rss_mb'], 0)} | {_f(r['ready_s'], 1)}"
                f" | {_f(r.get('stop_s'), 1)} | {_f(r.get('restart_ready_s'), 1)}"
                f" | {_f(r.get('restart_recall_at_10'), 3)} | {_f(r['post_similar_p50_ms'])}"
                f" | {_f(r.get('ingest_items_per_s'), 1)} |"
            )
        lines.append("")
    if res.get("loader"):
        from bench.loader import table as loader_table

        lines += loader_table(res["loader"])
    agreement = res.get("int8_agreement") or {}
    if "top1_agreement" in agreement:  # an older bench.json: the bn model's alone
        agreement = {"bn": agreement}
    for arch, a in agreement.items():
        lines.append(f"{arch}: int8 vs fp32 on held-out images: top-1 agreement "
                     f"{a.get('top1_agreement', float('nan')):.1%}, top-5 overlap "
                     f"{a.get('top5_overlap', float('nan')):.1%}")  # fmt: skip
    return "\n".join(lines)


def plot(res: dict, path: Path) -> None:
    """Images/s of the raw engine, the service and the naive baseline; /similar latency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    throughput = bool(res.get("engine") or res.get("service") or res.get("naive"))
    sims = res.get("similar", [])
    panels = int(throughput) + int(bool(sims))
    if panels == 0:
        return
    fig, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 4.5), squeeze=False)
    ax1, ax2 = axes[0][0], axes[0][-1]
    if not throughput:
        _plot_similar(ax2, sims)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        return
    archs = list(dict.fromkeys(r.get("arch", "bn") for r in
                               [*res.get("engine", []), *res.get("service", [])]))  # fmt: skip
    colours = {("bn", "fp32"): "tab:blue", ("bn", "int8"): "tab:orange",
               ("paper", "fp32"): "tab:green", ("paper", "int8"): "tab:red"}  # fmt: skip
    for arch in archs:
        for precision in ("fp32", "int8"):
            _plot_arch(ax1, res, arch, precision, colours.get((arch, precision), "black"))
    for size, r in res.get("naive", {}).items():
        ax1.axhline(r["images_per_s"], color="gray", ls="-." if size == "500x375" else ":",
                    label=f"naive PyTorch {size}")  # fmt: skip
    ax1.set_xscale("log", base=2)
    ax1.set_xlabel("batch size (raw engine) / concurrent clients (service)")
    ax1.set_ylabel("images/s")
    ax1.set_title("Classification throughput, 2 CPU cores")
    ax1.legend(fontsize=7)
    if sims:
        _plot_similar(ax2, sims)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _plot_arch(ax, res: dict, arch: str, precision: str, colour: str) -> None:
    def mine(r: dict) -> bool:
        return r.get("arch", "bn") == arch and r["precision"] == precision

    rows = [r for r in res.get("engine", []) if mine(r)]
    if rows:
        ax.plot([r["batch"] for r in rows], [r["images_per_s"] for r in rows], "o-",
                color=colour, label=f"raw engine {arch} {precision} (x: batch)")  # fmt: skip
    for size, style in (("500x375", "s--"), ("4000x3000", "^:")):
        rows = [r for r in res.get("service", []) if mine(r) and r["size"] == size]
        if rows:
            label = f"service {arch} {precision} {size} (x: clients)"
            ax.plot([r["clients"] for r in rows], [r["images_per_s"] for r in rows], style,
                    color=colour, label=label)  # fmt: skip


def _plot_similar(ax, sims: list[dict]) -> None:
    for backend in dict.fromkeys(r.get("backend", "folder") for r in sims):
        rows = [r for r in sims if r.get("backend", "folder") == backend]
        sizes = [r["size"] for r in rows]
        ax.plot(sizes, [r["p50_ms"] for r in rows], "o-", label=f"{backend} p50")
        ax.plot(sizes, [r["p95_ms"] for r in rows], "s--", label=f"{backend} p95")
    for r in sims:
        ax.annotate(f"recall@10 {r['recall_at_10']:.3f}", (r["size"], r["p50_ms"]), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("gallery vectors")
    ax.set_ylabel("ms")
    ax.set_title("GET /gallery/{id}/similar?k=10")
    ax.legend()
