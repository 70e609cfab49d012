#!/usr/bin/env bash
# bench/run.sh - issue 7's benchmark suite: `make bench`, `make bench-large`.
#
#   bench/run.sh            overhead (and the limit), file source, latency, recovery, scaling
#   bench/run.sh --large    the large job (BENCH_LARGE_OBJECTS, 10,000,000)
#   bench/run.sh SECTION    one of overhead, file_source, latency, recovery, scaling alone
#
# Every figure is printed in one table with its target and PASS or MISS;
# the raw numbers go to bench/results/*.csv, the scaling chart to
# bench/results/scaling.png (gnuplot). A missed target is a result, not a
# failure: the script exits non-zero only when the benchmark itself could
# not run (a process failed, a job did not finish).
#
# Settings (environment): SLUICE_BIN, BENCH_LIMIT, BENCH_DISPATCH (the binaries), BENCH_OUT
# (results directory), BENCH_RUNS (runs of the overhead job, 9),
# BENCH_LARGE_OBJECTS, BENCH_KEEP=1 (keep the work directory and its logs).
set -euo pipefail

SLUICE=${SLUICE_BIN:-build/sluice}
LIMIT=${BENCH_LIMIT:-build/bench-limit}
DISPATCH=${BENCH_DISPATCH:-build/bench-dispatch}
OUT=${BENCH_OUT:-bench/results}
RUNS=${BENCH_RUNS:-9}
LARGE_OBJECTS=${BENCH_LARGE_OBJECTS:-10000000}
MODE=${1:-main}

W=$(mktemp -d /tmp/sluice-bench.XXXXXX)
PIDS=()
TABLE=$W/table

cleanup() {
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ -n "${BENCH_KEEP:-}" ] || [ -n "${FAILED:-}" ]; then echo "bench: work directory kept: $W" >&2; else rm -rf "$W"; fi
}
trap cleanup EXIT

die() { FAILED=1; echo "bench: $*" >&2; exit 1; }
# run_job DIR ARGS...: `sluice run ARGS` with its output in DIR; dies with
# run's own lines (not its children's) when the job fails.
run_job() {
    local d=$1 rc=0; shift
    "$SLUICE" run --fresh --ledger "$d/ledger" --sink "sqlite:$d/out.db" --stats "$d/stats" "$@" \
        >"$d/out" 2>"$d/err" || rc=$?
    [ "$rc" = 0 ] || die "sluice run $* exited $rc: $(grep -h '^sluice run' "$d/err" "$d/out" | tail -5)"
}
now_ms() { date +%s%3N; }
# The epoch milliseconds of a log line's ts=2026-...Z.
line_ms() { local ts=${1#*ts=}; date -d "${ts%% *}" +%s%3N; }
median() { sort -g | awk '{a[NR]=$1} END {if (!NR) print "nan"; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
kv() { sed -n "s/^$2=//p" "$1"; }
calc() { awk "BEGIN {printf \"$1\", $2}"; }

# Polls (every 20 ms) until the command succeeds; fails after $1 seconds.
wait_until() {
    local deadline=$(( $(now_ms) + $1 * 1000 )); shift
    until "$@" >/dev/null 2>&1; do
        [ "$(now_ms)" -lt "$deadline" ] || return 1
        sleep 0.02
    done
}

# A TCP port on 127.0.0.1 nobody listens on now, below the ephemeral range.
free_port() {
    local used p
    used=$(ss -Htln | awk '{n = split($4, a, ":"); print a[n]}')
    while :; do
        p=$(( 20000 + RANDOM % 12000 ))
        grep -qx "$p" <<<"$used" || { echo "$p"; return; }
    done
}

# Starts a nats-server on a port of its choosing; sets URL.
start_nats() {
    local dir=$1 pid
    nats-server -a 127.0.0.1 -p -1 --ports_file_dir "$dir" >"$dir/nats.log" 2>&1 &
    pid=$!; PIDS+=("$pid")
    wait_until 10 test -s "$dir/nats-server_$pid.ports" || die "nats-server did not start: $(tail -2 "$dir/nats.log")"
    wait_until 2 grep -q nats:// "$dir/nats-server_$pid.ports" || die "no port in nats-server's ports file"
    URL=$(grep -o 'nats://[0-9.:]*' "$dir/nats-server_$pid.ports" | head -1)
}

# Starts `sluice ROLE ARGS...` logging to $LOG; sets LAST.
start_role() {
    "$SLUICE" "$@" >>"$LOG" 2>&1 &
    LAST=$!; PIDS+=("$LAST")
}

# Stops the given processes (SIGKILL: a bench has no data to keep).
stop() { for p in "$@"; do kill -KILL "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; }

metric() { # metric URL NAME-AND-LABELS-PREFIX: prints the value, summed over matching series
    curl -sf "$1" | awk -v m="$2" 'index($0, m) == 1 {s += $NF; n++} END {if (n) print s; else exit 1}'
}

# row NAME VALUE UNIT OP TARGET: a line of the table (OP: le, ge or - for none).
row() {
    local verdict=""
    case $4 in
    le) verdict=$(awk "BEGIN {print ($2 <= $5) ? \"PASS\" : \"MISS\"}") ;;
    ge) verdict=$(awk "BEGIN {print ($2 >= $5) ? \"PASS\" : \"MISS\"}") ;;
    esac
    local t=""
    case $4 in le) t="<= $5" ;; ge) t=">= $5" ;; esac
    printf '%-44s %12s %-9s %-12s %s\n' "$1" "$2" "$3" "$t" "$verdict" >>"$TABLE"
}

# The reference users from a file instead of the generator: `sluice
# mock-api` serves them as one JSON array, saved to a file (57 MB); then
# `sluice run --source file:` over it, median of 3. No target: it shows
# that a file's chunks take the fast paths the generator's do.
file_source() {
    local csv=$OUT/file.csv port=$(free_port) f=$W/users.json pid
    "$SLUICE" mock-api --http "127.0.0.1:$port" --objects 100000 >"$W/mock.log" 2>&1 &
    pid=$!; PIDS+=("$pid")
    wait_until 10 curl -sf -o /dev/null "http://127.0.0.1:$port/users?offset=0&limit=1" ||
        die "mock-api did not start: $(tail -3 "$W/mock.log")"
    curl -sf -o "$f" "http://127.0.0.1:$port/users?offset=0&limit=100000" || die "could not read the users from mock-api"
    kill "$pid" 2>/dev/null || true
    echo "run,wall_s,fetcher_cpu_s,mapper_cpu_s,saver_cpu_s" >"$csv"
    for i in 1 2 3; do
        local d=$W/file$i t0 t1
        mkdir -p "$d"
        t0=$(now_ms)
        run_job "$d" --source "file:$f" --mappers 2 --progress-ms 3600000
        t1=$(now_ms)
        [ "$(kv "$d/stats" objects)" = 100000 ] || die "file run $i saved $(kv "$d/stats" objects) objects"
        echo "$i,$(calc %.3f "($t1 - $t0) / 1000"),$(kv "$d/stats" fetcher_cpu_s),$(kv "$d/stats" mapper_cpu_s),$(kv "$d/stats" saver_cpu_s)" >>"$csv"
    done
    fcol() { awk -F, -v c="$1" 'NR > 1 {print $c}' "$csv" | median; }
    row "file source (JSON array): 100k job wall" "$(fcol 2)" s - -
    row "file source: cpu fetcher" "$(fcol 3)" s - -
    row "file source: cpu mappers (2, summed)" "$(fcol 4)" s - -
}

# 1 and 2: the reference job through `sluice run`, end to end (nats-server
# start-up included), and the same work in one process (bench-limit),
# alternated so that both see the same load.
overhead() {
    local csv=$OUT/overhead.csv
    echo "run,kind,wall_s,objects_per_s,first_saved_ms,run_wall_s,redeliveries,fetcher_cpu_s,mapper_cpu_s,saver_cpu_s,nats_cpu_s,fetcher_maxrss_kb,mapper_maxrss_kb,saver_maxrss_kb,nats_maxrss_kb" >"$csv"
    for i in $(seq 1 "$RUNS"); do
        local d=$W/overhead$i t0 t1 wall first
        mkdir -p "$d"
        t0=$(now_ms)
        run_job "$d" --objects 100000 --mappers 2 --progress-ms 3600000
        t1=$(now_ms)
        [ "$(kv "$d/stats" objects)" = 100000 ] || die "overhead run $i saved $(kv "$d/stats" objects) objects"
        wall=$(calc %.3f "($t1 - $t0) / 1000")
        first=$(( $(line_ms "$(grep -m1 'msg="first chunk saved"' "$d/err")") - t0 ))
        echo "$i,sluice,$wall,$(calc %.0f "100000 / $wall"),$first,$(kv "$d/stats" wall_s),$(kv "$d/stats" redeliveries),$(kv "$d/stats" fetcher_cpu_s),$(kv "$d/stats" mapper_cpu_s),$(kv "$d/stats" saver_cpu_s),$(kv "$d/stats" nats_cpu_s),$(kv "$d/stats" fetcher_maxrss_kb),$(kv "$d/stats" mapper_maxrss_kb),$(kv "$d/stats" saver_maxrss_kb),$(kv "$d/stats" nats_maxrss_kb)" >>"$csv"
        # The limit is timed as sluice is, from the command to its exit:
        # its own wall_s leaves out its exec and closing the database (the
        # last WAL checkpoint), which sluice's saver does inside its time.
        t0=$(now_ms)
        "$LIMIT" --objects 100000 --sink "sqlite:$d/limit.db" >"$d/limit" 2>&1 || die "bench-limit failed: $(tail -3 "$d/limit")"
        t1=$(now_ms)
        local lwall
        lwall=$(calc %.3f "($t1 - $t0) / 1000")
        echo "$i,limit,$lwall,$(calc %.0f "100000 / $lwall"),,$(kv "$d/limit" wall_s),,,,,,,,," >>"$csv"
        echo "bench: overhead run $i/$RUNS: sluice ${wall} s, limit ${lwall} s ($(kv "$d/limit" wall_s) s in-process)" >&2
    done
    col() { awk -F, -v k="$1" -v c="$2" 'NR > 1 && $2 == k {print $c}' "$csv" | median; }
    local sw lw
    sw=$(col sluice 3); lw=$(col limit 3)
    SLUICE_OPS=$(col sluice 4)
    row "overhead: 100k job wall (sluice run)" "$sw" s le 1.0
    row "overhead: objects/s" "$SLUICE_OPS" obj/s - -
    row "limit: same work, one process, wall" "$lw" s - -
    row "limit: objects/s" "$(col limit 4)" obj/s - -
    row "limit: in-process (no exec, no db close)" "$(col limit 6)" s - -
    row "sluice / limit (wall)" "$(calc %.2f "$sw / $lw")" ratio le 1.5
    # Each run's sluice over the limit run right after it: the machine's
    # drift from run to run cancels within a pair.
    row "sluice / limit, median of the runs' ratios" \
        "$(awk -F, 'NR > 1 {w[$1, $2] = $3} END {for (i = 1; (i, "sluice") in w; i++) printf "%.4f\n", w[i, "sluice"] / w[i, "limit"]}' "$csv" |
            median | xargs printf %.2f)" ratio - -
    row "sluice / limit in-process" "$(calc %.2f "$sw / $(col limit 6)")" ratio - -
    row "overhead: redeliveries per run (median)" "$(col sluice 7)" chunks - -
    row "cpu fetcher" "$(col sluice 8)" s - -
    row "cpu mappers (2, summed)" "$(col sluice 9)" s - -
    row "cpu saver" "$(col sluice 10)" s - -
    row "cpu nats-server" "$(col sluice 11)" s - -
    row "peak rss fetcher" "$(calc %.1f "$(col sluice 12) / 1024")" MiB - -
    row "peak rss mapper (largest)" "$(calc %.1f "$(col sluice 13) / 1024")" MiB - -
    row "peak rss saver" "$(calc %.1f "$(col sluice 14) / 1024")" MiB - -
    row "peak rss nats-server" "$(calc %.1f "$(col sluice 15) / 1024")" MiB - -
    FIRST_SAVED=$(col sluice 5)
}

# Quantile q of the Prometheus histogram in the files (buckets summed over
# them), interpolated within its bucket as histogram_quantile() does.
hist_quantile() {
    local q=$1 name=$2; shift 2
    cat "$@" | awk -v q="$q" -v name="${name}_bucket" '
        index($0, name) == 1 {
            match($0, /[{,]le="[^"]*"/); le = substr($0, RSTART + 5, RLENGTH - 6)
            c[le] += $NF; if (!(le in seen)) { seen[le] = 1; les[++n] = le }
        }
        END {
            for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++)
                if ((les[j] == "+Inf" ? 1e300 : les[j] + 0) < (les[i] == "+Inf" ? 1e300 : les[i] + 0)) { t = les[i]; les[i] = les[j]; les[j] = t }
            total = c["+Inf"]; if (!total) { print "nan"; exit }
            rank = q * total; prev = 0; lower = 0
            for (i = 1; i <= n; i++) {
                le = les[i]
                if (c[le] >= rank) {
                    if (le == "+Inf") { print lower; exit }
                    print lower + (le - lower) * (rank - prev) / (c[le] - prev); exit
                }
                prev = c[le]; lower = le
            }
        }'
}

# 5: the dispatch round trip (mapper asks P.work -> chunk received), read
# from the mappers' sluice_dispatch_seconds after a whole reference job
# (the fetcher lingers, so the mappers stay up to be scraped). Mappers
# prefetch (--prefetch-lead-ms), which hides the round trip: the round trip
# itself is measured with prefetch off, where every chunk waits for it;
# how long mappers wait for work (sluice_work_wait_seconds) with it on.
# With LAT_ECHO=BYTES, `bench-dispatch --echo` runs beside the job, through
# its server, 150 bare requests answered with that many bytes: the floor
# under the round trip in the same conditions (outputs in $d/echo; the
# fetcher's done chunks when it ended in $d/echo-done).
latency_job() {
    local d=$1 pf p1 p2 f m1 m2 s; shift
    mkdir -p "$d"; LOG=$d/roles.log
    start_nats "$d"
    pf=$(free_port); p1=$(free_port); p2=$(free_port)
    start_role saver --nats-url "$URL" --job lat --sink "sqlite:$d/out.db"; s=$LAST
    start_role fetcher --nats-url "$URL" --job lat --objects 100000 --ledger "$d/ledger" --linger \
        --http "127.0.0.1:$pf"; f=$LAST
    wait_until 10 curl -sf "http://127.0.0.1:$pf/readyz" || die "the latency fetcher did not get ready: $(tail -3 "$LOG")"
    start_role mapper --nats-url "$URL" --job lat --http "127.0.0.1:$p1" "$@"; m1=$LAST
    start_role mapper --nats-url "$URL" --job lat --http "127.0.0.1:$p2" "$@"; m2=$LAST
    local done_metric='sluice_chunks{role="fetcher",sluice_job="lat",state="done"}'
    if [ -n "${LAT_ECHO:-}" ]; then
        "$DISPATCH" --nats-url "$URL" --job lat --echo "$LAT_ECHO" --requests 150 --gap-us 1000 >"$d/echo" 2>&1 ||
            die "bench-dispatch --echo failed: $(tail -3 "$d/echo")"
        metric "http://127.0.0.1:$pf/metrics" "$done_metric" >"$d/echo-done"
    fi
    done_chunks() { [ "$(metric "http://127.0.0.1:$pf/metrics" "$done_metric")" = 1000 ]; }
    wait_until 120 done_chunks || die "the latency job did not finish: $(tail -3 "$LOG")"
    curl -sf "http://127.0.0.1:$p1/metrics" >"$d/m1.prom" && curl -sf "http://127.0.0.1:$p2/metrics" >"$d/m2.prom" ||
        die "cannot read the mappers' metrics"
    stop "$m1" "$m2" "$f" "$s"
}

# The round trip alone: build/bench-dispatch asks a fetcher that nothing
# else talks to, 1000 times, 2 ms apart (bench/dispatch.c), three times
# over (the machine's state moves it from run to run), each run followed
# by the same with --echo: a bare request through the same server,
# answered with as many bytes as the median chunk reply (the floor under
# the round trip). Outputs in $1/out1..3 and $1/echo1..3; sets ALONE_P50,
# ALONE_P99, ECHO_P50 and their ranges to the medians of the three, and
# ECHO_BYTES.
# p50s PREFIX: "MEDIAN LOW-HIGH" of p50_ms in PREFIX1..3 (bench-dispatch's outputs).
p50s() {
    local v i; v=$(for i in 1 2 3; do kv "$1$i" p50_ms; done | sort -g)
    echo "$(median <<<"$v") $(sed -n '1p;$p' <<<"$v" | paste -sd-)"
}

dispatch_alone() {
    local d=$1 pf f i; mkdir -p "$d"; LOG=$d/roles.log
    start_nats "$d"
    pf=$(free_port)
    start_role fetcher --nats-url "$URL" --job disp --objects 100000 --ledger "$d/ledger" --http "127.0.0.1:$pf"; f=$LAST
    wait_until 10 curl -sf "http://127.0.0.1:$pf/readyz" || die "the dispatch fetcher did not get ready: $(tail -3 "$LOG")"
    for i in 1 2 3; do
        "$DISPATCH" --nats-url "$URL" --job disp --requests 1000 --gap-us 2000 >"$d/out$i" 2>&1 ||
            die "bench-dispatch failed: $(tail -3 "$d/out$i")"
        [ "$i" != 1 ] || ECHO_BYTES=$(kv "$d/out1" reply_bytes)
        "$DISPATCH" --nats-url "$URL" --job disp --requests 1000 --gap-us 2000 --echo "$ECHO_BYTES" >"$d/echo$i" 2>&1 ||
            die "bench-dispatch --echo failed: $(tail -3 "$d/echo$i")"
    done
    stop "$f"
    read -r ALONE_P50 ALONE_RANGE <<<"$(p50s "$d/out")"
    ALONE_P99=$(for i in 1 2 3; do kv "$d/out$i" p99_ms; done | median)
    read -r ECHO_P50 ECHO_RANGE <<<"$(p50s "$d/echo")"
}

latency() {
    local d=$W/latency w=$W/latency-prefetch e=$W/latency-echo a=$W/dispatch-alone p50 p99 n sum wp50 wsum wn
    local ep50 eended=""
    dispatch_alone "$a"
    latency_job "$d" --prefetch-lead-ms 0
    latency_job "$w"
    LAT_ECHO=$ECHO_BYTES latency_job "$e" --prefetch-lead-ms 0
    ep50=$(kv "$e/echo" p50_ms)
    [ "$(cat "$e/echo-done")" != 1000 ] || eended="; the job ended first"
    p50=$(calc %.3f "$(hist_quantile 0.5 sluice_dispatch_seconds "$d"/m?.prom) * 1000")
    p99=$(calc %.3f "$(hist_quantile 0.99 sluice_dispatch_seconds "$d"/m?.prom) * 1000")
    n=$(cat "$d"/m?.prom | awk 'index($0, "sluice_dispatch_seconds_count") == 1 {s += $NF} END {print s}')
    sum=$(cat "$d"/m?.prom | awk 'index($0, "sluice_dispatch_seconds_sum") == 1 {s += $NF} END {print s}')
    wp50=$(calc %.3f "$(hist_quantile 0.5 sluice_work_wait_seconds "$w"/m?.prom) * 1000")
    wn=$(cat "$w"/m?.prom | awk 'index($0, "sluice_work_wait_seconds_count") == 1 {s += $NF} END {print s}')
    wsum=$(cat "$w"/m?.prom | awk 'index($0, "sluice_work_wait_seconds_sum") == 1 {s += $NF} END {print s}')
    {
        echo "figure,value_ms,samples"
        echo "dispatch_p50,$p50,$n"
        echo "dispatch_p99,$p99,$n"
        echo "dispatch_mean,$(calc %.3f "$sum / $n * 1000"),$n"
        echo "echo_in_job_p50,$ep50,$(kv "$e/echo" requests)"
        echo "dispatch_alone_p50_median_of_3,$ALONE_P50,3000"
        echo "dispatch_alone_p99_median_of_3,$ALONE_P99,3000"
        echo "echo_alone_p50_median_of_3,$ECHO_P50,3000"
        echo "work_wait_p50_prefetch,$wp50,$wn"
        echo "work_wait_mean_prefetch,$(calc %.3f "$wsum / $wn * 1000"),$wn"
        echo "first_saved_median,${FIRST_SAVED:-},$RUNS"
    } >"$OUT/latency.csv"
    row "dispatch p50, in a running job ($n)" "$p50" ms le 0.3
    row "dispatch p99, in a running job" "$p99" ms - -
    row "dispatch mean, in a running job" "$(calc %.3f "$sum / $n * 1000")" ms - -
    row "  NATS floor: echo p50 in a job ($ECHO_BYTES B$eended)" "$ep50" ms - -
    row "dispatch p50, alone (median of 3; $ALONE_RANGE)" "$ALONE_P50" ms le 0.3
    row "dispatch p99, alone (median of 3)" "$ALONE_P99" ms - -
    row "  NATS floor: echo p50 alone ($ECHO_RANGE)" "$ECHO_P50" ms - -
    row "mapper wait for work p50, prefetch on" "$wp50" ms - -
    row "mapper wait for work mean, prefetch on" "$(calc %.3f "$wsum / $wn * 1000")" ms - -
    [ -z "${FIRST_SAVED:-}" ] || row "start of run -> first chunk saved" "$FIRST_SAVED" ms - -
}

# 6: a mapper holding a chunk is stopped (SIGTERM: it hands the chunk back)
# or killed (SIGKILL: the lease must run out) while an idle mapper asks for
# work; the time until the fetcher leases that chunk again, from its debug
# log. Sets REC_MS to the milliseconds.
recovery_trial() {
    local sig=$1 lease=$2 d=$3 pf a f t0 line
    mkdir -p "$d"; LOG=$d/roles.log
    start_nats "$d"
    pf=$(free_port)
    start_role saver --nats-url "$URL" --job rec --sink "sqlite:$d/out.db"
    "$SLUICE" fetcher --nats-url "$URL" --job rec --objects 100 --chunk-size 100 --ledger "$d/ledger" \
        --lease-ms "$lease" --log-level debug --http "127.0.0.1:$pf" 2>"$d/fetcher.log" &
    f=$!; PIDS+=("$f")
    start_role mapper --nats-url "$URL" --job rec --work-ms 60000; a=$LAST
    wait_until 10 grep -q 'msg=leased chunk=0 ' "$d/fetcher.log" || die "recovery: chunk 0 was never leased"
    start_role mapper --nats-url "$URL" --job rec --work-ms 60000
    waits() { [ "$(metric "http://127.0.0.1:$pf/metrics" 'sluice_work_requests_total{role="fetcher",sluice_job="rec",status="wait"}')" -ge 2 ]; }
    wait_until 10 waits || die "recovery: the second mapper never asked"
    t0=$(now_ms)
    kill "-$sig" "$a"
    leased_again() { [ "$(grep -c 'msg=leased chunk=0 ' "$d/fetcher.log")" -ge 2 ]; }
    wait_until $(( lease / 1000 + 10 )) leased_again ||
        die "recovery: chunk 0 was not leased again after SIG$sig"
    line=$(grep 'msg=leased chunk=0 ' "$d/fetcher.log" | sed -n 2p)
    stop "${PIDS[@]}"
    PIDS=()
    REC_MS=$(( $(line_ms "$line") - t0 ))
}

recovery() {
    local csv=$OUT/recovery.csv n=${BENCH_RECOVERY_TRIALS:-3}
    echo "trial,signal,lease_ms,back_in_play_ms" >"$csv"
    for i in $(seq 1 "$n"); do
        recovery_trial TERM 10000 "$W/recovery-term$i"
        echo "$i,TERM,10000,$REC_MS" >>"$csv"
        recovery_trial KILL 3000 "$W/recovery-kill$i"
        echo "$i,KILL,3000,$REC_MS" >>"$csv"
    done
    local term kill
    term=$(awk -F, '$2 == "TERM" {print $4}' "$csv" | median)
    kill=$(awk -F, '$2 == "KILL" {print $4}' "$csv" | median)
    row "chunk back in play after mapper SIGTERM" "$term" ms le 100
    row "... after SIGKILL (lease 3000 ms)" "$kill" ms le 3500
}

# 3: 1000 chunks of 100 ms simulated work over N mappers (N=1: 100 chunks).
scaling() {
    local csv=$OUT/scaling.csv
    echo "mappers,chunks,work_ms,wall_s,efficiency,objects_per_s,redeliveries" >"$csv"
    for n in ${BENCH_SCALING:-1 5 10 25 50}; do
        local chunks=1000 wall eff walls="" redeliv=0 reps=1 r
        [ "$n" != 1 ] || chunks=100
        # 50 mappers: the median of 3 runs of 2 s; the start and end of a
        # run, which one run's noise moves by a few %, weigh most there.
        [ "$n" != 50 ] || reps=3
        for r in $(seq 1 "$reps"); do
            local d=$W/scaling$n-$r
            mkdir -p "$d"
            run_job "$d" --objects $(( chunks * 100 )) --mappers "$n" --work-ms 100 --progress-ms 3600000
            walls="$walls $(kv "$d/stats" wall_s)"
            redeliv=$(( redeliv + $(kv "$d/stats" redeliveries) ))
        done
        wall=$(printf '%s\n' $walls | median)
        eff=$(calc %.3f "$chunks * 0.1 / $n / $wall")
        echo "$n,$chunks,100,$wall,$eff,$(calc %.0f "$chunks * 100 / $wall"),$redeliv" >>"$csv"
        echo "bench: scaling $n mappers: $wall s (of$walls), efficiency $eff, redeliveries $redeliv" >&2
    done
    while IFS=, read -r n _ _ wall eff ops redeliv; do
        case $n in
        10) row "scaling efficiency, 10 mappers" "$eff" "" ge 0.95 ;;
        50) row "scaling efficiency, 50 mappers" "$eff" "" ge 0.90 ;;
        *) row "scaling efficiency, $n mappers" "$eff" "" - - ;;
        esac
        row "  $n mappers: objects/s, redeliveries $redeliv" "$ops" obj/s - -
    done < <(tail -n +2 "$csv")
    if command -v gnuplot >/dev/null; then
        gnuplot <<GP || die "gnuplot failed"
set terminal pngcairo size 800,480 font ",10"
set output "$OUT/scaling.png"
set datafile separator ","
set title "sluice scaling: 100 ms of simulated work per chunk"
set xlabel "mappers"
set logscale x
set xtics (1, 5, 10, 25, 50)
set ylabel "efficiency (ideal time / wall time)"
set yrange [0:1.1]
set y2label "objects/s"
set y2tics
set ytics nomirror
set key bottom right
plot "$csv" every ::1 using 1:5 with linespoints lw 2 title "efficiency", \
     "$csv" every ::1 using 1:6 axes x1y2 with linespoints lw 2 title "throughput (objects/s)"
GP
        echo "bench: chart $OUT/scaling.png" >&2
    else
        echo "bench: gnuplot not found; no chart" >&2
    fi
}

# 4: the large job, with every process's RSS sampled once a second, against
# the reference job's throughput measured just before (the median of 3
# runs: one run of half a second moves by 15 % with the machine's load).
large() {
    local d=$W/large ref rp t0 wall ops i
    for i in 1 2 3; do
        mkdir -p "$d/ref$i"
        run_job "$d/ref$i" --objects 100000 --mappers 2 --progress-ms 3600000
    done
    ref=$(for i in 1 2 3; do kv "$d/ref$i/stats" objects_per_s; done | median)
    local samples=$OUT/large_rss.csv
    echo "t_s,role,pid,rss_kb,hwm_kb" >"$samples"
    t0=$(now_ms)
    "$SLUICE" run --fresh --objects "$LARGE_OBJECTS" --mappers 2 --ledger "$d/ledger" --sink "sqlite:$d/out.db" \
        --stats "$d/stats" --progress-ms 10000 >"$d/out" 2>"$d/err" &
    rp=$!; PIDS+=("$rp")
    while kill -0 "$rp" 2>/dev/null; do
        local t=$(( ($(now_ms) - t0) / 1000 ))
        for p in $(pgrep -P "$rp" || true); do
            local role
            role=$(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | awk '{print ($1 ~ /nats-server/) ? "nats" : $2}') || continue
            awk -v t="$t" -v r="$role" -v p="$p" '/^VmRSS/ {rss = $2} /^VmHWM/ {hwm = $2} END {if (rss) print t "," r "," p "," rss "," hwm}' \
                "/proc/$p/status" 2>/dev/null >>"$samples" || true
        done
        sleep 1
    done
    wait "$rp" || die "the large run failed: $(tail -3 "$d/err")"
    wall=$(kv "$d/stats" wall_s); ops=$(kv "$d/stats" objects_per_s)
    [ "$(kv "$d/stats" objects)" = "$LARGE_OBJECTS" ] || die "the large run saved $(kv "$d/stats" objects) objects"
    peak() { awk -F, -v r="$1" '$2 == r && $5 > m {m = $5} END {printf "%.1f", m / 1024}' "$samples"; }
    {
        echo "objects,wall_s,objects_per_s,reference_objects_per_s,ratio,fetcher_maxrss_kb,mapper_maxrss_kb,saver_maxrss_kb,nats_maxrss_kb,fetcher_cpu_s,mapper_cpu_s,saver_cpu_s,nats_cpu_s,redeliveries"
        echo "$LARGE_OBJECTS,$wall,$ops,$ref,$(calc %.3f "$ops / $ref"),$(kv "$d/stats" fetcher_maxrss_kb),$(kv "$d/stats" mapper_maxrss_kb),$(kv "$d/stats" saver_maxrss_kb),$(kv "$d/stats" nats_maxrss_kb),$(kv "$d/stats" fetcher_cpu_s),$(kv "$d/stats" mapper_cpu_s),$(kv "$d/stats" saver_cpu_s),$(kv "$d/stats" nats_cpu_s),$(kv "$d/stats" redeliveries)"
    } >"$OUT/large.csv"
    row "large: $LARGE_OBJECTS objects, wall" "$wall" s - -
    row "large: objects/s" "$ops" obj/s - -
    row "large: redeliveries" "$(kv "$d/stats" redeliveries)" chunks - -
    row "large / 100k reference objects/s ($ref)" "$(calc %.3f "$ops / $ref")" ratio ge 0.8
    row "large: peak rss fetcher (sampled VmHWM)" "$(peak fetcher)" MiB le 64
    row "large: peak rss mapper (sampled VmHWM)" "$(peak mapper)" MiB le 32
    row "large: peak rss saver (sampled VmHWM)" "$(peak saver)" MiB le 64
    row "large: peak rss nats-server (sampled)" "$(peak nats)" MiB - -
    row "large: peak rss fetcher (rusage)" "$(calc %.1f "$(kv "$d/stats" fetcher_maxrss_kb) / 1024")" MiB le 64
    row "large: peak rss mapper (rusage, largest)" "$(calc %.1f "$(kv "$d/stats" mapper_maxrss_kb) / 1024")" MiB le 32
    row "large: peak rss saver (rusage)" "$(calc %.1f "$(kv "$d/stats" saver_maxrss_kb) / 1024")" MiB le 64
}

[ -x "$SLUICE" ] || die "no $SLUICE (make build/sluice)"
command -v nats-server >/dev/null || die "no nats-server"
mkdir -p "$OUT"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
STARTED=$(now_ms)
case $MODE in
main)
    [ -x "$LIMIT" ] || die "no $LIMIT (make build/bench-limit)"
    overhead
    file_source
    latency
    recovery
    scaling
    name=summary
    ;;
--large)
    large
    name=summary-large
    ;;
overhead | file_source | latency | recovery | scaling)
    # One section alone, for working on one figure.
    [ "$MODE" != overhead ] || [ -x "$LIMIT" ] || die "no $LIMIT (make build/bench-limit)"
    "$MODE"
    name=summary-$MODE
    ;;
*) die "usage: bench/run.sh [--large | overhead | file_source | latency | recovery | scaling]" ;;
esac
{
    echo "sluice bench, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, load average before $LOAD_BEFORE, after $(cut -d' ' -f1-3 /proc/loadavg), $(( ($(now_ms) - STARTED) / 1000 )) s"
    printf '%-44s %12s %-9s %-12s %s\n' figure value unit target ""
    cat "$TABLE"
} | tee "$OUT/$name.txt"
