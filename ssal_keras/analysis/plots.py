"""The figures of the analysis tools, drawn with matplotlib and written as PNG files.

matplotlib's non-interactive ``Agg`` canvas is used directly, so no display and no global
``pyplot`` state are involved (a figure per call, safe in tests and servers).
"""

import os
import tempfile

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ssal_keras import runs
from ssal_keras.modeling import outputs

_OUTPUT_STYLES = {outputs.BASE: ("tab:blue", "o"), outputs.JOINT: ("tab:red", "s")}
_AUX_COLOURS = ("tab:green", "tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:olive")
_RUN_STYLES = ("-", "--", ":", "-.")
_RUN_COLOURS = ("black", "tab:blue", "tab:red", "tab:green", "tab:orange", "tab:purple",
                "tab:brown", "tab:pink", "tab:olive", "tab:cyan")


def _save(figure, path):
    """Writes ``figure`` to ``path`` as PNG, atomically."""
    FigureCanvasAgg(figure)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".partial-") as staging:
        staged = os.path.join(staging, "figure.png")
        figure.savefig(staged, format="png", dpi=110, bbox_inches="tight")
        with open(staged, "rb") as f:
            content = f.read()
    runs.write_bytes(path, content)


def _series_style(name):
    """Colour and marker of the output ``name``: fixed for base and joint, by branch index for
    ``aux_<b>`` (other names take the first branch's)."""
    if name in _OUTPUT_STYLES:
        return _OUTPUT_STYLES[name]
    suffix = name[len(outputs.AUX_PREFIX):] if name.startswith(outputs.AUX_PREFIX) else ""
    index = int(suffix) if suffix.isdigit() else 0
    return _AUX_COLOURS[index % len(_AUX_COLOURS)], "^"


def line_plot(path, *, x, series, title, xlabel, ylabel, spreads=None, marker_x=None,
              line_styles=None):
    """A line per named series, with optional spread bands and a marked x position.

    Args:
        path: str. The PNG file to write.
        x: sequence of float. The shared x values.
        series: dict ``{label: values}``. Labels ``base``, ``joint`` and ``aux_<b>`` (with any
            suffix after a space) get fixed colours so every figure reads the same way.
        title, xlabel, ylabel: str.
        spreads: dict ``{label: values}`` or None. Half-widths of a shaded band (e.g. the
            standard deviation over seeds).
        marker_x: float or None. Draws a dashed vertical line there (e.g. the best alpha).
        line_styles: dict ``{label: matplotlib line style}`` or None (solid). Tells apart the
            same output on other data or of another run (e.g. ``"--"``).
    """
    figure = Figure(figsize=(6.4, 4.2))
    axes = figure.add_subplot()
    for label, values in series.items():
        values = np.asarray([np.nan if v is None else v for v in values], dtype=float)
        colour, marker = _series_style(label.split(" ")[0])
        axes.plot(x, values, marker=marker, color=colour, label=label,
                  linestyle=(line_styles or {}).get(label, "-"))
        if spreads and label in spreads:
            spread = np.asarray(spreads[label], dtype=float)
            axes.fill_between(x, values - spread, values + spread, color=colour, alpha=0.2)
    if marker_x is not None:
        axes.axvline(marker_x, color="grey", linestyle="--", linewidth=1)
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(True, alpha=0.3)
    axes.legend()
    _save(figure, path)


def paired_plot(path, *, categories, series, title, ylabel):
    """One line per seed across categories (configurations), so paired runs read as pairs.

    Args:
        path: str. The PNG file to write.
        categories: sequence of str. The x positions' labels.
        series: dict ``{label: values}``, one value (or None) per category.
        title, ylabel: str.
    """
    figure = Figure(figsize=(6.4, 4.2))
    axes = figure.add_subplot()
    x = np.arange(len(categories))
    for index, (label, values) in enumerate(series.items()):
        values = np.asarray([np.nan if v is None else v for v in values], dtype=float)
        axes.plot(x, values, marker="o", color=_AUX_COLOURS[index % len(_AUX_COLOURS)],
                  label=label)
    axes.set_xticks(x, list(categories))
    axes.set_title(title)
    axes.set_ylabel(ylabel)
    axes.grid(True, alpha=0.3)
    axes.legend()
    _save(figure, path)


def cam_grid(path, *, images, maps, captions, columns_titles, title):
    """Images with their class activation maps overlaid, in columns (supplement D, figure 2).

    Args:
        path: str. The PNG file to write.
        images: list of columns, each a list of ``(H, W, C)`` arrays (raw pixels 0..255).
        maps: list of columns, each a list of ``(H, W)`` maps in 0..1.
        captions: list of columns, each a list of str (several lines allowed).
        columns_titles: list of str, one per column.
        title: str. The figure's title.
    """
    rows = max((len(column) for column in images), default=0)
    if rows == 0:
        raise ValueError("no images to draw.")
    figure = Figure(figsize=(3.6 * len(images), 2.9 * rows))
    for column, (column_images, column_maps, column_captions) in enumerate(
            zip(images, maps, captions)):
        for row in range(rows):
            axes = figure.add_subplot(rows, len(images), row * len(images) + column + 1)
            axes.set_axis_off()
            if row == 0:
                axes.set_title(columns_titles[column], fontsize=11, fontweight="bold", pad=28)
            if row >= len(column_images):
                continue
            image = np.asarray(column_images[row], dtype=float) / 255.0
            if image.shape[-1] == 1:
                axes.imshow(image[..., 0], cmap="gray", vmin=0, vmax=1)
            else:
                axes.imshow(np.clip(image, 0, 1))
            axes.imshow(column_maps[row], cmap="jet", alpha=0.45, vmin=0, vmax=1)
            axes.text(1.04, 0.5, column_captions[row], transform=axes.transAxes, fontsize=7,
                      va="center", ha="left", family="monospace")
    figure.suptitle(title)
    figure.subplots_adjust(wspace=1.6, hspace=0.35)
    _save(figure, path)


def training_curves(path, curves):
    """Training loss and evaluation top-1 per epoch of one or several runs, in two panels.

    Args:
        path: str. The PNG file to write.
        curves: list of dict, one per run: ``label`` (str, e.g. the run's folder name),
            ``epochs`` (sequence of int), ``train_loss`` (sequence of float or None) and
            ``top1`` (dict ``{output name: values}``, values float or None). Each output keeps
            its colour (``base``, ``joint``, ``aux_<b>``); with several runs, each run has its
            own line style and its label before the output's.

    Returns:
        list of dict. What the figure's lines hold, read back from them, in the form of
        ``curves`` (one per run: ``label``, ``epochs``, ``train_loss``, ``top1``; a point not
        drawn is None), and ``legend`` (``{"train_loss": str, "top1": {output: str}}``, each
        line's legend label). ``python -m ssal_keras.analyze curves`` writes it beside the
        PNG.
    """
    if not curves:
        raise ValueError("no runs to draw.")
    figure = Figure(figsize=(12.0, 4.4))
    loss_axes, top1_axes = figure.add_subplot(1, 2, 1), figure.add_subplot(1, 2, 2)
    several = len(curves) > 1
    drawn_lines = []
    for index, run in enumerate(curves):
        style = _RUN_STYLES[index % len(_RUN_STYLES)]
        loss = np.asarray([np.nan if v is None else v for v in run["train_loss"]], dtype=float)
        loss_line, = loss_axes.plot(run["epochs"], loss, marker="o", linestyle=style,
                                    label=run["label"],
                                    color=_RUN_COLOURS[index % len(_RUN_COLOURS)])
        top1_lines = {}
        for name, values in run["top1"].items():
            values = np.asarray([np.nan if v is None else v for v in values], dtype=float)
            colour, marker = _series_style(name)
            top1_lines[name], = top1_axes.plot(
                run["epochs"], values, marker=marker, color=colour, linestyle=style,
                label=f"{run['label']} {name}" if several else name)
        drawn_lines.append((run["label"], loss_line, top1_lines))
    for axes, title, ylabel in ((loss_axes, "Training loss", "mean training loss"),
                                (top1_axes, "Evaluation top-1", "top-1 accuracy")):
        axes.set_title(title)
        axes.set_xlabel("epoch")
        axes.set_ylabel(ylabel)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=8 if several else 10)
    if not several:
        figure.suptitle(curves[0]["label"])
    _save(figure, path)
    return [_drawn_run(label, loss_line, top1_lines)
            for label, loss_line, top1_lines in drawn_lines]


def _points(values):
    """A line's y values as JSON-ready numbers, None where no point is drawn (NaN)."""
    return [None if np.isnan(v) else float(v) for v in np.asarray(values, dtype=float)]


def _drawn_run(label, loss_line, top1_lines):
    """One run's lines of ``training_curves``, read back from the figure's artists (every
    line of a run is drawn at the run's epochs)."""
    epochs = [float(e) for e in loss_line.get_xdata()]
    return {"label": label,
            "epochs": [int(e) if e.is_integer() else e for e in epochs],
            "train_loss": _points(loss_line.get_ydata()),
            "top1": {name: _points(line.get_ydata()) for name, line in top1_lines.items()},
            "legend": {"train_loss": loss_line.get_label(),
                       "top1": {name: line.get_label() for name, line in top1_lines.items()}}}
