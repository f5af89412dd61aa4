#!/usr/bin/env bash
# The GPU runs of the benchmarks in one call of a lent GPU machine (the `device` tool of this
# workplace): step time, peak memory and time to a front with `--device cuda`, each result written
# to $OUT as JSON, with a log. Not part of CI, and not yet run on a GPU: no session has been lent one.
#
# The device image holds PyTorch, pluggy, PyYAML, scikit-learn, matplotlib, onnx and onnxruntime but not
# Optuna, pymoo and what they need: those travel as wheels (Python 3.12, x86-64), downloaded here
# first into .whl/ (ignored by git, ~13 MB):
#
#     bash benchmarks/device_checks.sh wheels          # here, once, where pip reaches the registry
#
# then one device call from the repository root, carrying .whl:
#
#     bash benchmarks/device_checks.sh run             # there: installs into /tmp/site, runs, writes $OUT
#
# `run` installs only what is missing, so `DEVICE=cpu REPETITIONS=2 OUT=/tmp/checks bash
# benchmarks/device_checks.sh run` runs the same steps here, on the CPU, to try the script itself.
# Each step has its own time limit (the whole run stays under ~9 minutes, inside one call's 10);
# a step that fails or runs out is logged and the next one runs.
set -uo pipefail

WHEELS=(optuna==5.1.0 alembic==1.20.1 colorlog==6.12.0 sqlalchemy==2.1.9 mako==1.4.3 pymoo==0.6.2
        autograd==1.9.1 cma==4.5.0 alive-progress==3.3.0 about-time==4.2.1 graphemeu==0.7.2
        deprecated==1.3.1 moocore==0.3.2 cffi==2.0.0 pycparser==3.12 platformdirs==4.14.9)
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64
           manylinux2014_x86_64 manylinux1_x86_64)

download_wheels() {
    local platform_options=()
    for platform in "${PLATFORMS[@]}"; do platform_options+=(--platform "$platform"); done
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        "${platform_options[@]}" -d .whl "${WHEELS[@]}"
}

install_missing() {
    if ! python3 -c "import optuna, pymoo" 2>/dev/null; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || return 1
        export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    fi
    if ! python3 -c "import odimo_moo" 2>/dev/null; then
        # A plain (not editable) install: the built-in plugins are entry points of its metadata.
        python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --target /tmp/site . \
            || return 1
        export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    fi
}

step() {  # step SECONDS NAME COMMAND...: run, log how it ended, never stop the script
    local limit=$1 name=$2
    shift 2
    echo "== $name (limit ${limit} s): $*"
    local start=$SECONDS
    timeout "$limit" "$@"
    echo "== $name: exit $? after $((SECONDS - start)) s"
}

run_checks() {
    local device=${DEVICE:-cuda} repetitions=${REPETITIONS:-8} out=${OUT:-benchmarks/results}
    mkdir -p "$out"
    exec > >(tee "$out/device_checks_$device.log") 2>&1
    export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
    install_missing || { echo "installing the wheels or the package failed"; exit 1; }
    python3 -c "import sys, torch, optuna, pymoo, odimo_moo
print('python', sys.version.split()[0], 'torch', torch.__version__, 'optuna', optuna.__version__,
      'cuda', torch.cuda.is_available() and torch.cuda.get_device_name())"
    step 150 step_time python3 benchmarks/step_time.py --device "$device" --repetitions "$repetitions" \
        --output "$out/step_time_$device.json"
    step 120 memory python3 benchmarks/memory.py --device "$device" --output "$out/memory_$device.json"
    step 270 time_to_front python3 benchmarks/time_to_front.py --device "$device" \
        --output "$out/time_to_front_$device.json"
}

case "${1:-}" in
    wheels) download_wheels ;;
    run) run_checks ;;
    *) echo "usage: bash benchmarks/device_checks.sh wheels|run (see the comments at its top)" >&2; exit 2 ;;
esac
