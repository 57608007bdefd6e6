/* sshproxy.c: ssh_config ProxyCommand (and ProxyJump, which OpenSSH defines as
 * ProxyCommand `ssh -W '[%h]:%p' JUMP`) for libssh2, which needs only a socket fd:
 * one end of a socketpair is the command's stdin and stdout, the other the
 * session's fd. The command runs as OpenSSH runs it: `exec CMD` under $SHELL.
 *
 *   core.ssh.proxy_spawn(cmd, label) -> fd, proxy
 *   proxy:status() -> nil while running | "exited with status N" / "killed by signal N"
 *   proxy:stderr() -> what the command wrote on stderr (the last 4 KiB)
 *   proxy:close()  -> reaps it: waits up to 1 s for it to end on its own (the session
 *                     closed our end, so `ssh -W` sees EOF), then TERM, then KILL.
 * The command's stderr goes to an unlinked temporary file, read back for error
 * messages: a pipe would need draining, and closing it would SIGPIPE the proxy.
 * SIGINT is ignored in the child (OpenSSH's client keeps an ignored SIGINT), so
 * Ctrl-C reaches gpurent alone and it can still TERM the remote command over the
 * proxied session. */
#include "sshproxy.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PROXY_MT "gpurent.ssh.proxy"
#define STDERR_TAIL 4096

typedef struct {
    pid_t pid;      /* 0 once reaped */
    int status;     /* wait status, valid once reaped */
    int reaped;
    int errfd;      /* the command's stderr (unlinked file), -1 when closed */
    char label[160];
} gr_proxy;

/* An unlinked temporary file for the command's stderr. */
static int stderr_file(void) {
    const char *dir = getenv("TMPDIR");
    if (!dir || !*dir) dir = "/tmp";
    int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0) return fd;
    char path[4096];
    snprintf(path, sizeof path, "%s/gpurent-proxy-XXXXXX", dir);
    fd = mkstemp(path);
    if (fd < 0) return -1;
    unlink(path);
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    return fd;
}

/* In the child: only async-signal-safe calls until exec (gpurent may have threads). */
static void exec_child(int sock, int errfd, const char *shell, const char *cmd) {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGINT, SIG_IGN);
    signal(SIGPIPE, SIG_DFL);
    if (dup2(sock, 0) < 0 || dup2(sock, 1) < 0 || dup2(errfd, 2) < 0) _exit(127);
    execl(shell, shell, "-c", cmd, (char *)NULL);
    _exit(127);
}

static int proxy_spawn(lua_State *L) {
    const char *cmd = luaL_checkstring(L, 1);
    const char *label = luaL_checkstring(L, 2);
    const char *shell = getenv("SHELL");
    if (!shell || !*shell) shell = "/bin/sh";
    lua_pushfstring(L, "exec %s", cmd);   /* as OpenSSH: no lingering shell */
    const char *line = lua_tostring(L, -1);
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
        return gr_errno_error(L, "socketpair for the proxy command of", label);
    int errfd = stderr_file();
    if (errfd < 0) { close(sv[0]); close(sv[1]); return gr_errno_error(L, "temporary file for the proxy of", label); }
    gr_proxy *p = lua_newuserdatauv(L, sizeof *p, 0);
    memset(p, 0, sizeof *p);
    p->errfd = -1;
    snprintf(p->label, sizeof p->label, "%s", label);
    luaL_setmetatable(L, PROXY_MT);
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(sv[0]); close(sv[1]); close(errfd);
        return luaL_error(L, "%s: fork for the proxy command: %s", label, strerror(e));
    }
    if (pid == 0) exec_child(sv[1], errfd, shell, line);
    close(sv[1]);
    p->pid = pid;
    p->errfd = errfd;
    int fl = fcntl(sv[0], F_GETFL);
    if (fl < 0 || fcntl(sv[0], F_SETFL, fl | O_NONBLOCK) != 0) {
        close(sv[0]);
        return gr_errno_error(L, "non-blocking proxy socket of", label);
    }
    lua_pushinteger(L, sv[0]);
    lua_insert(L, -2);
    return 2;
}

static gr_proxy *check_proxy(lua_State *L) {
    return luaL_checkudata(L, 1, PROXY_MT);
}

/* Reap without blocking; returns 1 when the command has ended. */
static int try_reap(gr_proxy *p) {
    if (p->reaped) return 1;
    if (p->pid <= 0) return 1;
    int st = 0;
    pid_t r = waitpid(p->pid, &st, WNOHANG);
    if (r == p->pid || (r < 0 && errno == ECHILD)) {
        p->reaped = 1;
        p->status = r == p->pid ? st : 0;
        return 1;
    }
    return 0;
}

static int proxy_status(lua_State *L) {
    gr_proxy *p = check_proxy(L);
    if (!try_reap(p)) { lua_pushnil(L); return 1; }
    if (WIFSIGNALED(p->status)) lua_pushfstring(L, "killed by signal %d", WTERMSIG(p->status));
    else lua_pushfstring(L, "exited with status %d", WEXITSTATUS(p->status));
    return 1;
}

static int proxy_stderr(lua_State *L) {
    gr_proxy *p = check_proxy(L);
    if (p->errfd < 0) { lua_pushliteral(L, ""); return 1; }
    off_t end = lseek(p->errfd, 0, SEEK_END);
    off_t from = end > STDERR_TAIL ? end - STDERR_TAIL : 0;
    char buf[STDERR_TAIL];
    ssize_t n = end > 0 ? pread(p->errfd, buf, (size_t)(end - from), from) : 0;
    lua_pushlstring(L, buf, n > 0 ? (size_t)n : 0);
    return 1;
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Wait up to ms for the command to end; 1 when it did. */
static int wait_end(gr_proxy *p, long ms) {
    for (long t = 0; t < ms; t += 20) {
        if (try_reap(p)) return 1;
        sleep_ms(20);
    }
    return try_reap(p);
}

static void proxy_free(gr_proxy *p) {
    if (p->pid > 0 && !p->reaped) {
        if (!wait_end(p, 1000)) {
            kill(p->pid, SIGTERM);
            if (!wait_end(p, 1000)) {
                kill(p->pid, SIGKILL);
                if (waitpid(p->pid, &p->status, 0) == p->pid) p->reaped = 1;
            }
        }
    }
    p->pid = 0;
    if (p->errfd >= 0) { close(p->errfd); p->errfd = -1; }
}

static int proxy_close(lua_State *L) {
    proxy_free(check_proxy(L));
    return 0;
}

static int proxy_pid(lua_State *L) {
    gr_proxy *p = check_proxy(L);
    lua_pushinteger(L, p->pid);
    return 1;
}

void gr_sshproxy_register(lua_State *L) {
    static const luaL_Reg methods[] = {
        {"status", proxy_status}, {"stderr", proxy_stderr}, {"close", proxy_close},
        {"pid", proxy_pid}, {NULL, NULL}
    };
    luaL_newmetatable(L, PROXY_MT);
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, proxy_close);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
}

int gr_sshproxy_spawn(lua_State *L) {
    return proxy_spawn(L);
}
