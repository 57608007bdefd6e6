# gpurent build. `make` builds ./gpurent; `make test` runs the busted suite inside it;
# `make asan` rebuilds with ASan+UBSan and runs the suite; `make bench` prints the
# side-by-side benchmarks; `make deps` installs the Debian packages (as root).

PREFIX   ?= /usr/local
SHAREDIR  = $(PREFIX)/share/gpurent
# libcurl is dlopen()ed on first use (runtime/curlload.c): only its headers are needed.
PKGS      = lua5.4 libssh2 yaml-0.1 libcrypto sqlite3 libedit
CC       ?= cc
OPT      ?= -O2 -g
SAN      ?=
CFLAGS   += $(OPT) $(SAN) -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wno-format-truncation -fno-common \
            -DGPURENT_SHAREDIR='"$(SHAREDIR)"' $(shell pkg-config --cflags $(PKGS) libcurl 2>/dev/null)
LDLIBS   += $(shell pkg-config --libs $(PKGS) 2>/dev/null) \
            -l:liblua5.4-filesystem.so.0 -l:liblua5.4-cjson.so.0 -ldl -lm
# Debian's Lua C modules do not link liblua: the host exports the Lua API (-rdynamic)
LDFLAGS  += -rdynamic $(SAN)

SRCS      = $(wildcard runtime/*.c)
BUILD    ?= build
OBJS      = $(SRCS:runtime/%.c=$(BUILD)/%.o)
BIN      ?= gpurent

# Debian packages: build libraries, the Lua modules the runtime links or requires,
# and the real parts the tests use (sshd, tmux, busted).
DEBS = build-essential pkg-config liblua5.4-dev lua5.4 libssh2-1-dev libyaml-dev \
       libcurl4-openssl-dev libssl-dev libsqlite3-dev libedit-dev lua-filesystem \
       lua-cjson lua-busted openssh-server openssh-client tmux sqlite3 python3 \
       iproute2 util-linux procps curl git hyperfine
# For `make deps`: the packages of DEBS that dpkg does not report as installed.
missing = $(shell for p in $(DEBS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
            | grep -q 'ok installed' || echo $$p; done)

.PHONY: all deps test asan bench demo install clean
all: deps $(BIN)

deps:
	@m="$(missing)"; if [ -z "$$m" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
	  echo "make deps: installing $$m"; \
	  (apt-get install -y -q $$m || (apt-get update -q && apt-get install -y -q $$m)) >/dev/null || exit 1; \
	else \
	  echo "make deps: missing Debian packages; run as root:"; \
	  echo "  apt-get install -y $$m"; exit 1; \
	fi

$(BIN): $(OBJS)
	$(CC) $(LDFLAGS) -o $@ $(OBJS) $(LDLIBS)

$(BUILD)/%.o: runtime/%.c | $(BUILD)
	$(CC) $(CFLAGS) -MMD -MP -c -o $@ $<

$(BUILD):
	mkdir -p $@

-include $(OBJS:.o=.d)

TEST_ARGS ?= tests/spec
test: all
	./$(BIN) run tests/run_specs.lua -- $(TEST_ARGS)

asan: deps
	$(MAKE) BUILD=build/asan BIN=gpurent-asan OPT="-O1 -g" \
	  SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" gpurent-asan
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
	  GPURENT_BIN=./gpurent-asan ./gpurent-asan run tests/run_specs.lua -- $(TEST_ARGS)

bench: all
	bench/run.sh

demo: all
	./$(BIN) run recipes/demo.lua

install: $(BIN)
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(SHAREDIR)
	install -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/gpurent
	for d in lua profiles recipes; do [ ! -d $$d ] || cp -R $$d $(DESTDIR)$(SHAREDIR)/; done

clean:
	rm -rf build $(BIN) gpurent-asan
