"""Plots of reports and sweeps (matplotlib, Agg: no display needed), PNG or SVG by file suffix.

    layer_figure(report, "r.png")       # nncc --report r.json --plot r.png, nncc-bench --plot
    sweep_plots(rows, varied_keys, out) # nncc-sweep: metric vs each varied parameter, Pareto front

`layer_figure` draws, from a report (`runtime/report.py`, with its `target_description`):
- the per-layer roofline: each layer with MACs at (operational intensity = MACs per DRAM byte
  it moved, achieved MACs per cycle), under the target's compute roof (every core's MAC units)
  and its bandwidth roof (DRAM bytes per cycle x intensity);
- per-layer bars: cycles, and DRAM bytes read and written.
Figures are made with `matplotlib.figure.Figure` (no pyplot state) and written atomically.
"""

from __future__ import annotations

import math
from pathlib import Path

from nncc.support.errors import NnccError
from nncc.support.user_files import write_atomically

FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}
SWEEP_METRICS = (("cycles", "cycles"), ("energy_pj.total", "energy (pJ)"), ("dram_bytes", "DRAM bytes"))
OP_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")


def plot_format(path: Path | str, flag: str = "--plot") -> str:
    """The format of a plot file by its suffix; anything else is a one-line error."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise NnccError(f"{flag} {path}: the file name must end in {', '.join(FORMATS)} (the format)")
    return FORMATS[suffix]


def new_figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def save(figure, path: Path | str) -> None:
    fmt = plot_format(path)
    metadata = {"Software": None} if fmt == "png" else {"Date": None} if fmt == "svg" else {}
    write_atomically(Path(path), lambda file: figure.savefig(file, format=fmt, dpi=110, metadata=metadata))


# --------------------------------------------------------------------------- one run: roofline and bars


def roofs(description: dict) -> tuple[float, float]:
    """(MACs per cycle of all cores, DRAM bytes per cycle) of a report's `target_description`."""
    from nncc.runtime.target import target_from_dict

    target = target_from_dict(description, "the report's target_description")
    return float(target.mac_units), float(target.dram_bytes_per_cycle)


def roofline_points(layers: list[dict]) -> list[dict]:
    """Layers with MACs and cycles: name, op, intensity (MACs per DRAM byte), MACs per cycle."""
    points = []
    for layer in layers:
        macs, cycles = layer.get("macs") or 0, layer.get("cycles") or 0
        if macs <= 0 or cycles <= 0:
            continue
        dram = (layer.get("dram_read_bytes") or 0) + (layer.get("dram_write_bytes") or 0)
        points.append({"name": layer["name"], "op": layer.get("op", ""), "intensity": macs / max(dram, 1),
                       "macs_per_cycle": macs / cycles})
    return points


def layer_figure(report: dict, path: Path | str, title: str | None = None) -> None:
    """The per-layer roofline and the per-layer cycles and DRAM bytes of one run's report."""
    if "target_description" not in report or "cycles" not in report:
        raise NnccError("a plot needs an accelerator run's report (cycles and the target's description)")
    peak, bandwidth = roofs(report["target_description"])
    layers = report.get("layers", [])
    figure = new_figure(15, 6.5)
    grid = figure.add_gridspec(2, 2, width_ratios=(1, 1.5))
    draw_roofline(figure.add_subplot(grid[:, 0]), roofline_points(layers), peak, bandwidth)
    cycles_axes = figure.add_subplot(grid[0, 1])
    dram_axes = figure.add_subplot(grid[1, 1], sharex=cycles_axes)
    draw_layer_bars(cycles_axes, dram_axes, layers)
    figure.suptitle(title or f"{report.get('target', '')}: {report['cycles']:,} cycles, "
                    f"{report.get('mac_utilization', 0):.1%} MAC utilisation")
    save(figure, path)


def draw_roofline(axes, points: list[dict], peak: float, bandwidth: float) -> None:
    ridge = peak / bandwidth
    intensities = [p["intensity"] for p in points] or [ridge]
    low = min(min(intensities), ridge) / 4
    high = max(max(intensities), ridge) * 4
    xs = [low * (high / low) ** (i / 200) for i in range(201)]
    axes.plot(xs, [min(peak, bandwidth * x) for x in xs], color="black", linewidth=1.5)
    axes.axhline(peak, color="grey", linestyle=":", linewidth=0.8)
    axes.annotate(f"compute roof {peak:g} MACs/cycle", (high / 1.5, peak * 1.05), ha="right", va="bottom",
                  fontsize=8)
    axes.annotate(f"DRAM roof {bandwidth:.3g} B/cycle", (low * 1.3, bandwidth * low * 1.3), fontsize=8,
                  rotation=0, va="bottom")
    for index, op in enumerate(sorted(dict.fromkeys(p["op"] for p in points))):
        mine = [p for p in points if p["op"] == op]
        axes.scatter([p["intensity"] for p in mine], [p["macs_per_cycle"] for p in mine], s=18,
                     color=OP_COLOURS[index % len(OP_COLOURS)], label=f"{op} ({len(mine)})", alpha=0.8, zorder=3)
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlim(low, high)
    lowest = min([p["macs_per_cycle"] for p in points] + [bandwidth * low])
    axes.set_ylim(lowest / 2, peak * 2)
    axes.set_xlabel("operational intensity (MACs per DRAM byte)")
    axes.set_ylabel("MACs per cycle")
    axes.set_title("per-layer roofline")
    if points:
        axes.legend(fontsize=8, loc="lower right")
    axes.grid(True, which="both", linewidth=0.3)


def draw_layer_bars(cycles_axes, dram_axes, layers: list[dict]) -> None:
    names = [layer["name"] for layer in layers]
    positions = list(range(len(layers)))
    cycles_axes.bar(positions, [layer.get("cycles", 0) for layer in layers], color="tab:blue", width=0.8)
    cycles_axes.set_ylabel("cycles")
    cycles_axes.set_title("per layer")
    reads = [layer.get("dram_read_bytes", 0) for layer in layers]
    writes = [layer.get("dram_write_bytes", 0) for layer in layers]
    dram_axes.bar(positions, reads, color="tab:orange", width=0.8, label="DRAM read")
    dram_axes.bar(positions, writes, bottom=reads, color="tab:red", width=0.8, label="DRAM write")
    dram_axes.set_ylabel("DRAM bytes")
    dram_axes.legend(fontsize=8)
    dram_axes.set_xticks(positions)
    size = 7 if len(layers) <= 40 else 5 if len(layers) <= 80 else 3
    dram_axes.set_xticklabels(names, rotation=90, fontsize=size)
    cycles_axes.tick_params(labelbottom=False)
    for axes in (cycles_axes, dram_axes):
        axes.set_xlim(-0.6, len(layers) - 0.4)
        axes.grid(True, axis="y", linewidth=0.3)


# --------------------------------------------------------------------------- sweeps


def numeric(values: list) -> list[float] | None:
    try:
        return [float(v) for v in values]
    except (TypeError, ValueError):
        return None


def sweep_plots(rows: list[dict], varied_keys: list[str], out: Path) -> list[Path]:
    """Per model and varied key: cycles, energy and DRAM bytes against the key's values, one line
    per combination of the other keys; and per model the Pareto front (cycles vs energy, on-chip
    capacity as the marker's colour). PNG and SVG each. Returns the files written."""
    ok = [row for row in rows if row["status"] == "ok"]
    written: list[Path] = []
    for model in dict.fromkeys(row["model"] for row in ok):
        mine = [row for row in ok if row["model"] == model]
        for key in varied_keys:
            figure = metric_figure(mine, key, [k for k in varied_keys if k != key], model)
            written += save_both(figure, out / f"{model}-vs-{safe(key)}")
        written += save_both(pareto_figure(mine, varied_keys, model), out / f"{model}-pareto")
    return written


def safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def save_both(figure, stem: Path) -> list[Path]:
    paths = [stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".svg")]
    for path in paths:
        save(figure, path)
    return paths


def metric_figure(rows: list[dict], key: str, others: list[str], model: str):
    values = list(dict.fromkeys(str(row[key]) for row in rows))
    as_numbers = numeric(values)
    figure = new_figure(5 * len(SWEEP_METRICS), 4)
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(str(row[k]) for k in others), []).append(row)
    for index, (metric, label) in enumerate(SWEEP_METRICS):
        axes = figure.add_subplot(1, len(SWEEP_METRICS), index + 1)
        for group, members in groups.items():
            members = sorted(members, key=lambda row: values.index(str(row[key])))
            xs = [float(row[key]) for row in members] if as_numbers else [values.index(str(row[key])) for row in
                                                                          members]
            name = ", ".join(f"{k}={v}" for k, v in zip(others, group)) or model
            axes.plot(xs, [row.get(metric) for row in members], marker="o", markersize=4, label=name)
        if as_numbers:
            if min(as_numbers) > 0 and max(as_numbers) / min(as_numbers) >= 8:
                axes.set_xscale("log", base=2)
            axes.set_xticks(as_numbers, values, rotation=30, fontsize=8)
        else:
            axes.set_xticks(range(len(values)), values)
        axes.set_xlabel(key)
        axes.set_ylabel(label)
        axes.grid(True, linewidth=0.3)
        axes.minorticks_off()
        if index == 0 and len(groups) > 1:
            axes.legend(fontsize=7)
    figure.suptitle(f"{model}: against {key}")
    return figure


def pareto_figure(rows: list[dict], varied_keys: list[str], model: str):
    figure = new_figure(8, 6)
    axes = figure.add_subplot(1, 1, 1)
    capacity = [row.get("onchip_capacity_bytes", 0) for row in rows]
    scatter = axes.scatter([row["cycles"] for row in rows], [row["energy_pj.total"] for row in rows],
                           c=[math.log2(max(c, 1)) for c in capacity], cmap="viridis", s=30, zorder=2)
    colourbar = figure.colorbar(scatter, ax=axes)
    colourbar.set_label("log2 on-chip capacity (bytes)")
    front = sorted((row for row in rows if row.get("pareto")), key=lambda row: row["cycles"])
    axes.scatter([row["cycles"] for row in front], [row["energy_pj.total"] for row in front], s=90,
                 facecolors="none", edgecolors="red", linewidths=1.2, label="Pareto-optimal (cycles, energy, "
                                                                              "on-chip capacity)", zorder=3)
    two_d = pareto_2d(rows)
    axes.plot([row["cycles"] for row in two_d], [row["energy_pj.total"] for row in two_d], color="red",
              linewidth=0.8, linestyle="--", label="front in cycles and energy alone")
    for row in front:
        axes.annotate(", ".join(str(row[k]) for k in varied_keys), (row["cycles"], row["energy_pj.total"]),
                      fontsize=6, xytext=(4, 4), textcoords="offset points")
    axes.set_xlabel("cycles")
    axes.set_ylabel("energy (pJ)")
    axes.legend(fontsize=8)
    axes.grid(True, linewidth=0.3)
    axes.set_title(f"{model}: {len(front)} Pareto-optimal of {len(rows)} points"
                   + (f" (labels: {', '.join(varied_keys)})" if varied_keys else ""))
    return figure


def pareto_2d(rows: list[dict]) -> list[dict]:
    """The rows no other row beats in both cycles and energy, by cycles."""
    front, best = [], math.inf
    for row in sorted(rows, key=lambda row: (row["cycles"], row["energy_pj.total"])):
        if row["energy_pj.total"] < best:
            front.append(row)
            best = row["energy_pj.total"]
    return front
