# Developer entry points. `.ci/run` uses `make lint` and `make test` on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv core run test lint bench fuzz browser clean distclean

venv: $(STAMP)

# Reinstalled only when the dependencies in pyproject.toml change.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -e '.[dev]'
	touch $@

# The domain core compiled by mypyc (services/compiled_core.py, docs/decisions.md "The
# compiled core"), out of the source tree, rebuilt when a compiled source changes. A failed
# build leaves the interpreted core (slower: 1.3–1.7×), unless UNIFIER_CORE=compiled asks
# for the compiled one (CI does): then it fails.
# The projection's synchronous hot modules are compiled with it (compiled_core.COMPILED;
# tests/unit/test_compiled_core.py checks that this list is that one), and the C
# extensions (compiled_core.EXTENSIONS: a user's state and messages as JSON, the batch's rows
# as binary COPY payloads).
CORE := build/core/MANIFEST.json
CORE_SOURCES := $(wildcard services/domain/*.py) \
  $(addprefix services/projection/,decoding.py facts.py merge.py records.py resident.py window.py) \
  services/store/rows.py services/relay/partitioner.py \
  services/domain/_native.c services/store/_rowcodec.c
core: $(CORE)
$(CORE): $(STAMP) services/compiled_core.py $(CORE_SOURCES)
	@mkdir -p build; echo "compiling the domain core and the projection's hot modules with mypyc (a minute or two; log: build/core.log)"; \
	$(BIN)/python -m services.compiled_core build >build/core.log 2>&1 && tail -1 build/core.log || { \
	  tail -25 build/core.log >&2; [ "$$UNIFIER_CORE" != compiled ] && \
	  echo "make core: the build failed (above); the interpreted core runs" >&2; }

# Without KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL this starts embedded ones (data in ./.unifier),
# plus a small demo publisher so the log shows facts flowing and user-changed going out.
run: $(STAMP) $(CORE)
	$(BIN)/unifier run --demo --admin-key-file .unifier/api-key

# pytest exits 5 when it collected no test: that must fail too, and say so.
# On a fresh machine as root, the browser the console's tests drive is installed first.
# The tests run on TEST_WORKERS pytest-xdist workers (`make test TEST_WORKERS=0`: in this
# process), each module whole on one worker (tests/conftest.py): most of a test's time is
# spent waiting on the broker, PostgreSQL or a child process, so two overlap well on two
# cores (docs/decisions.md, "Test suite speed"). --durations lists the slowest tests.
# Then the unit tests once more on the interpreted core (UNIFIER_CORE=interpreted): the
# source is the fallback wherever no compiler is, and some tests spy on its functions.
TEST_WORKERS ?= 2
test: $(STAMP) $(CORE)
	@[ -x "$(CHROMIUM)" ] || [ "$$(id -u)" != 0 ] || $(MAKE) --no-print-directory browser || true
	@[ -x "$(CHROMIUM)" ] || echo "make test: $(CHROMIUM) is missing: the console's browser tests are skipped (they fail in CI); install it with 'make browser'" >&2
	@status=0; $(BIN)/pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadgroup --durations=25 tests/ || status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: no tests were collected" >&2; fi; \
	echo "== the unit tests on the interpreted core"; \
	UNIFIER_CORE=interpreted $(BIN)/pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadgroup tests/unit || status=$$((status ? status : $$?)); \
	exit $$status

# A longer run of the fuzzing test than `make test`'s seed: 3,000 hostile records, a fresh
# seed each time (printed; FUZZ_SEED=N make fuzz replays a run, FUZZ_RECORDS sets the count).
fuzz: $(STAMP)
	FUZZ_RECORDS=$${FUZZ_RECORDS:-3000} FUZZ_SEED=$${FUZZ_SEED:-$$(date +%s)} \
	  $(BIN)/pytest -q -s -p no:cacheprovider tests/integration/test_fuzz.py

# Both checkers run even when the first fails, so one CI run shows every problem.
lint: $(STAMP)
	@status=0; \
	echo "ruff check ."; $(BIN)/ruff check . || status=1; \
	echo "mypy"; $(BIN)/mypy || status=1; \
	exit $$status

# The console's browser tests drive Debian's chromium (Playwright's own browser downloads
# cannot be reached) and need a CJK font for Japanese. Installs them when missing (root,
# or sudo); .ci/run calls this before the tests.
CHROMIUM ?= /usr/bin/chromium
browser:
	@if [ -x "$(CHROMIUM)" ] && fc-list 2>/dev/null | grep -qi ipagothic; then \
	  echo "chromium and the Japanese font are installed"; exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then sudo=; elif command -v sudo >/dev/null; then sudo=sudo; else \
	  echo "make browser: run as root: apt-get update && apt-get install -y chromium fonts-ipafont-gothic" >&2; exit 1; fi; \
	$$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq chromium fonts-ipafont-gothic

bench: $(STAMP) $(CORE)
	@set -e; found=0; for f in bench/*.py; do \
	  [ -e "$$f" ] || continue; found=1; echo "== $$f"; $(BIN)/python "$$f"; \
	done; [ $$found -eq 1 ] || echo "no benchmarks in bench/"

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache .hypothesis build dist *.egg-info bench/results
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +

# Also the virtualenv and the local data of `make run`.
distclean: clean
	rm -rf $(VENV) .unifier
