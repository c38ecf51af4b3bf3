"""CHAIR: object hallucination in image captions, equal to the reference ``chair.py`` (OPERA, NLTK path).

A caption's object mentions are found by lower-casing it, tokenising it with NLTK, lemmatising each
token with WordNet using its perceptron POS tag, merging two-word objects (``"hot dog"``, ``"baby
elephant"`` → ``"elephant"``) greedily left to right, and keeping the words of an object vocabulary
(a synonyms list whose first word per line is the object's "node" word). A mention whose node word is
not among the image's ground-truth objects is a hallucination.

Metrics over a set of captions (all micro-averaged, as the reference):

* ``CHAIRs``: captions with at least one hallucinated mention / captions.
* ``CHAIRi``: hallucinated mentions / mentions (repeats counted).
* ``Recall``: ground-truth objects mentioned / ground-truth objects, summed over captions.
* ``Precision`` (PAI's variant): ground-truth objects mentioned / distinct objects mentioned, summed over captions.
* ``F1``: harmonic mean of Precision and Recall.
* ``Len``: mean number of merged tokens per caption. The reference stores ``0.01 *`` this mean (and
  prints it times 100); here it is the plain mean.

Per-caption records keep the reference's field names. Differences from the reference, none of which
changes a number on valid input: per-caption ``Len`` holds the caption's token count (the reference
leaves 0); per-caption ``Precision``/``F1`` are always present (PAI sets them only when the image has
ground truth); ``mscoco_gt_words`` is sorted; an image id absent from the ground truth, a record
without caption, or a caption set without any mention raise or warn instead of silently giving
numbers (the reference scores a missing image as having no objects, and crashes on zero mentions).

NLTK data (``punkt_tab``, ``averaged_perceptron_tagger_eng``, ``wordnet``) is downloaded with
``nltk.download`` when missing, unless ``EAH_OFFLINE=1``; point ``NLTK_DATA`` at a folder holding it
to work offline.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import warnings
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import nltk
import pandas as pd
from nltk.corpus.reader.wordnet import ADJ, ADV, NOUN, VERB
from nltk.stem import WordNetLemmatizer
from tqdm.auto import tqdm

from eahlib import data_registry

logger = logging.getLogger(__name__)

NLTK_RESOURCES = {
    "punkt_tab": "tokenizers/punkt_tab/english/",
    "averaged_perceptron_tagger_eng": "taggers/averaged_perceptron_tagger_eng/",
    "wordnet": "corpora/wordnet",
}
"""NLTK packages CHAIR needs, with the resource path that proves each is installed."""

_WORDNET_POS = {"J": ADJ, "V": VERB, "N": NOUN, "R": ADV}
_LEMMATIZER = WordNetLemmatizer()
_POST_RULE_SECTION = "post_rule"


def ensure_nltk_data() -> None:
    """Make sure the NLTK data CHAIR needs is installed, downloading it unless ``EAH_OFFLINE`` is set.

    Raises:
        LookupError: a resource is missing and cannot be downloaded; the message names it and the fix.
    """
    missing = [package for package, resource in NLTK_RESOURCES.items() if not _nltk_has(resource)]
    if missing and not data_registry.offline():
        for package in missing:
            logger.warning("NLTK data %r (needed by CHAIR) is missing; downloading it with nltk.download.", package)
            nltk.download(package, quiet=True)
        missing = [package for package, resource in NLTK_RESOURCES.items() if not _nltk_has(resource)]
    if missing:
        reason = f"{data_registry.OFFLINE_ENV} forbids downloads" if data_registry.offline() else "the download failed"
        raise LookupError(
            f"NLTK data {missing} not found ({reason}). Install it with "
            f"`python -m nltk.downloader {' '.join(missing)}`, or set NLTK_DATA to a folder that holds it "
            f"(searched: {nltk.data.path})."
        )


def _nltk_has(resource: str) -> bool:
    try:
        nltk.data.find(resource)
    except LookupError:
        return False
    return True


@lru_cache(maxsize=1 << 16)
def lemmatize_caption(caption: str) -> tuple[str, ...]:
    """Lower-case, tokenise, POS-tag and lemmatise a caption, as the reference CHAIR (cached per text).

    Args:
        caption: the caption text.

    Returns:
        One lemma per NLTK token (J→adjective, V→verb, N→noun, R→adverb, any other tag→noun).
    """
    tagged = nltk.pos_tag(nltk.word_tokenize(caption.lower()))
    return tuple(_LEMMATIZER.lemmatize(token, pos=_WORDNET_POS.get(tag[:1], NOUN)) for token, tag in tagged)


@dataclass(frozen=True)
class CaptionObjects:
    """The object mentions found in one caption.

    Attributes:
        words: the caption's tokens after lemmatisation and two-word merging (the reference's ``words``).
        mentions: vocabulary words among them, in order, repeats kept.
        nodes: the node word (object name) of each mention.
        token_indices: per mention, the reference's ``hallucination_idxs`` value: the lemma index where a
            merged token starts, looked up by the mention's position after dropping ``seat`` tokens (a
            reference quirk: off by the dropped seats when the toilet/seat rule fired before the mention).
    """

    words: tuple[str, ...]
    mentions: tuple[str, ...]
    nodes: tuple[str, ...]
    token_indices: tuple[int, ...]


@dataclass(frozen=True)
class ObjectVocabulary:
    """An object vocabulary: synonyms → node words, plus two-word merge rules.

    Attributes:
        node_of: every vocabulary word → its node word (first word of its synonyms line).
        pairs: two-word phrase → the token it is merged into (``"baby cat"`` → ``"cat"``).
        drop_seat_with_toilet: drop ``seat`` tokens from a caption that also says ``toilet``.
    """

    node_of: Mapping[str, str]
    pairs: Mapping[str, str] = field(default_factory=dict)
    drop_seat_with_toilet: bool = False

    @classmethod
    def from_files(cls, synonyms: str | os.PathLike, rules: str | os.PathLike | None = None) -> ObjectVocabulary:
        """Read a vocabulary from a synonyms list and an optional rules file.

        Args:
            synonyms: one object per line, words separated by comma + one space, node word first.
            rules: sections ``[coco_double_words]`` (phrase → itself), ``[animal_words]`` (``baby X``/``adult X``
                → X), ``[vehicle_words]`` (``passenger X`` → X), ``[special_overrides]`` (``a b -> c``, applied
                last) and ``[post_rule]`` (its presence enables the toilet/seat rule); ``#`` starts a comment.

        Returns:
            The vocabulary.
        """
        node_of: dict[str, str] = {}
        for line in Path(synonyms).read_text(encoding="utf-8").splitlines():
            if line.strip():
                words = line.strip().split(", ")
                node_of.update(dict.fromkeys(words, words[0]))
        if not node_of:
            raise ValueError(f"Vocabulary file {synonyms} has no object lines ('node, synonym, ...').")
        if rules is None:
            return cls(node_of)
        sections = _read_sections(Path(rules))
        pairs: dict[str, str] = {phrase: phrase for phrase in sections.pop("coco_double_words", [])}
        for animal in sections.pop("animal_words", []):
            pairs[f"baby {animal}"] = pairs[f"adult {animal}"] = animal
        for vehicle in sections.pop("vehicle_words", []):
            pairs[f"passenger {vehicle}"] = vehicle
        for override in sections.pop("special_overrides", []):
            phrase, arrow, target = override.partition(" -> ")
            if not arrow:
                raise ValueError(f"{rules}: override {override!r} must read 'word word -> replacement'.")
            pairs[phrase] = target
        drop_seat = sections.pop(_POST_RULE_SECTION, None) is not None
        if sections:
            raise ValueError(f"{rules}: unknown sections {sorted(sections)}.")
        return cls(node_of, pairs, drop_seat)

    @classmethod
    def coco(cls) -> ObjectVocabulary:
        """The CHAIR COCO vocabulary (80 categories) with the reference's rules, from the data registry."""
        return cls.from_files(data_registry.chair_synonyms(), data_registry.chair_rules())

    def caption_objects(self, caption: str) -> CaptionObjects:
        """Find the object mentions of a caption (see the module docstring)."""
        lemmas = lemmatize_caption(caption)
        words: list[str] = []
        starts: list[int] = []
        i = 0
        while i < len(lemmas):
            starts.append(i)
            phrase = " ".join(lemmas[i : i + 2])
            if phrase in self.pairs:
                words.append(self.pairs[phrase])
                i += 2
            else:
                words.append(lemmas[i])
                i += 1
        kept = words
        if self.drop_seat_with_toilet and "toilet" in words and "seat" in words:
            kept = [word for word in words if word != "seat"]
        positions = [k for k, word in enumerate(kept) if word in self.node_of]
        mentions = tuple(kept[k] for k in positions)
        return CaptionObjects(
            words=tuple(words),
            mentions=mentions,
            nodes=tuple(self.node_of[word] for word in mentions),
            token_indices=tuple(starts[k] for k in positions),
        )


def _read_sections(path: Path) -> dict[str, list[str]]:
    """Lines of an INI-like file by ``[section]``, comments and blank lines removed."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
        elif line:
            if current is None:
                raise ValueError(f"{path}:{number}: {raw!r} comes before any [section] header.")
            current.append(line)
    return sections


@dataclass
class ChairResult:
    """CHAIR scores of a set of captions.

    Attributes:
        overall: ``CHAIRs``, ``CHAIRi``, ``Recall``, ``Precision``, ``F1``, ``Len`` (plain mean token count).
        sentences: one record per caption, with the reference's field names (``image_id``, ``caption``,
            ``mscoco_hallucinated_words`` as ``[surface, node]`` pairs, ``mscoco_gt_words``,
            ``mscoco_generated_words``, ``hallucination_idxs``, ``words``, ``metrics``).
        skipped: number of records skipped because their image had no ground truth (``skip_missing``).
    """

    overall: dict[str, float]
    sentences: list[dict[str, Any]]
    skipped: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The reference's output layout: ``{"sentences": [...], "overall_metrics": {...}}``."""
        return {"sentences": self.sentences, "overall_metrics": self.overall}

    def save(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_dict` as JSON (indent 2, UTF-8), like the reference's ``--save_path``.

        Args:
            path: output file; parent folders are created.

        Returns:
            The path written.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False), encoding="utf-8")
        return path

    def to_frame(self) -> pd.DataFrame:
        """Per-caption metrics as a DataFrame (one row per caption, with ``image_id`` and ``caption``)."""
        return pd.DataFrame(
            [{"image_id": s["image_id"], "caption": s["caption"], **s["metrics"]} for s in self.sentences]
        )

    def summary(self) -> str:
        """The overall metrics in percent (``Len`` as the mean token count), one per line."""
        return "\n".join(
            f"{name:<10}: {value if name == 'Len' else 100 * value:.1f}" for name, value in self.overall.items()
        )


class ChairEvaluator:
    """Scores captions against per-image ground-truth objects with the CHAIR metrics.

    Args:
        ground_truth: image id → its objects (node words of ``vocabulary``).
        vocabulary: an :class:`ObjectVocabulary`, a synonyms-list file, or ``None`` for CHAIR's COCO
            vocabulary and rules (from the data registry).
        rules: a rules file for a synonyms-list ``vocabulary`` (optional; see :meth:`ObjectVocabulary.from_files`).
    """

    def __init__(
        self,
        ground_truth: Mapping[Any, Iterable[str]],
        vocabulary: ObjectVocabulary | str | os.PathLike | None = None,
        rules: str | os.PathLike | None = None,
    ) -> None:
        ensure_nltk_data()
        self.vocabulary = _as_vocabulary(vocabulary, rules)
        self.ground_truth: dict[Any, frozenset[str]] = {}
        for image_id, objects in ground_truth.items():
            if isinstance(objects, str):
                raise ValueError(
                    f"Ground truth of image {image_id!r} must be a list of objects, got the string {objects!r}."
                )
            self.ground_truth[image_id] = frozenset(objects)
        unknown = set().union(*self.ground_truth.values()) - set(self.vocabulary.node_of.values())
        if unknown:
            raise ValueError(
                f"Ground-truth objects {sorted(unknown)[:5]} are not node words of the vocabulary (the first word "
                "of a synonyms line); map them to node words, or use the vocabulary the ground truth was built with."
            )

    @classmethod
    def from_coco(
        cls,
        annotation_dir: str | os.PathLike | None = None,
        vocabulary: ObjectVocabulary | str | os.PathLike | None = None,
        rules: str | os.PathLike | None = None,
    ) -> ChairEvaluator:
        """Build the ground truth from COCO 2014 annotations, as the reference does.

        Each image's objects are the node words of its instance categories plus every object mentioned
        in its reference captions, over both train and val.

        Args:
            annotation_dir: folder with ``instances_/captions_{train,val}2014.json``; ``None`` downloads
                the official annotations (about 250 MB) through the data registry.
            vocabulary: see :class:`ChairEvaluator`.
            rules: see :class:`ChairEvaluator`.

        Returns:
            The evaluator. Building it for all of COCO takes minutes; save its ground truth with
            :meth:`save_ground_truth` and reload it with :meth:`from_ground_truth`.
        """
        ensure_nltk_data()
        folder = Path(annotation_dir) if annotation_dir is not None else data_registry.coco_annotations()
        files = {name: folder / name for name in data_registry.COCO_ANNOTATION_FILES}
        missing = [name for name, path in files.items() if not path.is_file()]
        if missing:
            raise FileNotFoundError(
                f"COCO annotation folder {folder} lacks {missing}; CHAIR needs all of "
                f"{list(files)} (from {data_registry.COCO_ANNOTATIONS_URL})."
            )
        vocab = _as_vocabulary(vocabulary, rules)
        objects: defaultdict[Any, set[str]] = defaultdict(set)
        for split in ("val", "train"):
            instances = json.loads(files[f"instances_{split}2014.json"].read_text(encoding="utf-8"))
            for image in instances["images"]:  # every image has ground truth, possibly empty
                objects.setdefault(image["id"], set())
            category_node = {}
            for category in instances["categories"]:
                if category["name"] not in vocab.node_of:
                    raise ValueError(f"COCO category {category['name']!r} is not in the object vocabulary.")
                category_node[category["id"]] = vocab.node_of[category["name"]]
            for annotation in instances["annotations"]:
                objects[annotation["image_id"]].add(category_node[annotation["category_id"]])
        for split in ("val", "train"):
            captions = json.loads(files[f"captions_{split}2014.json"].read_text(encoding="utf-8"))["annotations"]
            for annotation in tqdm(captions, desc=f"CHAIR ground truth ({split} captions)", disable=None):
                objects[annotation["image_id"]].update(vocab.caption_objects(annotation["caption"]).nodes)
        return cls(objects, vocab)

    @classmethod
    def from_ground_truth(
        cls,
        source: Mapping[Any, Iterable[str]] | str | os.PathLike = "ritual",
        vocabulary: ObjectVocabulary | str | os.PathLike | None = None,
        rules: str | os.PathLike | None = None,
    ) -> ChairEvaluator:
        """Use precomputed ground truth.

        Args:
            source: a mapping image id → objects; a JSON or JSON.gz file ``{image_id: [objects]}`` (string
                keys made of digits become ints); or the name of a registry cache, ``"ritual"`` (default;
                built with the NLTK lemmatiser, matching this evaluator) or ``"maxlinn"``.
            vocabulary: see :class:`ChairEvaluator`.
            rules: see :class:`ChairEvaluator`.

        Returns:
            The evaluator.
        """
        if isinstance(source, Mapping):
            return cls(source, vocabulary, rules)
        path = Path(source)
        if not path.is_file():
            if str(source) not in data_registry.CHAIR_GROUND_TRUTH_FILES:
                raise FileNotFoundError(
                    f"Ground truth {str(source)!r} is neither a file nor one of the registry caches "
                    f"{sorted(data_registry.CHAIR_GROUND_TRUTH_FILES)}."
                )
            path = data_registry.chair_ground_truth(str(source))
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as handle:
            raw = json.load(handle)
        if not isinstance(raw, dict):
            raise ValueError(f"{path} must hold a JSON object {{image_id: [objects]}}, got {type(raw).__name__}.")
        return cls({_json_key(key): objects for key, objects in raw.items()}, vocabulary, rules)

    def save_ground_truth(self, path: str | os.PathLike) -> Path:
        """Write the ground truth as JSON (gzip-compressed if the name ends in ``.gz``), sorted lists.

        Args:
            path: output file, readable by :meth:`from_ground_truth`.

        Returns:
            The path written.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = json.dumps({str(key): sorted(objects) for key, objects in self.ground_truth.items()})
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "wt", encoding="utf-8") as handle:
            handle.write(payload)
        return path

    def evaluate(
        self,
        records: Iterable[Mapping[str, Any]] | str | os.PathLike,
        image_id_key: str = "image_id",
        caption_key: str = "caption",
        skip_missing: bool = False,
    ) -> ChairResult:
        """Score captions.

        Args:
            records: dicts with an image id and a caption (each one is one caption; order kept), or a
                ``.json`` (list) / ``.jsonl`` file of them.
            image_id_key: key of the image id; ids must equal the ground truth's keys (for COCO, ints; see
                :func:`~eahlib.data_registry.coco_image_id` to convert file names).
            caption_key: key of the caption text.
            skip_missing: skip (and count, with a warning) records whose image has no ground truth
                instead of raising.

        Returns:
            The overall metrics and per-caption records.
        """
        rows = load_caption_records(records) if isinstance(records, (str, os.PathLike)) else list(records)
        if not rows:
            raise ValueError("No caption records to evaluate.")
        sentences: list[dict[str, Any]] = []
        counts: defaultdict[str, int] = defaultdict(int)
        for index, record in enumerate(tqdm(rows, desc="CHAIR", disable=None)):
            image_id, caption = _image_and_caption(record, index, image_id_key, caption_key)
            if image_id not in self.ground_truth:
                if skip_missing:
                    counts["skipped"] += 1
                    continue
                raise KeyError(_missing_image_message(image_id, index, self.ground_truth))
            sentence, caption_counts = self._score(image_id, caption)
            sentences.append(sentence)
            for name, value in caption_counts.items():
                counts[name] += value
        if counts["skipped"]:
            message = f"CHAIR skipped {counts['skipped']} of {len(rows)} records without ground truth."
            warnings.warn(message, stacklevel=2)
        if not sentences:
            raise ValueError(f"All {len(rows)} records were skipped: none of their images has ground truth.")
        if not counts["mentions"]:
            warnings.warn("No caption mentions an object: CHAIRi, Precision and F1 set to 0.", stacklevel=2)
        if not counts["gt_objects"]:
            warnings.warn("No evaluated image has ground-truth objects: Recall set to 0.", stacklevel=2)
        recall = _ratio(counts["recalled"], counts["gt_objects"])
        precision = _ratio(counts["recalled"], counts["distinct_mentions"])
        overall = {
            "CHAIRs": counts["hallucinated_captions"] / len(sentences),
            "CHAIRi": _ratio(counts["hallucinated"], counts["mentions"]),
            "Recall": recall,
            "Precision": precision,
            "F1": _f1(precision, recall),
            "Len": counts["tokens"] / len(sentences),
        }
        return ChairResult(overall, sentences, counts["skipped"])

    def _score(self, image_id: Any, caption: str) -> tuple[dict[str, Any], dict[str, int]]:
        """One caption's reference-style record and its contribution to the overall counts."""
        found = self.vocabulary.caption_objects(caption)
        gt = self.ground_truth[image_id]
        hallucinated = [
            (word, node, index)
            for word, node, index in zip(found.mentions, found.nodes, found.token_indices)
            if node not in gt
        ]
        recalled = gt.intersection(found.nodes)
        recall = len(recalled) / len(gt) if gt else 0.0
        precision = len(recalled) / len(set(found.nodes)) if found.nodes else 0.0
        sentence = {
            "image_id": image_id,
            "caption": caption,
            "mscoco_hallucinated_words": [[word, node] for word, node, _ in hallucinated],
            "mscoco_gt_words": sorted(gt),
            "mscoco_generated_words": list(found.nodes),
            "hallucination_idxs": [index for _, _, index in hallucinated],
            "words": list(found.words),
            "metrics": {
                "CHAIRs": int(bool(hallucinated)),
                "CHAIRi": len(hallucinated) / len(found.mentions) if found.mentions else 0.0,
                "Recall": recall,
                "Precision": precision,
                "F1": _f1(precision, recall),
                "Len": len(found.words),
            },
        }
        counts = {
            "hallucinated_captions": int(bool(hallucinated)),
            "hallucinated": len(hallucinated),
            "mentions": len(found.mentions),
            "distinct_mentions": len(set(found.nodes)),
            "recalled": len(recalled),
            "gt_objects": len(gt),
            "tokens": len(found.words),
        }
        return sentence, counts


def load_caption_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read caption records from a ``.json`` file (a list) or a ``.jsonl`` file (one object per line).

    Args:
        path: the caption file.

    Returns:
        The records, in file order.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        records = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path}:{number}: not valid JSON ({error.msg}).") from error
        return records
    if path.suffix == ".json":
        records = json.loads(text)
        if not isinstance(records, list):
            raise ValueError(f"{path} must hold a JSON list of caption records; use .jsonl for one per line.")
        return records
    raise ValueError(f"Unsupported caption file {path}: expected a .json or .jsonl file.")


def _as_vocabulary(
    vocabulary: ObjectVocabulary | str | os.PathLike | None, rules: str | os.PathLike | None
) -> ObjectVocabulary:
    if isinstance(vocabulary, ObjectVocabulary):
        if rules is not None:
            raise ValueError("Pass rules only with a synonyms-file vocabulary; an ObjectVocabulary has its own.")
        return vocabulary
    if vocabulary is None:
        if rules is None:
            return ObjectVocabulary.coco()
        return ObjectVocabulary.from_files(data_registry.chair_synonyms(), rules)
    return ObjectVocabulary.from_files(vocabulary, rules)


def _json_key(key: str) -> int | str:
    return int(key) if key.isdigit() else key


def _image_and_caption(record: Mapping[str, Any], index: int, image_id_key: str, caption_key: str) -> tuple[Any, str]:
    if not isinstance(record, Mapping):
        raise TypeError(
            f"Record {index} is a {type(record).__name__}, expected a dict with {image_id_key!r} and {caption_key!r}."
        )
    for key in (image_id_key, caption_key):
        if key not in record:
            raise ValueError(
                f"Record {index} has no {key!r} field (it has {sorted(record)}); pass image_id_key/caption_key."
            )
    caption = record[caption_key]
    if not isinstance(caption, str):
        raise ValueError(f"Record {index}: caption must be a string, got {type(caption).__name__} ({caption!r}).")
    return record[image_id_key], caption


def _missing_image_message(image_id: Any, index: int, ground_truth: Mapping[Any, Any]) -> str:
    key_types = sorted({type(key).__name__ for key in ground_truth})
    message = f"Record {index}: image id {image_id!r} ({type(image_id).__name__}) has no ground truth"
    if isinstance(image_id, str) and "int" in key_types:
        return f"{message}; ground-truth ids are ints: convert with eahlib.data_registry.coco_image_id({image_id!r})."
    return f"{message} (ground-truth ids are {'/'.join(key_types)}); pass skip_missing=True to skip such records."


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0


def _f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0
