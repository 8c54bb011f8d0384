# RadAssist developer entry points. `make run` and `make test` are the two commands in README.md.
VENV ?= .venv
PY := $(VENV)/bin/python
export TF_USE_LEGACY_KERAS := 1
export PYTHONUNBUFFERED := 1

.PHONY: env browser run train test test-fast test-full lint benchmark-accuracy benchmark-robustness benchmark-abuse benchmark-segmentation benchmark-images compile-kfp clean

env:  ## build .venv (patched interpreter on glibc < 2.39), idempotent
	@bash scripts/bootstrap_env.sh

run: env  ## train on $$RADASSIST_DATA_DIR, ./data/chest-ct or the bundled sample; serve the model; open the portal
	bash scripts/up.sh $(ARGS)

train: env  ## the training pipeline only
	$(PY) -m radassist.cli pipeline run $(ARGS)

browser:  ## Debian's chromium for the Playwright tests (installed when missing and run as root)
	@bash scripts/install_browser.sh

test: env browser  ## lint + the test suite on the bundled sample (no external data needed), on both cores
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -n 2 --dist loadfile -m "not full_data" $(PYTEST_ARGS)

test-fast: env  ## the edit-test loop (< 1 min): lint + the tests not marked slow, on SQLite, on both cores
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -n 2 --dist loadfile -m "not slow and not full_data" -k "not postgresql" $(PYTEST_ARGS)

test-full: env  ## tests against the full Kaggle set ($$RADASSIST_FULL_DATA_DIR or ../shared/data/chest-ct)
	$(PY) -m pytest -m full_data $(PYTEST_ARGS)

benchmark-accuracy: env  ## default recipe on the full data, 5 seeds -> benchmarks/results/accuracy.json
	$(PY) -m benchmarks.accuracy --data $${RADASSIST_FULL_DATA_DIR:-../shared/data/chest-ct} --seeds 0 1 2 3 4

benchmark-robustness: env  ## shift suite, calibration and OOD gate, 3 seeds -> benchmarks/results/robustness.json
	$(PY) -m benchmarks.robustness --data $${RADASSIST_FULL_DATA_DIR:-../shared/data/chest-ct} --seeds 0 1 2

benchmark-abuse: env  ## attacks a real stack (model in $$RADASSIST_MODEL_BASE or outputs/models) -> abuse.json
	$(PY) -m benchmarks.abuse --model-base $${RADASSIST_MODEL_BASE:-outputs/models} --data $${RADASSIST_FULL_DATA_DIR:-../shared/data/chest-ct}

benchmark-segmentation: env  ## both pipelines, both models served, measured -> benchmarks/results/segmentation.json
	$(PY) -m benchmarks.segmentation --data $${RADASSIST_SEG_FULL_DATA_DIR:-../shared/data/lung-seg} --chest-ct $${RADASSIST_FULL_DATA_DIR:-../shared/data/chest-ct}

benchmark-images: env  ## each image's Python environment installed into a folder and measured -> images.json
	$(PY) -m benchmarks.images

compile-kfp: env  ## write the Kubeflow Pipelines spec
	$(PY) -m radassist.cli pipeline compile --output build/radassist_pipeline.json $(ARGS)

clean:
	rm -rf outputs build .pytest_cache
