# sd-hw: `make demo` and `make test` set everything up on first use.
VENV := .venv
RUN := . $(VENV)/bin/activate &&

# The same float results on x86-64 CPUs of different models: OpenBLAS's Prescott (SSE3)
# kernels instead of the CPU's own, and NumPy's loops without AVX-512 (either choice was
# seen to change the trained weights' last bits). Training pins BLAS to one thread.
PORTABLE_NUMERICS := OPENBLAS_CORETYPE=Prescott NPY_DISABLE_CPU_FEATURES="X86_V4 AVX512_ICL AVX512_SPR"

.PHONY: setup demo demo-docs test bench clean

setup:
	@bash scripts/setup.sh

# Writes build/demo/ (report: build/demo/digits-results.md); no tracked file changes.
demo: setup
	mkdir -p build/demo
	$(RUN) $(PORTABLE_NUMERICS) sd-hw demo --report build/demo/digits-results.md

# Refreshes the committed example report, docs/digits-results.md.
demo-docs: setup
	$(RUN) $(PORTABLE_NUMERICS) sd-hw demo --report docs/digits-results.md

test: setup
	$(RUN) python -m pytest -W error -n 2

bench: setup
	$(RUN) python bench/bench_decompose.py --out docs/bench-decompose.md
	$(RUN) python bench/bench_simulate.py --out docs/bench-simulate.md
	$(RUN) python bench/bench_compare.py --out docs/benchmarks.md --json docs/benchmarks.json
	$(RUN) python bench/bench_mnist.py --out docs/mnist-results.md --json docs/mnist-results.json --sweep 0.25,0.75
	$(RUN) python bench/bench_serial.py --out docs/serial-results.md --json docs/serial-results.json
	$(RUN) python bench/bench_up5k.py --out docs/benchmarks.md --json docs/benchmarks.json --seeds 3
	$(RUN) python bench/bench_shared_basis.py --datasets mnist --groups 8 --build build/shared
	$(RUN) python bench/bench_shared.py --out docs/benchmarks.md --json docs/benchmarks.json --seeds 2

clean:
	rm -rf build
