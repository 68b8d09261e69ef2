# sd-hw: `make demo` and `make test` set everything up on first use.
VENV := .venv
RUN := . $(VENV)/bin/activate &&

.PHONY: setup demo test bench clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(RUN) sd-hw demo --report docs/digits-results.md

test: setup
	$(RUN) python -m pytest -W error -n 2

bench: setup
	$(RUN) python bench/bench_decompose.py --out docs/bench-decompose.md
	$(RUN) python bench/bench_simulate.py --out docs/bench-simulate.md
	$(RUN) python bench/bench_compare.py --out docs/benchmarks.md --json docs/benchmarks.json
	$(RUN) python bench/bench_mnist.py --out docs/mnist-results.md --json docs/mnist-results.json --sweep 0.25,0.75
	$(RUN) python bench/bench_serial.py --out docs/serial-results.md --json docs/serial-results.json
	$(RUN) python bench/bench_up5k.py --out docs/benchmarks.md --json docs/benchmarks.json --seeds 3

clean:
	rm -rf build
