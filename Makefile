# sipguard.firewall — the two commands: `make demo` and `make test` (Debian, as root).
# Every target installs what it needs itself: Debian packages, a venv, the collection.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := $(CURDIR)/.venv
BIN := $(VENV)/bin
BUILD := $(CURDIR)/build
# Installed outside the checkout: ansible-test skips every file of a copy inside a git work tree.
COLLECTIONS ?= /var/tmp/sipguard-collections
INSTALLED := $(COLLECTIONS)/ansible_collections/sipguard/firewall
VERSION := $(shell sed -n 's/^version: *//p' galaxy.yml)
TARBALL := $(BUILD)/sipguard-firewall-$(VERSION).tar.gz
LAB_DIR ?= /var/tmp/sipguard-lab
DEMO_DIR ?= /var/tmp/sipguard-demo
APT_PACKAGES := ufw iptables nftables iproute2 openssh-server openssh-client kamailio nmap sip-tester procps docker.io \
                python3 python3-venv git chromium prometheus
export ANSIBLE_COLLECTIONS_PATH := $(COLLECTIONS)
export ANSIBLE_HOST_KEY_CHECKING := False
export SIPGUARD_LAB_DIR := $(LAB_DIR)
export PATH := $(BIN):$(PATH)

.PHONY: help deps venv build test unit sanity lint integration molecule demo lab-up lab-down clean \
        ee galaxy-importer test-matrix bench ansible-test-pip

help:
	@echo "make demo   build the lab fleet, audit it and print each host's SIP exposure"
	@echo "make test   build the collection and run every test against the installed copy"
	@echo "make test-matrix  unit + integration tests on ansible-core 2.17/2.19/2.21, module code on Python 3.8-3.13"
	@echo "make bench  side-by-side benchmark on a 40-host lab (docs/performance.md)"
	@echo "make lab-down   remove the lab (network namespaces under sg-*)"

# Debian packages (only those missing, so a warm machine does not touch apt).
deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "apt-get install:$$missing"; apt-get update -qq; \
	  guard=""; if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; guard=1; fi; \
	  rc=0; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null || rc=$$?; \
	  [ -z "$$guard" ] || rm -f /usr/sbin/policy-rc.d; \
	  if [ -d /run/systemd/system ]; then systemctl disable docker.service docker.socket prometheus.service kamailio.service >/dev/null 2>&1 || true; fi; \
	  echo "installed without starting their services in the machine's own namespace (the lab runs its own per host)"; \
	  exit $$rc; fi

$(BIN)/ansible: requirements-test.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-test.txt
	touch $@

venv: deps $(BIN)/ansible

# Build the tarball and install it as a user would; everything is tested on that copy.
build: venv
	rm -rf $(BUILD) $(INSTALLED) && mkdir -p $(BUILD)
	$(BIN)/ansible-galaxy collection build --output-path $(BUILD) --force .
	$(BIN)/ansible-galaxy collection install --force -p $(COLLECTIONS) $(TARBALL) >/dev/null
	@echo "installed $(TARBALL) into $(COLLECTIONS)"

# `make test` builds once; the targets it runs then skip the build.
BUILT := $(if $(SKIP_BUILD),,build)

# ansible-test bootstraps pip in its venvs from a host this machine cannot reach; an offline
# stand-in (.ci/ansible_test_get_pip.py) goes where ansible-test looks for its cached copy.
ansible-test-pip: venv
	mkdir -p $(HOME)/.ansible/test/cache
	pip=$$(sed -n "s/^ *pip='\([0-9.]*\)',/\1/p" $(VENV)/lib/python3*/site-packages/ansible_test/_internal/python_requirements.py | head -1); \
	  cp .ci/ansible_test_get_pip.py $(HOME)/.ansible/test/cache/get_pip_$${pip//./_}.py

# Unit tests with ansible-test units (its own venv, plus tests/unit/requirements.txt).
unit: $(BUILT) ansible-test-pip
	cd $(INSTALLED) && $(BIN)/ansible-test units --venv --python 3.11 --requirements --color no

sanity: $(BUILT) ansible-test-pip
	cd $(INSTALLED) && $(BIN)/ansible-test sanity --python 3.11 --color no

# ansible-lint and molecule get their own ANSIBLE_HOME: a copy of this collection left in
# ~/.ansible/collections (by any earlier tool) would otherwise shadow the build they must check.
ISOLATED := ANSIBLE_HOME=$(BUILD)/ansible-home

lint: $(BUILT)
	cd $(CURDIR) && $(ISOLATED) $(BIN)/ansible-lint --profile production --offline

integration: $(BUILT)
	cd $(INSTALLED) && $(BIN)/python -m pytest -q -p no:cacheprovider tests/integration

molecule: $(BUILT)
	cd $(CURDIR) && $(ISOLATED) ANSIBLE_FORCE_COLOR=0 PY_COLORS=0 $(BIN)/molecule test --all

test: build
	$(MAKE) --no-print-directory unit sanity lint galaxy-importer ee integration molecule SKIP_BUILD=1

# Tools outside the test tool chain, in their own venv. galaxy-importer depends on
# ansible-builder 3.2.0; -c keeps ansible-core and ansible-lint at the test pins.
TOOLS := /var/tmp/sipguard-tools

$(TOOLS)/bin/ansible-builder: requirements-test.txt
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install -q galaxy-importer==0.4.44 ansible-builder==3.2.0 -c requirements-test.txt
	touch $@

# The execution environment's build context (no container engine here: create, not build).
ee: $(BUILT) $(TOOLS)/bin/ansible-builder
	mkdir -p $(BUILD)/ee && cp $(TARBALL) $(BUILD)/ee/sipguard-firewall.tar.gz
	$(TOOLS)/bin/ansible-builder create -f execution-environment.yml -c $(BUILD)/ee/context --output-filename Containerfile

galaxy-importer: $(BUILT) $(TOOLS)/bin/ansible-builder
	.ci/galaxy_importer.sh $(TARBALL) $(TOOLS)/bin --strict

# Unit and integration tests on ansible-core 2.17/2.19/2.21 (controller Python 3.11-3.13), and
# module code on target Python 3.8-3.13. Needs root (the lab); about 20 minutes.
test-matrix: deps
	.ci/test-matrix.sh --integration --jobs 2

# Side-by-side ratios on a 40-host lab (not part of make test).
bench: $(BUILT)
	$(BIN)/python benchmarks/fleet/run.py --repeat 3

lab-up: venv
	$(BIN)/python tests/lab/sglab.py up tests/lab/scenarios/exposure.yml

lab-down:
	$(PYTHON) tests/lab/sglab.py down

demo: build
	$(BIN)/python tests/lab/sglab.py up tests/lab/scenarios/exposure.yml
	rm -rf $(DEMO_DIR)
	@echo "== 1/2 audit (read-only)"
	ANSIBLE_DEPRECATION_WARNINGS=False $(BIN)/ansible-playbook -i $(LAB_DIR)/inventory.yml sipguard.firewall.audit \
	  -e sipguard_report_dir=$(DEMO_DIR)
	cp -r $(DEMO_DIR)/report.html $(DEMO_DIR)/audit-report.html
	@echo "== 2/2 close -> verify -> report (hosts UFW cannot fix stay non-compliant, with the remediation)"
	ANSIBLE_DEPRECATION_WARNINGS=False $(BIN)/ansible-playbook -i $(LAB_DIR)/inventory.yml sipguard.firewall.close \
	  -e sipguard_report_dir=$(DEMO_DIR)
	@echo
	@echo "report: $(DEMO_DIR)/report.html (also report.md, report.json, junit.xml; the audit before: audit-report.html)"

clean: lab-down
	rm -rf $(BUILD) $(VENV) $(INSTALLED)
