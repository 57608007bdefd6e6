/* fuzz/fuzz.c: one libFuzzer harness for every parser in fuzz/targets.lua. The
 * target is chosen by GPURENT_FUZZ_TARGET; the input goes to it as a Lua string
 * inside the real host (same primitives as gpurent). A crash, a sanitizer report or
 * a Lua runtime error inside the parser (targets.is_bug) aborts, so libFuzzer keeps
 * the input as an artifact. Targets remove their scratch files after each input;
 * before aborting, targets.cleanup removes one a failed input left (issue 15). */
#include "../runtime/host.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static lua_State *L;
static int target_ref, is_bug_ref, cleanup_ref;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    const char *name = getenv("GPURENT_FUZZ_TARGET");
    if (!name) { fprintf(stderr, "fuzz: set GPURENT_FUZZ_TARGET\n"); exit(2); }
    L = gr_host_new("fuzz", ".", 0);
    if (luaL_dostring(L, "require 'gpurent'; return (require 'targets')") != LUA_OK) {
        fprintf(stderr, "fuzz: %s\n", lua_tostring(L, -1));
        exit(2);
    }
    lua_getfield(L, -1, "is_bug");
    is_bug_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_getfield(L, -1, "cleanup");
    cleanup_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    if (lua_getfield(L, -1, name) != LUA_TFUNCTION) {
        fprintf(stderr, "fuzz: no target %s in fuzz/targets.lua\n", name);
        exit(2);
    }
    target_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pop(L, 1);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, target_ref);
    lua_pushlstring(L, (const char *)data, size);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, is_bug_ref);
        lua_pushvalue(L, -2);
        lua_call(L, 1, 1);
        if (lua_toboolean(L, -1)) {
            lua_pop(L, 1);
            fprintf(stderr, "fuzz: parser bug: %s\n", luaL_tolstring(L, -1, NULL));
            lua_rawgeti(L, LUA_REGISTRYINDEX, cleanup_ref);
            if (lua_pcall(L, 0, 0, 0) != LUA_OK)
                fprintf(stderr, "fuzz: cleanup: %s\n", lua_tostring(L, -1));
            abort();
        }
    }
    lua_settop(L, 0);
    lua_gc(L, LUA_GCSTEP, 0);
    return 0;
}
