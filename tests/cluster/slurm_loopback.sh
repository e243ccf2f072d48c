#!/usr/bin/env bash
# Integration test of the cluster path on a one-node SLURM cluster on loopback, without accounting
# (no slurmdbd: the case where sacct fails). Needs root and apt-get (Debian/Ubuntu); elsewhere it prints
# why and exits 0 (skipped). .ci/run runs it after `make test`.
#
# 1. installs slurm-wlm + munge from Debian if missing; starts munged, slurmctld and slurmd with their own
#    key, state, logs and ports under a temporary folder. The configuration is written to
#    /etc/slurm/slurm.conf (only if no SLURM configuration is there; removed at exit): the SLURM executor
#    plugin's job step drops SLURM_CONF from the environment of its nested srun, which then reads only
#    the default path;
# 2. starts one MLflow server for the workflow (profiles/slurm/mlflow-server.sh, the README's recipe);
# 3. snakemake --profile profiles/slurm reproduce-all --config scale=smoke tracking=server tracking_uri=...
#    (the shipped profile, unchanged);
# 4. a Gram tile target (rules/gram.smk): one SLURM job per tile, assembled, compared with the same Gram
#    computed in this process (bit for bit) and with the kernel called directly;
# 5. Hydra SLURM sweeps (hydra/launcher=slurm) of two stages that import sibling helper modules
#    (jacot2018/fig3, hayou2020/eoc_curves), and a sweep with a bad value, which must come back as a
#    failed job with its one-line error (no hang);
# 6. checks the outputs and that every stage's MLflow run is on the server and FINISHED;
# stops every daemon it started by its PID (trap), also on failure.
#
#   sudo tests/cluster/slurm_loopback.sh        # KEEP=1 keeps the temporary folder;
#                                               # PARTS="pipeline gram sweep" (the default) picks parts
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
START=$(date +%s)
say() { echo "slurm_loopback: $*"; }
skip() { say "skipped: $*"; exit 0; }

[ "$(id -u)" = 0 ] || skip "needs root (installs slurm-wlm and munge and starts their daemons)"
command -v apt-get >/dev/null || skip "needs apt-get (Debian/Ubuntu) to install slurm-wlm and munge"
[ -x "$REPO/.venv/bin/python" ] || skip "no .venv (run make test first)"
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
  say "installing slurm-wlm and munge (Debian)"
  if ! (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge) \
      >/tmp/slurm_loopback_apt.log 2>&1; then
    tail -n 5 /tmp/slurm_loopback_apt.log
    skip "apt-get could not install slurm-wlm and munge (offline?)"
  fi
fi
export PATH="$REPO/.venv/bin:$PATH"

CONF=/etc/slurm/slurm.conf
MARK="# written by ntkrepro tests/cluster/slurm_loopback.sh"
if [ -e "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
  skip "$CONF exists (a real SLURM installation?); this test only runs on a machine without one"
fi
W=$(mktemp -d /tmp/slurm-loopback.XXXXXX)
chmod 755 "$W"
PIDS=()            # daemons started here, stopped in reverse order
MLFLOW_STARTED=0
RESULTS="$W/results"
PARTS=" ${PARTS:-pipeline gram sweep} "
part() { [[ "$PARTS" == *" $1 "* ]]; }

cleanup() {
  local rc=$?
  set +e
  if command -v squeue >/dev/null && grep -qsF "$MARK" "$CONF"; then
    jobs_left=$(squeue -h -o %i 2>/dev/null)
    if [ -n "$jobs_left" ]; then
      scancel $jobs_left
      for _ in $(seq 20); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 1; done
    fi
  fi
  [ "$MLFLOW_STARTED" = 1 ] && "$REPO/profiles/slurm/mlflow-server.sh" stop "$RESULTS"
  for ((k = ${#PIDS[@]} - 1; k >= 0; k--)); do
    pid=${PIDS[k]}
    kill "$pid" 2>/dev/null
    for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  done
  grep -qsF "$MARK" "$CONF" && rm -f "$CONF"
  if [ "$rc" != 0 ]; then
    say "FAILED (exit $rc); logs:"
    for f in "$W"/log/*.log "$RESULTS"/mlflow/server.log; do
      [ -f "$f" ] && { echo "--- $f"; tail -n 15 "$f"; }
    done
    say "kept $W"
  elif [ -z "${KEEP:-}" ]; then
    rm -rf "$W"
  else
    say "kept $W"
  fi
  say "wall time $(( $(date +%s) - START )) s"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- the cluster
mkdir -p "$W/munge" "$W/state" "$W/spool" "$W/log"
HOST=$(hostname -s)
CPUS=$(nproc)
MEM_MB=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.8}' /proc/meminfo)
head -c 1024 /dev/urandom >"$W/munge/munge.key"
chown -R munge:munge "$W/munge"
chmod 700 "$W/munge"
chmod 400 "$W/munge/munge.key"
runuser -u munge -- munged --force --socket="$W/munge/munge.socket" --key-file="$W/munge/munge.key" \
  --pid-file="$W/munge/munged.pid" --log-file="$W/munge/munged.log" --seed-file="$W/munge/munged.seed"
for _ in $(seq 50); do [ -s "$W/munge/munged.pid" ] && break; sleep 0.1; done
PIDS+=("$(cat "$W/munge/munged.pid")")

free_port() { python -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"; }
: >"$W/plugstack.conf"
mkdir -p /etc/slurm
cat >"$CONF" <<EOF
$MARK (removed at its exit)
ClusterName=loopback
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$W/munge/munge.socket
StateSaveLocation=$W/state
SlurmdSpoolDir=$W/spool
SlurmctldPidFile=$W/slurmctld.pid
SlurmdPidFile=$W/slurmd.pid
SlurmctldLogFile=$W/log/slurmctld.log
SlurmdLogFile=$W/log/slurmd.log
PlugStackConfig=$W/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
MpiDefault=none
ReturnToService=2
InactiveLimit=0
KillWait=5
MinJobAge=300
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF="$CONF"
slurmctld -D -c -f "$SLURM_CONF" >"$W/log/slurmctld.out" 2>&1 &
PIDS+=("$!")
slurmd -D -f "$SLURM_CONF" >"$W/log/slurmd.out" 2>&1 &
PIDS+=("$!")
for _ in $(seq 60); do
  sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)' && break
  sleep 1
done
sinfo -h -o %t | grep -qE '^(idle|mix|alloc)' || { say "the node did not come up"; sinfo; exit 1; }
say "cluster up: node $HOST, $CPUS CPUs, $MEM_MB MB, no accounting ($(sinfo -V))"
if sacct -n >/dev/null 2>&1; then say "note: sacct works here (expected to fail without slurmdbd)"; fi

# ---------------------------------------------------------------- one MLflow server for the workflow
URI=$("$REPO/profiles/slurm/mlflow-server.sh" start "$RESULTS" 127.0.0.1 "$(free_port)")
MLFLOW_STARTED=1
say "mlflow server at $URI"

# ---------------------------------------------------------------- reproduce-all at smoke, shipped profile
SMK_FLAGS=(--profile profiles/slurm --slurm-init-seconds-before-status-checks 5 --seconds-between-status-checks 5)
if part pipeline; then
say "snakemake reproduce-all on SLURM (smoke)"
timeout -s INT -k 60 1800 snakemake "${SMK_FLAGS[@]}" reproduce-all --config scale=smoke gram_jobs=tile "results=$RESULTS" \
  tracking=server "tracking_uri=$URI" >"$W/log/reproduce_all.log" 2>&1 || { tail -n 40 "$W/log/reproduce_all.log"; exit 1; }
[ -s "$RESULTS/smoke/report.md" ] && [ -s "$RESULTS/smoke/report.html" ] || { say "no report"; exit 1; }
n_stages=$(find "$RESULTS/smoke" -name metrics.json -not -path "*/multirun/*" | wc -l)
submitted=$(grep -c "Job .* has been submitted with SLURM jobid" "$W/log/reproduce_all.log" || true)
say "reproduce-all: $n_stages stages, report written; $submitted SLURM jobs"
[ "$submitted" -ge "$n_stages" ] || { say "expected every stage to run as a SLURM job"; exit 1; }
fi

# ---------------------------------------------------------------- Gram tiles as SLURM jobs
if part gram; then
python - "$RESULTS/cache" <<'EOF'
import sys
import numpy as np
from ntkrepro.gram import request_gram, write_request
from ntkrepro.io import atomic_save_npy
root = sys.argv[1]
x = np.random.default_rng(0).normal(size=(40, 5))
atomic_save_npy(f"{root}/loopback_x.npy", x)
write_request(f"{root}/gram_requests/loopback.json", x1=f"{root}/loopback_x.npy", kernel="fc",
              kwargs={"depth": 3, "activation": "relu"}, tile=16, dtype="float64")
EOF
say "snakemake gram tiles on SLURM"
timeout -s INT -k 60 900 snakemake "${SMK_FLAGS[@]}" "$RESULTS/cache/gram_plans/loopback/gram.npz" --config scale=smoke \
  "results=$RESULTS" >"$W/log/gram.log" 2>&1 || { tail -n 40 "$W/log/gram.log"; exit 1; }
tile_jobs=$(grep -c "rule gram_tile:" "$W/log/gram.log" || true)
python - "$RESULTS/cache" "$W/fresh_cache" <<'EOF'
import sys
import numpy as np
from ntkrepro.gram import compute_gram
from ntkrepro.kernels.fc import fc_kernels
root, fresh = sys.argv[1:]
x = np.load(f"{root}/loopback_x.npy")
with np.load(f"{root}/gram_plans/loopback/gram.npz") as z:
    slurm = {k: z[k] for k in ("nngp", "ntk") if k in z.files}
local = compute_gram(x, kernel="fc", kernel_kwargs={"depth": 3, "activation": "relu"}, tile=16, dtype="float64",
                     cache_root=fresh, progress=False)
assert local.computed_tiles == 6, local.computed_tiles
np.testing.assert_array_equal(slurm["ntk"], local.ntk)
np.testing.assert_array_equal(slurm["nngp"], local.nngp)
direct = fc_kernels(x, depth=3, activation="relu")
np.testing.assert_allclose(slurm["ntk"], np.asarray(direct.ntk), rtol=1e-12, atol=1e-12)
print("gram: SLURM tiles == in-process tiles (bit for bit) == direct kernel (1e-12)")
EOF
[ "$tile_jobs" -ge 6 ] || { say "expected 6 tile jobs, saw $tile_jobs"; exit 1; }
say "gram: $tile_jobs tile jobs"
fi

# ---------------------------------------------------------------- Hydra SLURM sweeps (sibling helper modules)
if part sweep; then
# jacot2018/fig3 imports jacot_common; hayou2020/eoc_curves imports hayou_common (which
# failed to unpickle in the job before the launcher's setup line put the stage's folder on PYTHONPATH)
for STAGE in experiments/jacot2018/fig3.py:jacot_common experiments/hayou2020/eoc_curves.py:hayou_common; do
  HELPER=${STAGE#*:}
  STAGE=${STAGE%:*}
  grep -qE "^(from|import) $HELPER" "$STAGE" || { say "$STAGE imports no $HELPER; pick another stage"; exit 1; }
  say "hydra sweep on SLURM: $STAGE seed=0,1"
  name=$(basename "$STAGE" .py)
  timeout 600 python "$STAGE" -m hydra/launcher=slurm scale=smoke "results_root=$RESULTS" tracking=server \
    "tracking.uri=$URI" seed=0,1 >"$W/log/sweep_$name.log" 2>&1 || { tail -n 40 "$W/log/sweep_$name.log"; exit 1; }
  paper=$(basename "$(dirname "$STAGE")")
  sweep_dir=$(ls -d "$RESULTS/smoke/$paper/$name"/multirun/*/ | tail -n 1)
  for job in 0 1; do
    [ -s "$sweep_dir/$job/metrics.json" ] || { say "sweep job $job of $STAGE wrote no metrics.json"; exit 1; }
  done
  say "hydra sweep: 2 SLURM jobs of $paper/$name wrote their results"
done

say "hydra sweep with a bad value: a failed job with its one-line error"
set +e
timeout 600 python "$STAGE" -m hydra/launcher=slurm scale=smoke "results_root=$RESULTS" tracking=disabled \
  precision=float16 >"$W/log/sweep_bad.log" 2>&1
rc=$?
set -e
[ "$rc" != 124 ] || { say "the failing sweep hung"; exit 1; }
[ "$rc" != 0 ] || { say "the failing sweep exited 0"; exit 1; }
error_line=$(grep -m1 -E "error: .*precision.*float16" "$W/log/sweep_bad.log") || { tail -n 20 "$W/log/sweep_bad.log"; exit 1; }
! grep -q "Traceback" "$W/log/sweep_bad.log" || { say "traceback instead of one line"; cat "$W/log/sweep_bad.log"; exit 1; }
say "failing sweep: exit $rc, '$error_line'"
fi

# ---------------------------------------------------------------- MLflow: every stage run on the server, FINISHED
python - "$URI" "$RESULTS/smoke" <<'EOF'
import json
import sys
from pathlib import Path
from mlflow.tracking import MlflowClient
uri, results = sys.argv[1:]
client = MlflowClient(tracking_uri=uri)
bad = []
files = sorted(Path(results).rglob("metrics.json"))
for f in files:
    run_id = json.loads(f.read_text()).get("mlflow_run_id")
    if not run_id:
        bad.append(f"{f}: no mlflow_run_id")
        continue
    status = client.get_run(run_id).info.status
    if status != "FINISHED":
        bad.append(f"{f}: run {run_id} is {status}")
assert not bad, "\n".join(bad)
print(f"mlflow: {len(files)} runs on the server, all FINISHED")
EOF
say "passed"
