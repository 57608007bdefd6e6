/* sys.c: small process facts Lua lacks: monotonic time, pid, TTY detection,
 * sleeping without busy loops, and the interrupt flag. */
#include "host.h"

#include <errno.h>
#include <time.h>
#include <unistd.h>

static int sys_now(lua_State *L) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec / 1e9);
    return 1;
}

static int sys_getpid(lua_State *L) {
    lua_pushinteger(L, (lua_Integer)getpid());
    return 1;
}

static int sys_isatty(lua_State *L) {
    lua_pushboolean(L, isatty((int)luaL_optinteger(L, 1, 1)));
    return 1;
}

/* Blocking sleep for code outside the scheduler; SIGINT ends it with "interrupted". */
static int sys_sleep(lua_State *L) {
    lua_Number s = luaL_checknumber(L, 1);
    struct timespec ts = {(time_t)s, (long)((s - (lua_Number)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) gr_raise_if_interrupted(L);
    gr_raise_if_interrupted(L);
    return 0;
}

static int sys_interrupted(lua_State *L) {
    lua_pushboolean(L, gr_interrupted);
    return 1;
}

/* clear_interrupt(): a handled SIGINT is forgotten (flag and hook), so cleanup
 * code such as closing a channel can run; set_interrupted() restores the flag so
 * the process still exits 130. */
static int sys_clear_interrupt(lua_State *L) {
    gr_clear_interrupt(L);
    return 0;
}

static int sys_set_interrupted(lua_State *L) {
    (void)L;
    gr_interrupted = 1;
    return 0;
}

int gr_open_sys(lua_State *L) {
    static const luaL_Reg fns[] = {
        {"now", sys_now}, {"getpid", sys_getpid}, {"isatty", sys_isatty},
        {"sleep", sys_sleep}, {"interrupted", sys_interrupted},
        {"clear_interrupt", sys_clear_interrupt}, {"set_interrupted", sys_set_interrupted}, {NULL, NULL}
    };
    luaL_newlib(L, fns);
    return 1;
}
