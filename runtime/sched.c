/* sched.c: the one blocking call of the coroutine scheduler: poll() over the fds
 * the waiting coroutines named, with a timeout from the nearest deadline. Policy
 * (which coroutine waits on what, timers, fairness) lives in lua/gpurent/transport/sched.lua.
 *
 * Direction bits shared with ssh.c: 1 = readable, 2 = writable. Results add
 * 4 = error/hangup so the waiting step runs and discovers the error itself. */
#include "host.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>

enum { DIR_READ = 1, DIR_WRITE = 2, DIR_ERROR = 4 };

static short to_events(lua_Integer dirs) {
    short ev = 0;
    if (dirs & DIR_READ) ev |= POLLIN;
    if (dirs & DIR_WRITE) ev |= POLLOUT;
    return ev;
}

static int from_revents(short rev) {
    int d = 0;
    if (rev & POLLIN) d |= DIR_READ;
    if (rev & POLLOUT) d |= DIR_WRITE;
    if (rev & (POLLERR | POLLHUP | POLLNVAL)) d |= DIR_ERROR;
    return d;
}

/* Seconds (negative = forever) to poll()'s milliseconds, rounding up so a
 * deadline is never woken before it is due. */
static int to_ms(lua_Number s) {
    if (s < 0) return -1;
    lua_Number ms = s * 1000.0 + 0.999;
    return ms > INT_MAX ? INT_MAX : (int)ms;
}

/* poll(fds, dirs, timeout) -> revents table parallel to fds (0 = not ready).
 * EINTR: raises "interrupted" after SIGINT, else returns as if timed out. */
static int sched_poll(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checktype(L, 2, LUA_TTABLE);
    int timeout = to_ms(luaL_optnumber(L, 3, -1));
    lua_Integer n = luaL_len(L, 1);
    if (n < 0 || n > 65536) return luaL_error(L, "sched.poll: bad fd count %d", (int)n);
    struct pollfd *p = lua_newuserdatauv(L, sizeof *p * (size_t)(n ? n : 1), 0);
    for (lua_Integer i = 0; i < n; i++) {
        lua_geti(L, 1, i + 1);
        lua_geti(L, 2, i + 1);
        p[i].fd = (int)luaL_checkinteger(L, -2);
        p[i].events = to_events(luaL_checkinteger(L, -1));
        p[i].revents = 0;
        lua_pop(L, 2);
    }
    int rc = poll(p, (nfds_t)n, timeout);
    if (rc < 0 && errno != EINTR) return gr_errno_error(L, "sched.poll:", "poll");
    gr_raise_if_interrupted(L);
    lua_createtable(L, (int)n, 0);
    for (lua_Integer i = 0; i < n; i++) {
        lua_pushinteger(L, rc > 0 ? from_revents(p[i].revents) : 0);
        lua_seti(L, -2, i + 1);
    }
    return 1;
}

/* wait_fd(fd, dirs, timeout) -> revents (0 = timed out): the main coroutine's
 * direct wait when no scheduler is running. */
static int sched_wait_fd(lua_State *L) {
    struct pollfd p = {(int)luaL_checkinteger(L, 1), to_events(luaL_checkinteger(L, 2)), 0};
    int rc = poll(&p, 1, to_ms(luaL_optnumber(L, 3, -1)));
    if (rc < 0 && errno != EINTR) return gr_errno_error(L, "sched.wait_fd:", "poll");
    gr_raise_if_interrupted(L);
    lua_pushinteger(L, rc > 0 ? from_revents(p.revents) : 0);
    return 1;
}

int gr_open_sched(lua_State *L) {
    static const luaL_Reg fns[] = {{"poll", sched_poll}, {"wait_fd", sched_wait_fd}, {NULL, NULL}};
    luaL_newlib(L, fns);
    return 1;
}
