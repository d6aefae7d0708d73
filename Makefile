# Two commands set everything up on a fresh machine:
#   make demo   the whole pipeline on the embedded default (synthetic world, tiny models, kfp.local, MLflow)
#   make test   the test suite (unit, integration with real MLflow/S3/torchrun/kfp.local, end to end)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PROFILE ?= tiny
# torch is pinned to the CPU wheel for local and CI use; never let an install pull a CUDA build.
CONSTRAINTS := constraints/cpu.txt
PYTEST_ARGS ?=

.PHONY: help env browser demo test test-fast test-release-parity lint compile ui-review clean

help:
	@echo "make demo      run the whole pipeline (profile $(PROFILE)) under kfp.local, tracked in MLflow"
	@echo "make test      run the test suite"
	@echo "make test-fast the suite without the slow end-to-end tests"
	@echo "make test-release-parity STEPVIDEO_RELEASE_SRC=<checkout of stepfun-ai/Step-Video-T2V>"
	@echo "              compare the DiT, VAE and sampler with the released code (fp32, 1e-5)"
	@echo "make compile   write pipeline.yaml (KFP IR, stamped with the pipeline version)"
	@echo "make lint      ruff"
	@echo "make ui-review TRACKING_URI=http://... RUN_ID=<parent run>  screenshots of a run in the MLflow UI"

env: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e '.[dev]'
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) setuptools wheel
	$(BIN)/python -m pip install --quiet --no-build-isolation -c $(CONSTRAINTS) -e '.[deepspeed]'
	touch $@

# headless Chromium for the evaluation report's test (Debian's package, as root); where it cannot be
# installed that one test is skipped and says why
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get install -y -qq chromium >/dev/null 2>&1 || (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium >/dev/null 2>&1)) \
	  || echo "chromium not installed: the report screenshot test will be skipped"; }

demo: env
	$(BIN)/t2v run --local --profile $(PROFILE) --summary-json .runs/demo-summary.json

test: env browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: env
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

# The release is not vendored; its networks import diffusers and einops, installed here on demand.
test-release-parity: env
	@test -n "$(STEPVIDEO_RELEASE_SRC)" || { echo "set STEPVIDEO_RELEASE_SRC to a checkout of stepfun-ai/Step-Video-T2V"; exit 2; }
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) diffusers einops
	STEPVIDEO_RELEASE_SRC=$(STEPVIDEO_RELEASE_SRC) $(BIN)/python -m pytest tests/parity $(PYTEST_ARGS)

lint: env
	$(BIN)/ruff check .

compile: env
	$(BIN)/t2v compile --profile step-video-t2v-30b --out pipeline.yaml

# What a reviewer sees of a pipeline run in the MLflow UI, in headless Chromium: the parent run (description,
# metrics, child runs, registered versions), a sample's preview and the evaluation report, as screenshots.
ui-review: env browser
	@test -n "$(TRACKING_URI)" -a -n "$(RUN_ID)" || { echo "set TRACKING_URI (an MLflow server) and RUN_ID (a pipeline's parent run)"; exit 2; }
	$(BIN)/python -m tests.ui_review --tracking-uri $(TRACKING_URI) --run-id $(RUN_ID) --out ui-review

clean:
	rm -rf .runs pipeline.yaml .pytest_cache ui-review
