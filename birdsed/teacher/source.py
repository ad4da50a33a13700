"""The external teacher as a source of scores, and the policy that blends it into ours: which taxonomy maps BirdNET
to a submission's classes, what ``teacher.infer`` gives for a folder (a CSV read, or BirdNET — with the agile model —
predicted here), how it blends into a submission (``teacher.infer_weight``, ``teacher.agile_fill_weight``) and into a
pseudo round's pool (``teacher.pseudo``, ``teacher.pseudo_weight``). :func:`birdsed.inference.predict` and the pseudo
rounds call these; the blend maths is :func:`birdsed.teacher.blend.blend_teacher`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from birdsed.config import Config, ConfigError
from birdsed.models.sequence import SoundscapeStudent
from birdsed.teacher.agile import AgileModel
from birdsed.teacher.birdnet_tflite import read_teacher
from birdsed.teacher.blend import blend_teacher
from birdsed.teacher.mapping import TeacherError
from birdsed.teacher.windows import Folder, load_students, students_probs

log = logging.getLogger(__name__)


def teacher_taxonomy(cfg: Config, columns: list[str], member_roots: Sequence[str] = ()) -> tuple[str, pd.DataFrame]:
    """The competition's taxonomy.csv that maps BirdNET's labels to `columns`: ``teacher.taxonomy`` when
    given, else the first of the config's ``data.root`` and the members' own ``data.root`` (their checkpoints'
    configs) whose taxonomy.csv exists and lists exactly `columns`, in order."""
    from birdsed.data.folder import read_taxonomy

    if cfg.teacher.taxonomy:
        taxonomy = read_taxonomy(cfg.teacher.taxonomy)
        if taxonomy["primary_label"].tolist() != columns:
            raise ConfigError(f"teacher.taxonomy: {cfg.teacher.taxonomy} classes differ from the submission's")
        return cfg.teacher.taxonomy, taxonomy
    tried = []
    for root in dict.fromkeys([cfg.data.root, *member_roots]):
        path = Path(root) / "taxonomy.csv"
        if not path.is_file():
            tried.append(f"{path} (missing)")
            continue
        taxonomy = read_taxonomy(path)
        if taxonomy["primary_label"].tolist() != columns:
            tried.append(f"{path} (other classes)")
            continue
        log.info("teacher.infer=birdnet: classes mapped from %s", path)
        return str(path), taxonomy
    raise ConfigError(
        "teacher.taxonomy: teacher=birdnet needs the competition's taxonomy.csv; none of data.root's or the "
        f"checkpoints' fits the submission's classes: {'; '.join(tried)}"
    )


@dataclass
class TeacherTable:
    """A teacher's scores of a folder: ``table`` (row_id index, the submission's columns, NaN = no opinion) and
    ``agile_only``, the classes only the agile model knows (blended at ``teacher.agile_fill_weight``)."""

    table: pd.DataFrame
    agile_only: list[str] = field(default_factory=list)


def teacher_source(
    cfg: Config, columns: list[str], member_roots: Sequence[str] = ()
) -> Callable[[Path], TeacherTable] | None:
    """What ``teacher.infer`` gives, as a function of the soundscape folder: a validated teacher table (row_id
    index, `columns`, NaN = no opinion) — read from a CSV, or predicted by BirdNET (with ``teacher.agile``, BirdNET's
    embeddings of the same pass through the agile model, blended in by ``teacher.agile_weight``). None without a
    teacher. `member_roots`: the ensemble members' ``data.root``, where the taxonomy is looked for after the
    config's own (:func:`teacher_taxonomy`)."""
    from birdsed.teacher.birdnet_tflite import load_teacher, predict_folder

    source = cfg.teacher.infer
    for key, value in (("agile", cfg.teacher.agile), ("student", cfg.teacher.student)):
        if value and source != "birdnet":
            raise ConfigError(
                f"teacher.{key}: it reads BirdNET's embeddings of the same pass; it needs teacher.infer=birdnet"
            )
    if not source:
        return None
    if source != "birdnet":
        table = TeacherTable(read_teacher(source, columns))
        return lambda folder: table
    taxonomy_path, taxonomy = teacher_taxonomy(cfg, columns, member_roots)
    agile = None
    if cfg.teacher.agile:
        from birdsed.teacher.agile import load_agile

        agile = load_agile(cfg.teacher.agile)
        if agile.classes != columns:
            raise ConfigError(f"teacher.agile: {cfg.teacher.agile} was fitted on other classes than the submission's")
    students = [m for run in cfg.teacher.student for m in load_students(run, columns)]
    embeddings = agile is not None or bool(students)
    model, mapping = load_teacher(cfg, taxonomy, taxonomy_path, embeddings=embeddings)

    def predict(folder: Path) -> TeacherTable:
        res = predict_folder(
            Path(folder), model, mapping, cfg.teacher.stride, cfg.infer.window_seconds, progress=False,
            window_rule=cfg.teacher.window_rule,
        )  # fmt: skip
        return teacher_table(cfg, res.table, res.embeddings, columns, agile, students)

    return predict


def teacher_table(
    cfg: Config,
    birdnet: pd.DataFrame,
    embeddings: np.ndarray | None,
    columns: list[str],
    agile: AgileModel | None = None,
    students: Sequence[SoundscapeStudent] = (),
) -> TeacherTable:
    """The teacher of one folder from BirdNET's table (``row_id`` then `columns`, NaN = no opinion) and its (N, D)
    window embeddings: the agile model blended in (``teacher.agile_weight``), then the soundscape students'
    mean at ``teacher.student_weight`` (they alone where neither knows a class)."""
    from birdsed.teacher.agile import with_agile

    table = birdnet.set_index("row_id").astype(float)
    raw = table[columns].to_numpy()
    lacking = [c for c in columns if not table[c].notna().any()]  # classes BirdNET has no label for
    if agile is not None:
        table[columns] = with_agile(raw, agile.predict(embeddings), cfg.teacher.agile_weight,
                                    agile.blend_mask(cfg.teacher.agile_classes))  # fmt: skip
    only = [c for c in lacking if table[c].notna().any()]
    if students:
        folder = Folder(table.index, embeddings, raw)
        ours = students_probs(list(students), folder, cfg.data.name_pattern)
        table[columns] = blend_teacher(ours, table[columns].to_numpy(), 1.0 - cfg.teacher.student_weight)
    return TeacherTable(table, only)


def with_teacher(sub: pd.DataFrame, teacher: TeacherTable, cfg: Config) -> pd.DataFrame:
    """The submission with the teacher blended in (:func:`birdsed.teacher.blend.blend_teacher`) at
    ``teacher.infer_weight``, and at ``teacher.agile_fill_weight`` in the classes only the agile model knows
    (``teacher.agile_only``); rows the teacher lacks (e.g. unreadable files) keep our scores, with a count in the
    log."""
    columns = [c for c in sub.columns if c != "row_id"]
    only = set(teacher.agile_only)
    weight = np.array([cfg.teacher.agile_fill_weight if c in only else cfg.teacher.infer_weight for c in columns])
    aligned = teacher.table.reindex(sub["row_id"])[columns].to_numpy(dtype=np.float64)
    lacking = int((~np.isfinite(aligned).any(axis=1)).sum())
    if lacking:
        log.warning("the teacher has no opinion on %d of %d row(s); our models alone decide them", lacking, len(sub))
    ours = sub[columns].to_numpy(dtype=np.float64)
    out = sub.copy()
    out[columns] = np.clip(blend_teacher(ours, aligned, weight, cfg.infer.ensemble), 0, 1)
    return out


def pool_with_teacher(cfg: Config, r: int, sub: pd.DataFrame, classes: list[str]) -> tuple[np.ndarray, dict]:
    """The pool's probabilities for round r: our models' (`sub`), with ``teacher.pseudo`` taking over in round 1
    and blended in later rounds by ``teacher.pseudo_weight`` — only where the teacher has an opinion (not NaN).

    Returns:
        (N, C) probabilities and the provenance for ``pseudo_meta.json``.
    """
    ours = sub[classes].to_numpy(dtype=np.float64)
    ps = cfg.teacher
    weight = 1.0 if r == 1 else ps.pseudo_weight
    if not ps.pseudo or weight == 0:
        return ours, {"teacher": None}
    table = read_teacher(ps.pseudo, classes)
    missing = sub["row_id"][~sub["row_id"].isin(table.index)]
    if len(missing):
        raise TeacherError(
            f"{ps.pseudo}: the teacher has no rows for {len(missing)} pool window(s), e.g. "
            f"{missing.iloc[:3].tolist()}; predict train_soundscapes with `birdsed teacher` (row ids <stem>_<end s>)"
        )
    teacher = table.loc[sub["row_id"], classes].to_numpy(dtype=np.float64)
    known = np.isfinite(teacher)
    probs = blend_teacher(ours, teacher, weight)  # ours are finite: the teacher only where it has an opinion
    info = {
        "teacher": str(ps.pseudo),
        "teacher_weight": weight,
        "teacher_classes": [c for c, k in zip(classes, known.any(axis=0), strict=True) if k],
        "model_classes": [c for c, k in zip(classes, known.any(axis=0), strict=True) if not k],
    }
    return probs, info
