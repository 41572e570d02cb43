# SPDX-License-Identifier: GPL-2.0
#
# knbd top-level Makefile.
#   make                 build knbd.ko + ip_vs_knbd.ko for the running kernel if it has headers,
#                        else the newest installed one (Debian's on a host without headers)
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
#   make bench-balance   balance scenarios (skew3 heavy4 churn) x stock/patched nbd.ko (~50 min;
#                        BENCH_ARGS="--runs 2 --scenarios skew3", Documentation/bench.md)
#   make soak            the fuzzers, attacks, faults and group tests for hours (SOAK_ARGS="--debug")
#   make install         modules (lib/modules/KVER/updates/knbd) + depmod, tools, systemd units,
#                        man pages; DESTDIR=, PREFIX= (default /usr), depmod skipped with DESTDIR
#   make install-modules / install-tools / uninstall   the parts, and removing what install put
#   make deb             knbd-dkms and knbd-tools .debs (dpkg-buildpackage in a scratch copy)
#                        into DEB_OUT (default out/deb); Documentation/packaging.md
#   make nbd-patched     nbd.ko + patches/nbd/*.patch for KDIR's kernel (Documentation/nbd-patch.md)
#   make sim             the connection manager's simulator, every scenario (tools/cmsim/README.md)

# The running kernel's tree when its headers are installed, else the newest
# installed one (a host whose kernel has no headers builds for Debian's).
RUNNING_KVER := $(shell uname -r)
DEBIAN_KVER ?= $(shell ls -1 /lib/modules 2>/dev/null | while read v; do \
	[ -e /lib/modules/$$v/build/Makefile ] && echo $$v; done | sort -V | tail -1)
ifneq ($(wildcard /lib/modules/$(RUNNING_KVER)/build/Makefile),)
KDIR ?= /lib/modules/$(RUNNING_KVER)/build
else
KDIR ?= /lib/modules/$(DEBIAN_KVER)/build
endif
PWD := $(shell pwd)

.PHONY: all modules clean deps demo check check-static check-kunit check-vm check-debug bench bench-quick bench-forward soak help tools
.PHONY: bench-balance
.PHONY: install install-modules install-tools install-dkms-src uninstall deb

all: modules

modules:
	@test -d "$(KDIR)" || { echo "no kernel build tree at '$(KDIR)': run scripts/deps.sh or pass KDIR=" >&2; exit 1; }
	$(MAKE) -C $(KDIR) M=$(PWD) modules

clean:
	$(MAKE) -C $(KDIR) M=$(PWD) clean 2>/dev/null || true
	rm -f knbd.ko
	[ ! -d tools ] || $(MAKE) -C tools clean

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

# BENCH_RUN_ARGS: --out DIR --timeout SECS --no-build --report-only (scripts/bench/balance.sh)
bench-balance:
	scripts/deps.sh --run-only
	scripts/bench/balance.sh $(BENCH_RUN_ARGS) -- $(BENCH_ARGS)

SOAK_ARGS ?=

soak:
	scripts/soak.sh $(SOAK_ARGS)

help:
	@sed -n '3,25p' Makefile

# ------------------------------------------------------------- packaging --
# One version for the modules (MODULE_VERSION, Kbuild), the tools (--version),
# dkms.conf and debian/changelog.
VERSION := $(shell cat $(PWD)/VERSION 2>/dev/null)
DESTDIR ?=
PREFIX ?= /usr
SBINDIR ?= $(PREFIX)/sbin
MANDIR ?= $(PREFIX)/share/man
UNITDIR ?= /lib/systemd/system
INSTALL_MOD_DIR ?= updates/knbd
KVER ?= $(shell sed -n 's/.*"\(.*\)".*/\1/p' $(KDIR)/include/generated/utsrelease.h 2>/dev/null)
DEB_OUT ?= $(PWD)/out/deb
DEB_BUILD ?= $(PWD)/out/deb-build
# what goes into /usr/src/knbd-VERSION for DKMS (sources only, no build products)
DKMS_SRC := VERSION Kbuild Makefile dkms.conf $(wildcard drivers/knbd/*.[ch]) \
	$(shell find include -name '*.h' 2>/dev/null)
MANPAGES := $(wildcard Documentation/man/*.5 Documentation/man/*.8)
UNITS := $(wildcard systemd/*.service)

install: install-modules install-tools

# depmod.sh of the kernel tree is skipped (DEPMOD=true): with DESTDIR there is
# nothing to update, without it depmod runs below for KVER. No signing: a
# distribution's headers have no kernel signing key (DKMS signs with its own).
install-modules: modules
	$(MAKE) -C $(KDIR) M=$(PWD) INSTALL_MOD_PATH=$(DESTDIR) \
		INSTALL_MOD_DIR=$(INSTALL_MOD_DIR) DEPMOD=true CONFIG_MODULE_SIG_ALL= modules_install
	@if [ -z "$(DESTDIR)" ]; then echo "depmod -a $(KVER)"; depmod -a $(KVER); \
	else echo "DESTDIR set: run depmod -a $(KVER) on the target"; fi

install-tools: tools
	install -d $(DESTDIR)$(SBINDIR)
	install -m 755 tools/knbd-reconnect $(DESTDIR)$(SBINDIR)/knbd-reconnect
	if [ -f tools/knbdctl ]; then install -m 755 tools/knbdctl $(DESTDIR)$(SBINDIR)/knbdctl; fi
	install -D -m 644 VERSION $(DESTDIR)$(PREFIX)/share/knbd/VERSION
	set -e; for m in $(MANPAGES); do s=$${m##*.}; \
		install -d $(DESTDIR)$(MANDIR)/man$$s; \
		install -m 644 $$m $(DESTDIR)$(MANDIR)/man$$s/; done
	set -e; if [ -n "$(UNITS)" ]; then install -d $(DESTDIR)$(UNITDIR); \
		install -m 644 $(UNITS) $(DESTDIR)$(UNITDIR)/; fi

# the DKMS source tree (debian/rules uses it for knbd-dkms)
install-dkms-src:
	set -e; d=$(DESTDIR)/usr/src/knbd-$(VERSION); for f in $(DKMS_SRC); do \
		install -D -m 644 $$f $$d/$$f; done

uninstall:
	rm -f $(DESTDIR)/lib/modules/$(KVER)/$(INSTALL_MOD_DIR)/knbd.ko \
		$(DESTDIR)/lib/modules/$(KVER)/$(INSTALL_MOD_DIR)/ip_vs_knbd.ko
	-rmdir $(DESTDIR)/lib/modules/$(KVER)/$(INSTALL_MOD_DIR) 2>/dev/null
	rm -f $(DESTDIR)$(SBINDIR)/knbd-reconnect $(DESTDIR)$(SBINDIR)/knbdctl \
		$(DESTDIR)$(PREFIX)/share/knbd/VERSION
	-rmdir $(DESTDIR)$(PREFIX)/share/knbd 2>/dev/null
	set -e; for m in $(MANPAGES); do s=$${m##*.}; \
		rm -f $(DESTDIR)$(MANDIR)/man$$s/$${m##*/}; done
	set -e; for u in $(UNITS); do rm -f $(DESTDIR)$(UNITDIR)/$${u##*/}; done
	@if [ -z "$(DESTDIR)" ]; then echo "depmod -a $(KVER)"; depmod -a $(KVER); fi

# Binary packages knbd-dkms (arch all) and knbd-tools, built in a scratch copy
# so that the work tree keeps no debian/ build products.
deb:
	@test -n "$(VERSION)" || { echo "no VERSION file" >&2; exit 1; }
	@v=$$(dpkg-parsechangelog -l debian/changelog -S Version); [ "$$v" = "$(VERSION)" ] || \
		{ echo "debian/changelog has $$v, VERSION has $(VERSION)" >&2; exit 1; }
	@v=$$(sed -n 's/^PACKAGE_VERSION="\(.*\)"/\1/p' dkms.conf); [ "$$v" = "$(VERSION)" ] || \
		{ echo "dkms.conf has $$v, VERSION has $(VERSION)" >&2; exit 1; }
	rm -rf $(DEB_BUILD)
	mkdir -p $(DEB_BUILD)/knbd-$(VERSION) $(DEB_OUT)
	cp -r VERSION Kbuild Makefile dkms.conf README.md debian drivers include tools \
		$(wildcard Documentation systemd) $(DEB_BUILD)/knbd-$(VERSION)/
	$(MAKE) -C $(DEB_BUILD)/knbd-$(VERSION)/tools clean
	cd $(DEB_BUILD)/knbd-$(VERSION) && DEB_BUILD_OPTIONS=noddebs dpkg-buildpackage -us -uc -b
	rm -f $(DEB_OUT)/knbd-dkms_*.deb $(DEB_OUT)/knbd-tools_*.deb
	mv $(DEB_BUILD)/*.deb $(DEB_OUT)/
	rm -rf $(DEB_BUILD)
	@ls -l $(DEB_OUT)/*.deb

# ------------------------------------------------------ patched nbd.ko --
# nbd.ko of linux-source-6.1 + patches/nbd/*.patch for KDIR's kernel into
# out/nbd-patched/nbd.ko (Documentation/nbd-patch.md); the tests load it with
# nbd_use patched (scripts/tests/lib.sh) or --env KNBD_NBD=patched.
.PHONY: nbd-patched
nbd-patched:
	KDIR=$(KDIR) scripts/nbd-patched.sh

# ------------------------------------------------------ policy simulator --
# make sim: tools/cmsim (the connection manager's connmgr.c + load.c built unchanged, host only)
# over every scenario: a table on stdout, CSV in out/sim/ (tools/cmsim/README.md).
# SIM_ARGS="--seeds 5" or "--only 64x4000 --verbose".
.PHONY: sim
sim:
	$(MAKE) -C tools/cmsim run O=$(PWD)/out/sim
