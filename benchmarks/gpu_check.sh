#!/usr/bin/env bash
# The BirdNET backbone on a GPU (issue 27), one script under 8 minutes: install, fine-tune 2 epochs on CUDA with
# bf16-mixed on a synthetic BirdCLEF folder, `birdsed infer` on CUDA, then samples/s and the model step's share of
# an epoch. Run from the repository root on a machine with CUDA:
#   bash benchmarks/gpu_check.sh            # installs from the package index
#   WHEELS=.whl bash benchmarks/gpu_check.sh  # offline: every missing package as wheels in .whl/
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
WORK=${WORK:-/tmp/birdsed_gpu_check}
if [[ -n "${WHEELS:-}" ]]; then
  $PY -m pip install -q --no-index --no-deps --target /tmp/site "$WHEELS"/*.whl
  export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  $PY -m pip install -q -e '.[teacher]'
fi
$PY - <<'PY'
import torch
assert torch.cuda.is_available(), "no CUDA device: this check needs a GPU"
print("gpu:", torch.cuda.get_device_name(0), "torch", torch.__version__)
PY
rm -rf "$WORK" && mkdir -p "$WORK"
$PY -m birdsed synth --out "$WORK/data" --classes 12 --seed 0
SETTINGS=(configs/birdnet_sed_gpu.yaml "data.root=$WORK/data" "data.cache_dir=$WORK/cache"
  "augment.background_dir=$WORK/data/train_soundscapes" data.n_folds=4 data.num_workers=4 data.batch_size=64
  train.epochs=2 train.samples_per_epoch=2048 train.precision=bf16-mixed train.accelerator=gpu train.devices=1
  teacher.mapping='')
$PY -m birdsed prepare "${SETTINGS[@]:0:4}" --include-test --no-progress
t0=$(date +%s)
$PY -m birdsed train "${SETTINGS[@]}" --out "$WORK/run" --overwrite
echo "train: $(( $(date +%s) - t0 )) s for 2 epochs"
t0=$(date +%s)
$PY -m birdsed infer --checkpoint "$WORK/run" --soundscapes "$WORK/data/test_soundscapes" \
  --sample-submission "$WORK/data/sample_submission.csv" --out "$WORK/sub.csv" --no-progress "infer.tta_shifts=[0,-2.5,2.5]"
echo "infer (CUDA, 3 shifts): $(( $(date +%s) - t0 )) s"
$PY -m birdsed score --solution "$WORK/data/test_solution.csv" --submission "$WORK/sub.csv"
WORK="$WORK" $PY - <<'PY'
import json, os, time
from pathlib import Path

import torch

from birdsed.config.load import load_config
from birdsed.models.build import build_model
from birdsed.training.finetune import param_groups

work = Path(os.environ["WORK"])
history = json.loads((work / "run" / "metrics.json").read_text())["history"]
epoch_s = history[-1]["elapsed_s"] - history[0]["elapsed_s"]  # the 2nd epoch: no warm-up, no first compile
cfg = load_config(work / "run" / "config.yaml")
model = build_model(cfg, 12).cuda().to(memory_format=torch.channels_last)
opt = torch.optim.AdamW(param_groups(model, cfg.train), lr=1e-4)
b = cfg.data.batch_size
x = torch.randn(b, round(cfg.data.crop_seconds * cfg.audio.sample_rate), device="cuda") * 0.1
steps = cfg.train.samples_per_epoch // b

def step():
    with torch.autocast("cuda", torch.bfloat16):
        loss = model(x)["clip_logits"].float().sigmoid().mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()

for _ in range(3):
    step()
torch.cuda.synchronize()
t0 = time.perf_counter()
for _ in range(steps):
    step()
torch.cuda.synchronize()
step_s = time.perf_counter() - t0
print(f"epoch 2: {epoch_s:.1f} s for {cfg.train.samples_per_epoch} samples = {cfg.train.samples_per_epoch / epoch_s:.0f} samples/s")
print(f"model step alone: {steps} steps in {step_s:.1f} s = {steps * b / step_s:.0f} samples/s; "
      f"the step's share of the epoch: {step_s / epoch_s:.0%}")
PY
