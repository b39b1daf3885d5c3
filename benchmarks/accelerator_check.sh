#!/usr/bin/env bash
# The accelerator check (issue 14): whenever a GPU (or TPU) host is at hand, in under 8 minutes,
#   1. the device-sensitive tests with pytest: the model in float32 (its KV-cache and sibling
#      paths against the full forward) and in bfloat16 (against float32), the search engine
#      against mctx's policies, a tree decoder and greedy decoding, the learner;
#   2. one training iteration at selfplay.batch_size=1024 (benchmarks/accelerator_train.py:
#      6 layers, d=384, bfloat16 compute, after one compiling iteration), with its sims/s and
#      model-FLOP utilisation;
#   3. the search benchmark of issue 11 (benchmarks/search_throughput.py: sims/s and the FLOP
#      fraction of the three engines, float32) at B = 1024 and at GPT-2-small's shape (B = 8).
# Each stage runs under a time limit (tests 190 s, training 115 s, search 125 s, each killed 10 s
# after its limit: 460 s at most, plus start-up), so the whole check ends in under 8 minutes even
# if a stage hangs; a stage that fails or runs out of time is reported, and the check goes on.
#
#   bash benchmarks/accelerator_check.sh              # on the accelerator host
#   SMALL=1 bash benchmarks/accelerator_check.sh      # a smoke run on CPU: tiny sizes, no limits
#
# OUT_DIR (default /tmp/accelerator_check) receives tests.log, train.json, train.log,
# search.json, search.log and summary.json. Exit status: 0 when every stage passed.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT_DIR=${OUT_DIR:-/tmp/accelerator_check}
SMALL=${SMALL:-0}
PYTHON=${PYTHON:-python}
mkdir -p "$OUT_DIR"

if [[ "$SMALL" == 1 ]]; then
  TESTS=(tests/test_model_bf16.py
         "tests/test_search_engine.py::test_engine_equals_mctx_policy[gumbel-tree-start]")
  TRAIN=(selfplay.batch_size=16 search.num_simulations=8 model.dtype=bfloat16)
  SEARCH=(--batches 8 --simulations 8 --repeats 2 --no-gpt2)
  LIMITS=(1800 1800 1800)
else
  TESTS=(tests/test_model.py tests/test_model_bf16.py
         tests/test_search_engine.py::test_engine_equals_mctx_policy
         tests/test_decoders_tree.py::test_gumbel_search_finds_a_planted_token
         tests/test_decoders_sampling.py::test_greedy_is_the_argmax_path_of_the_full_forward
         tests/test_learner.py)
  TRAIN=(selfplay.batch_size=1024 model.num_layers=6 model.d_model=384 model.num_heads=6
         model.dtype=bfloat16)
  SEARCH=(--batches 1024 --simulations 32 --repeats 5 --gpt2-repeats 3 --peak-size 8192)
  LIMITS=(190 115 125)
fi

STATUS=()
stage() {  # stage NAME LIMIT_S LOG COMMAND...: runs COMMAND under a time limit, tee'd to LOG.
  local name=$1 limit=$2 log=$3
  shift 3
  local start=$SECONDS
  echo "=== $name (limit ${limit} s): $*"
  timeout -k 10 "$limit" "$@" 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]}
  local verdict=ok
  if [[ $rc == 124 || $rc == 137 ]]; then
    verdict="out of time"
  elif [[ $rc != 0 ]]; then
    verdict="failed (exit $rc)"
  fi
  echo "=== $name: $verdict in $((SECONDS - start)) s"
  STATUS+=("$name=$verdict=$((SECONDS - start))")
}

"$PYTHON" -c "import jax; print('jax', jax.__version__, 'devices:', jax.devices())"
stage tests "${LIMITS[0]}" "$OUT_DIR/tests.log" \
  "$PYTHON" -m pytest -q -p no:cacheprovider "${TESTS[@]}"
stage train "${LIMITS[1]}" "$OUT_DIR/train.log" \
  "$PYTHON" benchmarks/accelerator_train.py "${TRAIN[@]}" --json "$OUT_DIR/train.json"
stage search "${LIMITS[2]}" "$OUT_DIR/search.log" \
  "$PYTHON" benchmarks/search_throughput.py "${SEARCH[@]}" --json "$OUT_DIR/search.json"

"$PYTHON" - "$OUT_DIR" "${STATUS[@]}" <<'EOF'
"""The check's summary: every stage's verdict, sims/s and model-FLOP utilisation."""
import json
import sys
from pathlib import Path

out = Path(sys.argv[1])
stages = {}
for item in sys.argv[2:]:
  name, verdict, seconds = item.split("=")
  stages[name] = {"verdict": verdict, "seconds": int(seconds)}
summary = {"stages": stages}


def rate(flops):
  return f"{flops / 1e12:.1f} TFLOP/s" if flops >= 1e12 else f"{flops / 1e9:.0f} GFLOP/s"


print("=== summary")
for name, stage in stages.items():
  print(f"{name:>7}: {stage['verdict']} ({stage['seconds']} s)")
if (out / "train.json").exists():
  train = json.loads((out / "train.json").read_text())
  summary["train"] = {k: train[k] for k in ("device", "batch", "selfplay_sims_per_s",
                                            "selfplay_mfu", "learner_mfu", "iteration_mfu",
                                            "matmul_peak_flops", "matmul_peak_dtype")}
  timed = train["iterations"][-1]
  summary["train"]["iteration_s"] = timed["seconds"]
  print(f"  train: B={train['batch']} iteration {timed['seconds']:.2f} s, self-play "
        f"{train['selfplay_sims_per_s']:,.0f} sims/s; MFU self-play {train['selfplay_mfu']:.4f}, "
        f"learner {train['learner_mfu']:.4f}, iteration {train['iteration_mfu']:.4f} (of a "
        f"{rate(train['matmul_peak_flops'])} {train['matmul_peak_dtype']} matmul)")
if (out / "search.json").exists():
  search = json.loads((out / "search.json").read_text())
  summary["search"] = []
  for row in search["rows"]:
    new = row["new"]
    summary["search"].append({"case": row["case"], "batch": row["batch"],
                              "sims_per_s": new["sims_per_s"],
                              "flop_fraction": new["flop_fraction"],
                              "speedup_vs_old": row["speedup_vs_old"]})
    print(f"  search {row['case']} B={row['batch']} S={row['simulations']}: "
          f"{new['sims_per_s']:,.0f} sims/s, MFU {new['flop_fraction']:.4f} (of a "
          f"{rate(search['gemm_peak_flops'])} float32 matmul), "
          f"{row['speedup_vs_old']:.2f}x the old engine")
(out / "summary.json").write_text(json.dumps(summary, indent=2))
sys.exit(0 if all(s["verdict"] == "ok" for s in stages.values()) else 1)
EOF
