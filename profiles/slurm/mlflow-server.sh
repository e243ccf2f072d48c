#!/usr/bin/env bash
# One MLflow tracking server for a whole cluster workflow (jobs log over HTTP; SQLite on a shared file
# system is unsafe with many writers). Run it on the login/submit node, then pass its URI to Snakemake:
#
#   uri=$(profiles/slurm/mlflow-server.sh start results)          # prints http://<host>:5000
#   snakemake --profile profiles/slurm reproduce-all --config tracking=server tracking_uri=$uri
#   profiles/slurm/mlflow-server.sh stop results
#
# start RESULTS_ROOT [HOST [PORT]]: the store is RESULTS_ROOT/mlflow/mlflow.db (the one the stages use
# by default), artifacts under RESULTS_ROOT/mlflow/artifacts; HOST defaults to this machine's name
# (reachable from the compute nodes), PORT to 5000. The server's PID, log and URI are kept in
# RESULTS_ROOT/mlflow/server.{pid,log,uri}; start waits until it answers and is a no-op if it runs.
# stop RESULTS_ROOT: stops the server (its process group, by the recorded PID).   status RESULTS_ROOT: prints the URI if it answers.
set -euo pipefail
cmd=${1:-}; root=${2:-results}
dir="$root/mlflow"; pidfile="$dir/server.pid"; urifile="$dir/server.uri"
alive() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }
answers() { python -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + '/health', timeout=2)" "$1" \
              >/dev/null 2>&1; }
case "$cmd" in
  start)
    host=${3:-$(hostname)}; port=${4:-5000}; uri="http://$host:$port"
    if alive && answers "$(cat "$urifile")"; then cat "$urifile"; exit 0; fi
    mkdir -p "$dir/artifacts"
    absdir=$(cd "$dir" && pwd)
    # its own session: stop ends the server and its workers together (process group = its PID);
    # no GenAI job runner (its consumers would outlive a plain kill of the server)
    rm -f "$pidfile"
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false setsid sh -c 'echo $$ >"$0"; exec "$@"' "$pidfile" \
      mlflow server --backend-store-uri "sqlite:///$absdir/mlflow.db" --artifacts-destination "$absdir/artifacts" \
      --host "$host" --port "$port" --workers 2 >"$dir/server.log" 2>&1 </dev/null &
    for _ in $(seq 50); do [ -s "$pidfile" ] && break; sleep 0.1; done
    for _ in $(seq 120); do
      if answers "$uri"; then echo "$uri" >"$urifile"; echo "$uri"; exit 0; fi
      alive || break
      sleep 1
    done
    echo "error: mlflow server did not start on $uri; see $dir/server.log" >&2
    tail -n 5 "$dir/server.log" >&2 || true
    exit 1 ;;
  stop)
    if alive; then
      pid=$(cat "$pidfile"); kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
      for _ in $(seq 30); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 1; done
      kill -0 -- "-$pid" 2>/dev/null && kill -KILL -- "-$pid"
    fi
    rm -f "$pidfile" "$urifile" ;;
  status)
    if alive && answers "$(cat "$urifile")"; then cat "$urifile"; else echo "not running" >&2; exit 1; fi ;;
  *)
    echo "usage: $0 start RESULTS_ROOT [HOST [PORT]] | stop RESULTS_ROOT | status RESULTS_ROOT" >&2; exit 2 ;;
esac
