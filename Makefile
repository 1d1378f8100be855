# weft — build, test, sanitize, bench.
#   make            build/libweft.a, build/libweft.so, build/weft
#   make demo       build and run examples/pipeline.lua
#   make test       C tests of the core and the busted specs of the Lua API
#   make asan       the same tests under AddressSanitizer + UBSan
#   make tsan       the same tests under ThreadSanitizer
#   make soak       the long stress run
#   make bench      benchmarks against Go, side by side
#   make bench-results  the same, written to bench/RESULTS.md
#   make deps       install missing Debian packages (root) or print the command

CC      ?= cc
BUILD   ?= build
OPT     ?= -O2 -g
WARN    := -Wall -Wextra -Werror
CFLAGS  ?= $(OPT)
# Our own flags stay apart from CFLAGS, which a caller (luarocks) may set.
WEFT_CFLAGS := -std=c11 $(WARN) -D_GNU_SOURCE -fPIC -Iengine
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

ENGINE_SRC := engine/lock.c engine/pool.c engine/stack.c engine/ctx.c engine/runq.c engine/gfree.c engine/proc.c \
              engine/chan.c engine/select.c engine/timer.c engine/sema.c engine/atomic.c \
              engine/poll.c engine/diag.c engine/sysmon.c
ENGINE_OBJ := $(ENGINE_SRC:engine/%.c=$(BUILD)/obj/%.o) $(BUILD)/obj/ctx_asm.o
ENGINE_HDR := $(wildcard engine/*.h)

# The Lua binding: build/weft_core.so for luajit (LUA_CPATH='build/?.so;;'),
# and the same objects linked into the weft binary.
LUAJIT_CFLAGS ?= -I/usr/include/luajit-2.1
LUAJIT_LIBS   ?= -lluajit-5.1
BIND_SRC      := bindings/core.c bindings/host.c bindings/fast.c bindings/sync.c bindings/codec.c \
                 bindings/transfer.c bindings/context.c \
                 bindings/io.c bindings/diag.c bindings/shape.c bindings/tabkeys.c bindings/vmalloc.c \
                 bindings/yieldable.c
BIND_OBJ      := $(BIND_SRC:bindings/%.c=$(BUILD)/obj/bind_%.o) $(BIND_EXTRA)
BIND_HDR      := $(wildcard bindings/*.h)

CTEST_SRC  := $(wildcard spec/c/test_*.c)
CTEST_BIN  := $(BUILD)/spec/ctest

.PHONY: all install test ctest spec demo asan tsan soak bench deps deps-bench deps-san clean check-aarch64 fuzz-codec
all: $(BUILD)/libweft.a $(BUILD)/libweft.so $(BUILD)/weft_core.so $(BUILD)/weft \
     $(BUILD)/examples/c_pipeline $(BUILD)/examples/native_stage.so

deps:
	@bash scripts/deps.sh $(DEBIAN_PACKAGES)
deps-bench:
	@bash scripts/deps.sh $(BENCH_PACKAGES)
deps-san:
	@bash scripts/deps.sh $(SAN_PACKAGES)

$(BUILD)/obj/%.o: engine/%.c $(ENGINE_HDR) | $(BUILD)/obj
	$(CC) $(CFLAGS) $(WEFT_CFLAGS) -c $< -o $@
$(BUILD)/obj/ctx_asm.o: $(CTX_ASM) | $(BUILD)/obj
	$(CC) $(CFLAGS) $(WEFT_CFLAGS) -c $< -o $@
$(BUILD)/obj: | deps
	mkdir -p $@
$(BUILD)/spec:
	mkdir -p $@

$(BUILD)/libweft.a: $(ENGINE_OBJ)
	rm -f $@ && ar rcs $@ $^
$(BUILD)/libweft.so: $(ENGINE_OBJ)
	$(CC) -shared -o $@ $^ $(LDLIBS_ENGINE)
$(BUILD)/obj/bind_%.o: bindings/%.c $(BIND_HDR) $(ENGINE_HDR) | $(BUILD)/obj
	$(CC) $(CFLAGS) $(WEFT_CFLAGS) $(LUAJIT_CFLAGS) -Ibindings -c $< -o $@
$(BUILD)/weft_core.so: $(BIND_OBJ) $(ENGINE_OBJ)
	$(CC) -shared -o $@ $^ $(LDLIBS_ENGINE) -ldl
# -Wl,-E: C modules the script loads (lpeg, ...) find the Lua API in the binary.
$(BUILD)/weft: engine/main.c $(BIND_OBJ) $(BUILD)/libweft.a
	$(CC) $(CFLAGS) $(WEFT_CFLAGS) $(LUAJIT_CFLAGS) -Ibindings -DWEFT_LUA_DIR='"$(CURDIR)/lua"' -DWEFT_LUA_INSTALL_DIR='"$(LUADIR)"' -o $@ engine/main.c \
	  $(BIND_OBJ) $(BUILD)/libweft.a -Wl,-E $(LUAJIT_LIBS) $(LDLIBS_ENGINE) -ldl

$(BUILD)/examples/c_pipeline: examples/c_pipeline.c $(BUILD)/libweft.a engine/weft.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(WEFT_CFLAGS) -o $@ $< $(BUILD)/libweft.a $(LDLIBS_ENGINE)

# A C stage for Lua pipelines: its weft_* symbols come from the engine that
# loads it (the weft binary, or weft_core.so).
$(BUILD)/examples/native_stage.so: examples/native_stage/checksum.c engine/weft.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(WEFT_CFLAGS) -shared -o $@ $<

$(CTEST_BIN): $(CTEST_SRC) spec/c/ctest.h spec/c/ctest_main.c $(BUILD)/libweft.a | $(BUILD)/spec
	$(CC) $(CFLAGS) $(WEFT_CFLAGS) -Ispec/c -o $@ spec/c/ctest_main.c $(CTEST_SRC) $(BUILD)/libweft.a $(LDLIBS_ENGINE)
$(BUILD)/spec/ctx_check: spec/c/ctx_check.c engine/ctx.c $(CTX_ASM) engine/ctx.h | $(BUILD)/spec
	$(CC) $(CFLAGS) $(WEFT_CFLAGS) -o $@ spec/c/ctx_check.c engine/ctx.c $(CTX_ASM) $(LDLIBS_ENGINE)

# The value codec of the Lua layer (bindings/codec.c), the packed values
# built on it (bindings/transfer.c), and their tests.
CODEC_SRC  := bindings/codec.c bindings/codec.h engine/weft.h engine/pool.c engine/lock.c
TRANSFER_SRC := bindings/transfer.c bindings/transfer.h
$(BUILD)/spec/codec_test: spec/c/codec_test.c spec/c/codec_deepeq.h spec/c/tally.h $(CODEC_SRC) $(TRANSFER_SRC) | $(BUILD)/spec
	$(CC) $(CFLAGS) $(WEFT_CFLAGS) $(LUAJIT_CFLAGS) -Iengine -Ibindings -o $@ spec/c/codec_test.c bindings/codec.c \
	  bindings/transfer.c engine/pool.c engine/lock.c \
	  $(LUAJIT_LIBS) -lpthread -lm

# The Lua VMs' allocator (bindings/vmalloc.c), alone and under LuaJIT.
$(BUILD)/spec/vmalloc_test: spec/c/vmalloc_test.c spec/c/tally.h bindings/vmalloc.c bindings/vmalloc.h | $(BUILD)/spec
	$(CC) $(CFLAGS) $(WEFT_CFLAGS) $(LUAJIT_CFLAGS) -Ibindings -o $@ spec/c/vmalloc_test.c bindings/vmalloc.c \
	  $(LUAJIT_LIBS) -lm

ctest: $(CTEST_BIN) $(BUILD)/spec/ctx_check $(BUILD)/spec/codec_test $(BUILD)/spec/vmalloc_test
	$(BUILD)/spec/ctx_check
	$(BUILD)/spec/codec_test
	$(BUILD)/spec/vmalloc_test
	$(CTEST_BIN) $(CTEST_ARGS)

# libFuzzer on the codec: decodes raw bytes, and round-trips values built
# from the bytes. Findings and the corpus stay in build/fuzz.
FUZZ_SECONDS ?= 60
$(BUILD)/fuzz/codec_fuzz: spec/c/codec_fuzz.c spec/c/codec_deepeq.h $(CODEC_SRC) | deps-san
	@mkdir -p $(@D)
	clang -O1 -g -std=c11 -D_GNU_SOURCE $(WARN) -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	  $(LUAJIT_CFLAGS) -Iengine -Ibindings -o $@ spec/c/codec_fuzz.c bindings/codec.c \
	  engine/pool.c engine/lock.c $(LUAJIT_LIBS) -lpthread -lm
fuzz-codec: $(BUILD)/fuzz/codec_fuzz
	@mkdir -p $(BUILD)/fuzz/corpus $(BUILD)/fuzz/crashes
	$(BUILD)/fuzz/codec_fuzz -max_total_time=$(FUZZ_SECONDS) -max_len=4096 -rss_limit_mb=4096 \
	  -artifact_prefix=$(BUILD)/fuzz/crashes/ $(BUILD)/fuzz/corpus

# The Lua specs (spec/*_spec.lua) under LuaJIT, configured by .busted.
spec: $(BUILD)/weft_core.so
	busted --lua=luajit --cpath='$(BUILD)/?.so'

test: all ctest spec

# Builds and runs the demo pipeline (installing missing Debian packages first).
demo: all
	$(BUILD)/weft examples/pipeline.lua

# Sanitizer builds live in their own build directories.
asan: deps-san all
	$(MAKE) BUILD=build/asan CC=clang OPT="-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined" \
	  LDLIBS_ENGINE="-fsanitize=address,undefined -lev -lpthread -lm" ctest build/asan/weft_core.so
	@# The Lua specs with the binding (and engine) built with ASAN+UBSan,
	@# LuaJIT itself running with the ASAN runtime preloaded.
	LD_PRELOAD="$$(clang -print-file-name=libclang_rt.asan-$$(uname -m).so)" ASAN_OPTIONS=detect_leaks=0 \
	  busted --lua=luajit --cpath='build/asan/?.so' spec/weft_spec.lua spec/spawn_spec.lua spec/transfer_spec.lua \
	  spec/context_spec.lua spec/errgroup_spec.lua spec/sync_spec.lua spec/net_spec.lua spec/diag_spec.lua \
	  spec/shape_spec.lua
	LD_PRELOAD="$$(clang -print-file-name=libclang_rt.asan-$$(uname -m).so)" ASAN_OPTIONS=detect_leaks=1 \
	  LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='build/asan/?.so;;' luajit spec/leaks.lua
tsan: deps-san
	$(MAKE) BUILD=build/tsan CC=clang OPT="-O1 -g -fsanitize=thread" \
	  LDLIBS_ENGINE="-fsanitize=thread -lev -lpthread -lm" ctest

soak: $(CTEST_BIN)
	WEFT_SOAK=1 $(CTEST_BIN) stress

check-aarch64:
	bash spec/c/ctx_cross.sh

# Installation (also what `luarocks make` runs, with its own directories).
PREFIX ?= /usr/local
LUADIR ?= $(PREFIX)/share/lua/5.1
LIBDIR ?= $(PREFIX)/lib/lua/5.1
BINDIR ?= $(PREFIX)/bin
install: all
	install -d $(DESTDIR)$(LUADIR)/weft $(DESTDIR)$(LIBDIR) $(DESTDIR)$(BINDIR)
	install -m 644 lua/weft/*.lua $(DESTDIR)$(LUADIR)/weft/
	install -m 755 $(BUILD)/weft_core.so $(DESTDIR)$(LIBDIR)/
	install -m 755 $(BUILD)/weft $(DESTDIR)$(BINDIR)/

-include bench/bench.mk

clean:
	rm -rf $(BUILD)
