#!/usr/bin/env bash
# One short run of safemaml's CUDA path on a borrowed GPU machine (issue 28), in under 8 minutes.
#
# The machine has PyTorch built with CUDA but no registry access and none of the project's other
# dependencies; it gets them as wheels carried with the repository (benchmarks/requirements-gpu-check.txt
# says which, and the command that downloads them). Then, writing everything into one folder:
#   1. the CUDA tests (tests/test_cuda.py: one meta-iteration against the CPU's, training with resume,
#      evaluation, sampling), which must all run (a skipped test fails the check);
#   2. benchmarks/meta_iteration.py with --device cuda, then --device cpu, on this machine;
#   3. benchmarks/sampling.py --quick with --device cuda, then --device cpu.
#
# Usage: bash benchmarks/gpu_check.sh [--wheels DIR] [--out DIR] [--install-only]
#   --wheels DIR     the carried wheels (default: wheels/ in the repository root)
#   --out DIR        where the outputs go: a new or empty folder (default: $OUT when set, else gpu-check-out/)
#   --install-only   install the missing wheels and the project, check the imports, stop (needs no GPU)
#   PYTHON=...       the interpreter that has torch (default: python3)
# Exit status: 0 all steps passed; 1 no GPU, or a step failed (one line on stderr says which); 2 bad usage.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}
WHEELS=$ROOT/wheels
OUTDIR=${OUT:-$ROOT/gpu-check-out}
INSTALL_ONLY=0
BUDGET_S=470  # every step's timeout is cut to what is left of this (7 min 50 s)
START=$SECONDS

die() { echo "gpu_check: $2" >&2; exit "$1"; }

while [ $# -gt 0 ]; do
  case $1 in
    --wheels) [ $# -ge 2 ] || die 2 "--wheels needs a folder"; WHEELS=$2; shift 2 ;;
    --out) [ $# -ge 2 ] || die 2 "--out needs a folder"; OUTDIR=$2; shift 2 ;;
    --install-only) INSTALL_ONLY=1; shift ;;
    -h|--help) sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die 2 "unknown argument '$1' (see --help)" ;;
  esac
done

# ---- check the whole request before writing anything ----
if [ -e "$OUTDIR" ] && { [ ! -d "$OUTDIR" ] || [ -n "$(ls -A "$OUTDIR")" ]; }; then
  die 2 "output folder $OUTDIR exists and is not empty; name a new one with --out"
fi
command -v "$PY" >/dev/null || die 1 "no Python interpreter '$PY' (set PYTHON=...)"
"$PY" -c "import torch" 2>/dev/null || die 1 "'$PY' cannot import torch; this check needs a machine with PyTorch built with CUDA"
if [ $INSTALL_ONLY = 0 ]; then
  GPU=$("$PY" -c "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" 2>/dev/null)
  [ -n "$GPU" ] || die 1 "no CUDA GPU: torch $("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null) sees none (torch.cuda.is_available() is False); nothing was run"
fi
# the pinned requirements this machine lacks (what it has is kept: its torch was built against its numpy),
# and those of them with no wheel in $WHEELS
MISSING=$("$PY" - "$ROOT/benchmarks/requirements-gpu-check.txt" <<'EOF'
import importlib.metadata as md, sys
for line in open(sys.argv[1]):
    pin = line.split("#")[0].strip()
    if pin:
        try:
            md.version(pin.split("==")[0])
        except md.PackageNotFoundError:
            print(pin)
EOF
) || die 1 "could not read benchmarks/requirements-gpu-check.txt"
if [ -n "$MISSING" ]; then
  PYTAG=cp$("$PY" -c 'import sys; print("%d%d" % sys.version_info[:2])')
  NOWHEEL=$(for pin in $MISSING; do  # a wheel of that version, pure Python or built for this interpreter
    name=$(echo "${pin%%==*}" | tr 'A-Z-' 'a-z_')
    ls "$WHEELS" 2>/dev/null | tr 'A-Z' 'a-z' \
      | grep -Eq "^${name}-${pin##*==}-(py3|py2\.py3|${PYTAG})-.*\.whl$" || echo "$pin"
  done)
  [ -z "$NOWHEEL" ] || die 2 "no wheel for $PYTAG in $WHEELS for $(echo $NOWHEEL), which this machine lacks (download: see benchmarks/requirements-gpu-check.txt)"
fi
"$PY" -c "import setuptools" 2>/dev/null || die 1 "'$PY' has no setuptools, needed to install the project without a registry"

mkdir -p "$OUTDIR" || die 1 "cannot create $OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
SUMMARY=$OUTDIR/summary.md
FAILED=()

left() { echo $((BUDGET_S - (SECONDS - START))); }

# step NAME OUTFILE CAP_S COMMAND...: run it from the repository root with a timeout, output to OUTFILE
step() {
  local name=$1 file=$2 cap=$3; shift 3
  local limit; limit=$(left)
  [ "$limit" -gt "$cap" ] && limit=$cap
  if [ "$limit" -lt 10 ]; then
    echo "| $name | not run: the 8-minute budget is spent | | |" >>"$SUMMARY"; FAILED+=("$name"); return
  fi
  local t0=$SECONDS rc
  echo "\$ $*" >>"$OUTDIR/$file"  # appended: the install steps share one log
  (cd "$ROOT" && timeout --kill-after=10 "$limit" "$@") >>"$OUTDIR/$file" 2>&1
  rc=$?
  [ $rc = 124 ] && echo "# stopped by the timeout ($limit s)" >>"$OUTDIR/$file"
  echo "| $name | \`$*\` | $rc | $((SECONDS - t0)) s |" >>"$SUMMARY"
  [ $rc = 0 ] || FAILED+=("$name")
}

{
  echo "# safemaml GPU check, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "- commit: $(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)"
  echo "- GPU: ${GPU:-none (--install-only)}"
  echo "- CPU: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
  echo "- $("$PY" -V 2>&1), torch $("$PY" -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda)' 2>/dev/null)"
  echo "- installed from the carried wheels: $(echo ${MISSING:-none} | tr '\n' ' ')"
  echo
  echo "| step | command | exit | seconds |"
  echo "| --- | --- | ---: | ---: |"
} >"$SUMMARY"
{ nvidia-smi 2>&1; echo; "$PY" -m pip list 2>&1; } >"$OUTDIR/machine.txt"

# everything goes into a folder of its own on PYTHONPATH: the machine's environment is left as it was
SITE=$(mktemp -d)/site
trap 'rm -rf "${SITE%/site}"' EXIT
export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
export PIP_BREAK_SYSTEM_PACKAGES=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
if [ -n "$MISSING" ]; then
  # shellcheck disable=SC2086  # one pin per word
  step "install the carried wheels" install.log 120 \
    "$PY" -m pip install --no-index --find-links "$WHEELS" --no-deps --target "$SITE" $MISSING
fi
step "install safemaml" install.log 120 \
  "$PY" -m pip install --no-index --no-deps --no-build-isolation --target "$SITE" .
step "import check" install.log 60 "$PY" -c \
  "import safemaml, mujoco, gymnasium, scipy, pytest; from safemaml.engine.learner import Learner; print('imports ok')"

if [ $INSTALL_ONLY = 0 ] && [ ${#FAILED[@]} = 0 ]; then
  export OMP_WAIT_POLICY=PASSIVE
  step "CUDA tests" tests-cuda.txt 180 \
    "$PY" -m pytest tests/test_cuda.py -q -rs -p no:cacheprovider
  if grep -q "skipped" "$OUTDIR/tests-cuda.txt"; then FAILED+=("CUDA tests skipped"); fi
  step "meta-iteration, cuda" meta-iteration-cuda.md 120 \
    "$PY" benchmarks/meta_iteration.py --device cuda --repeats 2 --curvatures default exact
  step "meta-iteration, cpu" meta-iteration-cpu.md 150 \
    "$PY" benchmarks/meta_iteration.py --device cpu --repeats 1 --curvatures default exact --skip-adaptation
  step "sampling, cuda" sampling-cuda.md 60 "$PY" benchmarks/sampling.py --quick --device cuda
  step "sampling, cpu" sampling-cpu.md 60 "$PY" benchmarks/sampling.py --quick --device cpu
fi
echo >>"$SUMMARY"
echo "Total: $((SECONDS - START)) s." >>"$SUMMARY"
cat "$SUMMARY"
if [ ${#FAILED[@]} -gt 0 ]; then
  die 1 "$(IFS=','; echo "${#FAILED[@]} step(s) failed: ${FAILED[*]}") (see $OUTDIR)"
fi
