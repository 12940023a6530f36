"""What the sample generator draws: the spec, its TINY variant, the trait vocabularies.

``SampleSpec`` says what to generate (same spec -> byte-identical output); ``MakeTraits`` /
``ModelTraits`` are the drawn family and model traits (see ``structure.py``). Constants only,
no drawing and no file writing.
"""

from __future__ import annotations

from dataclasses import dataclass

from compcars_kedro.names import (
    BBOX_OUTSIDE_IMAGE,
    DECODE_ERROR,
    DEGENERATE_BBOX,
    MISSING_LABEL,
    NOT_AN_IMAGE,
    UNKNOWN_VIEWPOINT,
)

GENERATOR = "compcars_kedro.sample"  # written into sample_info.json; marks a generated sample
GENERATOR_VERSION = 2
MAX_MAKE_ID = 163  # id space of the real make_names cell (163x1)
MAX_MODEL_ID = 2004  # id space of the real model_names cell (2004x1)
SUPERSAMPLE = 2  # cars are drawn at 2x and downsampled (anti-aliasing)

EXTRA_VIEWPOINTS = (3, 4, 5, -1)
EXTRA_VIEWPOINT_P = (0.3, 0.32, 0.3, 0.08)

CAR_TYPES = (
    "MPV",
    "SUV",
    "sedan",
    "hatchback",
    "minibus",
    "fastback",
    "estate",
    "pickup",
    "hardtop convertible",
    "sports",
    "crossover",
    "convertible",
)

#: (expected reason, drawn view, note) of each planted broken input; the reasons are those a
#: downstream validator gives (``compcars_kedro.names``, the ``reason`` column of
#: ``rejected_images``). The last one is valid: its car overhangs the right edge, so its box is
#: clipped to the image.
PLANTED_PLAN: tuple[tuple[str | None, int, str], ...] = (
    (DECODE_ERROR, 1, "truncated JPEG (~40% of its bytes); header opens, decoding fails"),
    (MISSING_LABEL, 1, "image without a label file"),
    (BBOX_OUTSIDE_IMAGE, 2, "bbox mostly right of the image (70% of its width outside)"),
    (DEGENERATE_BBOX, 1, "bbox with x2 == x1 (zero width)"),
    (NOT_AN_IMAGE, 2, "HTML error page saved with a .jpg extension"),
    (UNKNOWN_VIEWPOINT, 1, "valid image, label viewpoint code 7"),
    (None, 2, "clipped"),
)
#: reasons the planted inputs should be rejected with
PLANTED_REASONS: tuple[str, ...] = tuple(r for r, _, _ in PLANTED_PLAN if r is not None)

# Shared body-colour palette: every model uses an overlapping random subset of it.
PALETTE: dict[str, tuple[int, int, int]] = {
    "white": (232, 232, 228),
    "silver": (168, 172, 178),
    "black": (30, 30, 34),
    "red": (172, 32, 30),
    "blue": (38, 66, 150),
    "green": (42, 102, 62),
    "yellow": (214, 176, 42),
    "grey": (102, 102, 108),
    "brown": (112, 72, 46),
    "orange": (208, 112, 32),
}
PALETTE_NAMES = tuple(PALETTE)

GRILLE_STYLES = (
    "horizontal_bars",
    "mesh",
    "vertical_bars",
    "twin_kidney",
    "single_slot",
    "hexagon",
)
HEADLIGHT_SHAPES = ("round", "rectangle", "slit", "trapezoid", "twin_round")
TAILLIGHT_STYLES = ("bar_across", "vertical_strips", "round_pairs", "l_shapes")
BADGE_SHAPES = ("circle", "diamond", "oval", "shield", "ring")
WINDOW_STYLES = ("plain", "curved", "sunstrip")
EXHAUST_LAYOUTS = ("none", "single", "dual", "twin_left", "quad")

MAKE_NAME_POOL = (
    "Audi",
    "BMW",
    "Benz",
    "Volvo",
    "Toyota",
    "Honda",
    "Nissan",
    "Mazda",
    "Kia",
    "Ford",
    "Peugeot",
    "Citroen",
    "Skoda",
    "Subaru",
    "Suzuki",
    "Jeep",
    "Buick",
    "Chery",
    "Geely",
    "BYD",
    "Porsche",
    "Jaguar",
    "Fiat",
    "Opel",
    "Dacia",
    "Lancia",
    "SAAB",
    "Saab",
    "Mitsubishi",
    "Alfa Romeo",
)
DUPLICATE_MAKE_NAME = "Lotus"
TRAILING_SPACE_MAKE_NAME = "Hyundai "
MODEL_NAME_STEMS = (
    "Astra",
    "Civic",
    "Corsa",
    "Focus",
    "Golf",
    "Jazz",
    "Kona",
    "Leon",
    "Polo",
    "Swift",
    "Tiguan",
    "Yaris",
    "Accord",
    "Sylphy",
    "Elise",
    "Evora",
    "Tucson",
    "Sonata",
    "Cerato",
    "Octavia",
    "Fabia",
    "Legacy",
    "Outback",
    "Wrangler",
    "Regal",
    "Tiggo",
    "Emgrand",
    "Cayenne",
    "Panda",
    "Punto",
    "Insignia",
    "Duster",
    "Lancer",
    "Giulia",
    "Forester",
)
MODEL_SUFFIXES = ("", " L", " GT", " Sport", " 2.0T", " Hybrid", " Coupe", " SW", " EV")


@dataclass(frozen=True)
class SampleSpec:
    """What to generate. Same spec -> byte-identical output."""

    n_makes: int = 6
    models_per_make: int = 4
    # Front / rear counts per model. ``images_per_view`` set: exactly that many of each (equal
    # views). None: drawn per model like the real data, the larger view between
    # ``min_per_view`` and ``max_per_view`` and a front:rear ratio from 1 to ``max_view_ratio``
    # (median ``median_view_ratio``), either view being the larger one.
    images_per_view: int | None = None
    min_per_view: int = 5
    max_per_view: int = 60
    median_view_ratio: float = 1.3
    max_view_ratio: float = 4.0
    extra_view_fraction: float = 0.15  # extra side/front-side/rear-side/uncertain images
    # near-duplicates: this fraction of the front/rear photos gets a re-encoded (other JPEG
    # quality) or slightly resized copy in the same model (at least one when > 0)
    near_duplicate_fraction: float = 0.03
    width: int = 320
    height: int = 240
    seed: int = 0
    jpeg_quality: int = 88
    broken: bool = True  # plant the broken inputs (see PLANTED_REASONS)

    def __post_init__(self) -> None:
        if self.n_makes < 1 or self.models_per_make < 1 or (self.images_per_view or 1) < 1:
            raise ValueError("n_makes, models_per_make and images_per_view must be >= 1")
        if not 1 <= self.min_per_view <= self.max_per_view:
            raise ValueError("need 1 <= min_per_view <= max_per_view")
        if not 1.0 < self.median_view_ratio < self.max_view_ratio:
            raise ValueError("need 1 < median_view_ratio < max_view_ratio")
        if not 0.0 <= self.near_duplicate_fraction <= 0.5:
            raise ValueError("near_duplicate_fraction must be in [0, 0.5]")
        if self.n_makes > MAX_MAKE_ID or self.n_makes * self.models_per_make > MAX_MODEL_ID // 2:
            raise ValueError("too many makes/models for the CompCars id space")
        if not 0.0 <= self.extra_view_fraction <= 2.0:
            raise ValueError("extra_view_fraction must be in [0, 2]")
        if self.width < 64 or self.height < 48:
            raise ValueError("width/height must be at least 64x48")
        if not 1 <= self.jpeg_quality <= 95:
            raise ValueError("jpeg_quality must be in [1, 95]")


TINY = SampleSpec(n_makes=3, models_per_make=2, min_per_view=3, max_per_view=9, width=128,
                  height=96, near_duplicate_fraction=0.02)


@dataclass(frozen=True)
class MakeTraits:
    """Family traits shared by all models of one make."""

    make_id: int
    name: str
    grille: str
    headlight: str
    taillight: str
    badge: str
    chrome_grille: bool


@dataclass(frozen=True)
class ModelTraits:
    """Per-model shape parameters (fractions of the car's bounding box)."""

    model_id: int
    make_id: int
    name: str
    years: tuple[str, ...]
    colours: tuple[str, ...]
    car_type: int
    aspect: float  # front/rear bbox width / height
    cabin_h: float  # greenhouse height / car height
    cabin_w: float  # greenhouse bottom width / body width
    taper: float  # roof width / greenhouse bottom width
    clearance: float  # ground clearance / car height
    bumper_v: float  # bumper top, fraction of the lower body height
    wheel_w: float  # tyre width / car width
    grille_w: float
    grille_h: float
    grille_n: int
    light_w: float
    light_h: float
    light_v: float
    window_style: str
    window_inset: float
    roof_thick: float
    front_plate_v: float
    rear_plate_on_trunk: bool
    exhaust: str
    spoiler: bool
    side_aspect: float
