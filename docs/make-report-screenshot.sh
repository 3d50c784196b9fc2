#!/usr/bin/env bash
# Regenerate docs/report-screenshot.png: the HTML report of a run, as headless Chromium draws it.
#
#   docs/make-report-screenshot.sh RUNBOOK.yaml [STATE_DIR]   # the latest run in that state
#   docs/make-report-screenshot.sh --demo                     # a small migration applied here
#
# The runbook must have been applied with STATE_DIR (default: $RUNBOOK_STATE_DIR, else
# .runbook, relative to the current directory, as for `runbook` itself).  --demo applies the
# test suite's small migration (tests/engine/report_run.py: an approval, a retry, three waves,
# the last one's gate failing and rolled back) in a temp dir first.
#
# Environment: OUT (default docs/report-screenshot.png), WIDTH x HEIGHT of the window
# (default 1280 x 1800), RUNBOOK (the runbook command; default .venv/bin/runbook of this
# checkout, else `runbook` on PATH), CHROMIUM (default: chromium on PATH).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
out="${OUT:-$root/docs/report-screenshot.png}"
width="${WIDTH:-1280}"
height="${HEIGHT:-1800}"
if [ -n "${RUNBOOK:-}" ]; then
  runbook="$RUNBOOK"
elif [ -x "$root/.venv/bin/runbook" ]; then
  runbook="$root/.venv/bin/runbook"
else
  runbook="runbook"
fi
chromium="${CHROMIUM:-$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)}"
if [ -z "$chromium" ]; then
  echo "make-report-screenshot: no chromium found (Debian: apt-get install chromium), or set CHROMIUM" >&2
  exit 2
fi
if [ $# -lt 1 ]; then
  sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

if [ "$1" = "--demo" ]; then
  python="$(dirname "$(command -v "$runbook")")/python"
  (
    cd "$tmp"
    PYTHONPATH="$root" "$python" - <<'EOF'
from types import SimpleNamespace

from runbook_engine.cli import run
from tests.engine.report_run import applied

applied(lambda *args: SimpleNamespace(code=run(list(args)), output=""))
EOF
  ) >"$tmp/apply.log" 2>&1 || { cat "$tmp/apply.log" >&2; exit 1; }
  file="$tmp/m.yaml"
  state="$tmp/.runbook"
else
  file="$1"
  state="${2:-${RUNBOOK_STATE_DIR:-.runbook}}"
fi

"$runbook" --state-dir "$state" report "$file" --format html --output "$tmp/report.html"
mkdir "$tmp/profile"
"$chromium" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$tmp/profile" --hide-scrollbars \
  --screenshot="$out" --window-size="$width,$height" "file://$tmp/report.html" \
  >"$tmp/chromium.log" 2>&1 || { cat "$tmp/chromium.log" >&2; exit 1; }
[ -s "$out" ] || { cat "$tmp/chromium.log" >&2; exit 1; }
echo "wrote $out (${width}x${height})"
