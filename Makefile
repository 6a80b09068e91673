# The README's two commands. Each creates .venv in the checkout if it is absent and
# installs the project with what it needs, so both work on a fresh clone.
#   make test       every test and every notebook (about 30 minutes on 2 cores)
#   make test-fast  the same but the tests marked `slow` and the notebooks (a few minutes):
#                   the one to run while editing; `make test` is the one that must pass
#   make demo       `zoo demo`: trains, evaluates, exports and reloads both heads
#   make help       this list
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.zoo-installed

export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONHASHSEED ?= 0
# oneDNN's kernels make a ResNet-18 training step 3.7x faster on these AVX2 CPUs
# (TensorFlow leaves them off there by default); see README, "Training".
export TF_ENABLE_ONEDNN_OPTS ?= 1

.PHONY: test test-fast demo install clean help

install: $(STAMP)

$(STAMP): setup.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	@touch $(STAMP)

# The notebooks run top to bottom as tests (nbmake), each cell within 15 minutes. Two workers
# (pytest-xdist), a test file each at a time: much of a test's time is single-threaded (imports,
# tracing, the CLI's subprocesses), so two cores do more with two.
test: $(STAMP)
	$(PY) -m pytest tests notebooks --nbmake --nbmake-timeout=900 -n 2 --dist loadfile

# Markers (pytest.ini): `slow` on tests that train for more than a few steps, build large or many
# models, compile with XLA or run `zoo` in subprocesses; `notebook` on every notebook
# (notebooks/conftest.py). The slowest 25 that are left are listed, to see what creeps in.
test-fast: $(STAMP)
	$(PY) -m pytest tests -m "not slow and not notebook" -n 2 --dist loadfile --durations=25

demo: $(STAMP)
	$(PY) -m zoo demo

help:
	@sed -n 's/^#   //p' $(firstword $(MAKEFILE_LIST))

clean:
	rm -rf $(VENV) demo_out build *.egg-info .pytest_cache
