/* approval.c: the approval capability. Destructive verbs (release, deleting durable
 * files, an irreversible power-off) need the person's approval, and Lua code (a
 * recipe, a shared library, the REPL history) must not be able to give it. So the
 * record lives here, in C static storage that only two things write:
 *   - main.c, for each `--approve INSTANCE` on the gpurent command line;
 *   - ask(), when the person types the instance name on the controlling terminal.
 * Lua gets a read-only table: core.approval.granted(instance) -> bool and
 * core.approval.ask(instance, prompt) -> bool, why. ask() opens /dev/tty itself and
 * never reads stdin, so a recipe cannot feed it an answer through a pipe.
 * A recipe or library can still spawn a second gpurent with `--approve NAME`
 * (os.execute); gr_approval_spawned_by_gpurent() lets main.c refuse that: it walks
 * the parent chain and reports an ancestor running the same executable. */
#include "host.h"
#include "approval.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_APPROVALS 64
#define MAX_NAME 256

static char approvals[MAX_APPROVALS][MAX_NAME];
static int n_approvals;

int gr_approval_grant(const char *instance) {
    size_t n = instance ? strlen(instance) : 0;
    if (n == 0 || n >= MAX_NAME) return -1;
    if (gr_approval_granted(instance)) return 0;
    if (n_approvals >= MAX_APPROVALS) return -1;
    memcpy(approvals[n_approvals++], instance, n + 1);
    return 0;
}

int gr_approval_granted(const char *instance) {
    if (!instance || !*instance) return 0;
    for (int i = 0; i < n_approvals; i++)
        if (strcmp(approvals[i], instance) == 0) return 1;
    return 0;
}

int gr_approval_count(void) { return n_approvals; }

/* The parent PID from /proc/<pid>/stat (the field after the ")" of the command
 * name, which may itself hold spaces and parentheses); -1 when unreadable. */
static long parent_of(long pid) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "re");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *rp = strrchr(buf, ')');
    char state;
    long ppid;
    if (!rp || sscanf(rp + 1, " %c %ld", &state, &ppid) != 2) return -1;
    return ppid;
}

/* /proc/<pid>/comm into out (empty when unreadable). */
static void comm_of(long pid, char *out, size_t n) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/comm", pid);
    out[0] = '\0';
    FILE *f = fopen(path, "re");
    if (!f) return;
    if (fgets(out, (int)n, f)) out[strcspn(out, "\n")] = '\0';
    fclose(f);
}

/* Walk the parent chain up to PID 1 (bounded); 1 when an ancestor's executable is
 * this process's executable (same device and inode: hard links and other paths to
 * the same file count), with its PID in *who. Unreadable ancestors (another user's
 * process, hidepid) are skipped. What this cannot see: a child that left the chain
 * (double fork reparented to init or a subreaper, setsid -f, tmux/at/systemd-run,
 * ssh localhost) or a gpurent built or copied to another file. */
int gr_approval_spawned_by_gpurent(long *who) {
    struct stat self;
    if (stat("/proc/self/exe", &self) != 0) return 0;
    long pid = parent_of((long)getpid());
    for (int depth = 0; pid > 1 && depth < 4096; depth++) {
        char path[64];
        struct stat st;
        snprintf(path, sizeof path, "/proc/%ld/exe", pid);
        if (stat(path, &st) == 0 && st.st_dev == self.st_dev && st.st_ino == self.st_ino) {
            if (who) *who = pid;
            return 1;
        }
        /* a gpurent holding a token is not dumpable (provider.c): another user's
         * process cannot stat its exe, so fall back to its command name */
        if (errno == EACCES) {
            char mine[32], theirs[32];
            comm_of((long)getpid(), mine, sizeof mine);
            comm_of(pid, theirs, sizeof theirs);
            if (mine[0] && strcmp(mine, theirs) == 0) { if (who) *who = pid; return 1; }
        }
        pid = parent_of(pid);
    }
    return 0;
}

/* core.approval.granted(instance) -> bool. Anything but a non-empty string is no. */
static int l_granted(lua_State *L) {
    lua_pushboolean(L, lua_type(L, 1) == LUA_TSTRING && gr_approval_granted(lua_tostring(L, 1)));
    return 1;
}

static int write_all(int fd, const char *s, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, s, n);
        if (w < 0 && errno == EINTR) { if (gr_interrupted) return -1; continue; }
        if (w <= 0) return -1;
        s += w;
        n -= (size_t)w;
    }
    return 0;
}

/* One line from the terminal (without its newline); -1 on EOF, error or SIGINT. */
static int read_line(int fd, char *out, size_t cap) {
    size_t len = 0;
    for (;;) {
        struct pollfd p = {fd, POLLIN, 0};
        int r = poll(&p, 1, -1);
        if (r < 0 && errno == EINTR) { if (gr_interrupted) return -1; continue; }
        if (r < 0) return -1;
        char c;
        ssize_t got = read(fd, &c, 1);
        if (got < 0 && errno == EINTR) { if (gr_interrupted) return -1; continue; }
        if (got <= 0) return -1;
        if (c == '\n') break;
        if (len + 1 < cap) out[len++] = c;
        else return -1; /* longer than any name we accept: not a match */
    }
    if (len > 0 && out[len - 1] == '\r') len--;
    out[len] = '\0';
    return 0;
}

/* core.approval.ask(instance, prompt) -> true | false, why. The person must type
 * the instance name exactly; that grants the approval for this process. */
static int l_ask(lua_State *L) {
    size_t n;
    const char *instance = luaL_checklstring(L, 1, &n);
    const char *prompt = luaL_optstring(L, 2, "");
    if (n == 0 || n >= MAX_NAME) return luaL_error(L, "approval.ask: bad instance name");
    int fd = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) {
        lua_pushboolean(L, 0);
        lua_pushfstring(L, "no terminal to ask on (/dev/tty: %s)", strerror(errno));
        return 2;
    }
    char line[MAX_NAME + 2];
    char ask[MAX_NAME + 64];
    snprintf(ask, sizeof ask, "Type the instance name (%s) to approve, anything else refuses: ", instance);
    int bad = write_all(fd, prompt, strlen(prompt)) < 0 || (*prompt && write_all(fd, "\n", 1) < 0) ||
              write_all(fd, ask, strlen(ask)) < 0;
    int rc = bad ? -1 : read_line(fd, line, sizeof line);
    close(fd);
    gr_raise_if_interrupted(L);
    if (rc < 0) {
        lua_pushboolean(L, 0);
        lua_pushstring(L, "no answer from the terminal");
        return 2;
    }
    if (strcmp(line, instance) != 0) {
        lua_pushboolean(L, 0);
        lua_pushstring(L, "the answer typed on the terminal was not the instance name");
        return 2;
    }
    if (gr_approval_grant(instance) != 0) return luaL_error(L, "approval.ask: approval table full");
    lua_pushboolean(L, 1);
    return 1;
}

/* core.approval.list() -> the approved names (for `billing status` and the ledger). */
static int l_list(lua_State *L) {
    lua_createtable(L, n_approvals, 0);
    for (int i = 0; i < n_approvals; i++) {
        lua_pushstring(L, approvals[i]);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

static int l_readonly(lua_State *L) {
    return luaL_error(L, "gpurent.core.approval is read-only: approval comes from the person "
                         "(--approve on the gpurent command line, or typed on the terminal)");
}

/* A userdata proxy: reads go to the functions, writes raise, the metatable is locked.
 * A userdata rather than a table, so rawset() cannot slip a function in either. */
int gr_open_approval(lua_State *L) {
    static const luaL_Reg fns[] = {{"granted", l_granted}, {"ask", l_ask}, {"list", l_list}, {NULL, NULL}};
    lua_newuserdatauv(L, 1, 0);       /* proxy */
    lua_createtable(L, 0, 3);         /* metatable */
    luaL_newlib(L, fns);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_readonly);
    lua_setfield(L, -2, "__newindex");
    lua_pushstring(L, "gpurent.core.approval");
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, -2);
    return 1;
}
