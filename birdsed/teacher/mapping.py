"""Class mapping: which BirdNET label (``Scientific name_Common Name``) stands for each taxonomy class — by
scientific name, common name, a split species or a near miss, or a hand-fixed override (``teacher.mapping``)."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from birdsed.config.text import parse_yaml
from birdsed.errors import BirdsedError

log = logging.getLogger(__name__)


class TeacherError(BirdsedError, ValueError):
    """A teacher cannot be used: not installed, a bad mapping override, or an invalid teacher CSV."""


SPELLINGS = {"grey": "gray", "colour": "color", "coloured": "colored"}  # British → American (BirdNET's labels)
# Words that qualify a bird's name without naming another bird (IOC's renames add or drop them: "Blackcap" →
# "Eurasian Blackcap"): they break a tie between near-miss candidates and never make a match on their own
QUALIFIERS = frozenset(
    {
        "common",
        "eurasian",
        "european",
        "western",
        "eastern",
        "northern",
        "southern",
        "central",
        "american",
        "african",
        "asian",
        "oriental",
        "amazonian",
        "andean",
        "tropical",
        "neotropical",
        "pacific",
        "atlantic",
        "australian",
        "siberian",
        "arctic",
        "greater",
        "lesser",
        "great",
        "little",
    }
)


def normalise(name: str) -> str:
    """A name for matching: lower case, hyphens/underscores as spaces, apostrophes and other marks dropped,
    British spellings as BirdNET writes them (``grey`` → ``gray``)."""
    name = name.lower().replace("’", "'").replace("-", " ").replace("_", " ")
    words = re.sub(r"[^a-z0-9 ]", "", name).split()
    return " ".join(SPELLINGS.get(w, w) for w in words)


@dataclass
class ClassMapping:
    """Which teacher output (if any) stands for each taxonomy class."""

    classes: list[str]  # taxonomy order
    index: dict[str, int]  # class → teacher output index
    how: dict[str, str]  # class → scientific | common | split | near | override | ambiguous | unmapped
    teacher_labels: list[str]
    candidates: dict[str, list[str]] = field(default_factory=dict)  # ambiguous class → the labels it matched
    # teacher.genus_proxy: an unmapped class → the teacher labels of its genus, whose max stands in for it
    proxies: dict[str, list[int]] = field(default_factory=dict)

    def table(self) -> str:
        """The mapping as printed: one line per class."""
        lines = []
        for c in self.classes:
            target = self.teacher_labels[self.index[c]] if c in self.index else ""
            if c in self.proxies:
                target = f"max of {len(self.proxies[c])} label(s) of its genus: " + "; ".join(
                    self.teacher_labels[i] for i in self.proxies[c][:3]
                )
            extra = f" (candidates: {'; '.join(self.candidates[c][:4])})" if c in self.candidates else ""
            lines.append(f"  {c:<12} {self.how[c]:<10} {target}{extra}")
        kinds = ("scientific", "common", "split", "near", "override")
        counts = {k: sum(v == k for v in self.how.values()) for k in kinds}
        head = (
            f"{len(self.index)} of {len(self.classes)} classes mapped ({counts['scientific']} by scientific name, "
            f"{counts['common']} by common name, {counts['split']} as a split species and {counts['near']} as a "
            "near miss (check them), "
            f"{counts['override']} by override); "
            + (f"{len(self.proxies)} by a genus proxy (check them); " if self.proxies else "")
            + f"{sum(v == 'ambiguous' for v in self.how.values())} ambiguous, "
            f"{sum(v == 'unmapped' for v in self.how.values())} unmapped"
        )
        return "\n".join([head, *lines])

    def to_json(self) -> dict:
        out = {
            c: {"how": self.how[c], "label": self.teacher_labels[self.index[c]] if c in self.index else None}
            for c in self.classes
        }
        for c, idx in self.proxies.items():
            out[c]["genus_labels"] = [self.teacher_labels[i] for i in idx]
        return out

    def columns(self) -> list[list[int]]:
        """Per class, the teacher outputs its score is the max of: its label, its genus's (a proxy), or none."""
        return [[self.index[c]] if c in self.index else self.proxies.get(c, []) for c in self.classes]


def read_overrides(path: str | Path | None) -> dict[str, str | None]:
    """Hand-fixed pairs: a CSV (``primary_label,teacher_label``) or YAML mapping (``primary_label: teacher label``).
    An empty teacher label marks a class the teacher must not answer for."""
    if not path:
        return {}
    path = Path(path)
    if not path.is_file():
        raise TeacherError(f"{path}: mapping override file not found")
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            raw = parse_yaml(path.read_text(encoding="utf-8")) or {}
            if not isinstance(raw, dict):
                raise TeacherError(f"{path}: expected a mapping primary_label: teacher label")
            pairs = raw.items()
        else:
            df = pd.read_csv(path, dtype=str, keep_default_na=False)
            if list(df.columns[:2]) != ["primary_label", "teacher_label"]:
                raise TeacherError(f"{path}: columns must be primary_label,teacher_label")
            pairs = zip(df["primary_label"], df["teacher_label"], strict=True)
    except TeacherError:
        raise
    except (ValueError, pd.errors.ParserError) as err:
        raise TeacherError(f"{path}: cannot parse ({str(err).splitlines()[0]})") from None
    return {str(k).strip(): (str(v).strip() or None) if v is not None else None for k, v in pairs}


def map_classes(
    taxonomy: pd.DataFrame,
    teacher_labels: list[str],
    overrides: dict[str, str | None] | None = None,
    genus_proxy: bool = False,
) -> ClassMapping:
    """Map each taxonomy class to a teacher output.

    Teacher labels are BirdNET's ``Scientific name_Common Name``. Tried in order, each needing exactly one match:
    the taxonomy's scientific name against the teacher's scientific names, its common name against the teacher's
    common names, and (for sets that keep a common name in ``scientific_name``) its scientific name against the
    teacher's common names; then, flagged for review, a split species (``Subalpine Warbler`` → ``Western Subalpine
    Warbler``) and a near miss (:func:`near_misses`: ``Blackcap`` → ``Eurasian Blackcap``, ``Amazonian Royal
    Flycatcher`` → ``Royal Flycatcher``). Several matches make a class ambiguous; an override names the label
    outright.

    Pairs for classes the taxonomy lacks are skipped with a warning (a pairs file may serve several competitions).
    With `genus_proxy` (``teacher.genus_proxy``, 2nd place BirdCLEF+ 2026), a class still unmapped whose scientific
    name is ``Genus species`` takes the max over the teacher's labels of that genus (``how`` = ``genus``, flagged).

    Raises:
        TeacherError: an override names a teacher label that does not exist.
    """
    overrides = overrides or {}
    sci = [normalise(lab.split("_", 1)[0]) for lab in teacher_labels]
    com = [normalise(lab.split("_", 1)[1]) if "_" in lab else "" for lab in teacher_labels]
    com_words = [frozenset(c.split()) for c in com]
    by_full = {lab: i for i, lab in enumerate(teacher_labels)}
    by_sci = {}
    for i, s in enumerate(sci):
        by_sci.setdefault(s, []).append(i)
    by_com = {}
    for i, c in enumerate(com):
        by_com.setdefault(c, []).append(i)
    classes = taxonomy["primary_label"].tolist()
    unknown = sorted(set(overrides) - set(classes))
    if unknown:  # a pairs file written for another competition's taxonomy: its other pairs still hold
        log.warning("mapping override: %d pair(s) for classes not in taxonomy.csv skipped: %s", len(unknown), unknown)
        overrides = {k: v for k, v in overrides.items() if k in set(classes)}
    mapping = ClassMapping(classes, {}, {}, list(teacher_labels))
    cols = {c: taxonomy[c].fillna("").astype(str).tolist() if c in taxonomy else [""] * len(classes) for c in
            ("scientific_name", "common_name")}  # fmt: skip
    for k, cls in enumerate(classes):
        if cls in overrides:
            target = overrides[cls]
            if target is None:
                mapping.how[cls] = "unmapped"
                continue
            hits = [by_full[target]] if target in by_full else by_sci.get(normalise(target), [])
            if len(hits) != 1:
                raise TeacherError(f"mapping override: {cls} → {target!r} matches {len(hits)} teacher labels, not 1")
            mapping.index[cls], mapping.how[cls] = hits[0], "override"
            continue
        names = {normalise(cols["common_name"][k]), normalise(cols["scientific_name"][k])} - {""}
        tries = [
            ("scientific", by_sci.get(normalise(cols["scientific_name"][k]), [])),
            ("common", by_com.get(normalise(cols["common_name"][k]), [])),
            ("common", by_com.get(normalise(cols["scientific_name"][k]), [])),
            # a species since split in two, e.g. "Subalpine Warbler" → "Western Subalpine Warbler": printed for review
            ("split", sorted({i for n in names if " " in n for i, c in enumerate(com) if c.endswith(" " + n)})),
            ("near", near_misses(names, com_words)),
        ]
        mapping.how[cls] = "unmapped"
        for how, hits in tries:
            if len(hits) == 1:
                mapping.index[cls], mapping.how[cls] = hits[0], how
                break
            if len(hits) > 1:
                mapping.how[cls] = "ambiguous"
                mapping.candidates[cls] = [teacher_labels[i] for i in hits]
                break
        words = normalise(cols["scientific_name"][k]).split()
        if genus_proxy and mapping.how[cls] == "unmapped" and len(words) >= 2:
            genus = [i for i, name in enumerate(sci) if name.split()[:1] == words[:1]]
            if genus:
                mapping.proxies[cls], mapping.how[cls] = genus, "genus"
    return mapping


def near_misses(names: set[str], teacher_words: list[frozenset[str]]) -> list[int]:
    """The teacher labels whose common name's words are a strict subset or superset of one of `names` (normalised
    names of one class), sharing a word that is not a qualifier. Of several, those that differ from the class's
    name by qualifiers alone (:data:`QUALIFIERS`), if any: ``Blackcap`` → ``Eurasian Blackcap``, not ``Bush
    Blackcap``."""
    hits = {}
    for n in names:
        words = frozenset(n.split())
        for i, t in enumerate(teacher_words):
            if t and (words < t or t < words) and (words & t) - QUALIFIERS:
                hits[i] = (words ^ t) <= QUALIFIERS
    qualified = [i for i, q in hits.items() if q]
    return sorted(qualified if len(hits) > 1 and qualified else hits)
