"""Registry of the public data files eahlib's benchmarks need, downloaded and verified on first use.

Every file has a name (its relative path in the data layout, e.g. ``chair/synonyms.txt`` or
``pope/coco/coco_pope_random.json``), a sha256 and, where it is published, a URL pinned to one
commit of its source repository. The registry is data in the package (``eahlib/bench/registry.txt``),
derived once from the reference data's ``MANIFEST.json`` with ``python -m eahlib.data_registry
DATA_DIR``.

Where files come from:

* By default, from the network on first use, through ``pooch``, into ``pooch.os_cache("eahlib")``,
  and verified against the registry's sha256.
* With ``EAH_DATA_DIR=/path/to/eah-data`` set, from that folder (same relative layout), verified
  by sha256; the network is never touched. Tests and CI use this.
* With ``EAH_OFFLINE=1``, only from the cache: a file not downloaded yet raises an error instead
  of downloading (NLTK data downloads are disabled by the same switch).

A few registry entries have no URL: files derived from public sources for this project (the CHAIR
rules extracted from code, the CHAIR ground-truth caches converted from the public pickles). They
ship inside the package (``eahlib/bench/data/``, 1.6 MB) and are always read from there.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pooch

logger = logging.getLogger(__name__)

DATA_DIR_ENV = "EAH_DATA_DIR"
"""Environment variable naming a local folder that holds the registry's files (no network)."""
OFFLINE_ENV = "EAH_OFFLINE"
"""Environment variable that, when set to 1/true/yes, forbids every download."""
REGISTRY_FILE = Path(__file__).parent / "bench" / "registry.txt"

COCO_ANNOTATIONS = "coco/annotations_trainval2014.zip"
COCO_ANNOTATIONS_URL = "http://images.cocodataset.org/annotations/annotations_trainval2014.zip"
COCO_ANNOTATIONS_SHA256 = "031296bbc80c45a1d1f76bf9a90ead27e94e99ec629208449507a4917a3bf009"
"""sha256 of the official zip (252,872,794 bytes), as pinned by tensorflow_datasets' url_checksums/coco.txt."""
COCO_ANNOTATION_FILES = tuple(
    f"{kind}_{split}2014.json" for kind in ("instances", "captions") for split in ("train", "val")
)
"""The four files of the zip that CHAIR needs (the zip stores them under ``annotations/``)."""

DERIVED_FILES = (
    "chair/chair_rules_extracted.txt",
    "chair/gt_objects/ritual_chair_pkl_imid_to_objects.json.gz",
    "chair/gt_objects/ritual_chair_pkl_vocab.json",
    "chair/gt_objects/maxlinn_chair_pkl_imid_to_objects.json.gz",
    "chair/gt_objects/maxlinn_chair_pkl_vocab.json",
)
"""Files made for this project from public sources; they have no upstream URL."""
PACKAGED_FILES = {name: Path(__file__).parent / "bench" / "data" / name.removeprefix("chair/") for name in DERIVED_FILES}
"""Where the derived files ship inside the package, so that users need neither a download nor a
local data folder for them: the CHAIR rules (1 KB of string literals from the BSD-2 reference
``chair.py``) and the two CHAIR ground-truth caches with their vocabularies (1.6 MB)."""

POPE_QUESTION_FILES = {
    "coco": "pope/coco/coco_pope_{split}.json",
    "coco_v0": "pope/coco_v0_e3e3926/coco_pope_{split}.json",
    "coco_v1": "pope/coco_v1_edebdda/coco_pope_{split}.json",
    "aokvqa": "pope/aokvqa/aokvqa_pope_seem_{split}.json",
    "gqa": "pope/gqa/gqa_pope_seem_{split}.json",
    "vcd_aokvqa": "pope/vcd_jsonl/aokvqa_pope_{split}.json",
    "vcd_gqa": "pope/vcd_jsonl/gqa_pope_{split}.json",
}
"""POPE question-file versions: current COCO; the older COCO versions used by LLaVA-1.5/OPERA (v0)
and by other papers (v1, adversarial only); A-OKVQA and GQA (SEEM-segmented); VCD's JSONL copies."""
POPE_SPLITS = ("random", "popular", "adversarial")

CHAIR_GROUND_TRUTH_FILES = {
    "ritual": "chair/gt_objects/ritual_chair_pkl_imid_to_objects.json.gz",
    "maxlinn": "chair/gt_objects/maxlinn_chair_pkl_imid_to_objects.json.gz",
}
"""CHAIR ground-truth caches for all COCO 2014 images: ``ritual`` was built with the NLTK lemmatiser
(the code path of :class:`~eahlib.bench.chair.ChairEvaluator`), ``maxlinn`` with ``pattern``'s singulariser."""

_COCO_ID_PATTERN = re.compile(r"(\d+)(?:\.[A-Za-z]+)?$")


@dataclass(frozen=True)
class RegistryEntry:
    """One file of the registry.

    Attributes:
        name: relative path in the data layout, e.g. ``chair/synonyms.txt``.
        sha256: hex digest the file must have.
        url: public download URL pinned to a commit, or ``None`` for files derived for this project.
    """

    name: str
    sha256: str
    url: str | None = None

    def line(self) -> str:
        """The entry as one registry-file line: ``name sha256 [url]``."""
        return " ".join(part for part in (self.name, self.sha256, self.url) if part)


def offline() -> bool:
    """Whether ``EAH_OFFLINE`` forbids downloads."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def data_dir() -> Path | None:
    """The local data folder named by ``EAH_DATA_DIR``, or ``None`` when unset."""
    value = os.environ.get(DATA_DIR_ENV, "").strip()
    return Path(value).expanduser() if value else None


def cache_dir() -> Path:
    """The download cache, ``pooch.os_cache("eahlib")``."""
    return Path(pooch.os_cache("eahlib"))


def read_registry(path: str | os.PathLike = REGISTRY_FILE) -> dict[str, RegistryEntry]:
    """Read a registry file: one ``name sha256 [url]`` per line, ``#`` starts a comment.

    Args:
        path: the registry file.

    Returns:
        The entries by name, in file order.
    """
    entries: dict[str, RegistryEntry] = {}
    for number, raw in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) not in (2, 3) or not re.fullmatch(r"[0-9a-f]{64}", fields[1]):
            raise ValueError(f"{path}:{number}: expected 'name sha256 [url]' with a hex sha256, got {raw!r}")
        entries[fields[0]] = RegistryEntry(*fields)
    return entries


@cache
def _registry() -> dict[str, RegistryEntry]:
    return read_registry(REGISTRY_FILE)


def available() -> list[str]:
    """Names of all files in the registry, sorted."""
    return sorted(_registry())


def _entry(name: str) -> RegistryEntry:
    registry = _registry()
    if name not in registry:
        close = difflib.get_close_matches(name, list(registry), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise KeyError(f"Unknown data file {name!r}.{hint} eahlib.data_registry.available() lists all names.")
    return registry[name]


def _verified(path: Path, entry: RegistryEntry) -> Path:
    """Return ``path`` if it exists and has the entry's sha256, else raise a clear error."""
    if not path.is_file():
        raise FileNotFoundError(
            f"{entry.name!r} not found at {path}. {DATA_DIR_ENV} is set to {data_dir()}: copy the file "
            f"there (same relative path), or unset {DATA_DIR_ENV} to download it to {cache_dir()}."
        )
    digest = pooch.file_hash(str(path))
    if digest != entry.sha256:
        raise ValueError(
            f"sha256 mismatch for {path}: expected {entry.sha256}, got {digest}. The file is corrupt or a "
            f"different version; replace it with the one from {entry.url or 'the reference data'}."
        )
    return path


def fetch(name: str) -> Path:
    """Local path of a registry file, downloading and verifying it on first use.

    Args:
        name: a registry name (see :func:`available`), e.g. ``"chair/synonyms.txt"``.

    Returns:
        The path of the verified file: inside the package for the derived files, else under
        ``EAH_DATA_DIR`` when set, else in the cache.

    Raises:
        KeyError: the name is not in the registry.
        FileNotFoundError: the file is missing under ``EAH_DATA_DIR``, or is not cached while
            ``EAH_OFFLINE`` is set.
        ValueError: the file's sha256 differs from the registry's.
    """
    entry = _entry(name)
    if name in PACKAGED_FILES:
        return _verified(PACKAGED_FILES[name], entry)
    local_root = data_dir()
    if local_root is not None:
        return _verified(local_root / name, entry)
    cached = cache_dir() / name
    if cached.is_file() and offline():
        return _verified(cached, entry)
    if offline():
        raise FileNotFoundError(
            f"{name!r} is not in the cache ({cached}) and {OFFLINE_ENV} forbids downloads. "
            f"Unset {OFFLINE_ENV} to download it from {entry.url}, or set {DATA_DIR_ENV}."
        )
    if not cached.is_file():
        logger.info("Downloading %s from %s to %s", name, entry.url, cached)
    path = pooch.retrieve(entry.url, known_hash=entry.sha256, fname=cached.name, path=cached.parent, progressbar=True)
    return Path(path)


def chair_synonyms() -> Path:
    """The CHAIR synonyms list (80 COCO categories, first word = node word)."""
    return fetch("chair/synonyms.txt")




def chair_rules() -> Path:
    """The CHAIR two-word and "baby/adult/passenger X" rules, extracted from the reference code.

    Shipped with the package (verified against the registry's sha256).
    """
    return fetch("chair/chair_rules_extracted.txt")


def chair_ground_truth(source: str = "ritual") -> Path:
    """A CHAIR ground-truth cache ``{image_id: [node words]}`` for all COCO 2014 images.

    Args:
        source: ``"ritual"`` (NLTK lemmatiser, matches :class:`~eahlib.bench.chair.ChairEvaluator`)
            or ``"maxlinn"`` (``pattern`` singulariser).

    Returns:
        Path of the ``.json.gz`` file (shipped with the package).
    """
    if source not in CHAIR_GROUND_TRUTH_FILES:
        raise ValueError(f"Unknown CHAIR ground truth {source!r}; choose one of {sorted(CHAIR_GROUND_TRUTH_FILES)}.")
    return fetch(CHAIR_GROUND_TRUTH_FILES[source])


def pope_questions(version: str = "coco", split: str = "adversarial") -> Path:
    """A POPE question file (JSON or JSONL records ``{question_id, image, text, label}``).

    Args:
        version: one of :data:`POPE_QUESTION_FILES` (``"coco"`` is the current COCO version).
        split: ``"random"``, ``"popular"`` or ``"adversarial"``.

    Returns:
        Path of the question file.
    """
    if version not in POPE_QUESTION_FILES:
        raise ValueError(f"Unknown POPE version {version!r}; choose one of {sorted(POPE_QUESTION_FILES)}.")
    if split not in POPE_SPLITS:
        raise ValueError(f"Unknown POPE split {split!r}; choose one of {list(POPE_SPLITS)}.")
    name = POPE_QUESTION_FILES[version].format(split=split)
    if name not in _registry():
        splits = [s for s in POPE_SPLITS if POPE_QUESTION_FILES[version].format(split=s) in _registry()]
        raise ValueError(f"POPE version {version!r} has no {split!r} split; it has {splits}.")
    return fetch(name)


def coco_annotations() -> Path:
    """Folder holding COCO 2014 ``instances_/captions_{train,val}2014.json``, from the official zip.

    The zip (about 250 MB) is downloaded on first use (or taken from ``EAH_DATA_DIR/coco/``),
    verified, and the four files are extracted into the cache.

    Returns:
        The folder with the four annotation files.
    """
    archive = fetch(COCO_ANNOTATIONS)
    target = cache_dir() / "coco" / "annotations_trainval2014"
    members = [f"annotations/{name}" for name in COCO_ANNOTATION_FILES]
    unzip = pooch.Unzip(members=members, extract_dir=str(target))
    unzip(str(archive), "fetch", None)
    return target / "annotations"


def coco_image_id(image: int | str) -> int:
    """COCO image id of an id or a COCO file name.

    Args:
        image: an int id, or a name like ``"COCO_val2014_000000123456.jpg"``, ``"000000123456.jpg"``,
            ``"123456"`` (a directory part is ignored).

    Returns:
        The integer image id.
    """
    if isinstance(image, int) and not isinstance(image, bool):
        return image
    if isinstance(image, str):
        match = _COCO_ID_PATTERN.search(Path(image).name)
        if match:
            return int(match.group(1))
    raise ValueError(
        f"Cannot read a COCO image id from {image!r}: expected an int or a name ending in digits such as "
        "'COCO_val2014_000000123456.jpg'."
    )


def resolve_coco_images(folder: str | os.PathLike, images: Iterable[int | str]) -> list[Path]:
    """Paths of COCO images in a folder, checking that all exist before any work starts.

    Args:
        folder: an image folder such as ``val2014/`` (2014 ``COCO_val2014_…`` or 2017 ``000000….jpg`` names).
        images: image ids, or file names relative to ``folder``.

    Returns:
        One path per requested image, in order.

    Raises:
        FileNotFoundError: the folder is missing or some images are not in it (says how many and which).
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"COCO image folder {root} does not exist.")
    by_id: dict[int, Path] = {}
    for entry in os.scandir(root):
        match = _COCO_ID_PATTERN.search(entry.name)
        if match and entry.is_file():
            by_id.setdefault(int(match.group(1)), Path(entry.path))
    paths: list[Path] = []
    missing: list[int | str] = []
    for image in images:
        path = root / image if isinstance(image, str) else by_id.get(image)
        if path is None or not path.is_file():
            missing.append(image)
        else:
            paths.append(path)
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of {len(paths) + len(missing)} images are missing in {root}, e.g. "
            f"{missing[:5]}. Download the COCO 2014 images (e.g. http://images.cocodataset.org/zips/val2014.zip) "
            "or pass the right folder."
        )
    return paths


def registry_from_manifest(manifest: str | os.PathLike) -> list[RegistryEntry]:
    """Build the registry: manifest files with pinned raw.githubusercontent URLs, derived files, COCO zip.

    Args:
        manifest: the reference data's ``MANIFEST.json`` (list of ``{dest, source_repo, path, commit, sha256}``).
            The derived files are hashed where they ship, inside the package.

    Returns:
        The registry entries, in a stable order.
    """
    entries = [
        RegistryEntry(
            item["dest"],
            item["sha256"],
            f"https://raw.githubusercontent.com/{item['source_repo']}/{item['commit']}/{item['path']}",
        )
        for item in json.loads(Path(manifest).read_text(encoding="utf-8"))
    ]
    entries += [RegistryEntry(name, pooch.file_hash(str(PACKAGED_FILES[name]))) for name in DERIVED_FILES]
    entries.append(RegistryEntry(COCO_ANNOTATIONS, COCO_ANNOTATIONS_SHA256, COCO_ANNOTATIONS_URL))
    return entries


def write_registry(entries: Sequence[RegistryEntry], path: str | os.PathLike = REGISTRY_FILE) -> None:
    """Write registry entries to a registry file (see :func:`read_registry`)."""
    header = [
        "# eahlib data registry: name sha256 [url]. Generated by `python -m eahlib.data_registry DATA_DIR`",
        "# from DATA_DIR/MANIFEST.json; entries without url were derived for this project (shipped in eahlib/bench/data/).",
    ]
    Path(path).write_text("\n".join(header + [entry.line() for entry in entries]) + "\n", encoding="utf-8")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m eahlib.data_registry DATA_DIR   (the folder holding MANIFEST.json)")
    root = Path(sys.argv[1])
    write_registry(registry_from_manifest(root / "MANIFEST.json"))
    print(f"wrote {REGISTRY_FILE}")
