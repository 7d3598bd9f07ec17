# Two commands on a fresh machine: `make serve` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch is pinned to the CPU wheel this machine carries; any other request pulls a multi-GB CUDA build.
TORCH := torch==2.13.0
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: serve test lint bench install clean chromium redis

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

test: $(STAMP) chromium redis
	$(BIN)/ruff check src tests bench
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

bench: $(STAMP)
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) build dist src/*.egg-info
