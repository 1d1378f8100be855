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

DEBIAN_PACKAGES := luajit libluajit-5.1-dev libev-dev lua-lpeg lua-busted luarocks
DEBIAN_CHECK    := /usr/include/ev.h /usr/include/luajit-2.1/lua.h /usr/bin/luajit /usr/bin/busted

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

.PHONY: all test ctest asan tsan soak bench deps clean check-aarch64
all: $(BUILD)/libweft.a $(BUILD)/libweft.so $(BUILD)/weft

deps:
	@missing=""; for f in $(DEBIAN_CHECK); do [ -e $$f ] || missing=yes; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing: $(DEBIAN_PACKAGES)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEBIAN_PACKAGES); \
	  else \
	    echo "missing Debian packages; run: sudo apt-get install -y $(DEBIAN_PACKAGES)"; exit 1; \
	  fi; \
	fi

$(BUILD)/obj/%.o: engine/%.c $(ENGINE_HDR) | $(BUILD)/obj
	$(CC) $(CFLAGS) -c $< -o $@
$(BUILD)/obj/ctx_asm.o: $(CTX_ASM) | $(BUILD)/obj
	$(CC) $(CFLAGS) -c $< -o $@
$(BUILD)/obj $(BUILD)/spec:
	mkdir -p $@

$(BUILD)/libweft.a: $(ENGINE_OBJ)
	rm -f $@ && ar rcs $@ $^
$(BUILD)/libweft.so: $(ENGINE_OBJ)
	$(CC) -shared -o $@ $^ $(LDLIBS_ENGINE)
$(BUILD)/weft: engine/main.c $(BUILD)/libweft.a
	$(CC) $(CFLAGS) -o $@ engine/main.c $(BUILD)/libweft.a $(LDLIBS_ENGINE)

$(CTEST_BIN): $(CTEST_SRC) spec/c/ctest.h spec/c/ctest_main.c $(BUILD)/libweft.a | $(BUILD)/spec
	$(CC) $(CFLAGS) -Ispec/c -o $@ spec/c/ctest_main.c $(CTEST_SRC) $(BUILD)/libweft.a $(LDLIBS_ENGINE)
$(BUILD)/spec/ctx_check: spec/c/ctx_check.c engine/ctx.c $(CTX_ASM) engine/ctx.h | $(BUILD)/spec
	$(CC) $(CFLAGS) -o $@ spec/c/ctx_check.c engine/ctx.c $(CTX_ASM) $(LDLIBS_ENGINE)

ctest: $(CTEST_BIN) $(BUILD)/spec/ctx_check
	$(BUILD)/spec/ctx_check
	$(CTEST_BIN) $(CTEST_ARGS)

test: all ctest

# Sanitizer builds live in their own build directories.
asan:
	$(MAKE) BUILD=build/asan CC=clang OPT="-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined" \
	  LDLIBS_ENGINE="-fsanitize=address,undefined -lev -lpthread -lm" ctest
tsan:
	$(MAKE) BUILD=build/tsan CC=clang OPT="-O1 -g -fsanitize=thread" \
	  LDLIBS_ENGINE="-fsanitize=thread -lev -lpthread -lm" ctest

soak: $(CTEST_BIN)
	WEFT_SOAK=1 $(CTEST_BIN) stress

check-aarch64:
	bash spec/c/ctx_cross.sh

-include bench/bench.mk

clean:
	rm -rf $(BUILD)
