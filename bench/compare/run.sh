#!/bin/sh
# Runs the compare benchmarks COUNT times (default 5) and prints the median
# ops/s, p50 and p99 of each benchmark and the raftkit/anchor ratios.
#
#   ./run.sh [COUNT]
#
# Environment:
#   SUITE               all (default), memory, durable or tcp
#   BENCHTIME           -benchtime of the in-memory 64-proposer benchmarks (default 100000x)
#   SEQ_BENCHTIME       -benchtime of the in-memory sequential benchmarks  (default 100000x)
#   DURABLE_BENCHTIME   -benchtime of the durable 64-proposer benchmarks   (default 30000x)
#   DURABLE_SEQ_BENCHTIME -benchtime of the durable sequential benchmarks  (default 3000x)
#                       (the durable and the TCP suites both use the two DURABLE_ ones)
#   OUT                 file that keeps the raw `go test` output (default: a temp file)
#
# The test binary is built once. Each round runs every benchmark once, in an
# order rotated from round to round, so that the libraries are interleaved in
# time and a noisy period hits all of them alike rather than the runs of one.
set -eu

COUNT=${1:-5}
SUITE=${SUITE:-all}
BENCHTIME=${BENCHTIME:-100000x}
SEQ_BENCHTIME=${SEQ_BENCHTIME:-100000x}
DURABLE_BENCHTIME=${DURABLE_BENCHTIME:-30000x}
DURABLE_SEQ_BENCHTIME=${DURABLE_SEQ_BENCHTIME:-3000x}

memory="Raftkit_64Proposers Hashicorp_64Proposers Etcd_64Proposers Dragonboat_64Proposers Raftkit_Sequential Hashicorp_Sequential Etcd_Sequential Dragonboat_Sequential"
durable="RaftkitFile_64Proposers HashicorpWAL_64Proposers EtcdWAL_64Proposers DragonboatFile_64Proposers RaftkitFile_Sequential HashicorpWAL_Sequential EtcdWAL_Sequential DragonboatFile_Sequential"
tcp="RaftkitTCP_64Proposers HashicorpTCP_64Proposers DragonboatTCP_64Proposers RaftkitTCP_Sequential HashicorpTCP_Sequential DragonboatTCP_Sequential"
case $SUITE in
all) benches="$memory $durable $tcp" ;;
memory) benches=$memory ;;
durable) benches=$durable ;;
tcp) benches=$tcp ;;
*)
	echo "run.sh: SUITE must be all, memory, durable or tcp" >&2
	exit 2
	;;
esac

cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
OUT=${OUT:-$tmp/bench.txt}
: >"$OUT"

go test -c -o "$tmp/compare.test" .
go build -o "$tmp/median" ./cmd/median

nbench=$(echo $benches | wc -w)

echo "# $(date -u '+%Y-%m-%dT%H:%M:%SZ') count=$COUNT suite=$SUITE benchtime=$BENCHTIME seq_benchtime=$SEQ_BENCHTIME durable_benchtime=$DURABLE_BENCHTIME durable_seq_benchtime=$DURABLE_SEQ_BENCHTIME go=$(go env GOVERSION) nproc=$(nproc)"
echo "# temp dir: ${TMPDIR:-/tmp} ($(df -PT "${TMPDIR:-/tmp}" | awk 'NR==2 {print $2}'))"
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
		*File_Sequential | *WAL_Sequential | *TCP_Sequential) bt=$DURABLE_SEQ_BENCHTIME ;;
		*File_* | *WAL_* | *TCP_*) bt=$DURABLE_BENCHTIME ;;
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
