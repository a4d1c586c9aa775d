#!/usr/bin/env bash
# Work-precision of dynlib's implicit steppers against SUNDIALS CVODE on four stiff problems.
#   benches/vs_sundials/run.sh [reps] [fd]   (fd: difference-quotient Jacobians on both sides)
#   benches/vs_sundials/run.sh same-start    (bdf's step sequences against CVODE's started alike)
# Needs CVODE's headers and libraries; on Debian/Ubuntu:
#   sudo apt-get install -y libsundials-dev
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=$root/target/bench-vs-sundials
mkdir -p "$out"
if [ ! -f /usr/include/cvode/cvode.h ] && [ ! -f /usr/local/include/cvode/cvode.h ]; then
  echo "CVODE headers not found: install libsundials-dev (apt-get install -y libsundials-dev)" >&2
  exit 1
fi
(cd "$root" && cargo build --release --lib --quiet -j1)
link=(-L "$root/target/release" -ldynlib -Wl,-rpath,"$root/target/release"
      -lsundials_cvode -lsundials_nvecserial -lsundials_sunmatrixdense -lsundials_sunlinsoldense -lm)
if [ "${1:-}" = same-start ]; then
  cc -std=c99 -O2 -D_POSIX_C_SOURCE=199309L -I "$root/include" "$here/same_start.c" \
     "$here/problems.c" "${link[@]}" -o "$out/same_start"
  exec "$out/same_start"
fi
cc -std=c99 -O2 -D_POSIX_C_SOURCE=199309L -I "$root/include" "$here/main.c" "$here/problems.c" \
   "${link[@]}" -o "$out/bench"
"$out/bench" "${1:-5}" ${2:+"$2"}
