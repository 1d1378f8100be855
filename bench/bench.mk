# bench/bench.mk — benchmark targets; included by the top-level Makefile.
#
#   make bench-c   builds bench/c/<name>.c into $(BUILD)/bench/<name>
#   make bench     bench-c, then bash bench/run.sh (builds the Go twins and
#                  runs bench/benchmarks.txt; see that script for BENCH_RUNS,
#                  BENCH_PROCS, BENCH_TIMEOUT, BENCH_ONLY)
#   make bench-results   the same run, then writes bench/RESULTS.md from it
#                  and the notes in bench/bounds.md (bench/results.sh)
#
# Uses CC, CFLAGS, LDFLAGS and LDLIBS_ENGINE; the rules for $(BUILD)/libweft.a
# and $(BUILD)/weft come from the top-level Makefile. Set BUILD (if not "build") before the
# include: the target names are computed when this file is read. The Go
# twins are built by run.sh, not here (go build does its own dependency
# tracking; its caches go under $(BUILD)/go). Defines no all/test/clean and
# leaves the default goal alone.

# Keep whatever default goal the including Makefile has (or has not yet) set.
bench_saved_default_goal := $(.DEFAULT_GOAL)

BUILD ?= build
CFLAGS ?= -std=c11 -O2 -Wall -Wextra -Werror -Iengine
LDLIBS_ENGINE ?= -lev -lpthread -lm
WEFT_LIB ?= $(BUILD)/libweft.a

BENCH_C_SRCS := $(wildcard bench/c/*.c)
BENCH_C_HDRS := $(wildcard bench/c/*.h)
BENCH_C_BINS := $(patsubst bench/c/%.c,$(BUILD)/bench/%,$(BENCH_C_SRCS))

.PHONY: bench-c bench bench-results

bench-c: $(BENCH_C_BINS)

$(BENCH_C_BINS): $(BUILD)/bench/%: bench/c/%.c $(BENCH_C_HDRS) engine/weft.h $(WEFT_LIB)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(WEFT_CFLAGS) -o $@ $< $(WEFT_LIB) $(LDFLAGS) $(LDLIBS_ENGINE)

bench: deps-bench bench-c $(BUILD)/weft
	BUILD='$(BUILD)' bash bench/run.sh

bench-results: deps-bench bench-c $(BUILD)/weft
	BUILD='$(BUILD)' bash bench/results.sh

.DEFAULT_GOAL := $(bench_saved_default_goal)
