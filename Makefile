# Two commands for a fresh machine: `make serve` and `make test`. Both install what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
# Debian packages the tests and benchmarks use: perf_analyzer's libb64, espeak-ng for synthetic speech,
# Chromium for the web-page tests, docker-compose/nginx for the deployment tests, PostgreSQL for the
# job-queue tests (server binaries in /usr/lib/postgresql/<version>/bin; the tests start their own).
APT_PACKAGES ?= libb64-0d espeak-ng chromium docker-compose nginx postgresql
PYTEST_ARGS ?=

.PHONY: venv system-deps weights serve triton test unit bench clean

venv: $(STAMP)
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[embedded,test]'
	@rm -f $(VENV)/.installed-*; touch $@

system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends $$missing >/dev/null; \
	fi

weights: venv
	$(BIN)/python -m whisper_triton.weights provision

serve: venv weights
	$(BIN)/python -m launcher serve

triton: venv weights
	$(BIN)/python -m launcher triton

unit: venv
	$(BIN)/python -m pytest -q tests/unit $(PYTEST_ARGS)

# pytest exits 5 when it collects no test; that is not a failure of the suite.
test: system-deps venv weights
	$(BIN)/python -m pytest -q -p no:cacheprovider tests $(PYTEST_ARGS); rc=$$?; [ $$rc -eq 5 ] && rc=0; exit $$rc

bench: system-deps venv weights
	$(BIN)/python -m pip install -q -r benchmarks/requirements.txt
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

# 1, 4, 8, 16 concurrent /v1/realtime sessions of real speech with pauses (STREAM_BENCH_ARGS, e.g. --sessions 1,4;
# --peer whisperlive adds WhisperLive's rows, from its own venv made by peers-venv).
.PHONY: bench-stream
bench-stream: venv weights $(if $(findstring --peer,$(STREAM_BENCH_ARGS)),peers-venv)
	$(BIN)/python -m pip install -q -r benchmarks/requirements.txt
	$(BIN)/python -m benchmarks.streaming $(STREAM_BENCH_ARGS)

# The peer servers' venv (.venv-peers), apart from .venv: WhisperLive with --no-deps, the engine pinned as
# ours, and a CPU torch (its server imports torch; the faster_whisper path only asks it whether CUDA is
# there): a local CPU wheel when the machine has one, else PyTorch's CPU index.
PEER_VENV := .venv-peers
PEER_STAMP := $(PEER_VENV)/.installed-$(shell cat benchmarks/peers/requirements.txt | sha1sum | cut -c1-12)
PEER_TORCH ?= $(or $(firstword $(wildcard /opt/wheels/torch-*+cpu-cp311-*.whl)),torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu)
.PHONY: peers-venv
peers-venv: $(PEER_STAMP)
$(PEER_STAMP): benchmarks/peers/requirements.txt
	@test -x $(PEER_VENV)/bin/python || $(PYTHON) -m venv $(PEER_VENV)
	$(PEER_VENV)/bin/python -m pip install -q -r benchmarks/peers/requirements.txt
	$(PEER_VENV)/bin/python -m pip install -q $(PEER_TORCH)
	$(PEER_VENV)/bin/python -m pip install -q --no-deps whisper-live==0.10.0
	@rm -f $(PEER_VENV)/.installed-*; touch $@

# A normal 11 s upload's latency, idle and under the hostile load of issue 11 (slow uploads, fast streams,
# a control-token prompt), in one run; HOSTILE_ARGS (--requests, --ramp, --slow, --streams, --speed).
.PHONY: bench-hostile
bench-hostile: venv weights
	$(BIN)/python -m pip install -q -r benchmarks/requirements.txt
	$(BIN)/python -m benchmarks.hostile $(HOSTILE_ARGS)

# Durable jobs on PostgreSQL: jobs/minute with 1 and 3 gateway replicas, takeover after a kill, webhooks.
.PHONY: bench-jobs
bench-jobs: system-deps venv weights
	$(BIN)/python -m benchmarks.jobs $(JOBS_BENCH_ARGS)

# DER per number of speakers, speaker-count accuracy and the latency diarization adds (DIARIZE_BENCH_ARGS).
.PHONY: bench-diarize
bench-diarize: venv weights
	$(BIN)/python -m pip install -q -r benchmarks/requirements.txt
	$(BIN)/python -m benchmarks.diarization $(DIARIZE_BENCH_ARGS)

# Steady load for SOAK_ARGS (default 10 minutes) with the RSS of the gateway, tritonserver and each stub.
.PHONY: soak
soak: venv weights
	$(BIN)/python -m pip install -q -r benchmarks/requirements.txt
	$(BIN)/python -m benchmarks.soak $(SOAK_ARGS)

clean:
	rm -rf build $(VENV) $(PEER_VENV) .pytest_cache
