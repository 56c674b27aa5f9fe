#!/bin/sh
# Runs the compare benchmarks COUNT times (default 5) and prints the median
# ops/s, p50 and p99 of each benchmark and the raftkit/anchor ratios.
#
#   ./run.sh [COUNT]
#
# Environment:
#   BENCHTIME      -benchtime of the 64-proposer benchmarks (default 100000x)
#   SEQ_BENCHTIME  -benchtime of the sequential benchmarks  (default 100000x)
#   OUT            file that keeps the raw `go test` output (default: a temp file)
#
# The test binary is built once. Each round runs every benchmark once, in an
# order rotated from round to round, so that the libraries are interleaved in
# time and a noisy period hits all of them alike rather than the runs of one.
set -eu

COUNT=${1:-5}
BENCHTIME=${BENCHTIME:-100000x}
SEQ_BENCHTIME=${SEQ_BENCHTIME:-100000x}

cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
OUT=${OUT:-$tmp/bench.txt}
: >"$OUT"

go test -c -o "$tmp/compare.test" .
go build -o "$tmp/median" ./cmd/median

benches="Raftkit_64Proposers Hashicorp_64Proposers Etcd_64Proposers Raftkit_Sequential Hashicorp_Sequential Etcd_Sequential"
nbench=$(echo $benches | wc -w)

echo "# $(date -u '+%Y-%m-%dT%H:%M:%SZ') count=$COUNT benchtime=$BENCHTIME seq_benchtime=$SEQ_BENCHTIME go=$(go env GOVERSION) nproc=$(nproc)"
echo "# load before: $(uptime)"
round=0
while [ "$round" -lt "$COUNT" ]; do
	round=$((round + 1))
	# Rotate the order by one benchmark per round.
	shift_by=$(( (round - 1) % nbench ))
	set -- $benches
	i=0
	while [ "$i" -lt "$shift_by" ]; do
		first=$1
		shift
		set -- "$@" "$first"
		i=$((i + 1))
	done
	for b in "$@"; do
		case $b in
		*_Sequential) bt=$SEQ_BENCHTIME ;;
		*) bt=$BENCHTIME ;;
		esac
		"$tmp/compare.test" -test.run '^$' -test.bench "^Benchmark${b}\$" -test.benchtime "$bt" |
			grep '^Benchmark' | tee -a "$OUT"
	done
done
echo "# load after: $(uptime)"
echo
"$tmp/median" <"$OUT"
