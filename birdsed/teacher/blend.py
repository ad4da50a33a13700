"""A teacher's scores blended into ours where it has an opinion (a class it knows, a row it has)."""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def blend_teacher(ours: np.ndarray, teacher: np.ndarray, weight: float | np.ndarray, mode: str = "mean") -> np.ndarray:
    """Our ensemble's scores with a teacher's blended in where it has an opinion.

    Args:
        ours: (N, C) scores (NaN where no member knows a class).
        teacher: (N, C) teacher probabilities, NaN where it has no opinion (a class it cannot know, a row it lacks).
        weight: the teacher's share w: (1 - w)·ours + w·teacher (a number, or (C,) one per class); where ours is
            NaN the teacher alone.
        mode: ``mean`` of probabilities, or ``rank``: both columns turned into normalised ranks first.

    Returns:
        (N, C).
    """
    ours, teacher = ours.astype(np.float64), teacher.astype(np.float64)
    if mode == "rank":
        ours, teacher = ours.copy(), teacher.copy()
        for j in range(ours.shape[1]):
            for a in (ours[:, j], teacher[:, j]):
                ok = np.isfinite(a)
                if ok.sum() > 1:
                    a[ok] = (rankdata(a[ok]) - 1) / (ok.sum() - 1)
    both = np.isfinite(ours) & np.isfinite(teacher)
    out = np.where(both, (1 - weight) * np.nan_to_num(ours) + weight * np.nan_to_num(teacher), ours)
    return np.where(~np.isfinite(ours) & np.isfinite(teacher), teacher, out)
