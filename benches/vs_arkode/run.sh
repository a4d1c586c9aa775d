#!/usr/bin/env bash
# Work-precision of dynlib's rk45 against ARKode's Dormand-Prince 5(4) on two non-stiff problems.
#   benches/vs_arkode/run.sh [reps]
# Needs ARKode's headers and libraries; on Debian/Ubuntu:
#   sudo apt-get install -y libsundials-dev
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=$root/target/bench-vs-arkode
mkdir -p "$out"
if [ ! -f /usr/include/arkode/arkode_erkstep.h ] && [ ! -f /usr/local/include/arkode/arkode_erkstep.h ]; then
  echo "ARKode headers not found: install libsundials-dev (apt-get install -y libsundials-dev)" >&2
  exit 1
fi
(cd "$root" && cargo build --release --lib --quiet -j1)
cc -std=c99 -O2 -D_POSIX_C_SOURCE=199309L -I "$root/include" "$here/main.c" \
   -L "$root/target/release" -ldynlib -Wl,-rpath,"$root/target/release" \
   -lsundials_arkode -lsundials_nvecserial -lm -o "$out/bench"
"$out/bench" "${1:-5}"
