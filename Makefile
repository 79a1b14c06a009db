# Two commands: `make course` runs the whole course, `make test` runs every test.
# `make clean` removes build outputs; `make distclean` also removes the .venv (downloaded data stays).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
# The oldest Python the package runs on (requires-python in pyproject.toml): 3.11.4 brought
# tarfile's filter="data", which `make data` extracts with.
PYTHON_OK := import sys; sys.exit(sys.version_info < (3, 11, 4))
# Where `make course` builds the synthetic stand-in dataset when MVTEC_ROOT is not set.
export MVTEC_TUTORIAL_SYNTHETIC_ROOT ?= $(CURDIR)/build/synthetic
# nbconvert starts each notebook's kernel in notebooks/, so a relative data path given to make
# (`MVTEC_ROOT=data/mvtec_ad make course`) is made absolute here, against the folder make runs in;
# a path starting with ~ is left for Python to expand (mvtec_tutorial.settings.user_path), one with
# a space as it is (make splits words at spaces).
absolute = $(if $(or $(filter ~%,$(1)),$(word 2,$(1))),$(1),$(abspath $(1)))
ifneq ($(MVTEC_ROOT),)
override export MVTEC_ROOT := $(call absolute,$(MVTEC_ROOT))
endif
override export MVTEC_TUTORIAL_SYNTHETIC_ROOT := $(call absolute,$(MVTEC_TUTORIAL_SYNTHETIC_ROOT))
# `make data` downloads real MVTec AD here (set CATEGORIES="bottle wood" for a subset,
# ARCHIVE=path/to/mvtec_anomaly_detection.tar.xz to use a file downloaded by hand).
DATA_DIR ?= $(CURDIR)/data/mvtec_ad
CATEGORIES ?=
ARCHIVE ?=
NOTEBOOKS := $(sort $(wildcard notebooks/*.ipynb))

.PHONY: install course executed benchmark test browser lab data assets clean clean-cache distclean

# A .venv whose Python is missing, broken or too old is rebuilt, not kept: its stamp counts as stale.
ifneq ($(shell $(PY) -c "$(PYTHON_OK)" 2>/dev/null && echo ok),ok)
.PHONY: $(INSTALLED)
endif

# constraints.txt pins every package to the version the tests last passed with.
$(INSTALLED): pyproject.toml constraints.txt
	$(PY) -c "$(PYTHON_OK)" 2>/dev/null || { rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); }
	@$(PY) -c "$(PYTHON_OK)" || { echo "$(PYTHON) is $$($(PY) --version); the course needs Python 3.11.4 or" \
		"later: run make PYTHON=python3.12 (or another new enough Python)"; exit 1; }
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[course,test,offline]"
	touch $@

install: $(INSTALLED)

# Runs every notebook top to bottom (full mode unless MVTEC_TUTORIAL_FAST=1) and prints each one's
# wall time, also kept in build/notebooks/timings.txt. Fits are cached (mvtec_tutorial.cache), so a
# second run takes minutes; `make clean-cache` forgets them.
EXECUTE := $(VENV)/bin/jupyter nbconvert --to notebook --execute --ExecutePreprocessor.timeout=-1

# $(call execute_notebooks,notebooks,output folder,timings file): each notebook in turn, its wall time appended.
define execute_notebooks
	mkdir -p $(2) $(dir $(3))
	: > $(3)
	for notebook in $(1); do \
		start=$$(date +%s); \
		$(EXECUTE) --output-dir $(2) "$$notebook" || exit 1; \
		echo "$$(basename $$notebook): $$(( $$(date +%s) - start )) s" | tee -a $(3); \
	done
endef

course: $(INSTALLED)
	$(PY) -c "from mvtec_tutorial import settings; print('data root:', settings.data_root())"
	mkdir -p build && cp -R assets build/  # the notebooks show ../assets/*.svg, also from build/notebooks/
	$(call execute_notebooks,$(NOTEBOOKS),build/notebooks,build/notebooks/timings.txt)
	$(VENV)/bin/jupyter nbconvert --to html --output-dir build/notebooks build/notebooks/*.ipynb
	@echo "Executed notebooks and HTML pages are in build/notebooks/; wall times in build/notebooks/timings.txt"

# The executed copies in executed/, which readers see without running anything: one full run on real
# MVTec AD (they show its images, so executed/ is CC BY-NC-SA 4.0, see executed/LICENSE.md), in course
# order, on one commit (a work tree with uncommitted changes outside executed/ is refused) and with one
# fit cache, so notebook 08 finds the fits of notebooks 03 to 06. executed/README.md records the run:
# commit, date, machine, load, fit cache and each notebook's wall time (also in build/executed-timings.txt).
# `make executed NOTEBOOK=03_autoencoders` redoes one notebook and adds a line saying so to that record.
# The .ipython-executed profile stores figures as JPEG at 80 dpi and progress bars as text, whose
# overwritten states the second nbconvert pass drops, to keep each copy under 5 MB.
NOTEBOOK ?=
RUN_RECORD := executed/README.md
CPU_MODEL = $$( (grep -m1 'model name' /proc/cpuinfo 2>/dev/null || sysctl -n machdep.cpu.brand_string 2>/dev/null) \
	| sed 's/^model name[[:space:]]*:[[:space:]]*//')
LOAD = $$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || sysctl -n vm.loadavg 2>/dev/null)
executed: export IPYTHONDIR := $(CURDIR)/.ipython-executed
executed: $(INSTALLED)
	@test -n "$$MVTEC_ROOT" || { echo "set MVTEC_ROOT to real MVTec AD (with bottle): executed/ shows a real run"; exit 1; }
	@test -z "$$MVTEC_TUTORIAL_FAST" || { echo "unset MVTEC_TUTORIAL_FAST: executed/ shows a full run"; exit 1; }
	@test -z "$$(git status --porcelain -- . ':(exclude)executed')" || { git status --short -- . ':(exclude)executed'; \
		echo "commit these changes first: executed/ shows the run of one commit"; exit 1; }
	@mkdir -p build
	@echo "$$(date -u '+%Y-%m-%d %H:%M UTC')|$(LOAD)|$$(git rev-parse HEAD)|$$(ls "$$($(PY) -c 'from mvtec_tutorial import cache; print(cache.cache_dir())')" 2>/dev/null | wc -l | tr -d ' ')" \
		> build/executed-start.txt
	$(call execute_notebooks,$(if $(NOTEBOOK),notebooks/$(NOTEBOOK).ipynb,$(NOTEBOOKS)),executed,build/executed-timings.txt)
	$(VENV)/bin/jupyter nbconvert --to notebook --inplace --CoalesceStreamsPreprocessor.enabled=True \
		$(if $(NOTEBOOK),executed/$(NOTEBOOK).ipynb,executed/*.ipynb)
ifeq ($(NOTEBOOK),)
	@IFS='|' read -r started load_start commit fits_start < build/executed-start.txt; { \
		echo "# How the executed copies were made"; echo; \
		echo "Every notebook in this folder comes from one \`make executed\` run, in course order, with one fit cache:"; echo; \
		echo "- commit: $$commit (no uncommitted change outside executed/ at the start: checked)"; \
		echo "- started: $$started; finished: $$(date -u '+%Y-%m-%d %H:%M UTC')"; \
		echo "- machine: $(CPU_MODEL), $$(nproc 2>/dev/null || sysctl -n hw.ncpu) cores, $$(uname -sm)"; \
		echo "- load average (1, 5, 15 min): $$load_start at the start, $(LOAD) at the end"; \
		echo "- software: $$($(PY) -c 'import sys, torch; print(f"Python {sys.version.split()[0]}, torch {torch.__version__}")')"; \
		echo "- data: $$MVTEC_ROOT; fit cache: $$($(PY) -c 'from mvtec_tutorial import cache; print(cache.cache_dir())') ($$fits_start files at the start)"; \
		echo; echo "| notebook | wall time |"; echo "|---|---|"; \
		sed 's/^\(.*\): \(.*\)$$/| \1 | \2 |/' build/executed-timings.txt; \
	} > $(RUN_RECORD)
else
	@IFS='|' read -r started load_start commit fits_start < build/executed-start.txt; \
		wall=$$(cut -d' ' -f2- build/executed-timings.txt); commit=$$(git rev-parse --short $$commit); \
		printf '\n%s\n' "- Redone alone afterwards: $(NOTEBOOK) at commit $$commit, $$started, $$wall, load average $$load_start" \
		>> $(RUN_RECORD)
endif
	@echo "Executed copies written; the run is recorded in $(RUN_RECORD)"

# The benchmark on real MVTec AD (MVTEC_ROOT, else what `make data` downloaded): every method that
# applies, on every category found (or CATEGORIES="carpet wood"), beside the paper's Tables 2 and 3,
# into BENCHMARK_OUT (default results/, where rows of other settings are kept). With a texture downloaded (`make data CATEGORIES=carpet`),
# `make benchmark CATEGORIES=carpet` measures every texture method against the paper's cells.
# On a GPU: `make benchmark DEVICE=cuda SCHEDULE=paper` (the paper's training schedules).
SCHEDULE ?= cpu
DEVICE ?=
METHODS ?=
BENCHMARK_OUT ?= results

benchmark: $(INSTALLED)
	$(VENV)/bin/mvtec-benchmark --root "$(or $(MVTEC_ROOT),$(DATA_DIR))" --categories $(or $(CATEGORIES),all) \
		--schedule $(SCHEDULE) $(if $(DEVICE),--device $(DEVICE)) $(if $(METHODS),--methods $(METHODS)) \
		--out $(BENCHMARK_OUT)

# Tests run on the synthetic set in fast mode, two single-threaded workers (one per CPU core:
# on 2 cores two BLAS thread pools fighting each other are slower than one thread each).
TEST_ENV := env -u MVTEC_ROOT MVTEC_TUTORIAL_FAST=1 MVTEC_TUTORIAL_SYNTHETIC_ROOT=$(CURDIR)/build/test-synthetic \
	MVTEC_TUTORIAL_CACHE=$(CURDIR)/build/test-cache \
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1

# Modules whose docstring examples run as tests (conftest.py gives them `tmp_path`).
DOCTESTED := $(addprefix mvtec_tutorial/,synthetic.py metrics.py thresholds.py training.py \
	backbones.py ssim.py viz.py cache.py benchmark.py supervised_benchmark.py quiz.py own_images.py) \
	$(wildcard mvtec_tutorial/data/*.py) $(wildcard mvtec_tutorial/models/*.py)

# tests/test_report.py opens the HTML report of `mvtec-inspect score` in a real headless browser:
# Debian's Chromium, installed here when it is missing and apt-get exists (as root, else with sudo).
# Elsewhere install Chromium yourself; without it that one test is skipped and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
		|| ! command -v apt-get >/dev/null 2>&1 \
		|| { sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); $$sudo apt-get update -qq && $$sudo apt-get install -y -qq chromium; }

test: $(INSTALLED) browser
	$(TEST_ENV) $(PY) -c "from mvtec_tutorial import settings; settings.data_root()"  # build once, before the workers
	$(TEST_ENV) $(PY) -m pytest -n 2 --dist loadscope tests --doctest-modules $(DOCTESTED) \
		--nbmake $(NOTEBOOKS) --nbmake-timeout=900 -q --durations=15

lab: $(INSTALLED)
	$(VENV)/bin/jupyter lab notebooks/

data: $(INSTALLED)
	$(PY) -c "import sys; from mvtec_tutorial.data import download; \
		download(sys.argv[1], sys.argv[2].split() or None, archive=sys.argv[3] or None)" \
		"$(DATA_DIR)" "$(CATEGORIES)" "$(ARCHIVE)"
	@echo "Now run: MVTEC_ROOT=$(DATA_DIR) make course"

# Redraw the architecture diagrams in assets/ from the package's networks (after changing one;
# tests/test_assets.py fails until they match).
assets: $(INSTALLED)
	$(PY) assets/draw.py

clean:
	rm -rf build .pytest_cache

# Delete the fitted detectors the notebooks and the benchmark reuse (~/.cache/mvtec_tutorial/fits,
# or $$MVTEC_TUTORIAL_CACHE); the next `make course` trains everything again.
clean-cache: $(INSTALLED)
	$(PY) -c "from mvtec_tutorial import cache; print(cache.clear(), 'cached fits removed from', cache.cache_dir())"

distclean: clean
	rm -rf $(VENV)
