"""The plots of bench_compare.py, each stamped with the run's machine, versions and date.

``resources-throughput.png``: logic used against dense-equivalent MAC/s, per
chip (only built designs). ``storage-per-layer.png``: where each layer's
weight-file bits go, SD against dense (:mod:`sd_hw.storage`).
"""

import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the back-end)

import compare_metrics  # noqa: E402
from compare_report import MARLANN  # noqa: E402

__all__ = ["plot_all", "resources_vs_throughput", "storage_per_layer"]

COLOURS = {"SD": "tab:blue", "dense": "tab:red", "dense, pruned": "tab:orange"}
MARKERS = {"mlp": "o", "cnn": "s"}
#: Weight-file parts (sd_hw.storage.LayerStorage fields) and their colours.
PARTS = {"code_bits": ("Ce codes", "tab:blue"), "index_bits": ("Ce index", "tab:cyan"),
         "basis_bits": ("bases", "tab:purple"), "dense_bits": ("int8 weights", "tab:red"),
         "padding_bits": ("padding", "0.75"), "metadata_bits": ("metadata", "0.45")}


def _unique_legend(axis):
    """The axis' legend entries, one per label (handles and labels)."""
    handles, labels = axis.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    return list(unique.values()), list(unique.keys())


def _finish(figure, path, stamp, rect):
    """Lay out within ``rect``, stamp the run, write ``path`` and return it."""
    figure.tight_layout(rect=rect)
    figure.text(0.005, 0.005, "\n".join(textwrap.wrap(stamp, 170)), fontsize=5.5, color="0.3",
                va="bottom")
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def resources_vs_throughput(designs, runs, path, stamp):
    """Write the plot to ``path``; returns it, or None when no design was built."""
    boards = list(dict.fromkeys(d.board for d in designs if d.build is not None))
    if not boards:
        return None
    figure, axes = plt.subplots(1, len(boards), figsize=(5.5 * len(boards), 4.8), squeeze=False)
    for axis, board in zip(axes[0], boards):
        built = [d for d in designs if d.board == board and d.build is not None]
        chip = built[0].chip
        used = {}
        for design in built:
            use = compare_metrics.resources(design.build, design.family)
            used[design.kind] = use["logic"]
            capacity = use["logic_available"]
        top = 0.0
        for run in (r for r in runs if r.design in built):
            throughput = compare_metrics.figures(run)["dense_mac_per_s"] / 1e6
            top = max(top, throughput)
            axis.scatter(used[run.design.kind], throughput, color=COLOURS[run.variant],
                         marker=MARKERS[run.network], s=60,
                         label=f"{run.variant}, {run.network.upper()}")
        for design in built:
            axis.annotate(f"{'SD' if design.kind == 'smartdeal' else 'dense'} core, fmax "
                          f"{design.fmax_mhz:.1f} MHz", (used[design.kind], 0), fontsize=7,
                          xytext=(4, 4), textcoords="offset points", rotation=90)
        if chip == MARLANN["chip"]:
            top = max(top, MARLANN["mac_per_s"] / 1e6)
            axis.axhline(MARLANN["mac_per_s"] / 1e6, color="0.4", linestyle="--")
            axis.text(0, MARLANN["mac_per_s"] / 1e6, " MARLANN: published, not re-measured "
                      "(real MACs at 12 MHz, its own networks)", fontsize=7, va="bottom",
                      color="0.3")
        right = 1.15 * max(used.values())
        if capacity <= right:
            axis.axvline(capacity, color="0.4", linestyle=":")
            axis.text(capacity, top * 0.75, "all logic of the chip ", fontsize=7, ha="right",
                      color="0.3")
        unit = "LCs" if "iCE40" in chip else "LUT4s"
        axis.set(title=f"{board} ({chip})", xlabel=f"logic used ({unit}, whole board design)",
                 ylabel="dense-equivalent MMAC/s at median fmax", xlim=(0, right),
                 ylim=(0, 1.12 * top))
        axis.grid(alpha=0.3)
    figure.legend(*_unique_legend(axes[0][0]), loc="lower center", ncol=6, fontsize=7,
                  bbox_to_anchor=(0.5, 0.06))
    figure.suptitle("Resources against throughput: SmartDeal (SD) and dense int8 cores")
    return _finish(figure, path, stamp, (0, 0.12, 1, 1))


def storage_per_layer(runs, path, stamp):
    """Write the plot to ``path`` and return it: stacked weight-file bits per layer."""
    board = runs[0].design.board  # the weight file does not depend on the board
    networks = list(dict.fromkeys(r.network for r in runs))
    figure, axes = plt.subplots(1, len(networks), figsize=(5.5 * len(networks), 4.6),
                                squeeze=False)
    for axis, network in zip(axes[0], networks):
        shown = [r for r in runs if r.network == network and r.design.board == board
                 and r.variant in ("SD", "dense")]  # pruning does not change a dense file
        width = 0.8 / len(shown)
        names = [layer.name for layer in shown[0].storage.layers]
        for k, run in enumerate(shown):
            bottom = [0.0] * len(names)
            positions = [i + (k - (len(shown) - 1) / 2) * width for i in range(len(names))]
            for part, (label, colour) in PARTS.items():
                heights = [getattr(layer, part) / 1e3 for layer in run.storage.layers]
                axis.bar(positions, heights, width * 0.95, bottom=bottom, color=colour,
                         label=label, edgecolor="white", linewidth=0.3)
                bottom = [b + h for b, h in zip(bottom, heights)]
            for x, top in zip(positions, bottom):
                axis.text(x, top, run.variant, rotation=90, fontsize=6, ha="center",
                          va="bottom")
        axis.legend(*_unique_legend(axis), fontsize=7)
        axis.set_xticks(range(len(names)), names)
        axis.set(title=f"digits {network.upper()}: weight file by layer",
                 ylabel="kbit", xlabel="layer (bars: " + ", ".join(r.variant for r in shown)
                 + ")")
        axis.margins(y=0.15)
        axis.grid(axis="y", alpha=0.3)
    figure.suptitle("Weight storage per layer: SmartDeal (SD) against dense int8")
    return _finish(figure, path, stamp, (0, 0.05, 1, 1))


def plot_all(designs, runs, image_dir, stamp):
    """Every plot into ``image_dir``; returns the paths written."""
    image_dir.mkdir(parents=True, exist_ok=True)
    paths = [resources_vs_throughput(designs, runs, image_dir / "resources-throughput.png",
                                     stamp),
             storage_per_layer(runs, image_dir / "storage-per-layer.png", stamp)]
    return [path for path in paths if path is not None]
