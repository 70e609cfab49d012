# mk/chaos.mk - `make chaos`: the long chaos harness (tests/chaos/).
#
# build/sluice-chaos links the test harness (harness.o, pipeline.o) and the
# chaos engine of tests/test_chaos.c with a main of its own, so the long run
# and the short test in `make test` share one engine. It runs a job of
# 100,000 objects undisturbed, then again under a seeded schedule of
# SIGKILLs, and checks every row. Seed: make chaos CHAOS_SEED=N (printed by
# every run); more flags: make chaos CHAOS_ARGS="--objects 200000 --quiet".

CHAOS_OBJ := $(BUILD)/obj/tests/harness.o $(BUILD)/obj/tests/pipeline.o \
             $(BUILD)/obj/tests/test_chaos.o $(BUILD)/obj/tests/chaos/main.o

$(BUILD)/sluice-chaos: $(OBJ) $(CHAOS_OBJ)
	$(CC) $(CFLAGS) $^ -o $@ $(DEPLIBS)

-include $(BUILD)/obj/tests/chaos/main.d

chaos: deps
	$(MAKE) --no-print-directory $(BUILD)/sluice $(BUILD)/sluice-chaos
	SLUICE_BIN=$(abspath $(BUILD)/sluice) $(BUILD)/sluice-chaos \
	  $(if $(CHAOS_SEED),--seed $(CHAOS_SEED)) $(CHAOS_ARGS)

.PHONY: chaos
