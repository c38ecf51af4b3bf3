"""The shapes world: a seeded generator of small scenes with a language prior built in.

Every image is 64x64 RGB: a dark, nearly uniform background (grey level, Gaussian noise, sometimes
a thin clutter line) with 1-4 coloured glyphs. A glyph is a shape (circle, square, triangle) in a
colour (red, yellow, green, blue); each of the 12 shape x colour classes is named by one ordinary
English noun (a red circle is a "cherry", a green triangle a "tree"), so captions read naturally
("a sun and a tree .") and the CHAIR pipeline (tokenise, POS-tag, lemmatise, match a vocabulary
word) finds every object without two-word rules.

Two biases make hallucination prior-driven, as in real image-text data:

* Zipf-like class frequencies (exponent 0.8): "cake" appears in about 45% of images.
* Six fixed partner pairs: once an object is in the scene, its partner is added next with
  probability 0.8 (room permitting), so P(partner | object) is about 0.7.

Everything is a pure function of a seed: scene ``i`` of a set with seed ``s`` is drawn from
``numpy.random.default_rng([s, i])``, so sets are reproducible and any image can be regenerated
on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

GENERATOR_VERSION = "1.0"
"""Bumped whenever a change to this module changes any generated scene."""

IMAGE_SIZE = 64
PATCH_SIZE = 8
OBJECT_PATCH_COVERAGE = 0.15
"""A patch whose area is covered by an object above this fraction is an object patch."""

SHAPES = ("circle", "square", "triangle")
COLOURS = {"red": (220, 40, 40), "yellow": (230, 220, 40), "green": (40, 200, 40), "blue": (50, 80, 230)}


@dataclass(frozen=True)
class ObjectClass:
    """One object class: the noun that names it and the glyph that draws it."""

    name: str
    shape: str
    colour: str


CLASSES: tuple[ObjectClass, ...] = (
    ObjectClass("cherry", "circle", "red"),
    ObjectClass("sun", "circle", "yellow"),
    ObjectClass("lime", "circle", "green"),
    ObjectClass("ball", "circle", "blue"),
    ObjectClass("brick", "square", "red"),
    ObjectClass("cake", "square", "yellow"),
    ObjectClass("box", "square", "green"),
    ObjectClass("window", "square", "blue"),
    ObjectClass("flag", "triangle", "red"),
    ObjectClass("sail", "triangle", "yellow"),
    ObjectClass("tree", "triangle", "green"),
    ObjectClass("tent", "triangle", "blue"),
)
"""The 12 classes in canonical order (captions list objects in this order)."""

CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in CLASSES)
CLASS_INDEX: dict[str, int] = {name: i for i, name in enumerate(CLASS_NAMES)}

FREQUENCY_RANKING: tuple[str, ...] = (
    "cake", "sail", "cherry", "ball", "tree", "sun", "brick", "tent", "flag", "window", "lime", "box",
)
"""Classes from most to least frequent; weight of rank ``r`` (1-based) is ``r ** -ZIPF_EXPONENT``."""
ZIPF_EXPONENT = 0.8

PARTNER_PAIRS: tuple[tuple[str, str], ...] = (
    ("ball", "cake"), ("lime", "box"), ("cherry", "sail"), ("sun", "tree"), ("brick", "flag"), ("window", "tent"),
)
PARTNER: dict[str, str] = {a: b for pair in PARTNER_PAIRS for a, b in (pair, pair[::-1])}
PARTNER_PROBABILITY = 0.8
OBJECT_COUNT_PROBABILITIES = (0.2, 0.3, 0.3, 0.2)
"""P(1), P(2), P(3), P(4) objects."""

RADIUS_RANGE = (5, 9)
COLOUR_JITTER = 25
BACKGROUND_LEVEL_MAX = 59
NOISE_SIGMA = 6.0
CLUTTER_PROBABILITY = 0.3
PLACEMENT_TRIES = 200


def class_weights() -> np.ndarray:
    """``[12]`` sampling weights of the classes (canonical order), summing to 1."""
    rank = {name: r for r, name in enumerate(FREQUENCY_RANKING, start=1)}
    weights = np.array([rank[name] ** -ZIPF_EXPONENT for name in CLASS_NAMES])
    return weights / weights.sum()


@dataclass(frozen=True)
class PlacedObject:
    """An object in a scene: its class, centre (x, y), radius and jittered colour, in pixels."""

    name: str
    centre: tuple[int, int]
    radius: int
    rgb: tuple[int, int, int]


@dataclass(frozen=True)
class Scene:
    """One rendered scene.

    Attributes:
        objects: the objects, in the order they were placed.
        image: the 64x64 RGB image.
        object_patches: ``[8, 8]`` bool, patches (row-major, as the vision tower reads them) covered by
            an object above :data:`OBJECT_PATCH_COVERAGE`.
    """

    objects: tuple[PlacedObject, ...]
    image: Image.Image
    object_patches: np.ndarray

    @property
    def names(self) -> list[str]:
        """The distinct object names present, in canonical class order."""
        present = {o.name for o in self.objects}
        return [name for name in CLASS_NAMES if name in present]

    def caption(self) -> str:
        """The reference caption: every object with its article, canonical order."""
        return caption_for(self.names)


def caption_for(names: Sequence[str]) -> str:
    """A caption listing ``names`` in canonical order: ``"a sun and a tree ."``.

    Raises:
        ValueError: an unknown or repeated name, or no names.
    """
    unknown = [name for name in names if name not in CLASS_INDEX]
    if unknown or not names or len(set(names)) != len(names):
        raise ValueError(f"A caption needs distinct known object names from {CLASS_NAMES}, got {list(names)}.")
    ordered = sorted(names, key=CLASS_INDEX.__getitem__)
    return " and ".join(f"a {name}" for name in ordered) + " ."


def sample_object_names(rng: np.random.Generator) -> list[str]:
    """Draw a scene's object classes: Zipf-weighted picks, each followed by its partner with p = 0.8.

    Args:
        rng: the scene's generator.

    Returns:
        1-4 distinct class names, in placement order.
    """
    count = int(rng.choice(len(OBJECT_COUNT_PROBABILITIES), p=OBJECT_COUNT_PROBABILITIES)) + 1
    weights = class_weights()
    names: list[str] = []
    while len(names) < count:
        partner = PARTNER[names[-1]] if names else None
        if partner is not None and partner not in names and rng.random() < PARTNER_PROBABILITY:
            names.append(partner)
            continue
        free = np.array([name not in names for name in CLASS_NAMES])
        names.append(CLASS_NAMES[int(rng.choice(len(CLASS_NAMES), p=weights * free / (weights * free).sum()))])
    return names


def _place(names: Sequence[str], rng: np.random.Generator) -> list[PlacedObject]:
    """Non-overlapping positions, radii and jittered colours for ``names`` (rejection sampling)."""
    placed: list[PlacedObject] = []
    for name in names:
        for _ in range(PLACEMENT_TRIES):
            radius = int(rng.integers(RADIUS_RANGE[0], RADIUS_RANGE[1] + 1))
            x, y = (int(v) for v in rng.integers(radius + 1, IMAGE_SIZE - radius - 1, size=2))
            if all((x - o.centre[0]) ** 2 + (y - o.centre[1]) ** 2 > (radius + o.radius + 2) ** 2 for o in placed):
                break
        else:
            raise RuntimeError(f"Could not place {list(names)} without overlap in {PLACEMENT_TRIES} tries.")
        base = np.array(COLOURS[CLASSES[CLASS_INDEX[name]].colour])
        rgb = np.clip(base + rng.integers(-COLOUR_JITTER, COLOUR_JITTER + 1, size=3), 0, 255)
        placed.append(PlacedObject(name, (x, y), radius, (int(rgb[0]), int(rgb[1]), int(rgb[2]))))
    return placed


def _draw_glyph(draw: ImageDraw.ImageDraw, obj: PlacedObject, fill: int | tuple[int, int, int]) -> None:
    x, y, r = obj.centre[0], obj.centre[1], obj.radius
    shape = CLASSES[CLASS_INDEX[obj.name]].shape
    if shape == "circle":
        draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)
    elif shape == "square":
        draw.rectangle((x - r, y - r, x + r, y + r), fill=fill)
    else:
        draw.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=fill)


def render_scene(names: Sequence[str], rng: np.random.Generator) -> Scene:
    """Place and draw the objects on a noisy, cluttered background.

    Args:
        names: the classes to draw (distinct).
        rng: the scene's generator (consumed).

    Returns:
        The scene with its image and object-patch mask.
    """
    objects = _place(names, rng)
    level = int(rng.integers(0, BACKGROUND_LEVEL_MAX + 1))
    canvas = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (level, level, level))
    draw = ImageDraw.Draw(canvas)
    if rng.random() < CLUTTER_PROBABILITY:
        grey = int(rng.integers(60, 140))
        draw.line([tuple(int(v) for v in rng.integers(0, IMAGE_SIZE, size=2)) for _ in range(2)], fill=(grey,) * 3)
    mask = Image.new("L", (IMAGE_SIZE, IMAGE_SIZE), 0)
    mask_draw = ImageDraw.Draw(mask)
    for obj in objects:
        _draw_glyph(draw, obj, obj.rgb)
        _draw_glyph(mask_draw, obj, 255)
    noisy = np.asarray(canvas, dtype=np.float32) + rng.normal(0.0, NOISE_SIGMA, size=(IMAGE_SIZE, IMAGE_SIZE, 3))
    image = Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8))
    grid = IMAGE_SIZE // PATCH_SIZE
    coverage = (np.asarray(mask) > 0).reshape(grid, PATCH_SIZE, grid, PATCH_SIZE).mean(axis=(1, 3))
    return Scene(tuple(objects), image, coverage > OBJECT_PATCH_COVERAGE)


def scene_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of scene ``index`` of the set with ``seed``."""
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be non-negative, got seed={seed}, index={index}.")
    return np.random.default_rng([seed, index])


def make_scene(seed: int, index: int) -> Scene:
    """Scene ``index`` of the set with ``seed`` (deterministic)."""
    rng = scene_rng(seed, index)
    return render_scene(sample_object_names(rng), rng)


def make_scenes(n: int, seed: int) -> list[Scene]:
    """The first ``n`` scenes of the set with ``seed``."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}.")
    return [make_scene(seed, index) for index in range(n)]


@lru_cache(maxsize=1)
def cooccurrence(samples: int = 20000, seed: int = 2**31 - 1) -> np.ndarray:
    """``[12, 12]`` empirical co-occurrence counts of the training distribution (diagonal 0).

    Estimated from ``samples`` scenes of a fixed seed, as POPE counts co-occurrence in its data.
    """
    counts = np.zeros((len(CLASSES), len(CLASSES)), dtype=np.int64)
    for index in range(samples):
        present = [CLASS_INDEX[name] for name in sample_object_names(scene_rng(seed, index))]
        counts[np.ix_(present, present)] += 1
    np.fill_diagonal(counts, 0)
    return counts
