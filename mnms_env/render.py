"""What `MNMSEnv.render()` shows: the child being designed, as text or as a picture.

Pure functions: `draw` builds a `Scene` from the env's state and renders it, and the env calls it
only from `render()`, so an env that is never rendered pays nothing (matplotlib is imported on
the first picture). The picture is drawn with matplotlib's object API on an Agg canvas (no
pyplot): no display, no global figure state, safe in vector-env workers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mnms_env.features import FEATURIZERS
from mnms_env.records import ChildResult
from mnms_env.space import ChildConfig, SearchSpace, canonical_config
from mnms_env.tasks import Task, TaskCard

RENDER_MODES = ("ansi", "rgb_array")
FRAME_INCHES, FRAME_DPI = (8.0, 4.5), 100
"""An `rgb_array` frame is 800 x 450 pixels."""
MAX_DRAWN_LAYERS = 4
"""Deeper children are drawn with their first layers and a count."""
UNKNOWN = "?"


@dataclass(frozen=True)
class Scene:
    """One frame: the child designed so far for a task, and its result once trained."""

    task: str
    classes: int
    decisions: tuple[tuple[str, Any], ...]
    """(decision, chosen option) of each decision made so far, in the space's order."""
    pending: tuple[str, ...]
    """The decisions not made yet."""
    config: ChildConfig
    """The child: the decisions made and the defaults of the rest (the trained config once the
    episode has ended). Fields in `pending` are drawn as unknown."""
    result: ChildResult | None = None
    cached: bool = False
    """Whether `result` came from the results store rather than from training."""

    def value(self, name: str) -> Any:
        """A config field, or `UNKNOWN` while its decision is pending."""
        return UNKNOWN if name in self.pending else getattr(self.config, name)


def check_render_mode(render_mode: object) -> None:
    if render_mode is not None and render_mode not in RENDER_MODES:
        raise ValueError(f"render_mode={render_mode!r}; accepted: None, {list(RENDER_MODES)}")


def draw(
    render_mode: str,
    task: Task | TaskCard,
    space: SearchSpace,
    decided: Sequence[int],
    result: ChildResult | None = None,
    cached: bool = False,
) -> str | np.ndarray:
    """The frame of `render_mode` for a child of `task` whose first decisions of `space` chose
    the option indices `decided`, with its `result` once trained."""
    scene = scene_of(task, space, decided, result, cached)
    return ansi(scene) if render_mode == "ansi" else rgb_array(scene)


def scene_of(
    task: Task | TaskCard,
    space: SearchSpace,
    decided: Sequence[int],
    result: ChildResult | None = None,
    cached: bool = False,
) -> Scene:
    """The `Scene` that `draw` renders."""
    decisions = tuple(
        (space.decisions[j].name, space.decisions[j].options[i]) for j, i in enumerate(decided)
    )
    return Scene(
        task=task.name,
        classes=task.num_classes,
        decisions=decisions,
        pending=space.names[len(decided) :],
        config=canonical_config(dict(decisions), task.modality),
        result=result,
        cached=cached,
    )


def ansi(scene: Scene) -> str:
    """The task, the decisions so far with their values and, once trained, the result."""
    made = len(scene.decisions)
    lines = [f"task {scene.task!r} ({scene.classes} classes)"]
    lines.append(f"decisions {made}/{made + len(scene.pending)}:")
    lines += [f"  {name} = {value}" for name, value in scene.decisions]
    lines += [f"  {name} = {UNKNOWN}" for name in scene.pending]
    if scene.result is not None:
        lines.append(f"child: {scene.config.describe()}")
        lines.append(_result_line(scene.result, scene.cached))
    return "\n".join(lines) + "\n"


def rgb_array(scene: Scene) -> np.ndarray:
    """The child as an `(450, 800, 3)` uint8 picture: input, hidden layers (height by width),
    output, the training settings and, once trained, its accuracy."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    fig = Figure(figsize=FRAME_INCHES, dpi=FRAME_DPI, facecolor="white")
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 16)
    ax.set_ylim(0, 9)
    ax.axis("off")
    made = len(scene.decisions)
    ax.text(0.4, 8.4, f"task: {scene.task}", fontsize=15, weight="bold", va="center")
    ax.text(
        15.6,
        8.4,
        f"decisions {made}/{made + len(scene.pending)}",
        fontsize=12,
        ha="right",
        va="center",
        color="0.35",
    )
    boxes = layout(scene)
    step = 15.2 / len(boxes)
    fontsize = 10 if len(boxes) <= 5 else 8.5
    for i, (title, body, height) in enumerate(boxes):
        x = 0.4 + i * step + 0.12 * step
        width = 0.76 * step
        known = UNKNOWN not in body and UNKNOWN not in title
        ax.add_patch(
            FancyBboxPatch(
                (x, 4.6 - height / 2),
                width,
                height,
                boxstyle="round,pad=0.05,rounding_size=0.2",
                facecolor="#dce9f7" if known else "white",
                edgecolor="#2a5d8f",
                linestyle="-" if known else "--",
                linewidth=1.5,
            )
        )
        text = f"{title}\n{body}"
        ax.text(x + width / 2, 4.6, text, ha="center", va="center", fontsize=fontsize)
        if i:
            ax.add_patch(
                FancyArrowPatch(
                    (x - 0.24 * step + 0.05, 4.6),
                    (x - 0.05, 4.6),
                    arrowstyle="-|>",
                    mutation_scale=14,
                    color="0.3",
                )
            )
    training = (
        f"optimizer {scene.value('optimizer')}    learning rate {scene.value('learning_rate')}"
        f"    batch {scene.value('batch_size')}    L2 {scene.value('l2')}"
    )
    ax.text(8, 1.35, training, ha="center", va="center", fontsize=11)
    outcome = (
        "not trained yet"
        if scene.result is None
        else _result_line(scene.result, scene.cached).replace("  ", "   ")
    )
    ax.text(
        8,
        0.55,
        outcome,
        ha="center",
        va="center",
        fontsize=11,
        weight="bold" if scene.result is not None else "normal",
    )
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _result_line(result: ChildResult, cached: bool) -> str:
    source = "from the store" if cached else "looked up" if result.device == "table" else "trained"
    diverged = "  diverged" if result.diverged else ""
    return (
        f"val {result.val_accuracy:.4f}  test {result.test_accuracy:.4f}  "
        f"{result.seconds:.2f} s  {result.parameters:,} parameters  {source}{diverged}"
    )


Box = tuple[str, str, float]
"""(title, body, height) of one box of the picture."""


def layout(scene: Scene) -> list[Box]:
    """The picture's boxes from input to output: the input, a text CNN's convolutions, the
    hidden layers and the output."""
    return [
        _input_box(scene),
        *_cnn_box(scene),
        *_layer_boxes(scene),
        ("output", f"{scene.classes} classes", 2.0),
    ]


def _input_box(scene: Scene) -> Box:
    representation = scene.value("representation")
    if representation == UNKNOWN:  # a custom space may choose the size first
        # as chosen: the config holds the size canonical for its default representation (0: raw)
        size = dict(scene.decisions).get("representation_size", UNKNOWN)
        return "input", f"{UNKNOWN}\n{size} size", 2.0
    featurizer = FEATURIZERS[representation]
    if not featurizer.sized:
        return "input", f"{representation}\n({'sparse' if featurizer.bag else 'dense'})", 2.0
    size = scene.value("representation_size")
    return "input", f"{representation}\n{size} {featurizer.size_unit}", 2.0


def _cnn_box(scene: Scene) -> list[Box]:
    """The text CNN's embedding and convolutions, once the representation says it is one."""
    if scene.value("representation") == UNKNOWN or not scene.config.is_cnn:
        return []
    init = scene.value("embedding_init")
    dim = UNKNOWN if init == UNKNOWN else scene.value("embedding_dim")
    widths = scene.value("filter_widths")
    widths = widths if widths == UNKNOWN else "-".join(str(w) for w in widths)
    body = (
        f"{init} {dim}d\n{scene.value('filters')} x width {widths}\n"
        f"{scene.value('activation')}\ndropout {scene.value('dropout')}"
    )
    return [("text CNN", body, 3.4)]


def _layer_boxes(scene: Scene) -> list[Box]:
    """(title, body, height) per drawn hidden layer; one unknown box while depth is pending."""
    depth = scene.value("hidden_layers")
    width = scene.value("width")
    body = f"width {width}\n{scene.value('activation')}\ndropout {scene.value('dropout')}"
    height = 3.0 if width == UNKNOWN else min(5.2, 1.2 + 0.45 * math.log2(width))
    if depth == UNKNOWN:
        return [("hidden layers ?", body, height)]
    shown = min(depth, MAX_DRAWN_LAYERS)
    boxes = [(f"hidden {i + 1}", body, height) for i in range(shown)]
    if depth > shown:
        boxes[-1] = (f"hidden {shown}..{depth}", boxes[-1][1], height)
    return boxes
