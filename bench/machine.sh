# bench/machine.sh — sourced by bench/run.sh and bench/results.sh.

# bench_cpu_model: the CPU model name from /proc/cpuinfo, or "unknown".
bench_cpu_model() {
    local cpu
    cpu=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
    [[ -n $cpu ]] || cpu=$(awk -F': *' '/^(Hardware|Processor|cpu model)/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
    echo "${cpu:-unknown}"
}
