#!/usr/bin/env bash
# Screenshots of what a researcher looks at first, from a finished run (smoke or quick):
# the report's first screen and the MLflow UI (experiment list, runs table, one run, its figure, a sweep's
# parent run listing its child runs), written to docs/screenshots/*.png.
#
#   docs/screenshots.sh [RESULTS_ROOT] [SCALE] [PORT]       # defaults: results quick 5000
#
# Needs Debian's headless Chromium (apt-get install chromium) and a results folder with a report and an
# MLflow store holding one Hydra sweep of hayou2020/fig1, e.g.:
#   snakemake reproduce-all --cores 2 --config scale=smoke results=/tmp/r
#   python experiments/hayou2020/fig1.py -m params.max_depth=1000,10000 scale=smoke results_root=/tmp/r
#   python -m ntkrepro.report --results /tmp/r/smoke && docs/screenshots.sh /tmp/r smoke
# Starts `mlflow ui` on 127.0.0.1:PORT and stops it (by its PID) when done. Chromium refuses some ports as
# unsafe (e.g. 5061); 5000 and 8080 work.
set -euo pipefail
cd "$(dirname "$0")/.."
RESULTS_ROOT=$(realpath "${1:-results}")
SCALE=${2:-quick}
PORT=${3:-5000}
OUT=docs/screenshots
PY=${PYTHON:-.venv/bin/python}
MLFLOW=${MLFLOW:-$(dirname "$PY")/mlflow}
DB="$RESULTS_ROOT/mlflow/mlflow.db"
REPORT="$RESULTS_ROOT/$SCALE/report.html"
[ -f "$REPORT" ] || { echo "no report at $REPORT: run the pipeline (or python -m ntkrepro.report) first" >&2; exit 2; }
[ -f "$DB" ] || { echo "no MLflow store at $DB" >&2; exit 2; }
command -v chromium >/dev/null || { echo "chromium not found: apt-get install chromium" >&2; exit 2; }
mkdir -p "$OUT"
PROFILE=$(mktemp -d)
UI_PID=""
cleanup() { [ -n "$UI_PID" ] && kill "$UI_PID" 2>/dev/null; rm -rf "$PROFILE"; }
trap cleanup EXIT

shot() {  # shot URL FILE [WIDTH HEIGHT]
  chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
    --disable-component-update --disable-sync --hide-scrollbars --user-data-dir="$PROFILE" \
    --window-size="${3:-1600},${4:-1000}" --virtual-time-budget=15000 --screenshot="$OUT/$2" "$1" >/dev/null 2>&1
  echo "wrote $OUT/$2"
}

[ "${SKIP_REPORT:-0}" = 1 ] || shot "file://$REPORT" report.png 1600 1000

"$MLFLOW" ui --backend-store-uri "sqlite:///$DB" --host 127.0.0.1 --port "$PORT" >"$PROFILE/mlflow.log" 2>&1 &
UI_PID=$!
for _ in $(seq 1 120); do
  if "$PY" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$PORT/health', timeout=1)" 2>/dev/null
  then break; fi
  kill -0 "$UI_PID" 2>/dev/null || { cat "$PROFILE/mlflow.log" >&2; exit 1; }
  sleep 1
done

# The ids the views need: the hayou2020 experiment, its registered fig1 run at this scale, the sweep parent.
read -r EXP RUN FIG PARENT < <("$PY" - "$DB" "$SCALE" <<'PYEOF'
import sys
from ntkrepro.tracking import search_runs
uri, scale = f"sqlite:///{sys.argv[1]}", sys.argv[2]
runs = search_runs(uri, "hayou2020")
single = [r for r in runs if r.data.tags.get("artifact") == "fig1" and r.data.tags.get("scale") == scale
          and "mlflow.parentRunId" not in r.data.tags and r.data.tags.get("sweep") != "True"]
parents = [r for r in runs if r.data.tags.get("sweep") == "True"]
if not single or not parents:
    sys.exit(f"need a registered hayou2020/fig1 run at {scale} and a sweep parent in {uri}")
print(single[0].info.experiment_id, single[0].info.run_id, "fig1.png", parents[0].info.run_id)
PYEOF
)
BASE="http://127.0.0.1:$PORT/#"
# MLflow 3's UI has a global GenAI / Model training switch (default GenAI, remembered by the browser once
# clicked); ML=... opens its pages in Model training mode, as the report's run links do.
ML="workflowType=machine_learning"
W=1920
shot "$BASE/experiments?$ML" mlflow_experiments.png $W 1000
shot "$BASE/experiments/$EXP?$ML" mlflow_runs_table.png $W 1100
shot "$BASE/experiments/$EXP/runs/$RUN?$ML" mlflow_run.png $W 1300
shot "$BASE/experiments/$EXP/runs/$RUN/artifacts/$FIG?$ML" mlflow_run_figure.png $W 1100
shot "$BASE/experiments/$EXP/runs/$PARENT?$ML" mlflow_sweep_parent.png $W 1200
