"""The data registry: derived from the manifest, resolved and verified under EAH_DATA_DIR, clear errors.

Every test points ``EAH_DATA_DIR`` at the ``public_data`` folder (conftest.py) and replaces
``pooch.retrieve`` so that nothing can be downloaded.
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pooch
import pytest

from eahlib import data_registry
from eahlib.bench import ChairEvaluator
from eahlib.data_registry import COCO_ANNOTATIONS, PACKAGED_FILES, RegistryEntry
from tests.conftest import FIXTURES


@pytest.fixture(autouse=True)
def data_dir(public_data: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``EAH_DATA_DIR`` = the public reference data; downloads refused."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the network must not be touched")

    monkeypatch.setenv(data_registry.DATA_DIR_ENV, str(public_data))
    monkeypatch.setenv(data_registry.OFFLINE_ENV, "1")
    monkeypatch.setattr(pooch, "retrieve", refuse)
    return public_data


def test_registry_is_derived_from_the_manifest() -> None:
    derived = data_registry.registry_from_manifest(FIXTURES / "eah_data_manifest.json")
    assert {entry.name: entry for entry in derived} == data_registry.read_registry()
    for entry in derived:
        assert entry.url is None or entry.url.startswith(
            ("https://raw.githubusercontent.com/", "http://images.cocodataset.org/")
        )


@pytest.mark.parametrize("name", data_registry.available())
def test_every_entry_resolves_under_data_dir(name: str, data_dir: Path) -> None:
    if name == COCO_ANNOTATIONS:  # the 250 MB zip is not mirrored in the reference data
        with pytest.raises(FileNotFoundError, match=data_registry.DATA_DIR_ENV):
            data_registry.fetch(name)
        return
    path = data_registry.fetch(name)
    assert path == PACKAGED_FILES.get(name, data_dir / name)
    assert pooch.file_hash(str(path)) == data_registry.read_registry()[name].sha256


def test_derived_files_ship_with_the_package() -> None:
    assert set(PACKAGED_FILES) == {entry.name for entry in data_registry.read_registry().values() if entry.url is None}
    assert all(path.is_file() for path in PACKAGED_FILES.values())


def test_unknown_name_raises_with_suggestion() -> None:
    with pytest.raises(KeyError, match=r"Unknown data file 'chair/synonym\.txt'.*chair/synonyms\.txt"):
        data_registry.fetch("chair/synonym.txt")


def test_wrong_hash_and_missing_file_raise(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(data_registry.DATA_DIR_ENV, str(tmp_path))
    with pytest.raises(FileNotFoundError, match="not found"):
        data_registry.chair_synonyms()
    (tmp_path / "chair").mkdir()
    (tmp_path / "chair" / "synonyms.txt").write_text("person, man\n")
    with pytest.raises(ValueError, match="sha256 mismatch"):
        data_registry.chair_synonyms()


def test_without_data_dir_downloads_pinned_url_into_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, data_dir: Path
) -> None:
    monkeypatch.delenv(data_registry.DATA_DIR_ENV)
    monkeypatch.setattr(data_registry, "cache_dir", lambda: tmp_path)
    with pytest.raises(FileNotFoundError, match="forbids downloads"):
        data_registry.chair_synonyms()
    assert data_registry.chair_ground_truth("ritual") == PACKAGED_FILES["chair/gt_objects/ritual_chair_pkl_imid_to_objects.json.gz"]
    assert data_registry.chair_rules() == PACKAGED_FILES["chair/chair_rules_extracted.txt"]
    calls = []

    def fake_retrieve(url: str, known_hash: str, fname: str, path: Path, progressbar: bool) -> str:
        calls.append((url, known_hash))
        target = Path(path) / fname
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(data_dir / "chair/synonyms.txt", target)
        return str(target)

    monkeypatch.delenv(data_registry.OFFLINE_ENV)
    monkeypatch.setattr(pooch, "retrieve", fake_retrieve)
    assert data_registry.chair_synonyms() == tmp_path / "chair/synonyms.txt"
    entry = data_registry.read_registry()["chair/synonyms.txt"]
    assert calls == [(entry.url, entry.sha256)]
    monkeypatch.setenv(data_registry.OFFLINE_ENV, "1")
    assert data_registry.chair_synonyms() == tmp_path / "chair/synonyms.txt"
    assert len(calls) == 1, "a cached file is used offline without pooch"


def test_pope_question_aliases(data_dir: Path) -> None:
    for version, template in data_registry.POPE_QUESTION_FILES.items():
        for split in data_registry.POPE_SPLITS:
            name = template.format(split=split)
            if name in data_registry.available():
                assert data_registry.pope_questions(version, split) == data_dir / name
    with pytest.raises(ValueError, match=r"has no 'random' split; it has \['adversarial'\]"):
        data_registry.pope_questions("coco_v1", "random")
    with pytest.raises(ValueError, match="Unknown POPE version"):
        data_registry.pope_questions("coco2017")
    with pytest.raises(ValueError, match="Unknown CHAIR ground truth"):
        data_registry.chair_ground_truth("pattern")


def test_default_coco_annotations_build_the_same_ground_truth(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, data_dir: Path
) -> None:
    annotations = FIXTURES / "chair_coco_mini/coco_annotations"
    data = tmp_path / "data"
    archive = data / COCO_ANNOTATIONS
    archive.parent.mkdir(parents=True)
    with zipfile.ZipFile(archive, "w") as handle:
        for name in data_registry.COCO_ANNOTATION_FILES:
            handle.write(annotations / name, f"annotations/{name}")
    (data / "chair").mkdir()
    shutil.copy(data_dir / "chair/synonyms.txt", data / "chair/synonyms.txt")
    registry = {**data_registry.read_registry()}
    url = registry[COCO_ANNOTATIONS].url
    registry[COCO_ANNOTATIONS] = RegistryEntry(COCO_ANNOTATIONS, pooch.file_hash(str(archive)), url)
    monkeypatch.setattr(data_registry, "_registry", lambda: registry)
    monkeypatch.setattr(data_registry, "cache_dir", lambda: tmp_path / "cache")
    monkeypatch.setenv(data_registry.DATA_DIR_ENV, str(data))
    folder = data_registry.coco_annotations()
    assert sorted(path.name for path in folder.iterdir()) == sorted(data_registry.COCO_ANNOTATION_FILES)
    assert ChairEvaluator.from_coco().ground_truth == ChairEvaluator.from_coco(annotations).ground_truth


@pytest.mark.parametrize(
    ("image", "image_id"),
    [(42, 42), ("COCO_val2014_000000123456.jpg", 123456), ("val2017/000000000139.jpg", 139), ("77", 77)],
)
def test_coco_image_id(image: int | str, image_id: int) -> None:
    assert data_registry.coco_image_id(image) == image_id


@pytest.mark.parametrize("image", ["cat.jpg", 4.0, None])
def test_coco_image_id_rejects_other_values(image: object) -> None:
    with pytest.raises(ValueError, match="Cannot read a COCO image id"):
        data_registry.coco_image_id(image)


def test_resolve_coco_images_reports_missing(tmp_path: Path) -> None:
    for name in ("COCO_val2014_000000000001.jpg", "000000000002.jpg"):
        (tmp_path / name).touch()
    assert data_registry.resolve_coco_images(tmp_path, [2, 1, "COCO_val2014_000000000001.jpg"]) == [
        tmp_path / "000000000002.jpg",
        tmp_path / "COCO_val2014_000000000001.jpg",
        tmp_path / "COCO_val2014_000000000001.jpg",
    ]
    with pytest.raises(FileNotFoundError, match=r"2 of 3 images are missing .* e\.g\. \[3, 'x\.jpg'\]"):
        data_registry.resolve_coco_images(tmp_path, [1, 3, "x.jpg"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data_registry.resolve_coco_images(tmp_path / "nope", [1])
