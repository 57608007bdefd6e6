/* main.c: the command line. Parses global options and the built-in commands (run,
 * -e, version, help) with getopt_long; every other command is handed to the Lua CLI
 * (lua/gpurent/cli/init.lua), so commands can be written as policy in Lua. */
#include "host.h"
#include "curlload.h"
#include "sqliteload.h"
#include "approval.h"
#include "provider.h"

#include <getopt.h>
#include <libssh2.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <yaml.h>

/* The full help (`gpurent help`, -h, --help) comes from the command table in
 * lua/gpurent/cli/init.lua, the same table the man page and the shell completions are
 * generated from; C keeps only the one-line reminder printed on a usage error. */
static const char short_usage[] =
    "usage: gpurent [--verbose] COMMAND [ARGS]   (gpurent help lists the commands)\n";

static int usage_error(const char *msg) {
    fprintf(stderr, "gpurent: %s (see gpurent help)\n", msg);
    return GR_EXIT_USAGE;
}

static int cmd_version(void) {
    const gr_curl_api *curl = gr_curl(NULL);
    curl_version_info_data *cv = curl ? curl->version_info(CURLVERSION_NOW) : NULL;
    const gr_sqlite_api *sq = gr_sqlite(NULL);
    printf("gpurent %s\n", GPURENT_VERSION);
    printf("%s\n", LUA_RELEASE);
    printf("libssh2 %s\n", libssh2_version(0));
    printf("libyaml %s\n", yaml_get_version_string());
    printf("%s\n", OpenSSL_version(OPENSSL_VERSION));
    printf("libcurl %s\n", cv ? cv->version : "(not loadable)");
    printf("SQLite %s\n", sq ? sq->libversion() : "(not loadable)");
    return GR_EXIT_OK;
}

/* Bring up the host; recipe_dir is the recipe's directory (NULL for -e and the
 * commands: a working directory is searched only through the trusted project lua/). */
static lua_State *new_host(const char *recipe_dir, int verbose) {
    lua_State *L = gr_host_new("gpurent", recipe_dir, verbose);
    if (!L) fprintf(stderr, "gpurent: cannot create Lua state (out of memory)\n");
    return L;
}

/* Load gpurent's Lua library so recipes see the global `gpurent`. */
static int load_prelude(lua_State *L) {
    lua_getglobal(L, "require");
    lua_pushstring(L, "gpurent");
    return gr_host_call(L, 1);
}

/* A refusal at the provider boundary decides the exit code even when a recipe caught
 * the error: a refused release must never look like success to the shell. */
static int finish(lua_State *L, int code) {
    fflush(stdout);
    lua_close(L);
    if (gr_provider_refusals > 0 && code != GR_EXIT_INTERRUPTED) return GR_EXIT_REFUSED;
    return code;
}

static int cmd_eval(const char *code, int verbose) {
    lua_State *L = new_host(NULL, verbose);
    if (!L) return GR_EXIT_ERROR;
    int rc = load_prelude(L);
    if (rc) return finish(L, rc);
    static const char guard[] = "return require('gpurent.util.errors').guard(...)";
    if (luaL_loadbuffer(L, guard, sizeof guard - 1, "=gpurent") != LUA_OK) return finish(L, GR_EXIT_ERROR);
    if (luaL_loadbufferx(L, code, strlen(code), "=(command line)", "t") != LUA_OK) {
        fprintf(stderr, "gpurent: %s\n", lua_tostring(L, -1));
        return finish(L, GR_EXIT_ERROR);
    }
    return finish(L, gr_host_call(L, 1));
}

/* Push a chunk that calls require(module).main(...) so that loading the module is
 * protected by the same error handling as the call itself; errors.guard trims the
 * positions inside gpurent's own library from what the person reads (not with -v). */
static void push_lua_main(lua_State *L, const char *module) {
    static const char chunk[] =
        "local m = ...; return require('gpurent.util.errors').guard(function(...) return require(m).main(...) end, select(2, ...))";
    if (luaL_loadbuffer(L, chunk, sizeof chunk - 1, "=gpurent") != LUA_OK) lua_error(L);
    lua_pushstring(L, module);
}

static void dirname_of(const char *path, char *out, size_t n) {
    const char *slash = strrchr(path, '/');
    if (!slash) snprintf(out, n, ".");
    else if (slash == path) snprintf(out, n, "/");
    else snprintf(out, n, "%.*s", (int)(slash - path), path);
}

static const char run_usage[] =
    "usage: gpurent run RECIPE [key=value ...] [-- args ...]   (gpurent help run)\n";

static int cmd_lua(int argc, char **argv, int verbose);

/* `gpurent help TOPIC`: the help text lives with the command table in Lua. */
static int cmd_help(const char *topic, int verbose) {
    char *argv[] = {"help", (char *)topic, NULL};
    return cmd_lua(topic ? 2 : 1, argv, verbose);
}

/* A recipe's directory is searched for its modules; a recipe given by name (no such
 * file here: lua/gpurent/lifecycle/recipe.lua finds it) has no directory of its own yet, and the
 * working directory must not stand in for one. */
static int recipe_dir_of(const char *file, char *dir, size_t n) {
    struct stat st;
    if (stat(file, &st) != 0) return 0;
    dirname_of(file, dir, n);
    return 1;
}

/* Hands the recipe to lua/gpurent/lifecycle/recipe.lua, which finds it (a file, or a name),
 * validates declared parameters before running it. */
static int cmd_run(int argc, char **argv, int verbose) {
    static const struct option opts[] = {{"help", no_argument, NULL, 'h'}, {0, 0, 0, 0}};
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
        if (c == 'h') return cmd_help("run", verbose);
        fprintf(stderr, "gpurent: run: unknown option %s\n", argv[optind - 1]);
        fputs(run_usage, stderr);
        return GR_EXIT_USAGE;
    }
    if (optind >= argc) { fputs(run_usage, stderr); return GR_EXIT_USAGE; }
    const char *file = argv[optind++];
    char dir[4096];
    lua_State *L = new_host(recipe_dir_of(file, dir, sizeof dir) ? dir : NULL, verbose);
    if (!L) return GR_EXIT_ERROR;
    int rc = load_prelude(L);
    if (rc) return finish(L, rc);
    push_lua_main(L, "gpurent.lifecycle.recipe");
    lua_pushstring(L, file);
    lua_newtable(L);
    for (int i = optind, n = 1; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, n++);
    }
    return finish(L, gr_host_call(L, 3));
}

/* Commands written in Lua: gpurent.cli.main(cmd, {args...}). */
static int cmd_lua(int argc, char **argv, int verbose) {
    lua_State *L = new_host(NULL, verbose);
    if (!L) return GR_EXIT_ERROR;
    int rc = load_prelude(L);
    if (rc) return finish(L, rc);
    push_lua_main(L, "gpurent.cli");
    lua_pushstring(L, argv[0]);
    lua_newtable(L);
    for (int i = 1; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i);
    }
    return finish(L, gr_host_call(L, 3));
}

/* `--approve NAME` / `--approve=NAME` anywhere in argv[from..] before "--": record
 * the approval (approval.c) and remove the words, so Lua never sees them. Returns the
 * new argc, or -1 when a name is missing. */
static int take_approvals(int argc, char **argv, int from) {
    int out = from;
    for (int i = from; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) {
            while (i < argc) argv[out++] = argv[i++];
            break;
        }
        const char *name = NULL;
        if (strcmp(argv[i], "--approve") == 0) {
            if (i + 1 >= argc) return -1;
            name = argv[++i];
        } else if (strncmp(argv[i], "--approve=", 10) == 0) {
            name = argv[i] + 10;
        }
        if (name) { if (gr_approval_grant(name) != 0) return -1; continue; }
        argv[out++] = argv[i];
    }
    argv[out] = NULL;
    return out;
}

/* --approve is the person's word; a gpurent started by another gpurent (a recipe's,
 * a library's or the REPL's os.execute) did not get it from the person. */
static int refuse_nested_approval(void) {
    long who = 0;
    if (gr_approval_count() == 0 || !gr_approval_spawned_by_gpurent(&who)) return 0;
    fprintf(stderr, "gpurent: refused: --approve is ignored when gpurent is started by another "
                    "gpurent (ancestor PID %ld): approval comes from the person, on their own "
                    "command line or typed on the terminal\n", who);
    return 1;
}

/* `gpurent version [--help]`: the versions, or its help; anything else is a usage error. */
static int cmd_version_words(int argc, char **argv, int verbose) {
    if (argc == 1) return cmd_version();
    if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0))
        return cmd_help("version", verbose);
    fprintf(stderr, "gpurent: version takes no arguments, got '%s'\nusage: gpurent version\n", argv[1]);
    return GR_EXIT_USAGE;
}

/* An unknown global option, named once, on one line (getopt's own message is off). */
static int unknown_option(int argc, char **argv) {
    const char *word = optind - 1 < argc ? argv[optind - 1] : "?";
    char msg[256];
    if (optopt && optopt != '?') snprintf(msg, sizeof msg, "unknown option -%c", optopt);
    else snprintf(msg, sizeof msg, "unknown option %s", word);
    if (optopt == 'e') snprintf(msg, sizeof msg, "-e needs a Lua chunk: gpurent -e 'print(1)'");
    return usage_error(msg);
}

int main(int argc, char **argv) {
    static const struct option opts[] = {
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {"approve", required_argument, NULL, 'a'},
        {0, 0, 0, 0}
    };
    int verbose = 0, help = 0, version = 0, c;
    const char *eval = NULL;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "+vhVe:", opts, NULL)) != -1) {
        switch (c) {
        case 'v': verbose = 1; break;
        case 'h': help = 1; break;
        case 'V': version = 1; break;
        case 'e': eval = optarg; break;
        case 'a':
            if (gr_approval_grant(optarg) != 0) return usage_error("--approve needs an instance name");
            break;
        default: return unknown_option(argc, argv);
        }
    }
    if (version) return cmd_version();
    if (help) return cmd_help(NULL, verbose);
    if (optind < argc) {
        argc = take_approvals(argc, argv, optind + 1);
        if (argc < 0) return usage_error("--approve needs an instance name");
    }
    if (refuse_nested_approval()) return GR_EXIT_REFUSED;
    if (eval) return cmd_eval(eval, verbose);
    if (optind >= argc) { fputs(short_usage, stderr); return GR_EXIT_USAGE; }
    const char *cmd = argv[optind];
    if (strcmp(cmd, "version") == 0) return cmd_version_words(argc - optind, argv + optind, verbose);
    if (strcmp(cmd, "run") == 0) return cmd_run(argc - optind, argv + optind, verbose);
    return cmd_lua(argc - optind, argv + optind, verbose);
}
