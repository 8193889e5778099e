# mdi: Model-Distributed Inference at the edge.
#
#   make            bin/starter bin/secondary bin/prepare_model
#   make test       build and run every test; closing line "N passed, N failed"
#   make asan       the same under AddressSanitizer + UBSan (build-asan/)
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
LIB_OBJ   := $(patsubst src/%.c,$(BUILD)/%.o,$(LIB_SRC))
TEST_SRC  := $(wildcard tests/test_*.c)
TEST_BIN  := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRC))
TOOL_SRC  := $(wildcard tools/*.c)
TOOL_BIN  := $(patsubst tools/%.c,$(BIN)/%,$(TOOL_SRC))

.PHONY: all test asan bench deps clean demo
all: $(BIN)/starter $(BIN)/secondary $(TOOL_BIN) $(TEST_BIN)

$(BUILD)/%.o: src/%.c $(wildcard src/*.h) | $(BUILD)
	$(CC) $(MDI_CFLAGS) $(CFLAGS) -c $< -o $@

$(BUILD)/libmdi.a: $(LIB_OBJ)
	rm -f $@ && ar rcs $@ $^

$(BIN)/%: $(BUILD)/%.o $(BUILD)/libmdi.a | $(BIN)
	$(CC) $(MDI_CFLAGS) $(CFLAGS) $(LDFLAGS) $^ -o $@ $(LDLIBS)

$(BIN)/%: tools/%.c $(BUILD)/libmdi.a $(wildcard src/*.h) | $(BIN)
	$(CC) $(MDI_CFLAGS) $(CFLAGS) $(LDFLAGS) -Isrc $< $(BUILD)/libmdi.a -o $@ $(LDLIBS)

$(BUILD)/tests/%: tests/%.c tests/test.h $(BUILD)/libmdi.a $(wildcard src/*.h) | $(BUILD)/tests
	$(CC) $(MDI_CFLAGS) $(CFLAGS) $(LDFLAGS) -Isrc -Itests $< $(BUILD)/libmdi.a -o $@ $(LDLIBS)

$(BUILD) $(BUILD)/tests $(BIN):
	mkdir -p $@

test: all
	@BUILD=$(BUILD) BIN=$(BIN) tests/run.sh

asan:
	$(MAKE) BUILD=build-asan BIN=build-asan/bin \
	    CFLAGS="-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined" \
	    LDFLAGS="-fsanitize=address,undefined" test

bench: all
	@BUILD=$(BUILD) BIN=$(BIN) tools/bench.sh
	@BUILD=$(BUILD) BIN=$(BIN) tools/bench_ring.sh

demo: all
	@BIN=$(BIN) MODEL=$(MODEL) tools/demo.sh

deps:
	apt-get install -y --no-install-recommends build-essential pkg-config \
	    libopenblas-dev libjansson-dev libmicrohttpd-dev libcurl4-openssl-dev \
	    libpcre2-dev libsodium-dev python3 python3-numpy gnuplot-nox iproute2 util-linux curl

clean:
	rm -rf build build-asan bin
