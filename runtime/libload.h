/* libload.h: a library gpurent opens on first use instead of linking it (libcurl,
 * libedit, libsqlite3: see curlload.h, editload.h, sqliteload.h for why each). One
 * attempt per process; a failure keeps a message naming the library's soname and the
 * Debian package that provides it, for the Lua error of every later use. */
#ifndef GPURENT_LIBLOAD_H
#define GPURENT_LIBLOAD_H

typedef struct {
    const char *soname;   /* e.g. "libedit.so.2" */
    const char *deb;      /* e.g. "libedit2" */
    void *handle;
    int state;            /* 0 not tried, 1 loaded, -1 failed */
    char failure[512];
} gr_lib;

/* Open lib->soname: 1, or -1 with lib->failure set. */
int gr_lib_open(gr_lib *lib);

/* Resolve one symbol of an opened library into *slot: 1, or -1 with lib->failure set. */
int gr_lib_sym(gr_lib *lib, void **slot, const char *sym);

#endif
