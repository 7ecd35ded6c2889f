# flux-secu: `make demo` runs the pipeline on the shipped clips, `make test` runs the whole suite.
# Both install what they need first: Debian packages (apt-get, as root or through sudo) and a
# project virtual environment in .venv. RUNTIME=gpu installs onnxruntime-gpu instead of onnxruntime.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
RUNTIME ?= cpu
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Debian packages and the command that shows each one is there.
SYSTEM_PACKAGES := espeak-ng:espeak-ng ffmpeg:ffmpeg sox:sox mosquitto:mosquitto \
	mosquitto-clients:mosquitto_pub sip-tester:sipp redis-server:redis-server \
	openssh-server:sshd rsync:rsync netcat-openbsd:nc chromium:chromium prometheus:prometheus
# Installed for its binary only: tests/test_prometheus_e2e.py runs its own Prometheus on a free loopback
# port. Debian's package enables and starts a system service; the one we install is stopped and disabled.
OWN_SERVICES := prometheus
# Debian packages without a command of their own, checked with dpkg: the real RTSP server the camera
# tests read from (gst-rtsp-server, run by Debian's python3 through python3-gi: tests/rtsp_server.py;
# qtdemux and rtph264pay are in plugins-good, h264parse in plugins-bad).
SYSTEM_LIBRARIES := gstreamer1.0-rtsp gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good \
	gstreamer1.0-plugins-bad python3-gi

.PHONY: install system-deps demo test lint bench clean

install: system-deps $(VENV)/.installed-$(RUNTIME)

system-deps:
	@missing=""; \
	for pair in $(SYSTEM_PACKAGES); do \
	  pkg=$${pair%%:*}; cmd=$${pair##*:}; \
	  command -v $$cmd >/dev/null 2>&1 || missing="$$missing $$pkg"; \
	done; \
	$(PYTHON) -c "import ensurepip" 2>/dev/null || missing="$$missing python3-venv"; \
	for pkg in $(SYSTEM_LIBRARIES); do \
	  dpkg-query -W -f='$${Status}' $$pkg 2>/dev/null | grep -q "ok installed" || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing || exit 1; \
	  for svc in $(OWN_SERVICES); do \
	    case " $$missing " in *" $$svc "*) \
	      $(SUDO) systemctl disable --now $$svc >/dev/null 2>&1 || \
	        $(SUDO) systemctl disable $$svc >/dev/null 2>&1 || true;; \
	    esac; \
	  done; \
	fi

$(VENV)/.installed-$(RUNTIME): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "flux-secu needs Python >= 3.11 (found $$($(PYTHON) --version))"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	@# The CPU and GPU onnxruntime builds share one import folder: never both at once.
	$(BIN)/pip uninstall -q -y onnxruntime onnxruntime-gpu 2>/dev/null || true
	$(BIN)/pip install -q -e '.[$(RUNTIME),dev]'
	rm -f $(VENV)/.installed-*
	touch $@

demo: install
	$(BIN)/flux-secu run configs/demo.yaml --for 60

lint: install
	$(BIN)/ruff check .

test: install
	$(BIN)/ruff check .
	$(BIN)/pytest

bench: install
	$(BIN)/python benchmarks/alert_latency.py
	$(BIN)/python benchmarks/cameras.py

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
