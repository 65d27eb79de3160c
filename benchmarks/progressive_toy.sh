#!/bin/bash
# Progressive distillation (Salimans & Ho 2022) on the 25-Gaussian toy from the shipped DDPM (eps teacher; the
# students predict v): rounds of 64 -> 32 -> 16 -> 8 -> 4 -> 2 -> 1 DDIM steps, each round the teacher of the next,
# then the bench of benchmarks/grids/toy-distill.yaml. Usage, from the repository root with .venv installed:
#   bash benchmarks/progressive_toy.sh [STEPS_PER_ROUND]     (2000 by default: about 2 minutes a round on 2 CPU cores)
set -euo pipefail
steps=${1:-2000}
out=runs/toy-distill
mkdir -p "$out"
prev=src/trilemma/assets/toy2d-ddpm
for n in 64 32 16 8 4 2 1; do
  cat > "$out/r$n.yaml" <<YAML
family: distill
data: {name: toy2d, toy: grid25, n: 100000}
distill: {teacher: $prev, student_steps: $n, prediction: v}
train: {steps: $steps, batch_size: 512, lr: 3.0e-4, warmup: 0, ema_decay: 0.999, save_every: 0, log_every: 100}
sample: {sampler: ddim, steps: $n, spacing: trailing, n: 2500}
YAML
  start=$(date +%s)
  .venv/bin/trilemma train "$out/r$n.yaml" --out "$out/r$n" --quiet
  echo "round $n: $(( $(date +%s) - start )) s"
  prev=$out/r$n
done
.venv/bin/trilemma bench benchmarks/grids/toy-distill.yaml --out runs/bench-toy-distill
