#!/bin/bash
# Every distillation method on the 25-Gaussian toy from the shipped DDPM, timed, then the bench of
# benchmarks/grids/toy-distill.yaml (each method at 1, 2 and 4 NFE). Usage, from the repository root with .venv
# installed (about 25 minutes on 2 CPU cores):  bash benchmarks/distill_toy.sh
set -euo pipefail
out=runs/toy-distill
mkdir -p "$out"
timed() { local start; start=$(date +%s); "$@"; echo "$(( $(date +%s) - start )) s: ${*: -3}"; }
timed .venv/bin/trilemma train configs/toy2d-consistency.yaml --out $out/consistency --quiet
for T in 1 2 4; do
  timed .venv/bin/trilemma train configs/toy2d-adversarial.yaml --out $out/adversarial-$T --quiet \
    --set distill.student_steps=$T --set sample.steps=$T
done
timed .venv/bin/trilemma train configs/toy2d-progressive.yaml --out $out/progressive --quiet
.venv/bin/trilemma bench benchmarks/grids/toy-distill.yaml --out runs/bench-toy-distill
