#!/usr/bin/env bash
# Strict nbval of solutions/ under torch's CPU kernel variants and thread counts: the stored outputs must not depend
# on either (docs/notebook_conventions.md, rule 7).
#
#   tools/check_portability.sh                         # 3 kernel variants x 2 thread counts, every solution notebook
#   tools/check_portability.sh solutions/02_ffn.ipynb  # some notebooks only
#   CAPS="default avx2" THREADS="1" tools/check_portability.sh
#
# ATEN_CPU_CAPABILITY caps the vectorised kernels torch picks (default = no SIMD, avx2, avx512; a CPU without the
# instructions falls back to what it has, printed below); OMP_NUM_THREADS sets torch's intra-op threads. These cover
# part of the variation between machines, not all: an Intel Xeon that prints 0.99999994 where an AMD EPYC prints 1.0
# does so under every variant, which is why tests/test_notebook_outputs.py also checks what the outputs print.
# Each run takes as long as the strict nbval part of the test command (a few minutes on 2 cores); six runs are too
# long for CI's 20 minutes, so CI runs none of them and this script is run by hand after changing a notebook.
# Exit status: 0 when every run passed, 1 otherwise; the table at the end says which failed.
set -uo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python}
caps=${CAPS:-default avx2 avx512}
threads=${THREADS:-1 2}
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(solutions/)
export MPLBACKEND=Agg PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

log=$(mktemp)
trap 'rm -f "$log"' EXIT
results=()
status=0
for cap in $caps; do
    for n in $threads; do
        used=$(ATEN_CPU_CAPABILITY=$cap OMP_NUM_THREADS=$n $python -c \
            "import torch; print(torch.backends.cpu.get_cpu_capability(), torch.get_num_threads())")
        echo "=== ATEN_CPU_CAPABILITY=$cap OMP_NUM_THREADS=$n (torch uses: $used) ==="
        start=$SECONDS
        ATEN_CPU_CAPABILITY=$cap OMP_NUM_THREADS=$n MKL_NUM_THREADS=$n $python -m pytest -q -p no:cacheprovider \
            --nbval --nbval-current-env --nbval-cell-timeout=300 --nbval-sanitize-with tests/nbval_sanitize.cfg \
            "${targets[@]}" 2>&1 | tee "$log"
        code=${PIPESTATUS[0]}
        summary=$(tail -n 1 "$log")
        [ "$code" -ne 0 ] && status=1
        results+=("$(printf '%-8s %-2s threads  %-6s %s [%ss]' "$cap" "$n" \
            "$([ "$code" -eq 0 ] && echo passed || echo FAILED)" "$summary" "$((SECONDS - start))")")
    done
done
echo
echo "=== portability of the stored outputs (${targets[*]}) ==="
printf '%s\n' "${results[@]}"
exit $status
