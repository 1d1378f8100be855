# weft — build, test, sanitize, bench.
#   make            build/libweft.a, build/libweft.so, build/weft
#   make test       C tests of the core (and, once present, the busted specs)
#   make asan       the same tests under AddressSanitizer + UBSan
#   make tsan       the same tests under ThreadSanitizer
#   make soak       the long stress run
#   make bench      benchmarks against Go, side by side
#   make deps       install missing Debian packages (root) or print the command

CC      ?= cc
BUILD   ?= build
OPT     ?= -O2 -g
WARN    := -Wall -Wextra -Werror
CFLAGS  ?= $(OPT)
CFLAGS  += -std=c11 $(WARN) -D_GNU_SOURCE -fPIC -Iengine
LDLIBS_ENGINE ?= -lev -lpthread -lm

# Everything comes from Debian packages; `make deps` (run by the build)
# installs what is missing when root, else prints the apt-get command.
DEBIAN_PACKAGES := build-essential libev-dev luajit libluajit-5.1-dev lua-lpeg lua-busted luarocks
BENCH_PACKAGES  := golang-go
SAN_PACKAGES    := clang libclang-rt-dev

ARCH := $(shell uname -m)
ifeq ($(ARCH),aarch64)
CTX_ASM := engine/ctx_aarch64.S
else
CTX_ASM := engine/ctx_x86_64.S
endif

ENGINE_SRC := engine/lock.c engine/stack.c engine/ctx.c engine/runq.c engine/proc.c \
              engine/chan.c engine/select.c engine/timer.c
ENGINE_OBJ := $(ENGINE_SRC:engine/%.c=$(BUILD)/obj/%.o) $(BUILD)/obj/ctx_asm.o
ENGINE_HDR := $(wildcard engine/*.h)

CTEST_SRC  := $(wildcard spec/c/test_*.c)
CTEST_BIN  := $(BUILD)/spec/ctest

.PHONY: all test ctest asan tsan soak bench deps deps-bench deps-san clean check-aarch64
all: $(BUILD)/libweft.a $(BUILD)/libweft.so $(BUILD)/weft $(BUILD)/examples/c_pipeline

deps:
	@bash scripts/deps.sh $(DEBIAN_PACKAGES)
deps-bench:
	@bash scripts/deps.sh $(BENCH_PACKAGES)
deps-san:
	@bash scripts/deps.sh $(SAN_PACKAGES)

$(BUILD)/obj/%.o: engine/%.c $(ENGINE_HDR) | $(BUILD)/obj
	$(CC) $(CFLAGS) -c $< -o $@
$(BUILD)/obj/ctx_asm.o: $(CTX_ASM) | $(BUILD)/obj
	$(CC) $(CFLAGS) -c $< -o $@
$(BUILD)/obj: | deps
	mkdir -p $@
$(BUILD)/spec:
	mkdir -p $@

$(BUILD)/libweft.a: $(ENGINE_OBJ)
	rm -f $@ && ar rcs $@ $^
$(BUILD)/libweft.so: $(ENGINE_OBJ)
	$(CC) -shared -o $@ $^ $(LDLIBS_ENGINE)
$(BUILD)/weft: engine/main.c $(BUILD)/libweft.a
	$(CC) $(CFLAGS) -o $@ engine/main.c $(BUILD)/libweft.a $(LDLIBS_ENGINE)

$(BUILD)/examples/c_pipeline: examples/c_pipeline.c $(BUILD)/libweft.a engine/weft.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libweft.a $(LDLIBS_ENGINE)

$(CTEST_BIN): $(CTEST_SRC) spec/c/ctest.h spec/c/ctest_main.c $(BUILD)/libweft.a | $(BUILD)/spec
	$(CC) $(CFLAGS) -Ispec/c -o $@ spec/c/ctest_main.c $(CTEST_SRC) $(BUILD)/libweft.a $(LDLIBS_ENGINE)
$(BUILD)/spec/ctx_check: spec/c/ctx_check.c engine/ctx.c $(CTX_ASM) engine/ctx.h | $(BUILD)/spec
	$(CC) $(CFLAGS) -o $@ spec/c/ctx_check.c engine/ctx.c $(CTX_ASM) $(LDLIBS_ENGINE)

ctest: $(CTEST_BIN) $(BUILD)/spec/ctx_check
	$(BUILD)/spec/ctx_check
	$(CTEST_BIN) $(CTEST_ARGS)

test: all ctest

# Sanitizer builds live in their own build directories.
asan: deps-san
	$(MAKE) BUILD=build/asan CC=clang OPT="-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined" \
	  LDLIBS_ENGINE="-fsanitize=address,undefined -lev -lpthread -lm" ctest
tsan: deps-san
	$(MAKE) BUILD=build/tsan CC=clang OPT="-O1 -g -fsanitize=thread" \
	  LDLIBS_ENGINE="-fsanitize=thread -lev -lpthread -lm" ctest

soak: $(CTEST_BIN)
	WEFT_SOAK=1 $(CTEST_BIN) stress

check-aarch64:
	bash spec/c/ctx_cross.sh

-include bench/bench.mk

clean:
	rm -rf $(BUILD)
