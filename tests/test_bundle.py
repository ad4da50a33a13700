"""``birdsed bundle``: models, wheels, notebook and metadata, proven by running the notebook in a stand-in of the
Kaggle image (the synthetic set); the wheel resolver against the image's versions; the errors."""

import json
import sys
import zipfile
from pathlib import Path

import pytest

from birdsed.cli import main
from birdsed.config import ConfigError
from birdsed.config.load import load_config
from birdsed.kaggle.bundle import BundleError, Target, load_bundle, make_bundle, member_names, predict_competition
from birdsed.kaggle.wheels import platform_tags, ship_wheels
from birdsed.outputs import OutputError
from birdsed.scoring.metrics import score_files

HERE = f"{sys.version_info.major}.{sys.version_info.minor}"


@pytest.fixture(scope="module")
def bundle(trained_run, tiny_root, tmp_path_factory):
    _, _, run_dir = trained_run
    out = tmp_path_factory.mktemp("bundle") / "kaggle"
    cfg = load_config(None, ["infer.runtime=onnx", "infer.tta_shifts=[0,1]", "infer.clip_weight=0.75"])
    target = Target(user="someone", prefix="bs", python=HERE)
    result = make_bundle([run_dir], cfg, out, target, sample_data=tiny_root, dry_run_files=2, cores=4)
    return result, out, run_dir


@pytest.mark.slow
def test_bundle_writes_what_kaggle_needs_and_its_notebook_runs_offline(bundle, trained_run, tiny_root, capsys):
    result, out, run_dir = bundle
    name = run_dir.name
    # models: the export and the ensemble settings the notebook reads
    assert (out / "models" / name / "model.onnx").is_file()
    ens = json.loads((out / "models" / "ensemble.json").read_text())
    assert ens["members"] == [name]
    assert ens["config"]["infer"]["tta_shifts"] == [0.0, 1.0] and ens["config"]["infer"]["clip_weight"] == 0.75
    # wheels: birdsed and the runtime the image lacks; nothing the image has (numpy, torch, pandas ...)
    wheels = sorted(p.name.split("-")[0].lower() for p in (out / "wheels").glob("*.whl"))
    assert "birdsed" in wheels and "onnxruntime" in wheels
    assert not {"numpy", "torch", "pandas", "timm", "soundfile"} & set(wheels)
    assert {w["file"] for w in result.wheels} == {p.name for p in (out / "wheels").glob("*.whl")}
    # Kaggle CLI metadata and the notebook's filled parameter cell
    meta = json.loads((out / "models" / "dataset-metadata.json").read_text())
    assert meta["id"] == "someone/bs-models" and meta["licenses"][0]["name"]
    assert json.loads((out / "wheels" / "dataset-metadata.json").read_text())["id"] == "someone/bs-wheels"
    kernel = json.loads((out / "kernel-metadata.json").read_text())
    assert kernel["code_file"] == "inference.ipynb" and kernel["enable_internet"] is False
    assert kernel["dataset_sources"] == ["someone/bs-models", "someone/bs-wheels"]
    nb = json.loads((out / "inference.ipynb").read_text())
    params = "".join(next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))["source"])
    assert 'MODELS_DIR = "/kaggle/input/bs-models"' in params.replace("'", '"')
    assert 'WHEEL_DIR = "/kaggle/input/bs-wheels"' in params.replace("'", '"')
    # the dry run: two soundscapes of 30 s, 6 windows each; the notebook's numbers are birdsed infer's
    proof = result.dry_run
    assert proof is not None and proof.files == 2 and proof.rows == 12
    assert proof.max_abs_diff <= 1e-5
    record = json.loads((out / "bundle.json").read_text())
    assert record["dry_run"]["rows"] == 12 and record["budget"]["projected_minutes"] > 0

    # the bundled settings are the ones used: what the notebook computes scores like the run on the labelled set
    _, summary, _ = trained_run
    exact = ["infer.tta_shifts=[0]", "infer.clip_weight=1", "infer.shared_stft=false"]  # the run's own windows
    plain = predict_competition(out / "models", tiny_root, exact)
    assert plain is not None
    sub = out.parent / "sub.csv"
    plain.submission.to_csv(sub, index=False)
    assert score_files(tiny_root / "test_solution.csv", sub).macro_auc == pytest.approx(
        summary["soundscape_auc"], abs=0.02
    )
    bundled = predict_competition(out / "models", tiny_root)
    cols = plain.submission.columns[1:]
    assert (bundled.submission[cols] - plain.submission[cols]).abs().to_numpy().max() > 1e-3  # TTA + blend applied


@pytest.mark.slow
def test_bundle_refuses_what_cannot_work_on_kaggle(bundle, trained_run, tiny_root, tmp_path):
    _, out, run_dir = bundle
    onnx = load_config(None, ["infer.runtime=onnx"])
    target = Target(user="u", python=HERE)
    with pytest.raises(OutputError, match="not empty"):
        make_bundle([run_dir], onnx, out, target, sample_data=tiny_root)
    with pytest.raises(ConfigError, match="onnx or openvino"):
        make_bundle([run_dir], load_config(None, []), tmp_path / "a", target)
    with pytest.raises(BundleError, match=r"Python 2\.7"):
        make_bundle([run_dir], onnx, tmp_path / "b", Target(user="u", python="2.7"))
    csv = load_config(None, ["infer.runtime=onnx", f"teacher.infer={tiny_root / 'sample_submission.csv'}"])
    with pytest.raises(ConfigError, match="hidden"):
        make_bundle([run_dir], csv, tmp_path / "c", target, sample_data=tiny_root)
    with pytest.raises(ConfigError, match=r"no sample_submission\.csv"):
        make_bundle([run_dir], onnx, tmp_path / "d", target, sample_data=tmp_path)
    assert not any((tmp_path / n).exists() for n in "abcd")  # nothing half-written is left
    # a models folder missing a member says which
    models = tmp_path / "m"
    models.mkdir()
    (models / "ensemble.json").write_text((out / "models" / "ensemble.json").read_text())
    with pytest.raises(ConfigError, match=run_dir.name):
        load_bundle(models)


def test_member_names_are_unique_folder_names(tmp_path):
    assert member_names(["runs/a", "other/a", "runs/b/best.pt", "x/y z"]) == ["a", "a-2", "b", "y-z"]
    assert platform_tags("manylinux_2_28_x86_64")[:2] == ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64"]
    assert "manylinux2014_x86_64" in platform_tags("manylinux_2_28_x86_64")
    assert platform_tags("macosx_11_0_arm64") == ["macosx_11_0_arm64"]


def _fake_wheel(folder: Path, name: str, version: str, requires: list[str]) -> None:
    info = f"{name}-{version}.dist-info"
    meta = "\n".join(["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"])
    meta += "".join(f"\nRequires-Dist: {r}" for r in requires) + "\n"
    with zipfile.ZipFile(folder / f"{name}-{version}-py3-none-any.whl", "w") as zf:
        zf.writestr(f"{name.replace('-', '_')}/__init__.py", "")
        zf.writestr(f"{info}/METADATA", meta)
        zf.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{info}/RECORD", "")


@pytest.mark.slow
def test_wheels_follow_requirements_and_ship_only_what_the_image_lacks_or_does_not_meet(tmp_path):
    links = tmp_path / "links"
    links.mkdir()
    _fake_wheel(
        links,
        "fakerun",
        "1.0",
        [
            "fakedep>=2",  # not in the image: shipped, and followed
            "numpy>=1.20",  # the image's numpy meets it: not shipped
            "six<1",  # the image's six 1.17 does not: shipped beside it
            "fakewin; sys_platform == 'win32'",  # not for Linux: skipped
        ],
    )
    _fake_wheel(links, "fakedep", "1.0", [])
    _fake_wheel(links, "fakedep", "2.1", ["tqdm"])  # the image has tqdm
    _fake_wheel(links, "six", "0.9", [])
    _fake_wheel(links, "fakewin", "1.0", [])
    shipped = ship_wheels(["fakerun"], tmp_path / "w", HERE, "manylinux_2_28_x86_64", [str(links)], no_index=True)
    got = {s.name: s for s in shipped}
    assert set(got) == {"birdsed", "fakerun", "fakedep", "six"}
    assert got["fakedep"].version == "2.1" and "fakerun 1.0 requires it" in got["fakedep"].reason
    assert got["six"].version == "0.9" and "the image has 1.17.0" in got["six"].reason
    assert sorted(p.name for p in (tmp_path / "w").glob("*.whl")) == sorted(s.file for s in shipped)


def test_bundle_cli_needs_a_kaggle_user(trained_run, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    code = main(["bundle", "--checkpoint", str(trained_run[2]), "--out", str(tmp_path / "k"), "--no-dry-run"])
    assert code != 0
    assert "--kaggle-user" in capsys.readouterr().err
    assert not (tmp_path / "k").exists()


def test_bundle_refuses_a_name_kaggle_would_refuse(trained_run, tmp_path, caplog):
    """`--prefix 'My Models/x'` would write an invalid Kaggle slug: refused before any work, with a name that would
    do; a bundle for another Python than the image's says so in one warning line."""
    onnx = load_config(None, ["infer.runtime=onnx"])
    for prefix in ("My Models/x", "a--b", "-a", "x" * 41):
        with pytest.raises(ConfigError, match=r"--prefix .*Kaggle slugs"):
            make_bundle([trained_run[2]], onnx, tmp_path / "k", Target(user="u", prefix=prefix))
    with pytest.raises(ConfigError, match=r"--prefix 'My Models/x'.*e\.g\. --prefix my-models-x"):
        Target(user="u", prefix="My Models/x").check()
    with pytest.raises(ConfigError, match="--kaggle-user"):
        Target(user="me/you").check()
    assert not (tmp_path / "k").exists()
    Target(user="u", prefix="bird-2025").check()
    with caplog.at_level("WARNING"):
        Target(user="u", python="3.11").check()
    assert "bundle for Python 3.11: the Kaggle image has Python 3.12" in caplog.text


def test_the_competition_slug_follows_the_folders_layout(tiny_root, tiny_root26):
    from birdsed.commands import competition_of

    assert competition_of(tiny_root) == "birdclef-2025"
    assert competition_of(tiny_root26) == "birdclef-2026"  # labelled training soundscapes
