# Two commands on a fresh machine: `make serve` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch is pinned to the CPU wheel this machine carries; any other request pulls a multi-GB CUDA build.
TORCH := torch==2.13.0
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: serve test lint bench install clean chromium redis llama-sdist

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[test]" "$(TORCH)"
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(BIN)/streamchat serve --host $(HOST) --port $(PORT)

# The browser tests drive Debian's chromium (never a downloaded browser); without it they skip.
chromium:
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
		|| echo "chromium unavailable: browser tests will skip"

# The stream-store tests run Debian's redis-server on a free port; without it they skip.
redis:
	@command -v redis-server >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server) \
		|| echo "redis-server unavailable: Redis tests will skip"

# The GLM GGUF tests convert tiny models with llama.cpp's own convert_hf_to_gguf.py, which ships
# in llama-cpp-python's sdist: fetch the sdist of the installed version once (PyPI, ~75 MB).
LLAMA_SDIST_DIR := bench/.cache/sdist
llama-sdist: $(STAMP)
	@mkdir -p $(LLAMA_SDIST_DIR) && ls $(LLAMA_SDIST_DIR)/llama_cpp_python-*.tar.gz >/dev/null 2>&1 || \
		$(BIN)/pip download --quiet --no-deps --no-binary :all: -d $(LLAMA_SDIST_DIR) \
		"llama-cpp-python==$$($(BIN)/python -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))')" \
		2>$(LLAMA_SDIST_DIR)/download.log || echo "llama-cpp-python sdist unavailable: GLM GGUF tests will skip"

test: $(STAMP) chromium redis llama-sdist
	$(BIN)/ruff check src tests bench
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

bench: $(STAMP)
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) build dist src/*.egg-info
