import numpy as np
import pandas as pd
import pytest

from birdsed.cli import main
from birdsed.scoring.metrics import (
    SubmissionError,
    check_submission,
    macro_auc,
    padded_cmap,
    per_class_auc,
    score_files,
    threshold_metrics,
)


def test_macro_auc_by_hand():
    y = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 0]])
    s = np.array([[0.9, 0.2, 0.5], [0.3, 0.8, 0.1], [0.4, 0.1, 0.9], [0.5, 0.7, 0.3]])
    # class 0: positives {0.9, 0.4}, negatives {0.3, 0.5}: pairs won 0.9>0.3, 0.9>0.5, 0.4>0.3 → 3/4
    # class 1: positive 0.8 vs negatives {0.2, 0.1, 0.7} → 1; class 2 has no positive and is not scored
    auc = per_class_auc(y, s)
    assert auc[0] == pytest.approx(0.75) and auc[1] == pytest.approx(1.0) and np.isnan(auc[2])
    assert macro_auc(y, s) == pytest.approx(0.875)


def test_padded_cmap_by_hand():
    y = np.array([[1, 0], [0, 0]])
    s = np.array([[0.2, 0.9], [0.8, 0.1]])
    # padded with 5 rows of ones (score 1). class 0: 6 positives, scores 1×5, 0.2; one negative at 0.8
    # ranking: 1,1,1,1,1 (P), 0.8 (N), 0.2 (P) → AP = (5 * 1 + 6/7) / 6
    # class 1: positives 1×5; negatives 0.9, 0.1 rank below → AP = 1
    assert padded_cmap(y, s) == pytest.approx(((5 + 6 / 7) / 6 + 1.0) / 2)


def test_threshold_metrics_by_hand():
    y = np.array([[1, 0], [1, 0], [0, 1]])
    s = np.array([[0.6, 0.7], [0.2, 0.1], [0.1, 0.9]])
    m = threshold_metrics(y, s, 0.5)
    # class 0: tp 1, fn 1, fp 0; class 1: tp 1, fp 1
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["precision_micro"] == pytest.approx(2 / 3) and m["recall_micro"] == pytest.approx(2 / 3)
    assert m["precision_macro"] == pytest.approx((1 + 0.5) / 2)
    assert m["recall_macro"] == pytest.approx((0.5 + 1) / 2)


def frames():
    sol = pd.DataFrame({"row_id": ["s_5", "s_10", "s_15"], "a": [1, 0, 0], "b": [0, 1, 1]})
    sub = pd.DataFrame({"row_id": ["s_10", "s_5", "s_15"], "a": [0.1, 0.9, 0.2], "b": [0.8, 0.3, 0.6]})
    return sol, sub


def test_check_submission_aligns_rows():
    sol, sub = frames()
    aligned = check_submission(sol, sub)
    assert aligned["row_id"].tolist() == ["s_5", "s_10", "s_15"]
    assert aligned["a"].tolist() == [0.9, 0.1, 0.2]


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda d: d.rename(columns={"b": "c"}), "missing"),
        (lambda d: d[["row_id", "b", "a"]], "wrong order"),
        (lambda d: d.iloc[:2], "1 missing"),
        (lambda d: d.assign(row_id=["s_10", "s_5", "s_99"]), "unexpected"),
        (lambda d: pd.concat([d, d.iloc[[0]]]), "duplicate"),
        (lambda d: d.assign(a=[0.1, np.nan, 0.2]), "NaN"),
        (lambda d: d.assign(b=[0.8, 1.3, 0.6]), "outside"),
        (lambda d: d.assign(a=["x", "y", "z"]), "non-numeric"),
    ],
)
def test_check_submission_errors(mutate, needle):
    sol, sub = frames()
    with pytest.raises(SubmissionError, match=needle):
        check_submission(sol, mutate(sub))


def test_score_cli_prints_macro_auc_last(tmp_path, capsys):
    sol, sub = frames()
    sol.to_csv(tmp_path / "sol.csv", index=False)
    sub.to_csv(tmp_path / "sub.csv", index=False)
    assert (
        main(
            [
                "score",
                "--solution",
                str(tmp_path / "sol.csv"),
                "--submission",
                str(tmp_path / "sub.csv"),
                "--json",
                str(tmp_path / "s.json"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == "macro_auc=1.0000"
    assert (tmp_path / "s.json").is_file()
    sub.assign(a=[2, 0, 0]).to_csv(tmp_path / "bad.csv", index=False)
    assert main(["score", "--solution", str(tmp_path / "sol.csv"), "--submission", str(tmp_path / "bad.csv")]) == 1
    assert "outside [0, 1]" in capsys.readouterr().err


def test_sample_submission_of_real_mini_scores_one_half(real_root):
    score = score_files(real_root / "test_solution.csv", real_root / "sample_submission.csv")
    assert score.macro_auc == pytest.approx(0.5)
    assert score.n_scored_classes == 24  # rufwhi1 has no positive in the labelled soundscapes
