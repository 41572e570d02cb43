# SPDX-License-Identifier: GPL-2.0
#
# knbd top-level Makefile.
#   make                 build knbd.ko against the installed Debian kernel
#   make KDIR=/path      build against another kernel tree
#   make demo            install deps, boot a VM, serve a volume, run fio
#   make check           install deps, run every test, the debug-kernel run last (CI runs this)
#   make check-debug     only the debug-kernel run (KASAN, lockdep, kmemleak... kernel)
#   make C=1             build with sparse
#   make tools           build tools/knbd-reconnect (userspace reconnect helper for nbd.ko)
#   make bench           knbd vs nvmet-tcp, nbd-server, nbdkit, qemu-nbd, loop in a VM (~35 min;
#                        BENCH_ARGS="--quick" or "--servers ... --jobs ...", Documentation/bench.md)
#   make bench-quick     the same, smoke-test size (~6 min)
#   make bench-forward   forwarded vs local 4k latency in a 3-member group
#   make soak            the fuzzers, attacks, faults and group tests for hours (SOAK_ARGS="--debug")

DEBIAN_KVER ?= $(shell ls -1 /lib/modules 2>/dev/null | while read v; do \
	[ -e /lib/modules/$$v/build/Makefile ] && echo $$v; done | sort -V | tail -1)
KDIR ?= /lib/modules/$(DEBIAN_KVER)/build
PWD := $(shell pwd)

.PHONY: all modules clean deps demo check check-static check-kunit check-vm check-debug bench bench-quick bench-forward soak help tools

all: modules

modules:
	@test -d "$(KDIR)" || { echo "no kernel build tree at '$(KDIR)': run scripts/deps.sh or pass KDIR=" >&2; exit 1; }
	$(MAKE) -C $(KDIR) M=$(PWD) modules

clean:
	$(MAKE) -C $(KDIR) M=$(PWD) clean 2>/dev/null || true
	rm -f knbd.ko
	$(MAKE) -C tools clean

tools:
	$(MAKE) -C tools

deps:
	scripts/deps.sh

demo:
	scripts/demo.sh

check:
	scripts/check.sh

check-static:
	scripts/check.sh static

check-kunit:
	scripts/check.sh kunit

check-vm:
	scripts/check.sh vm

check-debug:
	scripts/check.sh debug

# BENCH_ARGS: passed to the guest benchmark, BENCH_RUN_ARGS to scripts/bench/run.sh
# (e.g. --out DIR --timeout SECS)
BENCH_ARGS ?=
BENCH_RUN_ARGS ?=

bench:
	scripts/deps.sh --run-only
	scripts/bench/run.sh --bench compare $(BENCH_RUN_ARGS) -- $(BENCH_ARGS)

bench-quick:
	scripts/deps.sh --run-only
	scripts/bench/run.sh --bench compare --out out/bench-compare-quick $(BENCH_RUN_ARGS) -- --quick $(BENCH_ARGS)

bench-forward:
	scripts/deps.sh --run-only
	scripts/bench/run.sh --bench forward-latency $(BENCH_RUN_ARGS) -- $(BENCH_ARGS)

SOAK_ARGS ?=

soak:
	scripts/soak.sh $(SOAK_ARGS)

help:
	@sed -n '3,15p' Makefile
