# Two commands: `make demo` (the main job on the embedded synthetic dataset) and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
DEMO   := data/demo

.PHONY: install demo test lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,teacher]'  # teacher: BirdNET, so its tests run here and in CI
	touch $@

$(DEMO)/train.csv: | install
	$(PY) -m birdsed synth --out $(DEMO) --seed 0

demo: install $(DEMO)/train.csv
	$(PY) -m birdsed prepare configs/demo.yaml --include-test --no-progress
	$(PY) -m birdsed pseudo configs/demo.yaml --out runs/demo --overwrite
	$(PY) -m birdsed infer --checkpoint runs/demo/round_2/run --soundscapes $(DEMO)/test_soundscapes \
		--sample-submission $(DEMO)/sample_submission.csv --out submissions/demo.csv --no-progress "infer.tta_shifts=[0,-2.5,2.5]"
	$(PY) -m birdsed score --solution $(DEMO)/test_solution.csv --submission submissions/demo.csv
	$(PY) -m birdsed report runs/demo --solution $(DEMO)/test_solution.csv --submission submissions/demo.csv \
		--out submissions/demo_report.html $$(command -v chromium >/dev/null && echo --screenshot submissions/demo_report.png)

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

bench: install
	$(PY) benchmarks/bench_audio.py
	$(PY) benchmarks/bench_train.py
	$(PY) benchmarks/bench_infer.py
	$(PY) benchmarks/bench_report.py
	$(PY) benchmarks/bench_reliability.py

clean:
	rm -rf data/demo cache runs submissions/*.csv submissions/*.html
