/* host.h: what the C primitives share with the host (host.c): the registry of
 * gpurent.core modules, the interrupt flag, and error helpers that raise Lua errors
 * with context instead of aborting. */
#ifndef GPURENT_HOST_H
#define GPURENT_HOST_H

#include <lua.h>
#include <lauxlib.h>

#define GPURENT_VERSION "0.1.0"

/* Exit codes, documented in `gpurent help`. */
enum {
    GR_EXIT_OK = 0,
    GR_EXIT_ERROR = 1,       /* recipe or runtime error */
    GR_EXIT_USAGE = 2,       /* usage error */
    GR_EXIT_REFUSED = 3,     /* refused by a safety gate */
    GR_EXIT_INTERRUPTED = 130
};

/* Each primitive file exports one opener that pushes its table; host.c puts them
 * under gpurent.core.<name>. Add new primitives to the table in host.c. */
int gr_open_yaml(lua_State *L);
int gr_open_hash(lua_State *L);
int gr_open_fs(lua_State *L);
int gr_open_sys(lua_State *L);
int gr_open_term(lua_State *L);
int gr_open_sched(lua_State *L); int gr_open_ssh(lua_State *L); int gr_open_knownhosts(lua_State *L);
int gr_open_sqlite(lua_State *L);
int gr_open_http(lua_State *L); int gr_open_approval(lua_State *L);
int gr_open_provider(lua_State *L);

/* gpurent's own lua/, profiles/ and recipes/ (installed or beside the binary), as C
 * computed it at start-up; Lua's core.host.share_dir is only a copy. */
const char *gr_host_share_dir(void);

/* Call once a secret is in memory: RLIMIT_CORE (soft) 0 and not dumpable (host.c). */
void gr_protect_secrets(void);

/* Set by the SIGINT handler; primitives that block (poll, read) check it and raise
 * an error of kind "interrupted" so the Lua code's cleanup runs. */
extern volatile int gr_interrupted;
int gr_raise_if_interrupted(lua_State *L);
/* Forget a handled SIGINT (the REPL after Ctrl-C): clears the flag and the hook. */
void gr_clear_interrupt(lua_State *L);

/* The one error type (lua/gpurent/util/errors.lua): a table {kind=, exit=, msg=, ...}
 * with the registry metatable "gpurent.error" (printed as its msg). The kinds and the
 * exit code each ends the program with are defined once, in host.c; Lua reads them
 * as core.host.error_kinds. gr_push_error_metatable pushes that metatable;
 * gr_make_error turns the table on top of the stack (msg already set) into an error of
 * `kind`; gr_raise_error raises a new one with `msg`. */
void gr_push_error_metatable(lua_State *L);
void gr_make_error(lua_State *L, const char *kind);
int gr_raise_error(lua_State *L, const char *kind, const char *msg);

/* luaL_error with strerror(errno) appended: "<what> <path>: <strerror>". */
int gr_errno_error(lua_State *L, const char *what, const char *path);

/* Create the lua_State with libraries, preloads and search path. recipe_dir may be NULL. */
lua_State *gr_host_new(const char *argv0, const char *recipe_dir, int verbose);
/* Run the chunk on top of the stack with nargs arguments under the error handler.
 * Returns an exit code, having printed the error if any. */
int gr_host_call(lua_State *L, int nargs);
/* Load a file as a chunk named after path; returns an exit code (0 when loaded). */
int gr_host_load_file(lua_State *L, const char *path);

#endif
