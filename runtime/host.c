/* host.c: the lua_State gpurent runs recipes in. Owns library setup (Lua's own,
 * lfs and cjson preloaded from Debian's builds, gpurent.core), the module search path,
 * the message handler that turns errors into exit codes, and SIGINT delivery.
 * It also closes what would let Lua code reach around the C boundary (docs/SECURITY.md):
 * no native code (package.loadlib, the C module searchers) and no precompiled chunks
 * (crafted bytecode can corrupt the VM), and of `debug` only traceback and getinfo. */
#include "host.h"
#include "provider.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lualib.h>

int luaopen_lfs(lua_State *L);
int luaopen_cjson(lua_State *L);
int luaopen_cjson_safe(lua_State *L);

volatile int gr_interrupted = 0;
static lua_State *signal_state = NULL;
static int host_verbose = 0;
static char share_dir[PATH_MAX];   /* C's own copy: core.host.share_dir is a Lua table field */

/* The test host (tests/c/testhost.c) defines this to preload busted's C modules and
 * the full debug library; the gpurent binary does not, and Lua cannot add it. */
void gr_host_test_extras(lua_State *L) __attribute__((weak));

const char *gr_host_share_dir(void) { return share_dir; }

/* Once a secret (the provider token, a typed secret) is in memory: no core file and no
 * ptrace by other processes of the user. Only the soft core limit drops to 0: a child
 * gpurent without secrets may still raise its own. */
void gr_protect_secrets(void) {
    static int done;
    if (done) return;
    done = 1;
    struct rlimit r;
    if (getrlimit(RLIMIT_CORE, &r) == 0) { r.rlim_cur = 0; setrlimit(RLIMIT_CORE, &r); }
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
}

static const luaL_Reg core_modules[] = {
    {"yaml", gr_open_yaml},
    {"hash", gr_open_hash},
    {"fs", gr_open_fs},
    {"sys", gr_open_sys},
    {"term", gr_open_term},
    {"sched", gr_open_sched}, {"ssh", gr_open_ssh}, {"knownhosts", gr_open_knownhosts},
    {"sqlite", gr_open_sqlite},
    {"http", gr_open_http}, {"approval", gr_open_approval}, {"provider", gr_open_provider},
    {NULL, NULL}
};

/* ---- the one error type ------------------------------------------------------- */

static const struct { const char *kind; int exit; } error_kinds[] = {
    {"usage", GR_EXIT_USAGE},           /* the person's input is off */
    {"refusal", GR_EXIT_REFUSED},       /* a safety gate said no */
    {"remote", GR_EXIT_ERROR},          /* the box: a command, a file there */
    {"transport", GR_EXIT_ERROR},       /* the link: connect, auth, timeout */
    {"provider", GR_EXIT_ERROR},        /* the provider's API answered with an error */
    {"interrupted", GR_EXIT_INTERRUPTED},
};
#define N_ERROR_KINDS (sizeof error_kinds / sizeof error_kinds[0])

static int exit_of_kind(const char *kind) {
    for (size_t i = 0; i < N_ERROR_KINDS; i++)
        if (strcmp(error_kinds[i].kind, kind) == 0) return error_kinds[i].exit;
    return -1;
}

static int error_tostring(lua_State *L) {
    lua_getfield(L, 1, "msg");
    if (!lua_isstring(L, -1)) lua_pushliteral(L, "(error without a message)");
    else lua_tostring(L, -1);   /* a number msg prints as text */
    return 1;
}

void gr_push_error_metatable(lua_State *L) {
    if (luaL_newmetatable(L, "gpurent.error")) {   /* __name = "gpurent.error" */
        lua_pushcfunction(L, error_tostring);
        lua_setfield(L, -2, "__tostring");
    }
}

void gr_make_error(lua_State *L, const char *kind) {
    int exit = exit_of_kind(kind);
    if (exit < 0) luaL_error(L, "gr_make_error: unknown error kind %s", kind);
    lua_pushstring(L, kind);
    lua_setfield(L, -2, "kind");
    lua_pushinteger(L, exit);
    lua_setfield(L, -2, "exit");
    gr_push_error_metatable(L);
    lua_setmetatable(L, -2);
}

int gr_raise_error(lua_State *L, const char *kind, const char *msg) {
    lua_createtable(L, 0, 3);
    lua_pushstring(L, msg);
    lua_setfield(L, -2, "msg");
    gr_make_error(L, kind);
    return lua_error(L);
}

/* core.host.error_kinds: {kind = exit code}, errors.lua's errors.EXIT. */
static void push_error_kinds(lua_State *L) {
    lua_createtable(L, 0, (int)N_ERROR_KINDS);
    for (size_t i = 0; i < N_ERROR_KINDS; i++) {
        lua_pushinteger(L, error_kinds[i].exit);
        lua_setfield(L, -2, error_kinds[i].kind);
    }
}

int gr_errno_error(lua_State *L, const char *what, const char *path) {
    int e = errno;
    return luaL_error(L, "%s %s: %s", what, path ? path : "", strerror(e));
}

/* A blocking primitive delivers the interrupt itself: the pending hook is
 * disarmed first, or it would raise a second "interrupted" at the caller's next
 * instruction, inside the very cleanup (closing a channel, signalling the remote
 * process) that the first one lets run. gr_interrupted stays set for the exit code. */
int gr_raise_if_interrupted(lua_State *L) {
    if (!gr_interrupted) return 0;
    lua_sethook(signal_state ? signal_state : L, NULL, 0, 0);
    return gr_raise_error(L, "interrupted", "interrupted");
}

void gr_clear_interrupt(lua_State *L) {
    gr_interrupted = 0;
    lua_sethook(signal_state ? signal_state : L, NULL, 0, 0);
    if (L != signal_state) lua_sethook(L, NULL, 0, 0);
}

/* SIGINT: like lua.c, set a hook so the running Lua code raises at its next
 * instruction; blocking primitives see gr_interrupted after poll() returns EINTR. */
static void interrupt_hook(lua_State *L, lua_Debug *ar) {
    (void)ar;
    lua_sethook(L, NULL, 0, 0);
    gr_raise_error(L, "interrupted", "interrupted");
}

static void on_sigint(int sig) {
    (void)sig;
    gr_interrupted = 1;
    if (signal_state)
        lua_sethook(signal_state, interrupt_hook,
                    LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

static void install_sigint(lua_State *L) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART: blocking calls return EINTR */
    signal_state = L;
    sigaction(SIGINT, &sa, NULL);
}

/* gpurent.core.<name> opens a primitive on first use: start-up then pays only for
 * what a recipe touches (libssh2's and libcurl's set-up among them). */
static int core_index(lua_State *L) {
    const char *name = luaL_checkstring(L, 2);
    for (const luaL_Reg *m = core_modules; m->name; m++) {
        if (strcmp(m->name, name) != 0) continue;
        m->func(L);
        lua_pushvalue(L, -1);
        lua_setfield(L, 1, name);
        return 1;
    }
    return 0;
}

static int open_core(lua_State *L) {
    lua_newtable(L);
    lua_newtable(L);
    lua_pushcfunction(L, core_index);
    lua_setfield(L, -2, "__index");
    lua_setmetatable(L, -2);
    return 1;
}

static void preload(lua_State *L, const char *name, lua_CFunction f) {
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, f);
    lua_setfield(L, -2, name);
    lua_pop(L, 1);
}

static int is_dir(const char *p) {
    struct stat st;
    return p && stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* The directory holding gpurent's own lua/, profiles/ and recipes/: next to the
 * binary in a build tree, ../share/gpurent when installed, else the compiled-in one. */
static void find_share_dir(char *out, size_t n) {
    char exe[PATH_MAX], probe[PATH_MAX + 64];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    out[0] = '\0';
    if (len > 0) {
        exe[len] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) *slash = '\0';
        snprintf(probe, sizeof probe, "%s/lua/gpurent", exe);
        if (is_dir(probe)) { snprintf(out, n, "%s", exe); return; }
        snprintf(probe, sizeof probe, "%s/../share/gpurent/lua/gpurent", exe);
        if (is_dir(probe)) {
            snprintf(probe, sizeof probe, "%s/../share/gpurent", exe);
            if (!realpath(probe, out)) snprintf(out, n, "%s", probe);
            return;
        }
    }
    snprintf(out, n, "%s", GPURENT_SHAREDIR);
}

/* Nearest ancestor of the working directory holding gpurent.lock; else the cwd. */
static void find_project_dir(char *out, size_t n) {
    char dir[PATH_MAX], probe[PATH_MAX + 16];
    if (!getcwd(dir, sizeof dir)) { snprintf(out, n, "."); return; }
    snprintf(out, n, "%s", dir);
    for (;;) {
        struct stat st;
        snprintf(probe, sizeof probe, "%s/gpurent.lock", dir);
        if (stat(probe, &st) == 0) { snprintf(out, n, "%s", dir); return; }
        char *slash = strrchr(dir, '/');
        if (!slash || slash == dir) return;
        *slash = '\0';
    }
}

/* gpurent.core.host: the search path pieces, computed once, for lua/gpurent/init.lua. */
static void push_host_info(lua_State *L, const char *recipe_dir) {
    char share[PATH_MAX], project[PATH_MAX], buf[PATH_MAX + 8];
    find_share_dir(share, sizeof share);
    find_project_dir(project, sizeof project);
    lua_newtable(L);
    if (recipe_dir) {                 /* only `gpurent run FILE` has one: -e and the commands */
        lua_pushstring(L, recipe_dir); /* do not search the working directory */
        lua_setfield(L, -2, "recipe_dir");
    }
    lua_pushstring(L, project);
    lua_setfield(L, -2, "project_dir");
    snprintf(buf, sizeof buf, "%s/lua", project);
    lua_pushstring(L, buf);
    lua_setfield(L, -2, "project_lua");
    lua_pushstring(L, share);
    lua_setfield(L, -2, "share_dir");
    lua_pushstring(L, GPURENT_VERSION);
    lua_setfield(L, -2, "version");
    lua_pushboolean(L, host_verbose);
    lua_setfield(L, -2, "verbose");
    push_error_kinds(L);
    lua_setfield(L, -2, "error_kinds");
    gr_push_error_metatable(L);
    lua_setfield(L, -2, "error_metatable");
}

/* package.path: recipe dir, project lua/, share lua/, GPURENT_PATH, then Lua's
 * defaults (Debian's busted, lfs...). String work is simpler in Lua. */
static const char *path_setup =
    "local host, sep = ...\n"
    "local dirs, seen = {}, {}\n"
    "local function add(d) if d and d ~= '' and not seen[d] then seen[d] = true; dirs[#dirs+1] = d end end\n"
    "local lfs = require 'lfs'\n"
    "local function isdir(d) return lfs.attributes(d, 'mode') == 'directory' end\n"
    "add(host.recipe_dir)\n"
    "if isdir(host.project_lua) then add(host.project_lua) end\n"
    "add(host.share_dir .. '/lua')\n"
    "for d in (os.getenv('GPURENT_PATH') or ''):gmatch('[^:]+') do add(d) end\n"
    "host.search_dirs = dirs\n"
    "local parts = {}\n"
    "for _, d in ipairs(dirs) do parts[#parts+1] = d .. '/?.lua;' .. d .. '/?/init.lua' end\n"
    /* Lua's own ./?.lua would reach the working directory behind the trust check */
    "for t in package.path:gmatch('[^;]+') do if t ~= './?.lua' and t ~= './?/init.lua' then parts[#parts+1] = t end end\n"
    "package.path = table.concat(parts, ';')\n"
    /* issue 14: gpurent and gpurent.* load only from the installed library, never
     * falling through to a same-named file elsewhere; a file under the project's lua/
     * loads only once gpurent.trust vouches for it (trusted dir, unchanged file). */
    "local lua_searcher, searchpath, loadfile = package.searchers[2], package.searchpath, loadfile\n"
    "local own = host.share_dir .. '/lua'\n"
    "local own_path, project_lua = own .. '/?.lua;' .. own .. '/?/init.lua', host.project_lua .. '/'\n"
    "package.searchers[2] = function(name)\n"
    "  local file = searchpath(name, package.path)\n"
    "  if file and file:sub(1, #project_lua) == project_lua then require('gpurent.config.trust').vouch_module(file) end\n"
    "  return lua_searcher(name)\n"
    "end\n"
    "table.insert(package.searchers, 2, function(name)\n"
    "  if name ~= 'gpurent' and name:sub(1, 8) ~= 'gpurent.' then return nil end\n"
    "  local file, err = searchpath(name, own_path)\n"
    "  if not file then error(('module \\'%s\\' not found in gpurent\\'s library (its own modules load from nowhere else):%s'):format(name, err), 0) end\n"
    "  local chunk, lerr = loadfile(file)\n"
    "  if not chunk then error(('error loading module \\'%s\\' from file \\'%s\\':\\n\\t%s'):format(name, file, lerr), 0) end\n"
    "  return chunk, file\n"
    "end)\n";

/* load(chunk, name, mode, env): text chunks only, whatever mode the caller asks for. */
static int load_text_only(lua_State *L) {
    lua_settop(L, 4);
    if (!lua_isnil(L, 3) && !lua_isnoneornil(L, 3)) {
        const char *mode = luaL_checkstring(L, 3);
        if (strchr(mode, 'b') && !strchr(mode, 't')) {     /* load's own way to fail: nil, message */
            lua_pushnil(L);
            lua_pushfstring(L, "load: binary chunks are disabled in gpurent (mode '%s')", mode);
            return 2;
        }
    }
    lua_pushliteral(L, "t");
    lua_replace(L, 3);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, 4, LUA_MULTRET);
    return lua_gettop(L);
}

/* loadfile(name, mode, env) and dofile(name): text files only. */
static int loadfile_text_only(lua_State *L) {
    const char *name = luaL_optstring(L, 1, NULL);
    int env = !lua_isnone(L, 3) ? 3 : 0;
    if (luaL_loadfilex(L, name, "t") != LUA_OK) { lua_pushnil(L); lua_insert(L, -2); return 2; }
    if (env) {
        lua_pushvalue(L, env);
        if (!lua_setupvalue(L, -2, 1)) lua_pop(L, 1);
    }
    return 1;
}

static int dofile_text_only(lua_State *L) {
    const char *name = luaL_optstring(L, 1, NULL);
    lua_settop(L, 1);
    if (luaL_loadfilex(L, name, "t") != LUA_OK) return lua_error(L);
    lua_call(L, 0, LUA_MULTRET);
    return lua_gettop(L) - 1;
}

/* package.searchers' Lua searcher, loading text only (Lua's own accepts bytecode). */
static int search_lua_text(lua_State *L) {
    const char *name = luaL_checkstring(L, 1);
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "path");
    const char *path = lua_tostring(L, -1);
    if (!path) return luaL_error(L, "package.path must be a string");
    lua_getfield(L, -2, "searchpath");
    lua_pushstring(L, name);
    lua_pushstring(L, path);
    lua_call(L, 2, 2);
    if (lua_isnil(L, -2)) return 1;              /* the "no file ..." text */
    const char *file = lua_tostring(L, -2);
    if (luaL_loadfilex(L, file, "t") != LUA_OK)
        return luaL_error(L, "error loading module '%s' from file '%s':\n\t%s", name, file, lua_tostring(L, -1));
    lua_pushstring(L, file);
    return 2;
}

/* No native code from Lua: package.loadlib, the C and all-in-one searchers and cpath
 * go; the Lua searcher becomes the text-only one. Preloads (lfs, cjson, gpurent.core)
 * stay: they are the C modules gpurent needs, linked in. */
static void close_native_paths(lua_State *L) {
    lua_getglobal(L, "package");
    lua_pushnil(L);
    lua_setfield(L, -2, "loadlib");
    lua_pushliteral(L, "");
    lua_setfield(L, -2, "cpath");
    lua_createtable(L, 2, 0);
    lua_getfield(L, -2, "searchers");
    lua_rawgeti(L, -1, 1);                        /* the preload searcher */
    lua_rawseti(L, -3, 1);
    lua_pop(L, 1);
    lua_pushcfunction(L, search_lua_text);
    lua_rawseti(L, -2, 2);
    lua_setfield(L, -2, "searchers");
    lua_pop(L, 1);
    lua_getglobal(L, "load");
    lua_pushcclosure(L, load_text_only, 1);
    lua_setglobal(L, "load");
    lua_register(L, "loadfile", loadfile_text_only);
    lua_register(L, "dofile", dofile_text_only);
}

/* Of debug, what tracebacks, errors.lua's caller positions and the REPL need: traceback
 * and getinfo (which reads no locals, upvalues, registry or metatables). */
static void trim_debug(lua_State *L) {
    lua_createtable(L, 0, 2);
    lua_getglobal(L, "debug");
    lua_getfield(L, -1, "traceback");
    lua_setfield(L, -3, "traceback");
    lua_getfield(L, -1, "getinfo");
    lua_setfield(L, -3, "getinfo");
    lua_pop(L, 1);
    lua_pushvalue(L, -1);
    lua_setglobal(L, "debug");
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_insert(L, -2);
    lua_setfield(L, -2, "debug");
    lua_pop(L, 1);
}

/* Message handler: keep the error object as it is (tables carry exit codes) and
 * stash a traceback for --verbose. */
static int msgh(lua_State *L) {
    luaL_traceback(L, L, NULL, 1);
    lua_setfield(L, LUA_REGISTRYINDEX, "gpurent.traceback");
    return 1;
}

/* An error object's exit code is its kind's (gate refusals: 3, usage: 2); a table
 * without a known kind may still carry an `exit` field (a recipe's own). */
static int exit_code_of(lua_State *L, int idx) {
    if (lua_type(L, idx) == LUA_TTABLE) {
        lua_getfield(L, idx, "kind");
        int exit = lua_type(L, -1) == LUA_TSTRING ? exit_of_kind(lua_tostring(L, -1)) : -1;
        lua_pop(L, 1);
        /* a failure in the cleanup after a Ctrl-C still ends as the interrupt */
        if (exit == GR_EXIT_ERROR && gr_interrupted) return GR_EXIT_INTERRUPTED;
        if (exit >= 0) return exit;
        lua_getfield(L, idx, "exit");
        int isnum;
        lua_Integer code = lua_tointegerx(L, -1, &isnum);
        lua_pop(L, 1);
        if (isnum) return (int)code;
    }
    return gr_interrupted ? GR_EXIT_INTERRUPTED : GR_EXIT_ERROR;
}

static void report_error(lua_State *L) {
    const char *msg = NULL;
    if (lua_type(L, -1) == LUA_TSTRING) msg = lua_tostring(L, -1);
    else if (luaL_callmeta(L, -1, "__tostring")) { msg = lua_tostring(L, -1); lua_insert(L, -2); }
    fprintf(stderr, "gpurent: %s\n", msg ? msg : "(error object is not a string)");
    if (host_verbose) {
        lua_getfield(L, LUA_REGISTRYINDEX, "gpurent.traceback");
        if (lua_isstring(L, -1)) fprintf(stderr, "%s\n", lua_tostring(L, -1));
        lua_pop(L, 1);
    }
}

int gr_host_call(lua_State *L, int nargs) {
    int base = lua_gettop(L) - nargs;
    lua_pushcfunction(L, msgh);
    lua_insert(L, base);
    int status = lua_pcall(L, nargs, 1, base);
    lua_remove(L, base);
    if (status == LUA_OK) {
        /* a chunk may return its exit code (the Lua CLI's commands do) */
        int code = lua_isinteger(L, -1) ? (int)lua_tointeger(L, -1) : GR_EXIT_OK;
        lua_pop(L, 1);
        return gr_interrupted ? GR_EXIT_INTERRUPTED : code;
    }
    int code = exit_code_of(L, -1);
    report_error(L);
    lua_settop(L, base - 1);
    return code;
}

int gr_host_load_file(lua_State *L, const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) {
        fprintf(stderr, "gpurent: cannot open recipe %s: %s\n", path, strerror(errno));
        return GR_EXIT_USAGE;
    }
    if (S_ISDIR(st.st_mode)) {
        fprintf(stderr, "gpurent: %s is a directory, not a recipe file\n", path);
        return GR_EXIT_USAGE;
    }
    if (luaL_loadfilex(L, path, "t") != LUA_OK) {
        fprintf(stderr, "gpurent: %s\n", lua_tostring(L, -1));
        lua_pop(L, 1);
        return GR_EXIT_ERROR;
    }
    return GR_EXIT_OK;
}

lua_State *gr_host_new(const char *argv0, const char *recipe_dir, int verbose) {
    (void)argv0;
    host_verbose = verbose;
    lua_State *L = luaL_newstate();
    if (!L) return NULL;
    luaL_openlibs(L);
    close_native_paths(L);
    trim_debug(L);
    if (gr_host_test_extras) gr_host_test_extras(L);
    preload(L, "lfs", luaopen_lfs);
    preload(L, "cjson", luaopen_cjson);
    preload(L, "cjson.safe", luaopen_cjson_safe);
    preload(L, "gpurent.core", open_core);
    find_share_dir(share_dir, sizeof share_dir);
    push_host_info(L, recipe_dir);
    lua_setfield(L, LUA_REGISTRYINDEX, "gpurent.host");
    if (luaL_loadstring(L, path_setup) == LUA_OK) {
        lua_getfield(L, LUA_REGISTRYINDEX, "gpurent.host");
        lua_pushstring(L, ":");
        if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
            fprintf(stderr, "gpurent: search path setup failed: %s\n", lua_tostring(L, -1));
            lua_pop(L, 1);
        }
    }
    /* expose the host info to Lua as gpurent.core.host */
    lua_getglobal(L, "require");
    lua_pushstring(L, "gpurent.core");
    lua_call(L, 1, 1);
    lua_getfield(L, LUA_REGISTRYINDEX, "gpurent.host");
    lua_setfield(L, -2, "host");
    lua_pop(L, 1);
    install_sigint(L);
    return L;
}
