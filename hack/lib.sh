# Shared by hack/test and hack/demo: a virtualenv with the project and its test dependencies.
# shellcheck shell=bash

simtask_venv() {
    VENV="${SIMTASK_VENV:-.venv}"
    if [[ ! -x "$VENV/bin/python" ]]; then
        python3 -m venv "$VENV"
    fi
    if ! "$VENV/bin/python" -c "import simtask, aiohttp, pytest, kubernetes" 2>/dev/null \
        || [[ pyproject.toml -nt "$VENV/.installed" ]]; then
        "$VENV/bin/pip" install --quiet --upgrade pip
        "$VENV/bin/pip" install --quiet -e ".[test]"
        touch "$VENV/.installed"
    fi
}
