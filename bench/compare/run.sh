#!/bin/sh
# Runs the compare benchmarks COUNT times (default 5) and prints the median
# ops/s, p50 and p99 of each benchmark and the raftkit/anchor ratios.
#
#   ./run.sh [COUNT]
#
# Environment:
#   SUITE               all (default: memory, durable and tcp), memory, durable, tcp,
#                       sizes (4 KiB and 64 KiB commands against the disk) or
#                       voters5 (3 and 5 voters) or groups (1 and 16 groups on three
#                       hosts); all runs none of the last three
#   BENCHTIME           -benchtime of the in-memory 64-proposer benchmarks (default 100000x)
#   SEQ_BENCHTIME       -benchtime of the in-memory sequential benchmarks  (default 100000x)
#   DURABLE_BENCHTIME   -benchtime of the durable 64-proposer benchmarks   (default 30000x)
#   DURABLE_SEQ_BENCHTIME -benchtime of the durable sequential benchmarks  (default 3000x)
#                       (the durable and the TCP suites both use the two DURABLE_ ones,
#                       and voters5 uses all four)
#   SIZES_BENCHTIME     -benchtime of the sizes suite with 4 KiB commands  (default 20000x)
#   SIZES64_BENCHTIME   -benchtime of the sizes suite with 64 KiB commands (default 2000x)
#   GROUPS_BENCHTIME    -benchtime of the groups suite, all groups together (default 60000x)
#                       (the disk baseline of a command size writes as many commands'
#                       worth of bytes as the libraries commit)
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
SIZES_BENCHTIME=${SIZES_BENCHTIME:-20000x}
SIZES64_BENCHTIME=${SIZES64_BENCHTIME:-2000x}
GROUPS_BENCHTIME=${GROUPS_BENCHTIME:-60000x}

memory="Raftkit_64Proposers Hashicorp_64Proposers Etcd_64Proposers Dragonboat_64Proposers Raftkit_Sequential Hashicorp_Sequential Etcd_Sequential Dragonboat_Sequential"
durable="RaftkitFile_64Proposers HashicorpWAL_64Proposers EtcdWAL_64Proposers DragonboatFile_64Proposers RaftkitFile_Sequential HashicorpWAL_Sequential EtcdWAL_Sequential DragonboatFile_Sequential"
tcp="RaftkitTCP_64Proposers HashicorpTCP_64Proposers DragonboatTCP_64Proposers RaftkitTCP_Sequential HashicorpTCP_Sequential DragonboatTCP_Sequential"
# The sizes and voters5 suites are sub-benchmarks of BenchmarkSizes and
# BenchmarkVoters (shapes_test.go), named Group/Library/Workload.
sizes=""
for wl in cmd=4KiB/proposers=64 cmd=64KiB/proposers=64 cmd=64KiB/proposers=16 cmd=64KiB/proposers=8; do
	for lib in RaftkitFile RaftkitTCP HashicorpTCP DragonboatTCP; do
		sizes="$sizes Sizes/$lib/$wl"
	done
done
for w in cmd=4KiB/write=4KiB cmd=4KiB/write=64KiB cmd=4KiB/write=256KiB cmd=4KiB/write=1MiB cmd=4KiB/write=4MiB \
	cmd=64KiB/write=64KiB cmd=64KiB/write=256KiB cmd=64KiB/write=1MiB cmd=64KiB/write=4MiB; do
	sizes="$sizes Sizes/Disk/$w"
done
voters5=""
for wl in 64Proposers Sequential; do
	for lib in Raftkit Hashicorp Etcd RaftkitFile HashicorpWAL RaftkitTCP HashicorpTCP DragonboatTCP; do
		voters5="$voters5 Voters/$lib/voters=3/$wl Voters/$lib/voters=5/$wl"
	done
done
# The groups suite is BenchmarkGroups (groups_test.go): Group/Library/groups=G.
groups=""
for g in 1 16; do
	for lib in RaftkitHost DragonboatHost; do
		groups="$groups Groups/$lib/groups=$g"
	done
done
case $SUITE in
all) benches="$memory $durable $tcp" ;;
memory) benches=$memory ;;
durable) benches=$durable ;;
tcp) benches=$tcp ;;
sizes) benches=$sizes ;;
voters5) benches=$voters5 ;;
groups) benches=$groups ;;
*)
	echo "run.sh: SUITE must be all, memory, durable, tcp, sizes, voters5 or groups" >&2
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

echo "# $(date -u '+%Y-%m-%dT%H:%M:%SZ') count=$COUNT suite=$SUITE benchtime=$BENCHTIME seq_benchtime=$SEQ_BENCHTIME durable_benchtime=$DURABLE_BENCHTIME durable_seq_benchtime=$DURABLE_SEQ_BENCHTIME sizes_benchtime=$SIZES_BENCHTIME sizes64_benchtime=$SIZES64_BENCHTIME groups_benchtime=$GROUPS_BENCHTIME go=$(go env GOVERSION) nproc=$(nproc)"
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
	echo "# round $round load: $(uptime)" | tee -a "$OUT"
	for b in "$@"; do
		case $b in
		Groups/*) bt=$GROUPS_BENCHTIME ;;
		Sizes/*/cmd=4KiB/*) bt=$SIZES_BENCHTIME ;;
		Sizes/*/cmd=64KiB/*) bt=$SIZES64_BENCHTIME ;;
		*File_Sequential | *WAL_Sequential | *TCP_Sequential | */*File/*/Sequential | */*WAL/*/Sequential | */*TCP/*/Sequential)
			bt=$DURABLE_SEQ_BENCHTIME
			;;
		*File_* | *WAL_* | *TCP_* | */*File/* | */*WAL/* | */*TCP/*) bt=$DURABLE_BENCHTIME ;;
		*Sequential) bt=$SEQ_BENCHTIME ;;
		*) bt=$BENCHTIME ;;
		esac
		# A sub-benchmark's pattern anchors each element of its name.
		pattern="^Benchmark$(echo "$b" | sed 's,/,$/^,g')\$"
		"$tmp/compare.test" -test.run '^$' -test.bench "$pattern" -test.benchtime "$bt" |
			grep '^Benchmark' | tee -a "$OUT"
	done
done
echo "# load after: $(uptime)"
echo
"$tmp/median" <"$OUT"
