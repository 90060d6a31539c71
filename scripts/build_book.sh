#!/usr/bin/env bash
# Build the EBFlow book offline: HTML (_build/html) and PDF (exports/ebflow-book.pdf),
# executing every notebook with mystmd. Usually run through `make book` / `make book FAST=1`.
#
# Usage: scripts/build_book.sh [MYST_BUILD_FLAGS...]      (default flags: --html --pdf)
#   EBFLOW_FAST=1  fast mode (small runs, for CI); unset or 0 = full mode (the real book)
#   VENV=path      the virtual environment to use (default: .venv)
#
# What it does, and why (measured facts in the project's tooling notes):
# * checks that the toc and the PDF article list in myst.yml agree and that every file exists,
#   and that no source holds a pattern mystmd renders wrongly (scripts/check_book_sources.py);
# * clears mystmd's execution cache (_build/execute, keyed on code only) when the run mode
#   differs from the last build's, so switching FAST <-> full really re-executes;
# * starts its own jupyter_server (mystmd would start one and leak it), with the venv on PATH
#   so kernels run the venv python and inherit EBFLOW_FAST, and stops it on any exit;
# * runs `myst build --execute --strict`, so a failing cell fails the build (exit 1);
# * checks that the site template wrote the HTML, search and API reference pages, whatever
#   mystmd's exit status says about the template's render command.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${VENV:-$ROOT/.venv}"
if [[ ! -x "$VENV/bin/python" || ! -x "$VENV/bin/myst" ]]; then
    echo "build_book: no venv with mystmd at $VENV; run 'make venv' first" >&2
    exit 2
fi
export PATH="$VENV/bin:$ROOT/tools:$PATH"
export VIRTUAL_ENV="$VENV"
export MYSTMD_READABLE_NAME=myst   # hides a misleading "update available" box (npm is older)
PY="$VENV/bin/python"

case "${EBFLOW_FAST:-}" in
    "" | 0 | false | False | no) MODE=full; unset EBFLOW_FAST ;;
    *) MODE=fast; export EBFLOW_FAST=1 ;;
esac
FLAGS=("$@")
if [[ ${#FLAGS[@]} -eq 0 ]]; then
    # HTML first: it executes every notebook and, with --strict, stops at the first failing
    # cell; the PDF then reuses the execution cache (mystmd runs exports before the site in
    # a combined run, which would execute a failing notebook twice before failing).
    STEPS=("--html" "--pdf")
else
    STEPS=("${FLAGS[*]}")
fi

"$PY" scripts/check_toc.py
"$PY" scripts/check_book_sources.py   # math/markup that mystmd would break, with file:line

PDF_OUT=exports/ebflow-book.pdf    # the book-pdf export's output in myst.yml
unset EBFLOW_BOOK_PDF
for flag in ${STEPS[*]}; do
    # the HTML sidebar links the PDF, copied next to the pages below
    [[ "$flag" == "--pdf" || "$flag" == "--all" ]] && export EBFLOW_BOOK_PDF=ebflow-book.pdf
done

mkdir -p _build
MARKER=_build/.ebflow-mode
if [[ -d _build/execute && "$(cat "$MARKER" 2>/dev/null || true)" != "$MODE" ]]; then
    echo "build_book: run mode is now '$MODE' (last build: '$(cat "$MARKER" 2>/dev/null || echo unknown)'):" \
         "clearing the execution cache"
    rm -rf _build/execute _build/site _build/html
fi
echo "$MODE" >"$MARKER"   # the execution cache now holds (or will hold) this mode's outputs

# --- our own Jupyter server, stopped on every exit path -----------------------------------
PORT="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
TOKEN="$("$PY" -c 'import secrets; print(secrets.token_hex(16))')"
LOG="$ROOT/_build/jupyter_server.log"
SERVER_PID=""
stop_server() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        # the server runs in its own process group (setsid): stop it and its kernels
        kill -TERM -- "-$SERVER_PID" 2>/dev/null || kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL -- "-$SERVER_PID" 2>/dev/null || true
    fi
}
trap stop_server EXIT
trap 'exit 130' INT TERM

setsid "$PY" -m jupyter_server --no-browser --allow-root \
    --ServerApp.ip=127.0.0.1 --ServerApp.port="$PORT" --ServerApp.port_retries=0 \
    --IdentityProvider.token="$TOKEN" --ServerApp.root_dir="$ROOT" >"$LOG" 2>&1 &
SERVER_PID=$!
"$PY" - "$PORT" "$TOKEN" "$SERVER_PID" <<'PY'
import os, sys, time, urllib.request
port, token, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
for _ in range(120):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2)
        sys.exit(0)
    except Exception:
        try:
            os.kill(pid, 0)
        except OSError:
            break
        time.sleep(0.5)
sys.exit("build_book: the Jupyter server did not start; see _build/jupyter_server.log")
PY
export JUPYTER_BASE_URL="http://127.0.0.1:$PORT"
export JUPYTER_TOKEN="$TOKEN"

[[ -n "${EBFLOW_BOOK_PDF:-}" ]] && rm -f "$PDF_OUT"   # mystmd exits 0 when typst fails
BUILDS_HTML=""
for flag in ${STEPS[*]}; do [[ "$flag" == "--html" || "$flag" == "--all" ]] && BUILDS_HTML=1; done
# the theme writes the site from scratch: a failed render must not leave an older site behind
[[ -n "$BUILDS_HTML" ]] && rm -rf _build/html
START=$SECONDS
for step in "${STEPS[@]}"; do
    echo "build_book: $MODE mode: myst build $step --execute --strict"
    # shellcheck disable=SC2086  # a step may hold several flags
    myst build $step --execute --strict
done
if [[ -n "$BUILDS_HTML" ]]; then
    # the theme's own pages (theme/render_site.py) besides the book's
    for page in index.html search.html api-reference.html _static/search-documents.js; do
        if [[ ! -f "_build/html/$page" ]]; then
            echo "build_book: the site template did not write _build/html/$page" \
                 "(see the render_site messages above)" >&2
            exit 1
        fi
    done
fi
if [[ -n "${EBFLOW_BOOK_PDF:-}" ]]; then
    if [[ ! -f "$PDF_OUT" ]]; then
        echo "build_book: myst did not write $PDF_OUT" >&2
        exit 1
    fi
    if [[ -d _build/html ]]; then
        cp "$PDF_OUT" "_build/html/$EBFLOW_BOOK_PDF"
    fi
fi
echo "build_book: done in $((SECONDS - START)) s ($MODE mode)."
[[ -f _build/html/index.html ]] && echo "build_book: HTML in _build/html (open _build/html/index.html)"
[[ -n "${EBFLOW_BOOK_PDF:-}" ]] && echo "build_book: PDF in $PDF_OUT"
exit 0
