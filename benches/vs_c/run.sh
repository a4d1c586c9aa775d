#!/usr/bin/env bash
# dynlib through its C ABI against the same loops hand-written in C (cc -O2 and -O3).
#   benches/vs_c/run.sh [reps]            the side-by-side table
#   benches/vs_c/run.sh --callgrind       instructions per rk4 Lorenz step (valgrind)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=$root/target/bench-vs-c
mkdir -p "$out"
(cd "$root" && cargo build --release --lib --quiet)
cc -std=c99 -O2 -DPREFIX=o2_ -c "$here/handwritten.c" -o "$out/hand_o2.o"
cc -std=c99 -O3 -DPREFIX=o3_ -c "$here/handwritten.c" -o "$out/hand_o3.o"
cc -std=c99 -O2 -I "$root/include" "$here/main.c" "$out/hand_o2.o" "$out/hand_o3.o" \
   -L "$root/target/release" -ldynlib -Wl,-rpath,"$root/target/release" -lm -o "$out/bench"
if [ "${1:-}" = "--callgrind" ]; then
  count() {
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$out/bench" --one "rk4 lorenz" "$1" "$2" 2>&1 |
      sed -n 's/.*Collected : *\([0-9]*\).*/\1/p'
  }
  for who in lib o2; do
    a=$(count 100000 $who); b=$(count 1000000 $who)
    echo "rk4 lorenz, $who: $(( (b - a) / 900000 )) instructions per step (callgrind, 10^6 minus 10^5 steps)"
  done
else
  "$out/bench" "${1:-7}"
fi
