# Two commands set everything up on a fresh Debian 12 machine (as root):
#   make test   system packages -> .venv -> editable install [test] -> pytest
#   make demo   the same bootstrap, then the main example
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SYS_PKGS := clang llvm libbpf-dev libelf-dev zlib1g-dev pkg-config bpftool iproute2 \
            gcc make python3-venv python3-dev dnsmasq curl bind9-dnsutils chromium tshark
BENCH_PKGS := python3-bpfcc linux-headers-amd64
STAMP := $(VENV)/.installed

.PHONY: test demo bench sysdeps bootstrap clean

sysdeps:
	@missing=""; for p in $(SYS_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

$(STAMP): pyproject.toml setup.py $(wildcard csrc/*.py csrc/glue/* csrc/bpf/*/* csrc/bpf/*)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

bootstrap: sysdeps $(STAMP)

test: bootstrap
	$(PY) -m pytest

demo: bootstrap
	$(PY) examples/load_balancer.py

bench: bootstrap
	$(MAKE) -C benchmarks run PY=$(abspath $(PY))

clean:
	rm -rf build dist src/*.egg-info src/pybpfnet/_libbpf*.so src/pybpfnet/bpf $(VENV)
