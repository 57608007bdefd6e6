/* testhost.c: what the test host (gpurent-test) adds to the gpurent host, and the
 * only thing: busted runs inside it, and busted needs things a recipe must not have.
 *   - busted's C modules (term.core, system.core from Debian's lua-term and
 *     lua-system), preloaded, since the host has no C module searcher;
 *   - the full debug library (busted emulates setfenv with debug.upvaluejoin,
 *     luassert copies metatables with debug.setmetatable);
 *   - gpurent_test.setenv/unsetenv, so in-process specs can point the provider at a
 *     testbed API (the token and base URL are read from the environment in C).
 * Specs that test a boundary run the real gpurent binary as a child (T.run). */
#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>
#include <stdlib.h>

int luaopen_term_core(lua_State *L);
int luaopen_system_core(lua_State *L);

static int t_setenv(lua_State *L) {
    if (setenv(luaL_checkstring(L, 1), luaL_checkstring(L, 2), 1) != 0) return luaL_error(L, "setenv failed");
    return 0;
}

static int t_unsetenv(lua_State *L) {
    unsetenv(luaL_checkstring(L, 1));
    return 0;
}

static int open_test(lua_State *L) {
    static const luaL_Reg fns[] = {{"setenv", t_setenv}, {"unsetenv", t_unsetenv}, {NULL, NULL}};
    luaL_newlib(L, fns);
    return 1;
}

static void preload(lua_State *L, const char *name, lua_CFunction f) {
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, f);
    lua_setfield(L, -2, name);
    lua_pop(L, 1);
}

void gr_host_test_extras(lua_State *L);
void gr_host_test_extras(lua_State *L) {
    preload(L, "term.core", luaopen_term_core);
    preload(L, "system.core", luaopen_system_core);
    preload(L, "gpurent_test", open_test);
    luaopen_debug(L);                 /* replaces the host's trimmed debug */
    lua_pushvalue(L, -1);
    lua_setglobal(L, LUA_DBLIBNAME);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_insert(L, -2);
    lua_setfield(L, -2, LUA_DBLIBNAME);
    lua_pop(L, 1);
}
