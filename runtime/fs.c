/* fs.c: file writes that claim completion atomically (temp file in the same
 * directory, fsync, rename, fsync of the directory), fsync for callers that
 * stream their own files, writeback started early for them, and exclusive lock
 * files (flock). Everything else about files is LuaFileSystem's. */
#include "host.h"

#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
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

/* writeback(file, offset, len) -> true | nil, message: start writing a range of a
 * Lua file (flushed by the caller) to disk without waiting (sync_file_range
 * SYNC_FILE_RANGE_WRITE), so the fsync at the end of a long download finds little
 * left to write. A hint: a filesystem without it answers nil and the message. */
static int fs_writeback(lua_State *L) {
    luaL_Stream *p = luaL_checkudata(L, 1, LUA_FILEHANDLE);
    lua_Integer off = luaL_checkinteger(L, 2), len = luaL_checkinteger(L, 3);
    if (!p->f || !p->closef) return luaL_error(L, "writeback: the file is closed");
    if (off < 0 || len < 0) return luaL_error(L, "writeback: negative offset or length");
    if (sync_file_range(fileno(p->f), (off64_t)off, (off64_t)len, SYNC_FILE_RANGE_WRITE) != 0) {
        lua_pushnil(L);
        lua_pushstring(L, strerror(errno));
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* ---- lock files ------------------------------------------------------------
 * flock(2), not fcntl(2) (which lfs.lock uses): an fcntl lock belongs to the
 * process, so two transfers in one gpurent (coroutines under gpurent.parallel)
 * would both "hold" it, and it is dropped when the process closes ANY descriptor
 * of the file. A flock belongs to the open file, and the kernel drops it when the
 * holder dies: a lock file left by a killed process is never stale. */

#define LOCK_MT "gpurent.fs.lock"
#define LOCK_TRIES 20           /* the file replaced under us this often: give up */
#define HOLDER_MAX 1024         /* bytes of the holder's description we read */

typedef struct { int fd; char *path; } gr_lock;

/* The holder's description (what it wrote into the file); may be empty while
 * the holder is between taking the lock and writing it. */
static void push_holder(lua_State *L, int fd) {
    char buf[HOLDER_MAX];
    ssize_t n = pread(fd, buf, sizeof buf, 0);
    lua_pushlstring(L, buf, n > 0 ? (size_t)n : 0);
}

/* Is fd still the file at path? (A releaser unlinks the file before closing it:
 * whoever locked the unlinked file must start over.) */
static int still_at_path(int fd, const char *path) {
    struct stat a, b;
    return fstat(fd, &a) == 0 && stat(path, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

/* Our description replaces the previous holder's. */
static int write_owner(int fd, const char *owner, size_t len) {
    if (ftruncate(fd, 0) != 0) return -1;
    if (lseek(fd, 0, SEEK_SET) < 0) return -1;
    return write_all(fd, owner, len);
}

/* lock_file(path, owner) -> lock | nil, holder. An exclusive, non-blocking
 * flock on path (created 0644 if absent); owner (one line about this process)
 * is written into it. When another open file holds it: nil and what the holder
 * wrote there. Errors (cannot create, ...) raise naming the path. */
static int fs_lock_file(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    size_t olen;
    const char *owner = luaL_checklstring(L, 2, &olen);
    for (int tries = 0; tries < LOCK_TRIES; tries++) {
        int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (fd < 0) return gr_errno_error(L, "lock: cannot open", path);
        if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
            int e = errno;
            if (e == EINTR) { close(fd); gr_raise_if_interrupted(L); continue; }
            if (e != EWOULDBLOCK) { close(fd); errno = e; return gr_errno_error(L, "lock: flock", path); }
            lua_pushnil(L);
            push_holder(L, fd);
            close(fd);
            return 2;
        }
        if (!still_at_path(fd, path)) { close(fd); continue; }
        if (write_owner(fd, owner, olen) != 0) {
            /* we hold it, so it is ours to remove: a full disk leaves no lock file behind */
            int e = errno;
            unlink(path);
            close(fd);
            errno = e;
            return gr_errno_error(L, "lock: cannot write", path);
        }
        gr_lock *lk = lua_newuserdatauv(L, sizeof *lk, 0);
        lk->fd = fd;
        lk->path = strdup(path);
        luaL_setmetatable(L, LOCK_MT);
        if (!lk->path) return luaL_error(L, "lock %s: out of memory", path);
        return 1;
    }
    return luaL_error(L, "lock %s: the lock file was replaced %d times in a row; is something deleting it?",
                      path, LOCK_TRIES);
}

/* lock:release(): remove the lock file (if it is still ours), then unlock by
 * closing. Unlinking first means nobody locks a file we are about to drop. */
static int lock_release(lua_State *L) {
    gr_lock *lk = luaL_checkudata(L, 1, LOCK_MT);
    if (lk->fd < 0) return 0;
    if (still_at_path(lk->fd, lk->path) && unlink(lk->path) != 0 && errno != ENOENT) {
        int e = errno;
        close(lk->fd);
        lk->fd = -1;
        errno = e;
        return gr_errno_error(L, "lock: cannot remove", lk->path);
    }
    close(lk->fd);
    lk->fd = -1;
    return 0;
}

/* Collected without release (an error unwound past it): unlock, keep the file. */
static int lock_gc(lua_State *L) {
    gr_lock *lk = luaL_checkudata(L, 1, LOCK_MT);
    if (lk->fd >= 0) close(lk->fd);
    lk->fd = -1;
    free(lk->path);
    lk->path = NULL;
    return 0;
}

static int lock_held(lua_State *L) {
    gr_lock *lk = luaL_checkudata(L, 1, LOCK_MT);
    lua_pushboolean(L, lk->fd >= 0);
    return 1;
}

int gr_open_fs(lua_State *L) {
    static const luaL_Reg methods[] = {{"release", lock_release}, {"held", lock_held}, {NULL, NULL}};
    if (luaL_newmetatable(L, LOCK_MT)) {
        luaL_newlib(L, methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, lock_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    static const luaL_Reg fns[] = {{"atomic_write", fs_atomic_write}, {"fsync", fs_fsync},
                                   {"writeback", fs_writeback}, {"lock_file", fs_lock_file}, {NULL, NULL}};
    luaL_newlib(L, fns);
    return 1;
}
