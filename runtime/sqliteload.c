/* sqliteload.c: dlopen()s libsqlite3 on first use and resolves the calls gpurent
 * makes (see sqliteload.h for why it is not linked). */
#include "sqliteload.h"

#include "libload.h"

#include <stddef.h>

static gr_sqlite_api api;
static gr_lib lib = {.soname = "libsqlite3.so.0", .deb = "libsqlite3-0"};

#define RESOLVE(name) \
    if (gr_lib_sym(&lib, (void **)&api.name, "sqlite3_" #name) < 0) return -1;

static int load(void) {
    if (gr_lib_open(&lib) < 0) return -1;
    GR_SQLITE_CALLS(RESOLVE)
    return 1;
}

const gr_sqlite_api *gr_sqlite(const char **err) {
    if (lib.state == 0) lib.state = load();
    if (lib.state < 0) { if (err) *err = lib.failure; return NULL; }
    return &api;
}
