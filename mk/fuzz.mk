# mk/fuzz.mk - fuzzing (libFuzzer, tests/fuzz/) and memcheck (valgrind).
#
#   make fuzz-smoke              every fuzz target for FUZZ_SMOKE_S (5) seconds
#   make fuzz                    every fuzz target for FUZZ_S (60) seconds
#   make fuzz FUZZ_TARGETS=fuzz_chunk FUZZ_S=600
#   make valgrind                a small job, every role under memcheck
#                                (the test valgrind_small_job, which make
#                                test also runs; suppressions: tests/valgrind.supp)
#
# The targets and sluice's objects are built with clang in build-fuzz/, by a
# second make on the Makefile's own rules (BUILD=build-fuzz), so src/ is
# compiled as for the product, only with clang and the fuzzer's sanitizers.
# Each target starts from its seed corpus, tests/fuzz/corpus/<target>/
# (committed), and grows a working corpus in build-fuzz/corpus/<target>/
# (not committed). A crash, leak, sanitizer report or violated property
# stops that target, leaves the input in build-fuzz/artifacts/, and makes
# the whole make fail once every target has had its turn.

FUZZ_BUILD   := build-fuzz
FUZZ_CC      := clang
FUZZ_CFLAGS  := -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined \
                -fno-sanitize-recover=all
# clang's -Wformat=2 also means -Wformat-nonliteral, which gcc does not apply
# to a va_list wrapper: sl_buf_vprintf (src/buf.c) has no format attribute.
FUZZ_WARN    := $(WARN) -Wno-format-nonliteral
FUZZ_TARGETS ?= $(notdir $(basename $(wildcard tests/fuzz/fuzz_*.c)))
FUZZ_SMOKE_S ?= 5
FUZZ_S       ?= 60
# Debian packages: clang and its libFuzzer runtime; valgrind.
FUZZ_DEBS    := clang libclang-rt-dev
VALGRIND_DEBS := valgrind

# Inside the second make (BUILD=build-fuzz): link one target against the
# clang-built objects.
ifeq ($(BUILD),$(FUZZ_BUILD))
$(FUZZ_BUILD)/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz.h $(OBJ)
	$(CC) $(WARN) $(CFLAGS) $(DEPCFLAGS) -Isrc -fsanitize=fuzzer $< $(OBJ) -o $@ $(DEPLIBS)
endif

fuzz-deps valgrind-deps: DEBS_NEEDED = $(if $(filter fuzz-deps,$@),$(FUZZ_DEBS),$(VALGRIND_DEBS))
fuzz-deps valgrind-deps:
	@missing=$$(for p in $(DEBS_NEEDED); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing:" $$missing; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

fuzz-build: deps fuzz-deps
	$(MAKE) --no-print-directory -j$(JOBS) BUILD=$(FUZZ_BUILD) CC=$(FUZZ_CC) CFLAGS="$(FUZZ_CFLAGS)" \
	  WARN="$(FUZZ_WARN)" $(FUZZ_TARGETS:%=$(FUZZ_BUILD)/%)

# Runs every target for $(1) seconds; prints one summary line per target
# (executions per second, coverage, corpus) and fails if any target did.
define fuzz_run
	@mkdir -p $(FUZZ_BUILD)/artifacts $(FUZZ_BUILD)/logs; failed=""; \
	for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(FUZZ_BUILD)/corpus/$$t; \
	  log=$(FUZZ_BUILD)/logs/$$t.log; \
	  if $(FUZZ_BUILD)/$$t -max_total_time=$(1) -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
	       -artifact_prefix=$(FUZZ_BUILD)/artifacts/$$t- \
	       $(FUZZ_BUILD)/corpus/$$t tests/fuzz/corpus/$$t >$$log 2>&1; then r=ok; \
	  else r=FAILED; failed="$$failed $$t"; fi; \
	  done_line=$$(grep -E '^#[0-9]+[[:space:]]+DONE' $$log | tail -1); \
	  eps=$$(sed -n 's/^stat::average_exec_per_sec: *//p' $$log); \
	  printf '%-6s %-16s %6s exec/s  %s\n' $$r $$t "$${eps:-?}" "$${done_line:-see $$log}"; \
	  if [ $$r = FAILED ]; then tail -40 $$log; fi; \
	done; \
	if [ -n "$$failed" ]; then echo "fuzz: failed:$$failed (inputs in $(FUZZ_BUILD)/artifacts/)"; exit 1; fi
endef

fuzz-smoke: fuzz-build
	$(call fuzz_run,$(FUZZ_SMOKE_S))

fuzz: fuzz-build
	$(call fuzz_run,$(FUZZ_S))

# A small job with the fetcher, a mapper, a saver and `sluice status` each
# under valgrind's memcheck (nats-server is not): the test
# valgrind_small_job in tests/test_hostile.c, on the plain build.
valgrind: deps valgrind-deps
	$(MAKE) --no-print-directory $(BUILD)/sluice $(BUILD)/sluice-test
	SLUICE_BIN=$(abspath $(BUILD)/sluice) SLUICE_SRCDIR=$(CURDIR) $(BUILD)/sluice-test valgrind_small_job

.PHONY: fuzz fuzz-smoke fuzz-build fuzz-deps valgrind valgrind-deps
