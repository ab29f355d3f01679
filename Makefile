# hako: build, test and demo targets. Every target does its own setup and is
# idempotent. Works as root on a fresh Debian 12 and, where possible, as an
# ordinary user (host-deps then only reports what is missing).

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.ONESHELL:
.DEFAULT_GOAL := help

# Debian's interpreter, usable by every user (the pyenv shim on PATH is not).
PYTHON    ?= /usr/bin/python3
VENV      := .venv
VPY       := $(VENV)/bin/python
HAKO_BIN  := $(CURDIR)/$(VENV)/bin/hako
# The runtime `make demo` runs (e.g. DEMO_RUNTIME=/usr/sbin/runc to compare).
DEMO_RUNTIME ?= $(HAKO_BIN)
TEST_USER ?= hakotest
SUBID     := 200000:65536
PYTEST_ARGS ?=

HOST_PKGS := uidmap busybox-static runc crun fuse-overlayfs umoci slirp4netns passt \
	libseccomp2 iproute2 procps util-linux python3-venv python3-dev hyperfine golang-github-containers-common \
	podman conmon catatonit containers-storage docker.io containerd rootlesskit tini \
	systemd dbus dbus-user-session \
	docker-registry skopeo zstd openssl

.PHONY: help install host-deps test test-engines demo clean bench

help:
	@echo "make demo       build a busybox bundle and run it with hako (rootful + rootless as root)"
	echo "make test       host deps + venv, then the whole test suite (pytest)"
	echo "make test-engines  only the podman/docker/containerd matrix (tests/engines, as root)"
	echo "make install    .venv from $(PYTHON) with hako installed editable (+ test extras)"
	echo "make host-deps  (root) Debian packages, test user $(TEST_USER), /dev/fuse + /dev/net/tun 0666"
	echo "make clean      remove the venv and build/test byproducts"

# ---------------------------------------------------------------------------- install
# The stamp is rebuilt when pyproject.toml changes; `make install` always checks.
$(VENV)/.installed: pyproject.toml
	@if [ ! -x $(VPY) ]; then
	  if ! $(PYTHON) -c 'import ensurepip' 2>/dev/null; then
	    echo "install: $(PYTHON) cannot create venvs: install python3-venv (make host-deps as root)" >&2
	    exit 1
	  fi
	  $(PYTHON) -m venv $(VENV)
	fi
	$(VPY) -m pip install --quiet -e '.[test]'
	touch $@

# pip's console script starts python with site (~20 ms per call); hako needs
# only the standard library, so .venv/bin/hako runs the real interpreter -I -S.
$(VENV)/bin/hako: $(VENV)/.installed packaging/venv_launcher.py
	$(VPY) packaging/venv_launcher.py $(VENV)

install: $(VENV)/.installed $(VENV)/bin/hako
	@if [ "$$(id -u)" = 0 ]; then
	  # The unprivileged test user runs .venv/bin/hako from the source tree.
	  chmod o+rx .
	  find . -mindepth 1 -maxdepth 1 ! -name .git -exec chmod -R o+rX {} +
	  d="$(CURDIR)"
	  while [ "$$d" != / ]; do
	    d=$$(dirname "$$d")
	    if [ "$$(( 0$$(stat -c %a "$$d") & 1 ))" = 0 ]; then
	      echo "warning: $$d is not searchable by others: user $(TEST_USER) cannot run $(HAKO_BIN);" \
	           "rootless tests will fail (move the repo, or set HAKO)" >&2
	    fi
	  done
	fi
	echo "installed: $(HAKO_BIN)"

# ------------------------------------------------------------------------- host deps
host-deps:
	@missing=""
	for p in $(HOST_PKGS); do
	  if [ "$$(dpkg-query -W -f='$${db:Status-Status}' "$$p" 2>/dev/null)" != installed ]; then
	    missing="$$missing $$p"
	  fi
	done
	if [ "$$(id -u)" != 0 ]; then
	  [ -z "$$missing" ] || echo "host-deps: not root; missing packages:$$missing (continuing)" >&2
	  id $(TEST_USER) >/dev/null 2>&1 || echo "host-deps: no user $(TEST_USER) (only needed when testing as root)" >&2
	  exit 0
	fi
	if [ -n "$$missing" ]; then
	  echo "host-deps: installing$$missing"
	  export DEBIAN_FRONTEND=noninteractive
	  if [ ! -e /usr/sbin/policy-rc.d ]; then
	    # docker.io/containerd would start their system daemons (iptables rules and
	    # all); the engine tests start private ones
	    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
	    chmod 0755 /usr/sbin/policy-rc.d
	    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
	  fi
	  apt-get update
	  apt-get install -y --no-install-recommends $$missing
	fi
	if ! id $(TEST_USER) >/dev/null 2>&1; then
	  useradd -m -s /bin/bash $(TEST_USER)
	fi
	for f in /etc/subuid /etc/subgid; do
	  touch $$f
	  grep -q '^$(TEST_USER):' $$f || echo '$(TEST_USER):$(SUBID)' >> $$f
	done
	# Distributions ship these 0666; these machines have 0600, which breaks
	# rootless fuse-overlayfs, slirp4netns and pasta.
	for d in /dev/fuse /dev/net/tun; do
	  [ ! -e $$d ] || chmod 0666 $$d
	done

# ------------------------------------------------------------------------------ test
test: host-deps install
	@rc=0
	$(VPY) -m pytest -q $(PYTEST_ARGS) tests || rc=$$?
	if [ $$rc = 5 ]; then
	  echo "make test: pytest collected no tests: failing" >&2
	fi
	exit $$rc

# podman, docker (root and rootless) and containerd driving hako, runc side by
# side (tests/engines/README.md); `make test` runs them too.
test-engines: host-deps install
	@$(VPY) -m pytest -q -m engines $(PYTEST_ARGS) tests/engines

# ------------------------------------------------------------------------------ demo
DEMO_CMD := sh -c 'echo "id: $$(id)"; echo "hostname: $$(hostname)"; echo "uid_map:"; cat /proc/self/uid_map'

demo:
	@if [ "$$(id -u)" = 0 ]; then $(MAKE) --no-print-directory host-deps; fi
	$(MAKE) --no-print-directory install
	tmp=$$(mktemp -d /tmp/hako-demo.XXXXXX)
	chmod 0755 "$$tmp"
	cleanup() {
	  for r in "$$tmp"/state-*; do
	    [ -d "$$r" ] || continue
	    for id in $$(ls "$$r" 2>/dev/null); do $(DEMO_RUNTIME) --root "$$r" delete --force "$$id" >/dev/null 2>&1 || true; done
	  done
	  rm -rf "$$tmp"
	}
	trap cleanup EXIT
	if [ "$$(id -u)" = 0 ]; then
	  echo "== rootful: hako run as root"
	  $(VPY) tests/busybox.py "$$tmp/root" --hostname hako-root -- $(DEMO_CMD) >/dev/null
	  $(DEMO_RUNTIME) --root "$$tmp/state-root" run --bundle "$$tmp/root" demo-root-$$$$
	  echo
	  echo "== rootless: hako run as user $(TEST_USER)"
	  mkdir -m 0700 "$$tmp/state-user" "$$tmp/xdg"
	  chown $(TEST_USER): "$$tmp/state-user" "$$tmp/xdg"
	  $(VPY) tests/busybox.py "$$tmp/user" --rootless --owner $(TEST_USER) --hostname hako-rootless -- $(DEMO_CMD) >/dev/null
	  ( cd "$$tmp" && env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
	      HOME=$$(getent passwd $(TEST_USER) | cut -d: -f6) USER=$(TEST_USER) XDG_RUNTIME_DIR="$$tmp/xdg" \
	      setpriv --reuid=$(TEST_USER) --regid=$(TEST_USER) --init-groups -- \
	      $(DEMO_RUNTIME) --root "$$tmp/state-user" run --bundle "$$tmp/user" demo-user-$$$$ )
	else
	  echo "== rootless: hako run as $$(id -un)"
	  $(VPY) tests/busybox.py "$$tmp/user" --rootless --hostname hako-rootless -- $(DEMO_CMD) >/dev/null
	  $(DEMO_RUNTIME) --root "$$tmp/state-user" run --bundle "$$tmp/user" demo-user-$$$$
	fi

# ----------------------------------------------------------------------------- clean
clean:
	@rm -rf $(VENV) build dist *.egg-info .pytest_cache .hypothesis demo-bundle
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# ----------------------------------------------------------------------------- bench
# hako (venv, and dist/hako when built) against runc and crun, root and rootless.
BENCH_ROUNDS ?= 15
BENCH_PULL_ROUNDS ?= 5
# BENCH_ARGS: e.g. --also "hako (old)=/path/to/old/hako" (in the same interleaved run)
BENCH_ARGS ?=
bench: install
	@if [ "$$(id -u)" = 0 ]; then $(MAKE) --no-print-directory host-deps; fi
	# a dist/hako built from older sources would be compared with today's venv
	if [ -e dist/hako ]; then $(MAKE) --no-print-directory binary >/dev/null; fi
	env -u PYTHONDONTWRITEBYTECODE $(VPY) tests/bench.py --rounds $(BENCH_ROUNDS) --json bench.json $(BENCH_ARGS)
	env -u PYTHONDONTWRITEBYTECODE $(VPY) tests/bench_pull.py --rounds $(BENCH_PULL_ROUNDS) --json bench-pull.json
	if [ "$$(id -u)" = 0 ]; then env -u PYTHONDONTWRITEBYTECODE $(VPY) tests/bench_shim.py --json bench-shim.json; fi
	echo "(machine-readable results: bench.json, bench-pull.json, bench-shim.json (as root))"

# ---------------------------------------------------------------------------- binary
# dist/hako: one self-contained x86-64 executable (no Python needed on the host):
# a small C launcher that unpacks the build's interpreter prefix (every Python
# module frozen into lib/libhakofrozen.so) once into a private, verified cache
# and execs it (packaging/README.md).
# `make test-binary` runs the whole suite against it.
BINARY_PKGS := gcc libc6-dev zlib1g-dev patchelf musl-tools python3-dev

.PHONY: binary test-binary

binary: install
	@if ! $(VPY) -c 'import PyInstaller' 2>/dev/null; then
	  echo "binary: installing pyinstaller into $(VENV)"
	  $(VPY) -m pip install --quiet pyinstaller
	fi
	if ! printf '#include <zlib.h>\nint main(void){return 0;}\n' | cc -x c -o /dev/null - -lz 2>/dev/null \
	    || ! command -v patchelf >/dev/null || ! command -v musl-gcc >/dev/null \
	    || ! $(VPY) -c 'import sysconfig, os, sys; sys.exit(not os.path.exists(sysconfig.get_paths()["include"] + "/Python.h"))'; then
	  if ! command -v musl-gcc >/dev/null && [ "$$(id -u)" != 0 ] && command -v patchelf >/dev/null \
	      && printf '#include <zlib.h>\nint main(void){return 0;}\n' | cc -x c -o /dev/null - -lz 2>/dev/null; then
	    echo "binary: no musl-gcc (musl-tools): the launcher will be linked dynamically (~0.25 ms slower per call)" >&2
	  elif [ "$$(id -u)" = 0 ]; then
	    echo "binary: installing $(BINARY_PKGS) (C compiler, musl and zlib for the launcher and the frozen modules' library, patchelf for the interpreter's RPATH)"
	    export DEBIAN_FRONTEND=noninteractive
	    apt-get update -qq >/dev/null
	    apt-get install -y -qq --no-install-recommends $(BINARY_PKGS) >/dev/null
	  else
	    echo "binary: the launcher needs a C compiler, zlib headers and patchelf: apt-get install $(BINARY_PKGS)" >&2
	    exit 1
	  fi
	fi
	env -u PYTHONDONTWRITEBYTECODE $(VPY) packaging/build.py
	chmod 0755 dist dist/hako

test-binary: binary
	@HAKO=$(CURDIR)/dist/hako $(MAKE) --no-print-directory test
