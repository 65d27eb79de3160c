#!/bin/bash
# Progressive distillation rounds from a one-round preset: round N (student_steps N, the preset's teacher for the
# first) -> N/2 -> ... -> 1, each round's checkpoint the teacher of the next; prints each round's wall-clock.
# Usage, from the repository root with .venv installed:
#   [TEACHER=RUN] bash benchmarks/progressive_chain.sh CONFIG OUT FIRST_STEPS [TRAIN_STEPS_PER_ROUND [--set K=V ...]]
# TEACHER replaces the preset's teacher for the first round (to go on from a round already trained), e.g.
#   bash benchmarks/progressive_chain.sh configs/fmnist-progressive.yaml runs/fmnist-progressive 16
#   TEACHER=runs/fmnist-progressive/r16 bash benchmarks/progressive_chain.sh ... 8 500
set -euo pipefail
config=$1 out=$2 n=$3 steps=${4:-}
extra=("${@:5}")  # more `trilemma train` options for every round
mkdir -p "$out"
teacher=(${TEACHER:+--set distill.teacher="$TEACHER"})
while [ "$n" -ge 1 ]; do
  start=$(date +%s)
  .venv/bin/trilemma train "$config" --out "$out/r$n" --quiet ${steps:+--steps "$steps"} ${teacher[@]+"${teacher[@]}"} \
    --set distill.student_steps="$n" --set sample.steps="$n" ${extra[@]+"${extra[@]}"}
  echo "round $n: $(( $(date +%s) - start )) s"
  teacher=(--set distill.teacher="$out/r$n")
  n=$(( n / 2 ))
done
