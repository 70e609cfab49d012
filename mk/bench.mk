# mk/bench.mk - `make bench`: issue 7's benchmark suite (bench/run.sh).
#
#   make bench         overhead of `sluice run` against build/bench-limit (the
#                      same work in one process, no NATS), dispatch latency
#                      (in a running job, and alone: build/bench-dispatch),
#                      recovery after a mapper's SIGTERM/SIGKILL, scaling over
#                      1-50 mappers; a few minutes
#   make bench-large   the 10,000,000-object job with every process's RSS
#                      sampled (not in CI; BENCH_LARGE_OBJECTS=N for another size)
#
# Each prints a table of figures with their targets and writes
# bench/results/*.csv and bench/results/scaling.png. A missed target is
# reported, not an error; only a benchmark that could not run fails.

BENCH_DEBS := gnuplot-nox

$(BUILD)/obj/bench/%.o: bench/%.c
	@mkdir -p $(dir $@)
	$(CC) $(WARN) $(CFLAGS) $(DEPCFLAGS) -Isrc -MMD -MP -c $< -o $@

$(BUILD)/bench-limit: $(OBJ) $(BUILD)/obj/bench/limit.o
	$(CC) $(CFLAGS) $^ -o $@ $(DEPLIBS)

$(BUILD)/bench-dispatch: $(OBJ) $(BUILD)/obj/bench/dispatch.o
	$(CC) $(CFLAGS) $^ -o $@ $(DEPLIBS)

-include $(BUILD)/obj/bench/limit.d $(BUILD)/obj/bench/dispatch.d

bench-deps:
	$(call install_missing,$(DEBS) $(BENCH_DEBS),)

bench: bench-deps
	$(MAKE) --no-print-directory $(BUILD)/sluice $(BUILD)/bench-limit $(BUILD)/bench-dispatch
	SLUICE_BIN=$(abspath $(BUILD)/sluice) BENCH_LIMIT=$(abspath $(BUILD)/bench-limit) \
	  BENCH_DISPATCH=$(abspath $(BUILD)/bench-dispatch) bash bench/run.sh

bench-large: bench-deps
	$(MAKE) --no-print-directory $(BUILD)/sluice
	SLUICE_BIN=$(abspath $(BUILD)/sluice) bash bench/run.sh --large

.PHONY: bench bench-large bench-deps
