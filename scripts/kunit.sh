#!/bin/bash
# Run knbd's KUnit suites with kunit.py from Debian's linux-source-6.1 (UML by default).
#
# Every kunit/<unit>_test.c is a suite named knbd_<unit> that tests drivers/knbd/<unit>.c.
# A new suite needs no change here: drop kunit/<unit>_test.c in. If a unit calls into
# another pure unit, add that one to EXTRA_UNITS below; other kunit/*.c files (e.g. stubs for
# symbols of impure files a unit references) are built in too.
#
# Usage: scripts/kunit.sh [--sanitize] [FILTER_GLOB]
#   --sanitize   a second build dir with KASAN + UBSAN (results named kunit-san.*)
#   FILTER_GLOB  passed to kunit.py, e.g. knbd_proto or 'knbd_proto.check_*'
#
# Output: one line per test case, "PASS: kunit.<suite>.<case>" or "FAIL: kunit.<suite>.<case>"
# ("SKIP: ..." for skipped ones, counted in neither), then "kunit: N passed, N failed" as the
# last line. Exit status 0 only if the build succeeded, every expected suite reported and no
# case failed. Progress and build errors go to stderr; kunit.py's whole output and the raw
# console/KTAP output are kept under $CACHE/logs/.
#
# Cache: ${KNBD_CACHE:-/var/cache/knbd}/kunit/ holds linux-source-6.1/ (extracted once, stamped),
# the build dirs build-um[-san]/ (kept, so a re-run only rebuilds what changed) and logs/.
# The project's files are copied into linux-source-6.1/drivers/knbd_kunit/ with rsync -c
# (unchanged files keep their timestamps); drivers/Kconfig and drivers/Makefile are hooked once.
# When nothing changed since the build dir's last complete build, the build is skipped
# (kunit.py exec: a few seconds). Runs are serialised with a lock in the cache dir.
# Env: KNBD_CACHE, KNBD_JOBS (default nproc), KNBD_LINUX_TARBALL, KNBD_KUNIT_TIMEOUT (s, 300).
set -euo pipefail

# Pure units built into every run besides the <unit>.c of each suite (one word per unit).
EXTRA_UNITS=""

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)
TARBALL=${KNBD_LINUX_TARBALL:-/usr/src/linux-source-6.1.tar.xz}
CACHE=${KNBD_CACHE:-/var/cache/knbd}/kunit
TREE="$CACHE/linux-source-6.1"
STAMP="$TREE/.knbd-extracted"
DEST_REL=drivers/knbd_kunit
DEST="$TREE/$DEST_REL"
JOBS=${KNBD_JOBS:-$(nproc)}
TIMEOUT=${KNBD_KUNIT_TIMEOUT:-300}

die() { echo "kunit: ERROR: $*" >&2; exit 1; }
log() { echo "kunit: $*" >&2; }

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

sanitize=0
filter=""
while [ $# -gt 0 ]; do
	case "$1" in
	--sanitize) sanitize=1 ;;
	-h|--help) usage; exit 0 ;;
	-*) usage >&2; die "unknown option $1" ;;
	*) [ -z "$filter" ] || die "only one FILTER_GLOB"; filter=$1 ;;
	esac
	shift
done

label=kunit
build_name=build-um
kconfig_add=()
if [ "$sanitize" = 1 ]; then
	# Generic KASAN works on UML/x86_64 in 6.1 (dynamically linked, shadow at
	# KASAN_SHADOW_OFFSET). UML has no UBSAN_SANITIZE_ALL: kunit/Makefile turns
	# UBSAN on for the knbd files. Alignment checks are off as on x86 (false positives).
	label=kunit-san
	build_name=$build_name-san
	kconfig_add=(--kconfig_add CONFIG_KASAN=y --kconfig_add CONFIG_KASAN_GENERIC=y
		     --kconfig_add CONFIG_UBSAN=y --kconfig_add CONFIG_UBSAN_BOUNDS=y
		     --kconfig_add CONFIG_UBSAN_SHIFT=y --kconfig_add CONFIG_UBSAN_DIV_ZERO=y
		     --kconfig_add CONFIG_UBSAN_BOOL=y --kconfig_add CONFIG_UBSAN_ENUM=y
		     --kconfig_add CONFIG_UBSAN_ALIGNMENT=n)
fi
BUILD="$CACHE/$build_name"
LOGDIR="$CACHE/logs"
RUNLOG="$LOGDIR/$build_name.log"	# everything kunit.py printed (config, build, parse)
RAWLOG="$LOGDIR/$build_name.ktap"	# raw console output of the test kernel (KTAP inside)

# ---- which suites ----
units=()
for f in "$REPO"/kunit/*_test.c; do
	[ -e "$f" ] || continue
	u=$(basename "$f" _test.c)
	[ -f "$REPO/drivers/knbd/$u.c" ] || die "kunit/${u}_test.c has no drivers/knbd/$u.c to test"
	units+=("$u")
done
[ ${#units[@]} -gt 0 ] || die "no kunit/*_test.c"
for u in $EXTRA_UNITS; do
	[ -f "$REPO/drivers/knbd/$u.c" ] || die "EXTRA_UNITS: no drivers/knbd/$u.c"
done

[ -f "$TARBALL" ] || die "$TARBALL missing: run scripts/deps.sh"
command -v python3 >/dev/null || die "python3 missing: run scripts/deps.sh"
command -v rsync >/dev/null || die "rsync missing: run scripts/deps.sh"

mkdir -p "$CACHE" "$LOGDIR"
exec 9>"$CACHE/.lock"
flock -w 3600 9 || die "timed out waiting for $CACHE/.lock"

start=$SECONDS

# ---- kernel source tree, extracted once ----
tarball_id() { stat -c '%n %s %Y' "$TARBALL"; }
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$(tarball_id)" ]; then
	log "extracting $TARBALL into $CACHE"
	rm -rf "$TREE" "$CACHE"/extract.*
	tmp=$(mktemp -d "$CACHE/extract.XXXXXX")
	tar -C "$tmp" -xJf "$TARBALL"
	[ -d "$tmp/linux-source-6.1" ] || die "unexpected tarball layout (no linux-source-6.1/)"
	mv "$tmp/linux-source-6.1" "$TREE"
	rmdir "$tmp"
	# Build dirs made from another tree may hold stale configs: start them afresh.
	rm -rf "$CACHE"/build-*
	tarball_id >"$STAMP"
fi

# ---- hook drivers/knbd_kunit/ into the tree (once) ----
if ! grep -q "^source \"$DEST_REL/Kconfig\"" "$TREE/drivers/Kconfig"; then
	[ "$(tail -n 1 "$TREE/drivers/Kconfig")" = endmenu ] ||
		die "drivers/Kconfig does not end in endmenu"
	sed -i "\$i source \"$DEST_REL/Kconfig\"\n" "$TREE/drivers/Kconfig"
fi
if ! grep -q 'knbd_kunit/$' "$TREE/drivers/Makefile"; then
	echo "obj-\$(CONFIG_KNBD_KUNIT_TEST)	+= knbd_kunit/" >>"$TREE/drivers/Makefile"
fi

# ---- copy the project's files in, touching only what changed ----
rm -rf "$CACHE"/stage.*
stage=$(mktemp -d "$CACHE/stage.XXXXXX")
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/include/knbd"
cp "$REPO/kunit/Kconfig" "$REPO/kunit/Makefile" "$REPO/kunit/.kunitconfig" "$stage/"
cp "$REPO"/include/knbd/*.h "$REPO"/include/uapi/knbd/*.h "$stage/include/knbd/"
cp "$REPO"/drivers/knbd/*.h "$stage/"
# kunit/*.c: the suites, plus any helper such as kunit/<unit>_stubs.c defining what a unit
# references but its suite never reaches (6.1 has no KUnit static stubs).
cp "$REPO"/kunit/*.c "$stage/"
for u in "${units[@]}"; do
	cp "$REPO/drivers/knbd/$u.c" "$stage/"
done
for u in $EXTRA_UNITS; do
	cp "$REPO/drivers/knbd/$u.c" "$stage/"
done
mkdir -p "$DEST"
rsync -rc --delete "$stage/" "$DEST/"

# Show paths in the tree's copy as the repository's own: drivers/knbd/x.c, kunit/x_test.c...
repo_paths() {
	sed -E -e 's#([^ :(]*/)?drivers/knbd_kunit/include/knbd/#include/knbd/#g' \
	       -e 's#([^ :(]*/)?drivers/knbd_kunit/([A-Za-z0-9_]+_test\.c|Kconfig|Makefile)#kunit/\2#g' \
	       -e 's#([^ :(]*/)?drivers/knbd_kunit/([A-Za-z0-9_]+\.[ch])#drivers/knbd/\2#g'
}

# ---- configure, build, run ----
mode=um
[ "$sanitize" = 0 ] || mode="um, KASAN+UBSAN"
# What the build dir must have been built from for a run to skip the build: the sources as
# staged, the config additions and the tree. Written once the kernel booted, so it names a
# complete build (whichever repository it came from); without it a make pass is needed, which
# costs tens of seconds even when it has nothing to do.
want_built=$( {
	(cd "$stage" && find . -type f -print0 | sort -z | xargs -0 sha256sum)
	printf '%s\n' "${kconfig_add[@]}"
	cat "$STAMP"
} | sha256sum | cut -d' ' -f1)
BUILT="$BUILD/.knbd-built"
sub=run
if [ -x "$BUILD/linux" ] && [ "$(cat "$BUILT" 2>/dev/null)" = "$want_built" ]; then
	sub=exec
	log "running ${units[*]} ($mode), nothing to rebuild in $BUILD"
else
	rm -f "$BUILT"
	log "building and running ${units[*]} ($mode) in $BUILD"
fi
rm -f "$BUILD/test.log"
kargs=("$sub" --kunitconfig="$DEST" --build_dir="$BUILD" --arch=um --timeout="$TIMEOUT"
       "${kconfig_add[@]}")
[ "$sub" = exec ] || kargs+=(--jobs="$JOBS")
[ -z "$filter" ] || kargs+=("$filter")
# kunit.py runs in a process group of its own: if it dies (or we are stopped), its make or
# UML children must not live on and keep writing into the build dir.
rc=0
kpid=
stop_kunit() { [ -z "$kpid" ] || kill -TERM -- "-$kpid" 2>/dev/null || true; }
trap 'stop_kunit; rm -rf "$stage"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
(cd "$TREE" && exec setsid -w python3 tools/testing/kunit/kunit.py "${kargs[@]}") \
	</dev/null >"$RUNLOG" 2>&1 &
kpid=$!
wait "$kpid" || rc=$?
stop_kunit
kpid=

if [ ! -s "$BUILD/test.log" ]; then
	# Never got to boot the kernel: configuration or build failure.
	why="exit $rc"
	[ "$rc" -le 128 ] || why="killed by signal $((rc - 128))"
	echo "kunit: kunit.py failed before running the tests ($why), from $RUNLOG:" >&2
	if grep -qE ': (fatal )?error:|Error [0-9]+|ERROR:|not in \.config|not set' "$RUNLOG"; then
		grep -E -A4 ': (fatal )?error:|^make.*Error [0-9]+|ERROR:|not in \.config|not set' \
			"$RUNLOG" | head -n 80 | repo_paths >&2
	else
		tail -n 40 "$RUNLOG" | repo_paths >&2
	fi
	echo "FAIL: $label.build"
	echo "$label: 0 passed, 1 failed"
	exit 1
fi
cp "$BUILD/test.log" "$RAWLOG"
[ "$sub" = exec ] || echo "$want_built" >"$BUILT"

# Compiler warnings in the project's files are worth seeing even when all passes.
if grep -q "$DEST_REL/.*warning:" "$RUNLOG"; then
	log "compiler warnings in knbd sources:"
	grep -A3 "$DEST_REL/.*warning:" "$RUNLOG" | head -n 40 | repo_paths >&2
fi

expected=()
[ -n "$filter" ] || for u in "${units[@]}"; do expected+=("knbd_$u"); done

set +e
python3 - "$TREE/tools/testing/kunit" "$RAWLOG" "$label" "$rc" "${expected[@]}" \
	>"$stage/results" 2>"$stage/diag" <<'EOF'
import contextlib, io, re, sys

tooldir, rawlog, label, kunit_rc = sys.argv[1:5]
expected = sys.argv[5:]
sys.path.insert(0, tooldir)
# kunit_parser prints its own report: keep it out of our output.
with contextlib.redirect_stdout(io.StringIO()):
    import kunit_parser
    with open(rawlog, errors='replace') as f:
        root = kunit_parser.parse_run_tests(f.readlines())

S = kunit_parser.TestStatus
# Kernel reports that must fail the case they show up in, even if KUnit did not notice.
REPORT = re.compile(r'BUG: KASAN|UBSAN:|BUG: |WARNING: CPU|Kernel panic|general protection|Oops')
# Stack frames, raw memory and page dumps: in the log file, not on the terminal.
NOISE = re.compile(r'^\s*(\[<[0-9a-f]+>\]|[0-9a-f]{16}: |raw: |\^$|Call Trace:|Stack:$|'
                   r'( [0-9a-f]{8}){4}$)')
passed = failed = skipped = 0
lines = []

def result(ok, name, log=()):
    global passed, failed
    lines.append(('PASS: ' if ok else 'FAIL: ') + label + '.' + name)
    if not ok and log:
        # What KUnit (or a sanitizer) said about it, on stderr.
        diag = [l.rstrip() for l in log if l.strip() and not NOISE.search(l)][:40]
        sys.stderr.write('%s: %s:\n' % (label, name) +
                         ''.join('    %s\n' % l for l in diag))
    if ok:
        passed += 1
    else:
        failed += 1

def reported(t):
    return any(REPORT.search(l) for l in t.log)

seen = set()
for suite in root.subtests:
    sname = suite.name or '(unnamed)'
    seen.add(sname)
    if not suite.subtests:
        result(suite.status == S.SUCCESS and not reported(suite), sname + '.(suite)',
               suite.log)
        continue
    for i, case in enumerate(suite.subtests, 1):
        cname = case.name or '(missing #%d)' % i
        if case.status == S.SKIPPED and not reported(case):
            lines.append('SKIP: %s.%s.%s' % (label, sname, cname))
            skipped += 1
            continue
        result(case.status == S.SUCCESS and not reported(case), sname + '.' + cname,
               case.log)
    if suite.status not in (S.SUCCESS, S.SKIPPED) and all(
            c.status in (S.SUCCESS, S.SKIPPED) for c in suite.subtests):
        result(False, sname + '.(suite)', suite.log)
    # Reports after the last case (suite exit) land in the suite's own log.
    elif reported(suite):
        result(False, sname + '.(suite)', suite.log)
for s in expected:
    if s not in seen:
        result(False, s + '.(missing)')
if root.status == S.FAILURE_TO_PARSE_TESTS or (not root.subtests and not expected):
    result(False, '(no KTAP output)')
if int(kunit_rc) != 0 and failed == 0:
    result(False, '(kunit.py exit %s)' % kunit_rc)
for l in lines:
    print(l)
if skipped:
    print('%s: %d skipped' % (label, skipped))
print('%s: %d passed, %d failed' % (label, passed, failed))
sys.exit(1 if failed else 0)
EOF
prc=$?
set -e
repo_paths <"$stage/diag" >&2
if ! tail -n 1 "$stage/results" | grep -qE "^$label: [0-9]+ passed, [0-9]+ failed\$"; then
	# The parser itself broke: still end with a verdict.
	echo "FAIL: $label.(parse)" >>"$stage/results"
	echo "$label: 0 passed, 1 failed" >>"$stage/results"
	prc=1
fi
cat "$stage/results"
log "took $((SECONDS - start)) s; logs: $RUNLOG $RAWLOG"
# The summary line must stay last on stdout: the log line went to stderr.
exit $prc
