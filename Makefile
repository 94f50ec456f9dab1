# sluice - `make` builds everything, `make check` runs every test.
CC      ?= gcc
CFLAGS  ?= -O2 -g
WARN    := -std=gnu11 -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wno-unused-parameter
CORE_CFLAGS = $(WARN) -fPIC -fvisibility=hidden -D_GNU_SOURCE -Icore/include $(CFLAGS)
LIBS    := -lpcap -lxdp -lbpf -lz -lzstd -llzma -llz4 -lcurl -lpthread -lm
# nDPI (libndpi-dev) for --dpi, where it is installed; NDPI=0 builds without
NDPI    ?= $(shell pkg-config --exists libndpi 2>/dev/null && echo 1 || echo 0)
ifeq ($(NDPI),1)
NDPI_CFLAGS := -DSL_HAVE_NDPI $(shell pkg-config --cflags libndpi)
LIBS    += $(shell pkg-config --libs libndpi)
endif
SAN     := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
LUAJIT  ?= luajit
BUSTED  ?= busted
PREFIX  ?= /usr/local
INST_LIBDIR ?= $(PREFIX)/lib/lua/5.1
INST_LUADIR ?= $(PREFIX)/share/lua/5.1
INST_BINDIR ?= $(PREFIX)/bin

SRCS    := $(wildcard core/src/*.c)
HDRS    := core/include/sluice.h $(wildcard core/src/*.h)
OBJS    := $(SRCS:core/src/%.c=core/build/%.o)
SOBJS   := $(SRCS:core/src/%.c=core/build-san/%.o)
TESTS   := $(patsubst core/tests/%.c,core/build/%,$(wildcard core/tests/test_*.c))
STESTS  := $(patsubst core/tests/%.c,core/build-san/%,$(wildcard core/tests/test_*.c))

.PHONY: all check check-c sample bench bench-live clean install deps
all: core/build/sluice_core.so lua/sluice/core_h.lua

core/build core/build-san:
	mkdir -p $@

core/build/dpi.o core/build-san/dpi.o: CORE_CFLAGS += $(NDPI_CFLAGS)
core/build/%.o: core/src/%.c $(HDRS) | core/build
	$(CC) $(CORE_CFLAGS) -c -o $@ $<
core/build-san/%.o: core/src/%.c $(HDRS) | core/build-san
	$(CC) $(CORE_CFLAGS) $(SAN) -O1 -c -o $@ $<

# The export map names every SL_API function of the header, and nothing
# else: checked before each link (a failure leaves no new library) and by
# `make check-map` (spec/api_spec.lua runs it under make check). SL_MAP
# picks another map to check.
SL_MAP ?= core/sluice.map
MAP_CHECK = set -e; t=$$(mktemp -d); trap 'rm -rf "$$t"' EXIT; \
	$(CC) -E -P -DSL_API=SL_API core/include/sluice.h | tr '\n' ' ' | \
		grep -o 'SL_API [^(]*(' | \
		sed -E 's/.*[^A-Za-z0-9_]([A-Za-z_][A-Za-z0-9_]*) *\($$/\1/' | \
		LC_ALL=C sort -u >"$$t/h"; \
	sed -n 's/^[[:space:]]*\([A-Za-z_][A-Za-z0-9_]*\);.*/\1/p' $(SL_MAP) >"$$t/m"; \
	LC_ALL=C sort -u "$$t/m" >"$$t/ms"; bad=0; \
	for f in $$(LC_ALL=C comm -23 "$$t/h" "$$t/ms"); do bad=1; \
		echo "$(SL_MAP): $$f is declared SL_API in core/include/sluice.h but not exported: add \"$$f;\" to the map (sorted)" >&2; done; \
	for f in $$(LC_ALL=C comm -13 "$$t/h" "$$t/ms"); do bad=1; \
		echo "$(SL_MAP): $$f is exported but no SL_API function of core/include/sluice.h: remove it from the map" >&2; done; \
	cmp -s "$$t/m" "$$t/ms" || { bad=1; \
		echo "$(SL_MAP): the names are not sorted (LC_ALL=C) or one repeats" >&2; }; \
	exit $$bad

.PHONY: check-map
check-map:
	@$(MAP_CHECK)

core/build/sluice_core.so: $(OBJS) core/sluice.map
	@$(MAP_CHECK)
	$(CC) -shared -Wl,--version-script=core/sluice.map -o $@ $(OBJS) $(LIBS)
core/build-san/sluice_core.so: $(SOBJS) core/sluice.map
	@$(MAP_CHECK)
	$(CC) $(SAN) -shared -Wl,--version-script=core/sluice.map -o $@ $(SOBJS) $(LIBS)

# The FFI cdefs come from the header alone: drop preprocessor lines and the
# visibility marker.
lua/sluice/core_h.lua: core/include/sluice.h core/gen_cdefs.sh
	sh core/gen_cdefs.sh $< > $@.tmp && mv $@.tmp $@

core/build/test_%: core/tests/test_%.c core/tests/test.h core/tests/live.h $(OBJS)
	$(CC) $(CORE_CFLAGS) -Icore/src -o $@ $< $(OBJS) $(LIBS)
core/build-san/test_%: core/tests/test_%.c core/tests/test.h core/tests/live.h $(SOBJS)
	$(CC) $(CORE_CFLAGS) $(SAN) -O1 -Icore/src -o $@ $< $(SOBJS) $(LIBS)

check: deps
	@$(MAKE) --no-print-directory all core/build-san/sluice_core.so $(TESTS) $(STESTS)
	@sh .ci/check.sh

# The main job on the bundled capture: every flow and 5 s slice as JSON.
sample: deps
	@$(MAKE) --no-print-directory all
	./scripts/sluice run -r examples/sample.pcap --slice 5 -v

check-c: $(TESTS)
	@for t in $(TESTS); do $$t || exit 1; done

deps:
	@sh .ci/deps.sh

bench: all
	@sh bench/run.sh
	@sh bench/clickhouse.sh

# Live capture: a generated trace replayed into a veth pair, per backend.
bench-live: all
	@sh bench/live.sh

# Also the target luarocks runs (rockspec/sluice-scm-1.rockspec).
install: all
	install -d $(INST_LIBDIR) $(INST_BINDIR) $(INST_LUADIR)/sluice/sinks \
		$(INST_LUADIR)/sluice/policies
	install -m 755 core/build/sluice_core.so $(INST_LIBDIR)/
	install -m 644 lua/sluice/*.lua $(INST_LUADIR)/sluice/
	install -m 644 lua/sluice/sinks/*.lua $(INST_LUADIR)/sluice/sinks/
	install -m 644 lua/sluice/policies/*.lua $(INST_LUADIR)/sluice/policies/
	install -m 755 scripts/sluice $(INST_BINDIR)/sluice

clean:
	rm -rf core/build core/build-san lua/sluice/core_h.lua bench/build

# Fuzzing (libFuzzer): the collector's decoders (v5, v9, ipfix), the
# capture readers run into an engine (pcap, pcapng) and the packet decoder
# (decode), core/fuzz/fuzz_*.c, built with clang, ASan and UBSan from the
# core sources compiled the same way (not the gcc objects) into
# core/build-fuzz/, with a 4 kB file reader window (SL_READ_WINDOW) so that
# small inputs cross windows. Each runs FUZZ_SECONDS over a copy of its
# seed corpus (core/fuzz/corpus/<target>); a crash, a hang (FUZZ_TIMEOUT s
# on one input) or a sanitizer report fails the target, leaving its input
# as core/build-fuzz/crash_<target>-*.
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_TIMEOUT ?= 10
FUZZ_TARGETS := v5 v9 ipfix pcap pcapng decode
FUZZ_CFLAGS  := -std=gnu11 -g -O1 -fno-omit-frame-pointer -fPIC -D_GNU_SOURCE \
		-Icore/include -fno-sanitize-recover=all -DSL_READ_WINDOW=4096
FUZZ_OBJS    := $(SRCS:core/src/%.c=core/build-fuzz/%.o)

.PHONY: fuzz fuzz-build fuzz-deps clean-fuzz
fuzz-deps:
	@sh .ci/deps.sh clang llvm libclang-rt-14-dev
.SECONDARY: $(FUZZ_OBJS)
core/build-fuzz:
	mkdir -p $@
core/build-fuzz/%.o: core/src/%.c $(HDRS) | core/build-fuzz
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link,address,undefined -c -o $@ $<
core/build-fuzz/fuzz_%: core/fuzz/fuzz_%.c core/fuzz/fuzz.h core/fuzz/fuzz_capture.h \
		$(FUZZ_OBJS)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer,address,undefined -o $@ $< $(FUZZ_OBJS) $(LIBS)
fuzz-build: $(FUZZ_TARGETS:%=core/build-fuzz/fuzz_%)
fuzz: fuzz-deps
	@$(MAKE) --no-print-directory fuzz-build
	@for t in $(FUZZ_TARGETS); do \
		d=core/build-fuzz/corpus_$$t; \
		rm -rf $$d && mkdir -p $$d && cp core/fuzz/corpus/$$t/* $$d/ || exit 1; \
		echo "== fuzz_$$t: $(FUZZ_SECONDS) s"; \
		core/build-fuzz/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) \
			-max_len=65535 -timeout=$(FUZZ_TIMEOUT) -print_final_stats=1 \
			-artifact_prefix=core/build-fuzz/crash_$$t- $$d \
			>core/build-fuzz/fuzz_$$t.log 2>&1 || \
			{ tail -n 60 core/build-fuzz/fuzz_$$t.log; \
			  echo "!! fuzz_$$t failed"; exit 1; }; \
		grep -E '^#[0-9]+.*DONE|^stat::(number_of_executed_units|peak_rss)' \
			core/build-fuzz/fuzz_$$t.log; \
	done
clean-fuzz:
	rm -rf core/build-fuzz
