# One entry point. `make app` and `make test` set everything up on a fresh machine first.
VENV ?= .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export GRADIO_ANALYTICS_ENABLED := False
export HF_HUB_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup system app test test-fast train bench notebooks clean

setup: system $(VENV)/.installed

# Debian packages: chromium (browser tests), ffmpeg/ffprobe (gradio's Video component), a JRE (pycocoevalcap)
system:
	@if ! command -v chromium >/dev/null || ! command -v ffmpeg >/dev/null || ! command -v java >/dev/null; then \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
			chromium ffmpeg default-jre-headless >/dev/null; \
	fi

# torch first, pinned to the CPU wheel in pip's find-links (anything looser pulls a multi-GB CUDA build)
$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	$(PY) -c "import torch, workbench; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	touch $@

app: setup
	$(PY) app.py

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow and not browser"

train: setup
	$(VENV)/bin/workbench train

bench: setup
	$(PY) benchmarks/run_all.py

notebooks: setup
	$(PY) -m pytest -q tests/test_notebooks.py

clean:
	rm -rf $(VENV) .pytest_cache data/generated data/traces
