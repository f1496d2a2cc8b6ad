# hyper2kvm: `make demo` and `make test` do all set-up on a fresh Debian 12 machine.
SHELL := /bin/bash
PY := /usr/bin/python3.11
VENV := .venv
VPY := $(VENV)/bin/python
APT_PACKAGES := qemu-utils qemu-system-x86 libguestfs-tools python3-guestfs python3-hivex \
	linux-image-amd64 redis-server python3-venv libxml2-utils libvirt-clients e2fsprogs fdisk \
	golang-go golang-github-vmware-govmomi-dev docker-compose debootstrap ovmf seabios busybox-static \
	ntfs-3g genisoimage libwin-hivex-perl libguestfs-xfs qemu-block-extra nbdkit python3-libnbd
# virt-v2v, for bench/vs_virt_v2v.py; it copies through nbdcopy, which it only recommends.
BENCH_PACKAGES := virt-v2v libnbd-bin
export LIBGUESTFS_BACKEND ?= direct
# Test processes: most of the suite waits on single-threaded TCG guests, so one per core.
JOBS ?= $(shell nproc)
DEMO_DIR := demo-out

.PHONY: deps apt venv test demo bench flower clean

# Install those of the Debian packages $(1) that are missing.
define apt_install
	@missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -q && apt-get install -y -q --no-install-recommends $$missing; \
	fi
endef

deps: apt venv

apt:
	$(call apt_install,$(APT_PACKAGES))

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(VPY) || $(PY) -m venv --system-site-packages $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[test,flower]'
	$(VPY) -c 'import guestfs, hivex'
	touch $@

test: deps
	$(VPY) -m pytest -ra --durations=40 -n $(JOBS) --dist loadfile

demo: deps
	rm -rf $(DEMO_DIR)
	$(VPY) -m tests.builders.vmware $(DEMO_DIR)/source
	$(VENV)/bin/h2k migrate $(DEMO_DIR)/source/demo-debian12.vmx -o $(DEMO_DIR)/out --no-boot-test
	cat $(DEMO_DIR)/out/demo-debian12/report.json

bench: deps
	$(call apt_install,$(BENCH_PACKAGES))
	$(VPY) bench/convert_overhead.py
	$(VPY) bench/pipeline_overhead.py
	$(VPY) bench/vsphere_stream.py
	$(VPY) bench/wave_scale.py
	$(VPY) bench/vs_virt_v2v.py

# Flower against the configured broker (H2K_BROKER_URL) or a running `h2k migrate -o OUT`.
OUT ?= $(DEMO_DIR)/out
flower: deps
	@url="$${H2K_BROKER_URL:-$$(cat $(OUT)/.h2k/broker.url 2>/dev/null)}"; \
	if [ -z "$$url" ]; then echo "set H2K_BROKER_URL, or start 'h2k migrate ... -o OUT' and pass OUT=" >&2; exit 2; fi; \
	: "$${FLOWER_BASIC_AUTH:?set FLOWER_BASIC_AUTH=user:password}"; \
	exec $(VPY) -m celery --broker "$${url/unix:\/\//redis+socket://}" flower --address=127.0.0.1 --port=5555 \
		--persistent=True --db=.flower.db --max_tasks=100000 \
		--task_runtime_metric_buckets=1,10,60,300,900,1800,3600,7200,14400,28800,43200

clean:
	rm -rf $(DEMO_DIR) .pytest_cache
