# mdi: Model-Distributed Inference at the edge.
#
#   make            bin/starter bin/secondary bin/prepare_model
#   make test       build and run every test; closing line "N passed, N failed"
#   make asan       the same under AddressSanitizer + UBSan (build-asan/)
#   make check      warnings as errors, every test under ASan + UBSan, the
#                   ring and control tests under ThreadSanitizer (build-tsan/)
#   make fuzz       each libFuzzer harness (tests/fuzz/) for FUZZ_SECONDS
#                   (default 60) under ASan + UBSan; make fuzz-short: 5 s each
#   make bench      benchmarks, CSV under plots/
#   make demo       generate with ../shared/models/stories260K (or MODEL=DIR), 1 then 3 nodes
#   make deps       install the Debian packages we build against (root)

CC      ?= cc
PKGS    := openblas jansson libmicrohttpd libcurl libpcre2-8 libsodium
WARN    := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes
CFLAGS  ?= -O2 -g
# CFLAGS and LDFLAGS stay the user's (make asan sets them); what the build
# needs regardless goes in MDI_CFLAGS.
MDI_CFLAGS := -std=c11 -D_GNU_SOURCE -pthread $(WARN) $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDLIBS  += $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lm -pthread

BUILD   ?= build
BIN     ?= bin

PROGS     := starter secondary
LIB_SRC   := $(filter-out $(addprefix src/,$(addsuffix .c,$(PROGS))),$(wildcard src/*.c))
LIB_OBJ   := $(patsubst src/%.c,$(BUILD)/%.o,$(LIB_SRC)) $(BUILD)/webui_assets.o
WEBUI_ASSETS := $(sort $(wildcard src/webui/*))
TEST_SRC  := $(wildcard tests/test_*.c)
TEST_BIN  := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRC))
TOOL_SRC  := $(filter-out tools/embed.c,$(wildcard tools/*.c))
TOOL_BIN  := $(patsubst tools/%.c,$(BIN)/%,$(TOOL_SRC))

FUZZ_SRC  := $(wildcard tests/fuzz/fuzz_*.c)
REPLAY_BIN := $(patsubst tests/fuzz/fuzz_%.c,$(BUILD)/fuzz-replay/replay_%,$(FUZZ_SRC))

.PHONY: all test asan tsan check fuzz fuzz-short fuzz-build bench deps clean demo
all: $(BIN)/starter $(BIN)/secondary $(TOOL_BIN) $(TEST_BIN) $(REPLAY_BIN)

$(BUILD)/%.o: src/%.c $(wildcard src/*.h) | $(BUILD)
	$(CC) $(MDI_CFLAGS) $(CFLAGS) -c $< -o $@

# The web UI's files as C arrays (webui.h), written by a generator built
# for this machine (HOSTCC) that depends on nothing else of the project.
HOSTCC  ?= cc
$(BUILD)/embed: tools/embed.c | $(BUILD)
	$(HOSTCC) -O2 -std=c11 $(WARN) $< -o $@

$(BUILD)/webui_assets.c: $(BUILD)/embed $(WEBUI_ASSETS)
	$(BUILD)/embed $@ src/webui $(WEBUI_ASSETS)

$(BUILD)/webui_assets.o: $(BUILD)/webui_assets.c src/webui.h
	$(CC) $(MDI_CFLAGS) $(CFLAGS) -Isrc -c $< -o $@

$(BUILD)/libmdi.a: $(LIB_OBJ)
	rm -f $@ && ar rcs $@ $^

$(BIN)/%: $(BUILD)/%.o $(BUILD)/libmdi.a | $(BIN)
	$(CC) $(MDI_CFLAGS) $(CFLAGS) $(LDFLAGS) $^ -o $@ $(LDLIBS)

$(BIN)/%: tools/%.c $(BUILD)/libmdi.a $(wildcard src/*.h) | $(BIN)
	$(CC) $(MDI_CFLAGS) $(CFLAGS) $(LDFLAGS) -Isrc $< $(BUILD)/libmdi.a -o $@ $(LDLIBS)

$(BUILD)/tests/%: tests/%.c tests/test.h $(BUILD)/libmdi.a $(wildcard src/*.h) | $(BUILD)/tests
	$(CC) $(MDI_CFLAGS) $(CFLAGS) $(LDFLAGS) -Isrc -Itests $< $(BUILD)/libmdi.a -o $@ $(LDLIBS)

# each fuzz harness with a plain main() (tests/fuzz/replay.c): the seeds and
# past findings replayed by tests/e2e_fuzz_replay.sh
$(BUILD)/fuzz-replay/replay_%: tests/fuzz/fuzz_%.c tests/fuzz/replay.c $(wildcard tests/fuzz/*.h) $(BUILD)/libmdi.a $(wildcard src/*.h)
	@mkdir -p $(@D)
	$(CC) $(MDI_CFLAGS) $(CFLAGS) $(LDFLAGS) -Isrc -Itests/fuzz $< tests/fuzz/replay.c $(BUILD)/libmdi.a -o $@ $(LDLIBS)

$(BUILD) $(BUILD)/tests $(BIN):
	mkdir -p $@

test: all
	@BUILD=$(BUILD) BIN=$(BIN) tests/run.sh

SAN_FLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all
asan:
	$(MAKE) BUILD=build-asan BIN=build-asan/bin CFLAGS="$(SAN_FLAGS)" \
	    LDFLAGS="-fsanitize=address,undefined" test

# ThreadSanitizer: the tests whose threads share state (the ring, the
# control server); TSAN_TESTS is a tests/run.sh name filter.
TSAN_TESTS ?= test_control|test_proto|test_queue|test_api|test_engine|e2e_engine|e2e_ring|e2e_faults|test_webui|e2e_failover|e2e_serve_failover
tsan:
	$(MAKE) BUILD=build-tsan BIN=build-tsan/bin CFLAGS="-O1 -g -fno-omit-frame-pointer -fsanitize=thread" \
	    LDFLAGS="-fsanitize=thread" all
	@rm -rf build-tsan/reports && mkdir -p build-tsan/reports
	@BUILD=build-tsan BIN=build-tsan/bin TESTS="$(TSAN_TESTS)" \
	    TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 log_path=$(CURDIR)/build-tsan/reports/tsan" \
	    tests/run.sh
	@# a report from any process (a secondary in the background too) fails
	@if ls build-tsan/reports/tsan.* >/dev/null 2>&1; then \
	    head -n 40 build-tsan/reports/tsan.*; echo "FAIL: ThreadSanitizer reports in build-tsan/reports/"; exit 1; fi

# make check: the plain build with warnings as errors, then every test under
# ASan + UBSan, then the threaded ones under TSan.
check:
	$(MAKE) BUILD=build-werror BIN=build-werror/bin CFLAGS="-O2 -g -Werror" all
	$(MAKE) asan
	$(MAKE) tsan

# libFuzzer harnesses (clang): tests/fuzz/fuzz_<target>.c, seeds in
# tests/fuzz/corpus/<target>/; findings land in build-fuzz/findings/.
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_FLAGS   := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all
FUZZ_BIN     := $(patsubst tests/fuzz/%.c,$(BUILD)/fuzz/%,$(FUZZ_SRC))

$(BUILD)/fuzz/fuzz_%: tests/fuzz/fuzz_%.c $(wildcard tests/fuzz/*.h) $(BUILD)/libmdi.a $(wildcard src/*.h)
	@mkdir -p $(@D)
	$(CC) $(MDI_CFLAGS) $(CFLAGS) -fsanitize=fuzzer -Isrc -Itests/fuzz $< $(BUILD)/libmdi.a -o $@ $(LDLIBS)

fuzz-build:
	$(MAKE) CC=$(FUZZ_CC) BUILD=build-fuzz BIN=build-fuzz/bin \
	    CFLAGS="$(FUZZ_FLAGS) -fsanitize=fuzzer-no-link" LDFLAGS="$(FUZZ_FLAGS)" \
	    $(patsubst $(BUILD)/%,build-fuzz/%,$(FUZZ_BIN))

fuzz: fuzz-build
	@FUZZ_SECONDS=$(FUZZ_SECONDS) tests/fuzz/run.sh build-fuzz/fuzz

fuzz-short:
	@$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=5

bench: all
	@BUILD=$(BUILD) BIN=$(BIN) tools/bench.sh
	@BUILD=$(BUILD) BIN=$(BIN) tools/bench_ring.sh
	@BUILD=$(BUILD) BIN=$(BIN) tools/bench_batch.sh
	@BUILD=$(BUILD) BIN=$(BIN) tools/bench_serve.sh
	@BUILD=$(BUILD) BIN=$(BIN) tools/bench_split.sh
	@BUILD=$(BUILD) BIN=$(BIN) tools/bench_failover.sh

demo: all
	@BIN=$(BIN) MODEL=$(MODEL) tools/demo.sh

deps:
	apt-get install -y --no-install-recommends build-essential pkg-config \
	    libopenblas-dev libjansson-dev libmicrohttpd-dev libcurl4-openssl-dev \
	    libpcre2-dev libsodium-dev python3 python3-numpy gnuplot-nox iproute2 util-linux curl \
	    clang libclang-rt-dev

clean:
	rm -rf build build-asan build-tsan build-werror build-fuzz bin
