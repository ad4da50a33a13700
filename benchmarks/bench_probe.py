"""The bad-input probe (issue 40): each case a careful but unlucky user would try, run through the CLI, judged clean
or a defect, counted by family — so the next probe starts from a number.

Usage: python benchmarks/bench_probe.py [--work DIR]

A case is clean when the command exits with the expected status, prints one ``error:`` line naming the culprit (or,
for a fallback, finishes), shows no traceback, leaves every file it did not write byte-identical and runs no code
from a file. Prints one line per case, then clean/defect counts per family and in all; exits 1 if any defect.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import pickle
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from birdsed.cli import main

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "demo.yaml"


def digest(path: Path) -> str:
    """A hash of every file below `path` (names and bytes)."""
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")) if path.is_dir() else [path]:
        if p.is_file():
            h.update(str(p.relative_to(path if path.is_dir() else path.parent)).encode() + p.read_bytes())
    return h.hexdigest()


def run(args: list) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            status = main([str(a) for a in args])
        except SystemExit as stop:  # argparse
            status = int(stop.code or 0)
        except Exception as bug:  # a traceback: a defect
            return -1, f"Traceback: {type(bug).__name__}: {bug}"
    return status, err.getvalue()


@dataclass
class Case:
    family: str
    name: str
    args: Callable[[], list]
    status: int
    says: str = ""
    keep: Callable[[], list[Path]] = list  # paths that must stay byte-identical
    prepare: Callable[[], None] | None = None
    check: Callable[[], bool] | None = None  # anything else that must hold afterwards


class Payload:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def cases(w: Path, data: Path, run1: Path) -> list[Case]:
    cfg = [CONFIG, f"data.root={data}", f"data.cache_dir={w / 'cache'}", "data.num_workers=0", "train.epochs=1",
           f"augment.background_dir={data / 'train_soundscapes'}",
           "train.samples_per_epoch=16", "data.batch_size=8", "audio.n_mels=32", "audio.n_fft=1024",
           "data.crop_seconds=2", "data.first_seconds=3", "train.progress=false"]  # fmt: skip
    notes, m, b = w / "notes", w / "m", w / "b"
    infer = ["infer", "--checkpoint", run1, "--soundscapes", data / "test_soundscapes"]

    def user_folder(folder: Path, descriptor: str) -> Callable[[], None]:
        def make() -> None:
            folder.mkdir(exist_ok=True)
            (folder / descriptor).write_text("{}")
            (folder / "notes.txt").write_text("x")

        return make

    def payload_ckpt() -> None:
        run2 = w / "run2"
        shutil.rmtree(run2, ignore_errors=True)
        shutil.copytree(run1, run2)
        state = torch.load(run2 / "checkpoints" / "last.ckpt", weights_only=True)
        state["callbacks"]["evil"] = Payload(str(w / "pwned"))
        torch.save(state, run2 / "checkpoints" / "last.ckpt")

    def payload_pt() -> None:
        (w / "evil.pt").write_bytes(pickle.dumps(Payload(str(w / "pwned"))))

    def truncated_ckpt() -> None:
        run3 = w / "run3"
        shutil.rmtree(run3, ignore_errors=True)
        shutil.copytree(run1, run3)
        last = run3 / "checkpoints" / "last.ckpt"
        last.write_bytes(last.read_bytes()[:1000])

    def lol() -> None:
        lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
        lines += [f"{n}: &{n} [{','.join(['*' + p] * 9)}]" for p, n in zip("abcdefgh", "bcdefghi", strict=True)]
        (w / "lol.yaml").write_text("\n".join(lines) + "\n")

    def dup_solution() -> None:
        text = (data / "test_solution.csv").read_text().splitlines()
        (w / "sol2.csv").write_text("\n".join([*text, text[1]]) + "\n")

    def cut_oof() -> None:
        run4 = w / "run4"
        shutil.rmtree(run4, ignore_errors=True)
        shutil.copytree(run1, run4)
        text = (run4 / "oof.csv").read_text()
        (run4 / "oof.csv").write_text(text[:-9])

    def stale_staging() -> None:
        (w / ".bb.partial-999999999").mkdir(exist_ok=True)

    pwned = lambda: not (w / "pwned").exists()  # noqa: E731
    return [
        Case("files", "infer --out the answer key", lambda: [*infer, "--out", data / "test_solution.csv"], 1,
             "birdsed replaces only its own outputs", lambda: [data / "test_solution.csv"]),
        Case("files", "export --out a folder with a user's model.json", lambda: ["export", "--checkpoint", run1,
             "--format", "onnx", "--out", m], 1, "replaces only its own outputs", lambda: [m],
             user_folder(m, "model.json")),
        Case("files", "bundle --overwrite a folder with a user's bundle.json", lambda: ["bundle", "--checkpoint",
             run1, "--kaggle-user", "me", "--out", b, "--overwrite", "--no-dry-run"], 1,
             "replaces only its own outputs", lambda: [b], user_folder(b, "bundle.json")),
        Case("files", "synth --out a user's folder --overwrite", lambda: ["synth", "--out", notes, "--overwrite"], 1,
             "not a `birdsed synth` dataset", lambda: [notes], user_folder(notes, "thesis.txt")),
        Case("files", "synth --out a run --overwrite", lambda: ["synth", "--out", run1, "--overwrite"], 1,
             "not a `birdsed synth` dataset", lambda: [run1 / "best.pt"]),
        Case("files", "teacher --out a folder with a user's teacher.json", lambda: ["teacher", *cfg, "--out", notes],
             1, "", lambda: [notes], user_folder(notes, "teacher.json")),
        Case("files", "agile --out a folder with a user's agile.json", lambda: ["agile", *cfg, "--teacher", w,
             "--out", notes], 1, "", lambda: [notes], user_folder(notes, "agile.json")),
        Case("files", "a stale staging folder is swept", lambda: ["synth", "--out", w / "bb", "--overwrite",
             "--classes", "2", "--files-per-class", "1", "--train-soundscapes", "1", "--test-soundscapes", "1"], 0,
             prepare=stale_staging, check=lambda: not (w / ".bb.partial-999999999").exists()),
        Case("security", "a pickle payload in last.ckpt, --resume", lambda: ["train", *cfg[:-1], "train.epochs=3",
             "train.progress=false", "--out", w / "run2", "--resume"], 1, "refused", prepare=payload_ckpt,
             check=pwned),
        Case("security", "a pickle payload as a .pt", lambda: ["export", "--checkpoint", w / "evil.pt", "--format",
             "onnx", "--out", w / "e2"], 1, "evil.pt", prepare=payload_pt, check=pwned),
        Case("resources", "train.devices=99 on a CPU", lambda: ["train", *cfg, "train.devices=99", "--out",
             w / "r99"], 1, "train.devices", check=lambda: not (w / "r99").exists()),
        Case("resources", "data.num_workers=999", lambda: ["train", *cfg, "data.num_workers=999", "--out",
             w / "r99"], 1, "data.num_workers"),
        Case("resources", "a YAML whose aliases multiply", lambda: ["prepare", w / "lol.yaml"], 1, "expands",
             prepare=lol),
        Case("silent", "a solution with a row id twice", lambda: ["score", "--solution", w / "sol2.csv",
             "--submission", data / "test_solution.csv"], 1, "more than once", prepare=dup_solution),
        Case("silent", "synth --files-per-class -3", lambda: ["synth", "--out", w / "neg", "--files-per-class",
             "-3"], 2, check=lambda: not (w / "neg").exists()),
        Case("tracebacks", "train.accelerator=cuda without a GPU", lambda: ["train", *cfg, "train.accelerator=cuda",
             "--out", w / "rc"], 1, "train.accelerator", check=lambda: not (w / "rc").exists()),
        Case("tracebacks", "a truncated last.ckpt, --resume", lambda: ["train", *cfg[:-1], "train.epochs=3",
             "train.progress=false", "--out", w / "run3", "--resume"], 1, "damaged", prepare=truncated_ckpt),
        Case("tracebacks", "infer.window_seconds=0.5 is refused at load, naming the window", lambda: ["prepare",
             *cfg, "infer.window_seconds=0.5", "infer.context_seconds=0.5", "infer.tta_shifts=[0]"], 1,
             "infer.window_seconds"),
        Case("families", "report on a cut-off oof.csv", lambda: ["report", w / "run4", "--out", w / "r.html"], 1,
             "oof.csv", prepare=cut_oof),
        Case("families", "infer.specialist=5 with one checkpoint", lambda: [*infer, "--out", w / "sp.csv",
             "infer.specialist=5"], 1, "infer.specialist"),
        *wave49(w, data, run1, cfg, infer),
    ]  # fmt: skip


def wave49(w: Path, data: Path, run1: Path, cfg: list, infer: list) -> list[Case]:
    """Issue 49's named cases and this session's own of the same families."""
    from birdsed.ownership import mark_output, seal_output

    def run_with_notes() -> None:
        shutil.rmtree(w / "rn", ignore_errors=True)
        shutil.copytree(run1, w / "rn")
        (w / "rn" / "notes.txt").write_text("mine")

    def sealed(name: str, kind: str, edit: bool = False) -> Callable[[], None]:
        def make() -> None:
            folder = w / name
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            mark_output(folder, kind)
            (folder / "test_soundscapes.csv").write_text("row_id\n")
            seal_output(folder, kind)
            if edit:
                (folder / "test_soundscapes.csv").write_text("row_id\nmy edit\n")

        return make

    def user_png() -> None:
        (w / "shot.png").write_bytes(b"\x89PNG mine")

    def link() -> None:
        (w / "real").mkdir(exist_ok=True)
        (w / "real" / "thesis.txt").write_text("mine")
        if not (w / "lnk").is_symlink():
            (w / "lnk").symlink_to(w / "real")

    def header_only() -> None:
        (w / "labels.csv").write_text("filename,start,end,primary_label\n")

    def edited_classes() -> None:
        (w / "ce").mkdir(exist_ok=True)
        payload = torch.load(run1 / "best.pt", weights_only=True)
        torch.save(dict(payload, classes=payload["classes"][:-1]), w / "ce" / "best.pt")
        payload.pop("classes")
        torch.save(payload, w / "nc.pt")

    def cut_npz() -> None:
        (w / "agbad").mkdir(exist_ok=True)
        import numpy as np

        np.savez(w / "full.npz", classes=np.array(["a"]), mean=np.zeros(2))
        (w / "agbad" / "agile.npz").write_bytes((w / "full.npz").read_bytes()[:100])
        (w / "stbad").mkdir(exist_ok=True)
        (w / "stbad" / "student.pt").write_bytes(b"PK\x03\x04 cut")

    def dup_columns() -> None:
        (w / "dup.csv").write_text("row_id,a,b,a\ns_5,1,0,1\ns_10,0,1,0\n")

    sub = [*infer, "--out", w / "s49.csv", "--sample-submission", data / "sample_submission.csv"]
    notes_kept = lambda: [w / "rn" / "notes.txt"]  # noqa: E731
    return [
        Case("files", "train --overwrite a run holding the user's notes.txt", lambda: ["train", *cfg, "--out",
             w / "rn", "--overwrite"], 1, "notes.txt", notes_kept, run_with_notes),
        Case("files", "report --screenshot onto a user's PNG", lambda: ["report", run1, "--out", w / "r49.html",
             "--screenshot", w / "shot.png"], 1, "shot.png", lambda: [w / "shot.png"], user_png),
        Case("files", "report --out r.json (the page and its numbers in one file)", lambda: ["report", run1,
             "--out", w / "r.json"], 1, ".html file", check=lambda: not (w / "r.json").exists()),
        Case("files", "teacher into its own folder without --overwrite", lambda: ["teacher", *cfg, "--out",
             w / "t49"], 1, "--overwrite", lambda: [w / "t49"], sealed("t49", "teacher")),
        Case("files", "agile --overwrite a folder with a file edited by hand", lambda: ["agile", *cfg, "--teacher",
             w / "t49", "--out", w / "a49", "--overwrite"], 1, "changed since", lambda: [w / "a49"],
             sealed("a49", "agile", edit=True)),
        Case("files", "export --out a symbolic link to a user's folder", lambda: ["export", "--checkpoint", run1,
             "--format", "onnx", "--out", w / "lnk"], 1, "symbolic link", lambda: [w / "real"], link),
        Case("resources", "teacher.stride=0.0001 (50,000 chunks a window)", lambda: [*sub, "teacher.infer=birdnet",
             "teacher.stride=0.0001"], 1, "teacher.stride"),
        Case("silent", "data.val_group=site with a pattern without a site", lambda: ["prepare", *cfg,
             "data.val_group=site", "data.name_pattern=^(?P<n>.+)$"], 1, "data.val_group"),
        Case("silent", "score with a class column named twice", lambda: ["score", "--solution", w / "dup.csv",
             "--submission", w / "dup.csv"], 1, "more than once", prepare=dup_columns),
        Case("tracebacks", "a labels CSV with its header only", lambda: ["train", *cfg, f"data.soundscape_labels="
             f"{w / 'labels.csv'}", "--out", w / "rl"], 1, "lists no window", prepare=header_only),
        Case("tracebacks", "a python tag in an override", lambda: ["prepare", *cfg,
             'name=!!python/object/apply:os.system ["touch x"]'], 1, "not a plain YAML value"),
        Case("tracebacks", "an unclosed list in an override", lambda: ["prepare", *cfg, "infer.tta_shifts=[0,"], 1,
             "not a plain YAML value"),
        Case("tracebacks", "a nested list for a number list", lambda: ["prepare", *cfg, "infer.tta_shifts=[[0,1]]"],
             1, "infer.tta_shifts"),
        Case("tracebacks", "best.pt with its class list edited", lambda: ["infer", "--checkpoint", w / "ce",
             "--soundscapes", data / "test_soundscapes", "--out", w / "ce.csv"], 1, "damaged", prepare=edited_classes),
        Case("tracebacks", "a .pt without its class list", lambda: ["export", "--checkpoint", w / "nc.pt",
             "--format", "onnx", "--out", w / "e49"], 1, "no classes"),
        Case("tracebacks", "a truncated agile.npz", lambda: [*sub, "teacher.infer=birdnet",
             f"teacher.agile={w / 'agbad'}"], 1, "agile.npz", prepare=cut_npz),
        Case("tracebacks", "a damaged student.pt", lambda: [*sub, "teacher.infer=birdnet",
             f"teacher.student=[{w / 'stbad'}]"], 1, "student.pt"),
        Case("families", "infer with no checkpoint and no teacher", lambda: ["infer", "--soundscapes",
             data / "test_soundscapes", "--out", w / "n.csv"], 1, "--checkpoint"),
        Case("families", "choose with neither --runs nor --students", lambda: ["choose", *cfg, "--teacher", w,
             "--out", w / "e.yaml"], 1, "--students"),
        Case("families", "student on a teacher folder without embeddings", lambda: ["student", *cfg, "--teacher",
             w / "t49", "--out", w / "st49"], 1, "teacher.embeddings=true"),
        Case("families", "infer.window_seconds=4.5 (no whole-second row ids)", lambda: ["prepare", *cfg,
             "infer.window_seconds=4.5"], 1, "infer.window_seconds"),
    ]  # fmt: skip


def main_probe() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, help="a scratch folder (default: a temporary one)")
    args = ap.parse_args()
    w = args.work or Path(tempfile.mkdtemp(prefix="birdsed-probe-"))
    w.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    data, run1 = w / "d", w / "run1"
    if not (data / "train.csv").is_file():
        run(["synth", "--out", data, "--classes", "4", "--files-per-class", "3", "--train-soundscapes", "2",
             "--test-soundscapes", "2"])  # fmt: skip
    if not (run1 / "best.pt").is_file():
        status, err = run(["train", CONFIG, f"data.root={data}", f"data.cache_dir={w / 'cache'}", "train.epochs=1",
                           f"augment.background_dir={data / 'train_soundscapes'}",
                           "train.samples_per_epoch=16", "data.batch_size=8", "data.num_workers=0", "audio.n_mels=32",
                           "audio.n_fft=1024", "data.crop_seconds=2", "data.first_seconds=3", "train.progress=false",
                           "--out", run1])  # fmt: skip
        assert status == 0, err
    counts: Counter = Counter()
    for case in cases(w, data, run1):
        if case.prepare:
            case.prepare()
        before = {p: digest(p) for p in case.keep()}
        status, err = run(case.args())
        problems = []
        if status != case.status:
            problems.append(f"exit {status}, expected {case.status}")
        if "Traceback" in err:
            problems.append("traceback")
        if case.status == 1 and (len(err.strip().splitlines()) != 1 or not err.startswith("error: ")):
            problems.append(f"not one error line: {err.strip()[:200]!r}")
        if case.says and case.says not in err:
            problems.append(f"does not say {case.says!r}: {err.strip()[:200]!r}")
        if any(digest(p) != h for p, h in before.items()):
            problems.append("a file it did not write changed")
        if case.check and not case.check():
            problems.append("its afterwards check failed")
        verdict = "clean" if not problems else "DEFECT"
        counts[case.family, verdict] += 1
        print(f"{verdict:6} {case.family:10} {case.name}" + (f": {'; '.join(problems)}" if problems else ""))
    families = sorted({f for f, _ in counts})
    print()
    for f in families:
        print(f"{f:10} clean {counts[f, 'clean']:2}  defects {counts[f, 'DEFECT']:2}")
    clean, bad = (
        sum(v for (_, k), v in counts.items() if k == "clean"),
        sum(v for (_, k), v in counts.items() if k == "DEFECT"),
    )
    print(f"probe: {clean} clean, {bad} defects ({time.time() - t0:.0f} s)")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main_probe()
