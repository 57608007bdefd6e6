/* libload.c: dlopen()s a library loaded on first use and resolves its symbols,
 * keeping the message a failure gives (see libload.h). */
#include "libload.h"

#include <dlfcn.h>
#include <stdio.h>

int gr_lib_open(gr_lib *lib) {
    lib->handle = dlopen(lib->soname, RTLD_NOW | RTLD_LOCAL);
    if (lib->handle) return 1;
    const char *why = dlerror();
    snprintf(lib->failure, sizeof lib->failure, "cannot load %s (install the Debian package %s): %s",
             lib->soname, lib->deb, why ? why : "dlopen failed");
    return -1;
}

int gr_lib_sym(gr_lib *lib, void **slot, const char *sym) {
    *slot = dlsym(lib->handle, sym);
    if (*slot) return 1;
    snprintf(lib->failure, sizeof lib->failure, "%s lacks %s (install a newer Debian package %s)",
             lib->soname, sym, lib->deb);
    return -1;
}
