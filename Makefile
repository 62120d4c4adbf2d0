# kvpub: one Makefile, out-of-tree builds into $(BUILD) (default build/).
# Sources are discovered by folder, so adding a file to a module needs no edit here:
#   <module>/*.c <module>/*/*.c -> $(BUILD)/lib<module>.a (kvpub fetch store format crypto
#                           engine base; engine/'s gguf/ tok/ kernels/ build into $(BUILD)/obj/engine/<sub>/)
#   kvpubd/*.c kvfetch/*.c kvsynth/*.c -> $(BUILD)/<tool>
#   tests/unit/test_*.c   -> $(BUILD)/tests/test_*      (cmocka, one binary per file)
#   tests/cli/*.sh        -> run by scripts/run-tests.sh with BUILD set
#   tests/extra/*.sh      -> their own targets (test-llama-server), outside make test
#   bench/*.c             -> $(BUILD)/bench/*
#   fuzz/fuzz_*.c         -> build-fuzz/fuzz/fuzz_*     (clang libFuzzer; kvpubd's parsers from
#                            build-fuzz/libkvpubd_parse.a)

BUILD   ?= build
CC      ?= cc
PREFIX  ?= /usr/local
OPT     ?= -O2
SAN     ?=

PKGS    := libmicrohttpd jansson libzstd libcurl sqlite3 libcrypto gnutls
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

WARN    := -Wall -Wextra -Wshadow -Wvla -Wformat=2 -Wmissing-prototypes \
           -Wstrict-prototypes -Wno-unused-parameter -Werror
CFLAGS  ?= $(OPT) -g
ALL_CFLAGS := -std=c11 -D_GNU_SOURCE -pthread $(WARN) $(CFLAGS) $(SAN) -I. $(PKG_CFLAGS) -MMD -MP
LDLIBS  := $(PKG_LIBS) -lpthread -lm
# intel-ipsec-mb (x86-64 only): multi-buffer SHA-256 for the chunk digest; OpenSSL otherwise
ifneq ($(wildcard /usr/include/intel-ipsec-mb.h),)
ALL_CFLAGS += -DKVC_IPSEC_MB
LDLIBS  += -lIPSec_MB
endif

# link order: a library before those it uses; base (libc + pthread only) is under all of them
MODULES := kvpub fetch store format crypto engine base
TOOLS   := kvpubd kvfetch kvsynth

mod_srcs = $(wildcard $(1)/*.c $(1)/*/*.c)
mod_objs = $(patsubst %.c,$(BUILD)/obj/%.o,$(call mod_srcs,$(1)))
LIBS    := $(foreach m,$(MODULES),$(BUILD)/lib$(m).a)

TEST_SRCS  := $(wildcard tests/unit/test_*.c)
TEST_BINS  := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(TEST_SRCS))
TEST_HELP  := $(patsubst %.c,$(BUILD)/obj/%.o,$(filter-out $(TEST_SRCS),$(wildcard tests/unit/*.c)))
BENCH_SRCS := $(wildcard bench/*.c)
BENCH_BINS := $(patsubst bench/%.c,$(BUILD)/bench/%,$(BENCH_SRCS))
FUZZ_SRCS  := $(wildcard fuzz/fuzz_*.c)

.PHONY: all deps test test-llama-server check check-asan check-clang bench demo fuzz fuzz-build fuzz-replay install clean
all: $(foreach t,$(TOOLS),$(BUILD)/$(t))

deps:
	@scripts/deps.sh

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

define module_rule
$(BUILD)/lib$(1).a: $(call mod_objs,$(1))
	@mkdir -p $$(dir $$@)
	rm -f $$@ && ar rcs $$@ $$^
endef
$(foreach m,$(MODULES),$(eval $(call module_rule,$(m))))

define tool_rule
$(BUILD)/$(1): $(call mod_objs,$(1)) $(LIBS)
	$$(CC) $$(ALL_CFLAGS) -o $$@ $(call mod_objs,$(1)) $(LIBS) $$(LDLIBS)
endef
$(foreach t,$(TOOLS),$(eval $(call tool_rule,$(t))))

$(BUILD)/tests/%: $(BUILD)/obj/tests/unit/%.o $(TEST_HELP) $(LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(TEST_HELP) $(LIBS) $(LDLIBS) -lcmocka

$(BUILD)/bench/%: $(BUILD)/obj/bench/%.o $(LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(LIBS) $(LDLIBS)

test: deps
	@$(MAKE) --no-print-directory all $(TEST_BINS)
	@BUILD=$(BUILD) scripts/run-tests.sh

# The README's llama-server steps against the pinned llama.cpp's own server: not in test, as it
# builds llama-server first (minutes on 2 cores; then cached in $(BUILD)/llamacpp/server/)
test-llama-server: deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) KVPUB_SHARED=$${KVPUB_SHARED:-$$(cd .. && pwd)/shared} bash tests/extra/llama_server_restore.sh

# What CI runs (.ci/run): the tests, the same tests under the sanitizers, the fuzz replay, and
# the llama-server test.
check: test check-asan fuzz-replay test-llama-server

# Tests under AddressSanitizer + UndefinedBehaviorSanitizer, in their own build tree.
check-asan: deps
	@$(MAKE) --no-print-directory BUILD=build-asan OPT=-O1 \
	  SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" all \
	  $(patsubst $(BUILD)/%,build-asan/%,$(TEST_BINS))
	@BUILD=build-asan KVPUB_ASAN=1 ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 scripts/run-tests.sh

bench: deps
	@scripts/deps.sh --bench
	@$(MAKE) --no-print-directory all $(BENCH_BINS)
	@BUILD=$(BUILD) scripts/bench.sh

demo: deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) scripts/demo.sh

# kvpubd is a tool, not a module: its hand-written request-field parsers go into a library of
# their own for fuzz/fuzz_kvpubd_parse.c (with base/'s size and duration grammar). They need crypto/.
KVPUBD_PARSE_OBJS := $(patsubst %,$(BUILD)/obj/kvpubd/%.o,reqparse)
$(BUILD)/libkvpubd_parse.a: $(KVPUBD_PARSE_OBJS)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

# libFuzzer targets: each fuzz/fuzz_X.c links the modules rebuilt with clang + sanitizers (and
# libkvpubd_parse.a, which only the kvpubd target draws from).
# The link runs in a second make, which sees the libraries deps.sh may just have installed.
FUZZ_LIBS := build-fuzz/libkvpubd_parse.a $(patsubst %,build-fuzz/lib%.a,$(MODULES))
fuzz: deps
	@$(MAKE) --no-print-directory fuzz-build

fuzz-build:
	@$(MAKE) --no-print-directory BUILD=build-fuzz CC=clang OPT=-O1 \
	  SAN="-fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer" $(FUZZ_LIBS)
	@mkdir -p build-fuzz/fuzz
	@for f in $(FUZZ_SRCS); do n=$$(basename $$f .c); \
	  echo "  FUZZ  build-fuzz/fuzz/$$n"; \
	  clang -std=c11 -D_GNU_SOURCE -I. -g -O1 -fsanitize=fuzzer,address,undefined $(PKG_CFLAGS) \
	    -o build-fuzz/fuzz/$$n $$f $(FUZZ_LIBS) $(LDLIBS) || exit 1; done
	@echo "run e.g.: mkdir -p build-fuzz/corpus && build-fuzz/fuzz/fuzz_kvblob -max_total_time=60 build-fuzz/corpus spec/vectors"
	@echo "(new inputs go to the first directory: never name spec/vectors first)"

# Every fuzz target once over its committed seed corpus (fuzz/corpus/<target>/) and spec/vectors:
# a regression replay under ASan+UBSan, a few seconds, not a fuzzing campaign.
fuzz-replay: deps
	@$(MAKE) --no-print-directory all fuzz-build
	@FUZZ=build-fuzz/fuzz KVSYNTH=$(BUILD)/kvsynth scripts/fuzz-replay.sh

# gcc builds everything; clang must find it warning-free too: every source is checked with the
# same flags, without code generation (tests/cli/clang_clean.sh runs it)
CHECK_SRCS := $(foreach m,$(MODULES) $(TOOLS),$(call mod_srcs,$(m))) $(wildcard tests/unit/*.c) \
              $(BENCH_SRCS)
check-clang:
	@printf '%s\n' $(CHECK_SRCS) | xargs -P2 -n8 clang $(filter-out -MMD -MP,$(ALL_CFLAGS)) -fsyntax-only

install: all
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(foreach t,$(TOOLS),$(BUILD)/$(t)) $(DESTDIR)$(PREFIX)/bin/

clean:
	rm -rf build build-asan build-fuzz

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
