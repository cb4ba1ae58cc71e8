# Sourced by scripts/run and scripts/test: finds a Python >= 3.12 and builds .venv with TokenLens installed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"

find_python() {
    local candidates=()
    [ -n "${TOKENLENS_PYTHON:-}" ] && candidates+=("$TOKENLENS_PYTHON")
    candidates+=(python3.14 python3.13 python3.12 python3)
    if command -v pyenv >/dev/null 2>&1; then
        local root; root="$(pyenv root)"
        for v in "$root"/versions/3.1[2-9]*/bin/python3; do [ -x "$v" ] && candidates+=("$v"); done
    fi
    for v in /usr/local/bin/python3.1[2-9] /opt/homebrew/bin/python3.1[2-9] "$HOME"/.pyenv/versions/3.1[2-9]*/bin/python3; do
        [ -x "$v" ] && candidates+=("$v")
    done
    for c in "${candidates[@]}"; do
        if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys, venv; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
            command -v "$c"; return 0
        fi
    done
    return 1
}

ensure_venv() {  # $1: pip extras, e.g. "" or "[dev]"
    local extras="${1:-}"
    local stamp="$VENV/.tokenlens-installed$extras"
    if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
        local py
        if ! py="$(find_python)"; then
            echo "TokenLens needs Python 3.12 or newer and none was found." >&2
            echo "Install one (for example 'pyenv install 3.12', 'apt install python3.12 python3.12-venv' or 'brew install python@3.12'), or set TOKENLENS_PYTHON to its path." >&2
            exit 1
        fi
        echo "Creating $VENV with $py ($("$py" --version))" >&2
        rm -rf "$VENV"
        "$py" -m venv "$VENV"
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check -U pip >&2
    fi
    if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
        echo "Installing TokenLens$extras into $VENV" >&2
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$ROOT$extras" >&2
        touch "$stamp"
    fi
}
