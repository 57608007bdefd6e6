/* sqliteload.c: dlopen()s libsqlite3 on first use and resolves the calls gpurent
 * makes (see sqliteload.h for why it is not linked). */
#include "sqliteload.h"

#include <dlfcn.h>
#include <stddef.h>
#include <stdio.h>

#define LIBSQLITE "libsqlite3.so.0"
#define LIBSQLITE_DEB "libsqlite3-0"

static gr_sqlite_api api;
static int state; /* 0 not tried, 1 loaded, -1 failed */
static char failure[512];

#define RESOLVE(name)                                                                  \
    do {                                                                               \
        *(void **)(&api.name) = dlsym(h, "sqlite3_" #name);                            \
        if (!api.name) {                                                               \
            snprintf(failure, sizeof failure, LIBSQLITE " lacks sqlite3_" #name        \
                     " (install a newer Debian package " LIBSQLITE_DEB ")");           \
            return -1;                                                                 \
        }                                                                              \
    } while (0);

static int load(void) {
    void *h = dlopen(LIBSQLITE, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *why = dlerror();
        snprintf(failure, sizeof failure, "cannot load " LIBSQLITE " (install the Debian package "
                 LIBSQLITE_DEB "): %s", why ? why : "dlopen failed");
        return -1;
    }
    GR_SQLITE_CALLS(RESOLVE)
    return 1;
}

const gr_sqlite_api *gr_sqlite(const char **err) {
    if (state == 0) state = load();
    if (state < 0) { if (err) *err = failure; return NULL; }
    return &api;
}
