# mk/bench-sink.mk - the sink benchmark (bench/sink.c).
#
#   make bench-sink          100,000 objects in 1000 chunks into SQLite and
#                            into PostgreSQL (both batch methods), 3 runs
#                            each; writes bench/results/sink.csv
#   make bench-sink BENCH_SINK_ARGS=--fsync-off
#                            adds PostgreSQL runs with fsync=off (labelled)
#
# It links sluice's objects and the tests' throwaway-cluster module
# (tests/pg.c), as build/sluice-test does; neither ends up in build/sluice.

BENCH_SINK_ARGS ?=

$(BUILD)/bench-sink: bench/sink.c $(BUILD)/obj/tests/pg.o $(OBJ)
	$(CC) $(WARN) $(CFLAGS) $(DEPCFLAGS) -Isrc -Itests $< $(BUILD)/obj/tests/pg.o $(OBJ) -o $@ $(DEPLIBS)

bench-sink: test-deps
	$(MAKE) --no-print-directory $(BUILD)/bench-sink
	$(BUILD)/bench-sink $(BENCH_SINK_ARGS)

.PHONY: bench-sink
