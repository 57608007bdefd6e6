/* fs.c: file writes that claim completion atomically (temp file in the same
 * directory, fsync, rename, fsync of the directory), and fsync for callers that
 * stream their own files. Everything else about files is LuaFileSystem's. */
#include "host.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int write_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return -1;
        p += w; n -= (size_t)w;
    }
    return 0;
}

static int fsync_dir_of(const char *path) {
    char dir[4096];
    const char *slash = strrchr(path, '/');
    if (!slash) snprintf(dir, sizeof dir, ".");
    else if (slash == path) snprintf(dir, sizeof dir, "/");
    else snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

/* atomic_write(path, data [, mode]) -> true. On any failure the target is untouched
 * and the temp file removed; the error names the path and the failed step. */
static int fs_atomic_write(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);
    mode_t mode = (mode_t)luaL_optinteger(L, 3, 0644);
    char tmp[4200];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp)
        return luaL_error(L, "atomic_write %s: path too long", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0) return gr_errno_error(L, "atomic_write: cannot create", tmp);
    const char *step = NULL;
    if (write_all(fd, data, len) != 0) step = "write";
    else if (fchmod(fd, mode) != 0) step = "chmod";
    else if (fsync(fd) != 0) step = "fsync";
    int saved = errno;
    if (close(fd) != 0 && !step) { step = "close"; saved = errno; }
    if (!step && rename(tmp, path) != 0) { step = "rename"; saved = errno; }
    if (step) {
        unlink(tmp);
        return luaL_error(L, "atomic_write %s: %s failed: %s", path, step, strerror(saved));
    }
    fsync_dir_of(path); /* best effort: the rename is already visible */
    lua_pushboolean(L, 1);
    return 1;
}

/* fsync(path): flush a file written by other means. */
static int fs_fsync(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return gr_errno_error(L, "fsync: cannot open", path);
    int rc = fsync(fd);
    int saved = errno;
    close(fd);
    if (rc != 0) { errno = saved; return gr_errno_error(L, "fsync", path); }
    lua_pushboolean(L, 1);
    return 1;
}

int gr_open_fs(lua_State *L) {
    static const luaL_Reg fns[] = {{"atomic_write", fs_atomic_write}, {"fsync", fs_fsync}, {NULL, NULL}};
    luaL_newlib(L, fns);
    return 1;
}
