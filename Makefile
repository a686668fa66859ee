# One command each for a new user: `make demo`, `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DATA ?= data/demo
RUN_DIR ?= runs/demo-$(shell date +%Y%m%d-%H%M%S)

BIQA_DATA ?= data/demo/IQA_Database
.PHONY: install weights demo-data demo demo-biqa report-shot tables-biqa test test-1thread test-slow lint models backbones search tables perf clean

# torch/torchvision/avalanche versions are pinned in constraints.txt (known to work together).
$(BIN)/.installed: setup.cfg pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

install: $(BIN)/.installed

weights: install
	$(BIN)/iqacl fetch-weights

$(DEMO_DATA)/.complete: | $(BIN)/.installed
	$(BIN)/iqacl demo-data $(DEMO_DATA)

demo-data: $(DEMO_DATA)/.complete

demo: weights demo-data
	$(BIN)/iqacl run experiments/configs/demo.yaml --out $(RUN_DIR)

# The continual-BIQA protocol (six datasets) on small stand-ins in their real layouts.
$(BIQA_DATA)/.complete: | $(BIN)/.installed
	$(BIN)/iqacl demo-data --biqa $(BIQA_DATA) --scale 4

demo-biqa: weights $(BIQA_DATA)/.complete
	$(BIN)/iqacl run experiments/configs/demo_biqa.yaml --out runs/demo-biqa-$(shell date +%Y%m%d-%H%M%S) \
		log.progress=false

# The README's screenshot of a run's report.html: the demo run's page in headless Chromium
# (needs Debian's chromium and chromium-driver).
report-shot: weights demo-data
	test -f runs/readme-report/results.json || $(BIN)/iqacl run experiments/configs/demo.yaml \
		--out runs/readme-report log.progress=false
	$(BIN)/iqacl report runs/readme-report --screenshot docs/report.png --height 1500

# The README's continual-BIQA method table on the stand-ins (2 seeds, ~40 min on 2 cores);
# then every row's results.json re-derived from its saved predictions and routing weights.
tables-biqa: weights $(BIQA_DATA)/.complete
	$(BIN)/iqacl grid experiments/tables/biqa_methods.yaml --out runs/tables/biqa_methods \
		--base experiments/configs/demo_biqa.yaml --report README.md \
		--marker biqa-methods-table --report-html log.progress=false
	$(BIN)/iqacl verify runs/tables/biqa_methods

test: weights
	$(BIN)/python -m pytest -q

# The suite again with one torch thread per process (two processes, one file each): sums
# split across threads differently, so a test that passes only by float rounding fails here.
test-1thread: weights
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2 --dist loadfile

test-slow: weights
	$(BIN)/python -m pytest -q -m slow

lint: install
	$(BIN)/ruff check .

# Default hyperparameters: a small grid on the demo stream's validation splits.
search: weights demo-data
	$(BIN)/iqacl grid experiments/grids/defaults_search.yaml --out runs/search \
		--report docs/STRATEGIES.md --marker search log.progress=false

# The README's demo table and heatmap (every strategy, 3 seeds, ~40 min on 2 cores).
tables: weights demo-data
	$(BIN)/iqacl grid experiments/tables/demo.yaml --out runs/tables/demo \
		--report README.md --marker demo-table --heatmap docs/demo_heatmap.png \
		log.progress=false

# docs/PERFORMANCE.md: each speed target next to its baseline, measured in one run (<10 min).
# The GPU rows come from `python -m perf --gpu` on a CUDA machine (docs/perf_gpu.json).
perf: install
	$(BIN)/python -m perf --out docs/PERFORMANCE.md

# The README's backbone table: a handful of common torchvision and timm models (CPU).
models: install
	$(BIN)/iqacl models common --report README.md --marker models

# The README's strategies x backbones table on the demo stream, untrained weights (~30 min).
backbones: weights demo-data
	$(BIN)/iqacl grid experiments/tables/backbones.yaml --out runs/tables/backbones \
		--report README.md --marker backbones-table model.pretrained=false log.progress=false

clean:
	rm -rf runs .pytest_cache .ruff_cache
