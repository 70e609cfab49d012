# sluice - `make` builds build/sluice; `make run` runs the reference job;
# `make test` runs the whole suite. run and test install what is missing
# first (Debian packages, as root).

CC      ?= cc
BUILD   ?= build
# Compiling is spread over the machine's cores (the tests themselves run
# one at a time: many of them measure time).
JOBS    ?= $(shell nproc 2>/dev/null || echo 2)
PKGS    := libnats jansson sqlite3 libmicrohttpd libcurl libpq zlib
CFLAGS  ?= -O2 -g
WARN    := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wformat=2 \
           -Wshadow -Wstrict-prototypes -Wmissing-prototypes
DEPCFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
DEPLIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null) -ljq -lpthread -lm

# Debian packages that building and running need (the Dockerfile's build
# stage installs the same; tests/test_docker.c checks it) ...
DEBS := build-essential pkg-config nats-server libnats-dev libjansson-dev \
        libsqlite3-dev libmicrohttpd-dev libcurl4-openssl-dev libpq-dev zlib1g-dev \
        libjq-dev
# ... and those only the tests need: Prometheus and promtool, PyYAML for the
# Helm values, valgrind, clang and libFuzzer, PostgreSQL (a throwaway
# cluster per test), gnuplot for the benchmark chart.
TEST_DEBS := prometheus python3-yaml valgrind clang libclang-rt-dev openssl postgresql \
             gnuplot-nox
# Tools a test needs that may come from elsewhere than Debian (a newer
# Node.js); Debian's package is installed only when the command is missing.
TOOLS := node:nodejs npm:npm

SRC      := $(filter-out src/main.c,$(wildcard src/*.c))
TESTSRC  := $(wildcard tests/*.c)
# deploy/prometheus's files, linked into the binary for `sluice run --monitor`.
ASSETS   := deploy/prometheus/prometheus.yml deploy/prometheus/rules.yml
OBJ      := $(SRC:src/%.c=$(BUILD)/obj/%.o) $(ASSETS:%=$(BUILD)/obj/assets/%.o)
MAINOBJ  := $(BUILD)/obj/main.o
TESTOBJ  := $(TESTSRC:tests/%.c=$(BUILD)/obj/tests/%.o)

all: $(BUILD)/sluice

$(BUILD)/obj/%.o: src/%.c
	@mkdir -p $(dir $@)
	$(CC) $(WARN) $(CFLAGS) $(DEPCFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/obj/assets/%.o: %
	@mkdir -p $(dir $@)
	ld -r -b binary -z noexecstack -o $@ $<

$(BUILD)/obj/tests/%.o: tests/%.c
	@mkdir -p $(dir $@)
	$(CC) $(WARN) $(CFLAGS) $(DEPCFLAGS) -Isrc -MMD -MP -c $< -o $@

$(BUILD)/sluice: $(OBJ) $(MAINOBJ)
	$(CC) $(CFLAGS) $^ -o $@ $(DEPLIBS)

$(BUILD)/sluice-test: $(OBJ) $(TESTOBJ)
	$(CC) $(CFLAGS) $^ -o $@ $(DEPLIBS)

-include $(filter-out $(BUILD)/obj/assets/%,$(OBJ:.o=.d)) $(MAINOBJ:.o=.d) $(TESTOBJ:.o=.d)

# Installs the Debian packages that are missing; does nothing when all are
# there, so it needs root (and apt) only on a machine that never saw sluice.
# `deps` is what building and running need; `test-deps` adds the tests'.
define install_missing
	@missing=$$(for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done; \
	  for t in $(2); do command -v $${t%%:*} >/dev/null 2>&1 || echo $${t#*:}; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing:" $$missing; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
endef

deps:
	$(call install_missing,$(DEBS),)

test-deps:
	$(call install_missing,$(DEBS) $(TEST_DEBS),$(TOOLS))

# The reference job: 100,000 generated users through the pipeline into
# sluice.db, starting over each time (--fresh).
run: deps
	$(MAKE) --no-print-directory -j$(JOBS) all
	$(BUILD)/sluice run --fresh

# The whole suite and, beside it, the suite again under AddressSanitizer +
# UBSan; then the Kubernetes manifests' tests beside a few seconds of each
# fuzz target (mk/fuzz.mk). Two at a time: the suites spend much of their
# time waiting on the servers and processes they start (one after the
# other, 9.4 minutes on a clean clone of a 2-core machine), and each test
# already chooses its own ports and directories. -O keeps each part's
# output together, printed when it ends.
test: test-deps
	$(MAKE) --no-print-directory -j2 -O test-plain test-asan
	$(MAKE) --no-print-directory -j2 -O test-k8s fuzz-smoke

# deploy/k8s rendered, validated against the API schemas, and its commands
# run against a local nats-server (tests/k8s, Node.js).
test-k8s: test-deps $(BUILD)/sluice
	SLUICE_BIN=$(abspath $(BUILD)/sluice) bash tests/k8s/run.sh

test-plain: test-deps
	$(MAKE) --no-print-directory -j$(JOBS) $(BUILD)/sluice $(BUILD)/sluice-test
	SLUICE_BIN=$(abspath $(BUILD)/sluice) SLUICE_SRCDIR=$(CURDIR) $(BUILD)/sluice-test $(T)

# The suite built with -fsanitize=address,undefined, in build-asan/.
test-asan: test-deps
	$(MAKE) --no-print-directory -j$(JOBS) BUILD=build-asan \
	  CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" \
	  build-asan/sluice build-asan/sluice-test
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 SLUICE_TEST_SANITIZED=1 \
	  SLUICE_BIN=$(abspath build-asan/sluice) SLUICE_SRCDIR=$(CURDIR) build-asan/sluice-test $(T)

# Targets of their own (fuzzing, chaos) live in mk/*.mk.
-include mk/*.mk

clean:
	rm -rf build build-asan build-fuzz

.PHONY: all deps test-deps run test test-plain test-k8s test-asan clean
