import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from sklearn.metrics import roc_auc_score

from birdsed.cli import main
from birdsed.reports.html import write_report
from birdsed.reports.plots import macro_curves
from birdsed.reports.report import ReportError, calibration_bins, gather
from birdsed.scoring.metrics import score_files


@pytest.fixture(scope="module")
def report_inputs(trained_run, pseudo_run, tiny_root, tmp_path_factory):
    """A run, a pseudo-label folder, and two submissions: the run's own soundscape predictions and a noisier one."""
    _cfg, summary, run_dir = trained_run
    _pcfg, pseudo_dir = pseudo_run
    tmp = tmp_path_factory.mktemp("report")
    good = tmp / "model.csv"
    shutil.copy(run_dir / "soundscape_preds.csv", good)
    sub = pd.read_csv(good)
    rng = np.random.default_rng(0)
    cols = sub.columns[1:]
    sub[cols] = 0.5 * sub[cols].to_numpy() + 0.5 * rng.random((len(sub), len(cols)))
    noisy = tmp / "noisy.csv"
    sub.to_csv(noisy, index=False)
    return run_dir, pseudo_dir, good, noisy, tiny_root / "test_solution.csv", tmp, summary


@pytest.fixture(scope="module")
def rendered(report_inputs):
    run_dir, pseudo_dir, good, noisy, solution, tmp, _ = report_inputs
    out = tmp / "out" / "report.html"
    argv = ["report", str(run_dir), str(pseudo_dir), "--solution", str(solution), "--out", str(out)]
    assert main([*argv, "--submission", str(good), "--submission", str(noisy)]) == 0
    return out, json.loads(out.with_suffix(".json").read_text())


def test_report_numbers_equal_birdsed_score(report_inputs, rendered):
    run_dir, _pseudo, good, noisy, solution, _tmp, summary = report_inputs
    _out, numbers = rendered
    entries = {e["name"]: e for e in numbers["entries"]}
    sol = pd.read_csv(solution, dtype={"row_id": str}).set_index("row_id")
    scored = [c for c in sol.columns if 0 < sol[c].sum() < len(sol)]
    for name, path in ((run_dir.name, run_dir / "soundscape_preds.csv"), ("model", good), ("noisy", noisy)):
        shown = entries[name]["evaluations"]["soundscape"]
        # independent of birdsed.scoring.metrics: sklearn over the classes with positives, rows matched by row_id
        sub = pd.read_csv(path, dtype={"row_id": str}).set_index("row_id").loc[sol.index]
        independent = np.mean([roc_auc_score(sol[c], sub[c]) for c in scored])
        assert shown["macro_auc"] == pytest.approx(independent, abs=1e-12)
        ref = score_files(solution, path, threshold=0.5)
        assert shown["macro_auc"] == pytest.approx(ref.macro_auc, abs=1e-12)
        assert shown["padded_cmap"] == pytest.approx(ref.padded_cmap, abs=1e-12)
        assert shown["n_scored_classes"] == ref.n_scored_classes and shown["n_rows"] == ref.n_rows
        for k, v in ref.thresholds.items():
            assert shown["thresholds"][k] == pytest.approx(v, abs=1e-12), k
        for c, pc in ref.per_class.items():
            assert shown["per_class"][c]["positives"] == pc["positives"]
            if np.isfinite(pc["auc"]):
                assert shown["per_class"][c]["auc"] == pytest.approx(pc["auc"], abs=1e-12)
    assert (
        entries["noisy"]["evaluations"]["soundscape"]["macro_auc"]
        != entries["model"]["evaluations"]["soundscape"]["macro_auc"]
    )
    # validation clips: recomputed from oof.csv + train.csv labels, equal to what training logged for the best epoch
    val = entries[run_dir.name]["evaluations"]["validation"]
    assert val["macro_auc"] == pytest.approx(summary["val_auc"], abs=1e-6)
    assert entries[run_dir.name]["history"] and entries[run_dir.name]["best"]["epoch"] == summary["best_epoch"]


def test_report_lists_rounds_groups_and_config_differences(rendered, report_inputs, tiny_root):
    _out, numbers = rendered
    kinds = [e["kind"] for e in numbers["entries"]]
    assert kinds == ["run", "given", "pseudo", "control", "submission", "submission"]
    rows = numbers["pseudo_rounds"][0]["rows"]
    assert [r["kind"] for r in rows] == ["given", "pseudo", "control"] and rows[1]["kept_chunks"] > 0
    pseudo = next(e for e in numbers["entries"] if e["kind"] == "pseudo")
    meta = json.loads((Path(pseudo["path"]).parent / "pseudo_meta.json").read_text())
    note = next(n for n in pseudo["notes"] if n.startswith("pseudo labels:"))  # readable fields, not raw JSON
    assert f"kept {meta['kept']} of {meta['chunks']} chunks" in note and "{" not in note
    tax = pd.read_csv(tiny_root / "taxonomy.csv", dtype=str).set_index("primary_label")
    train = pd.read_csv(tiny_root / "train.csv", dtype=str)
    for c in numbers["classes"]:
        assert c["group"] == tax.loc[c["class"], "class_name"]
        assert c["training_files"] == (train["primary_label"] == c["class"]).sum()
    diff = numbers["config_differences"]
    assert "train.epochs" in diff  # the rounds trained 1 epoch, the run 2
    assert "name" in diff


def test_config_differences_name_the_changed_key(report_inputs, tmp_path):
    run_dir = report_inputs[0]
    other = shutil.copytree(run_dir, tmp_path / "lr_run")
    cfg = yaml.safe_load((other / "config.yaml").read_text())
    cfg["train"]["lr"] = cfg["train"]["lr"] * 10
    (other / "config.yaml").write_text(yaml.safe_dump(cfg))
    diff = gather([run_dir, other]).config_differences()
    assert list(diff) == ["train.lr"] and len(set(map(str, diff["train.lr"].values()))) == 2


def test_html_is_self_contained(rendered):
    out, _ = rendered
    page = out.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "<link" not in page and "@import" not in page
    imgs = re.findall(r"<img[^>]*src='([^']*)'", page)
    assert len(imgs) >= 6 and all(s.startswith("data:image/png;base64,") for s in imgs)
    for name in ("model", "noisy", "round 1", "control 1", "macro ROC-AUC"):
        assert name in page


def test_macro_curves_and_calibration_on_known_data():
    y = np.array([[1, 0], [0, 1], [1, 0], [0, 0]], float)
    perfect = gather_free_eval(y, y * 0.9 + 0.05)
    tpr, prec = macro_curves(perfect)
    assert tpr[1:].min() == pytest.approx(1.0) and prec.min() == pytest.approx(1.0)
    bins = calibration_bins(y, y * 0.9 + 0.05)
    assert [b["n"] for b in bins] == [5, 3] and [b["positive_rate"] for b in bins] == [0.0, 1.0]


def gather_free_eval(y_true, y_score):
    from birdsed.reports.report import Evaluation
    from birdsed.scoring.metrics import score_arrays

    return Evaluation(y_true, y_score, ["a", "b"], score_arrays(y_true, y_score, ["a", "b"]), "test")


def test_bad_inputs_name_the_file(report_inputs, tmp_path):
    run_dir, *_, solution, _tmp, _ = report_inputs
    with pytest.raises(ReportError, match=r"not a run folder .*, pseudo-label folder .* or study folder"):
        gather([tmp_path])
    with pytest.raises(ReportError, match="need --solution"):
        gather([run_dir], submissions=[report_inputs[2]])
    bad = tmp_path / "bad.csv"
    pd.read_csv(report_inputs[2]).iloc[:-1].to_csv(bad, index=False)
    with pytest.raises(ValueError, match=r"bad\.csv: row_ids differ"):
        gather([], submissions=[bad], solution=solution)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="no chromium on PATH (apt-get install chromium)")
def test_chromium_screenshot_shows_the_page(report_inputs, tmp_path):
    from PIL import Image

    run_dir, pseudo_dir, good, _noisy, solution, _tmp, _ = report_inputs
    report = gather([run_dir, pseudo_dir], [good], solution)
    png = tmp_path / "report.png"
    write_report(report, tmp_path / "report.html", screenshot=png)
    im = np.asarray(Image.open(png).convert("L"), dtype=float)
    assert im.shape[1] == 1280 and im.shape[0] > 3000
    top = im[:1500]
    assert top.std() > 20 and (top < 100).mean() > 0.005  # text and plots drawn, not a blank page


def test_listening_picks_the_worst_windows_with_their_audio_and_frames(report_inputs, tmp_path):
    import base64
    import io
    import os

    import soundfile as sf

    from birdsed.models import load_checkpoint
    from birdsed.reports.listen import LISTEN_RATE

    run_dir, _pseudo, _good, _noisy, solution, _tmp, _ = report_inputs
    named = pd.read_csv(solution).columns[1]
    report = gather([run_dir], solution=solution, listen_windows=2, listen_classes=[named])
    lis = report.listening
    ev = report.entries[0].evals["soundscape"]
    row_of = {r: i for i, r in enumerate(pd.read_csv(solution, dtype=str)["row_id"])}
    model, _cfg, classes = load_checkpoint(run_dir / "best.pt")
    assert lis.frames and named in {w.cls for w in lis.windows}
    for w in lis.windows:
        j, i = classes.index(w.cls), row_of[w.row_id]
        negatives = ev.y_score[ev.y_true[:, j] == 0, j]
        positives = ev.y_score[ev.y_true[:, j] == 1, j]
        if w.kind == "false positive":  # a window without the class, scored among the highest of those
            assert ev.y_true[i, j] == 0 and w.score >= np.sort(negatives)[-2] - 1e-12
        else:  # a window with the class, scored among the lowest of those
            assert ev.y_true[i, j] == 1 and w.score <= np.sort(positives)[min(1, len(positives) - 1)] + 1e-12
        audio, rate = sf.read(io.BytesIO(base64.b64decode(w.audio.split(",", 1)[1])))
        assert rate == LISTEN_RATE and abs(len(audio) / rate - 5.0) < 0.05 and np.abs(audio).max() > 0
        assert w.frames is not None and len(w.frames) == model(torch.zeros(1, 5 * 32000))["frame_logits"].shape[1]
    page = write_report(report, tmp_path / "listen.html")
    html = page.read_text()
    assert html.count("<audio") == len(lis.windows) and "Listening:" in html
    if shutil.which("chromium") is None:
        pytest.skip("no chromium on PATH for the browser check")
    from birdsed.reports.html import rendered_dom, screenshot_html

    durations = [float(d) for d in re.findall(r'data-duration="([^"]+)"', rendered_dom(page))]
    assert len(durations) == len(lis.windows) and all(abs(d - 5.0) < 0.05 for d in durations)  # playable 5-s clips
    keep = Path(os.environ.get("BIRDSED_TEST_ARTIFACTS", tmp_path))  # CI keeps the screenshot here when set
    keep.mkdir(parents=True, exist_ok=True)
    assert screenshot_html(page, keep / "report_listening.png").stat().st_size > 10_000


def test_a_run_still_training_is_marked_unfinished(trained_run, tmp_path):
    """`birdsed report` on a run whose metrics.json says it has not finished (still training, or stopped) says so
    in the entry's notes and on the page, with the epochs trained of those planned."""
    from birdsed.reports.html import write_report
    from birdsed.reports.report import gather

    _, _, run_dir = trained_run
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    m = json.loads((run / "metrics.json").read_text())
    assert m["finished"] and not any("UNFINISHED" in n for n in gather([run], [], None).entries[0].notes)
    m["finished"], m["history"] = False, m["history"][:1]
    (run / "metrics.json").write_text(json.dumps(m))
    report = gather([run], [], None)
    planned = yaml.safe_load((run / "config.yaml").read_text())["train"]["epochs"]
    assert f"UNFINISHED: 1 of {planned} epochs trained" in report.entries[0].notes[0]
    page = write_report(report, tmp_path / "r.html").read_text()
    assert "UNFINISHED: 1 of" in page
