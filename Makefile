# Two commands do all the set-up on a fresh machine: `make demo` (the main job) and `make test`.
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
PIP_OPTS ?= --disable-pip-version-check -q

.PHONY: demo test test-all bench install clean

$(STAMP): pyproject.toml
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install $(PIP_OPTS) --upgrade pip
	$(VPY) -m pip install $(PIP_OPTS) "torch==2.13.0"
	$(VPY) -m pip install $(PIP_OPTS) -e ".[train,test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VPY) -m sushi demo -o out/demo

test: $(STAMP)
	$(VPY) -m pytest -n 2 --dist loadgroup -q

test-all: $(STAMP)
	$(VPY) -m pytest -n 2 --dist loadgroup -q -m ""

bench: $(STAMP)
	$(VPY) -m bench.run --json bench/results/bench.json

clean:
	rm -rf out build sim_build .pytest_cache
