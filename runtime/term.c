/* term.c: the interactive terminal: line editing and history on libedit's readline
 * interface, tab completion answered by a Lua function, and Ctrl-C at the prompt
 * (which discards the line instead of ending the program). */
#include "host.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <editline/readline.h>

static lua_State *completion_state;  /* valid only while readline() runs */
static int completer_ref = LUA_NOREF;

/* rl_getc_function: read a byte; a SIGINT (gr_interrupted) ends the line. */
static int term_getc(FILE *f) {
    (void)f;
    unsigned char c;
    for (;;) {
        ssize_t n = read(STDIN_FILENO, &c, 1);
        if (n == 1) return c;
        if (n < 0 && errno == EINTR) {
            if (gr_interrupted) return EOF;
            continue;
        }
        return EOF;
    }
}

/* Matches come from the Lua completer: completer(text, line, start) -> {..}. */
static char **completion_list;
static size_t completion_next;

static char *next_match(const char *text, int state) {
    (void)text;
    (void)state;
    if (!completion_list || !completion_list[completion_next]) return NULL;
    return strdup(completion_list[completion_next++]);
}

static void free_completion_list(void) {
    if (!completion_list) return;
    for (size_t i = 0; completion_list[i]; i++) free(completion_list[i]);
    free(completion_list);
    completion_list = NULL;
}

static int call_completer(lua_State *L) {
    /* protected: text, line, start on the stack; leaves the list of strings */
    lua_rawgeti(L, LUA_REGISTRYINDEX, completer_ref);
    lua_insert(L, 1);
    lua_call(L, 3, 1);
    return 1;
}

static char **complete(const char *text, int start, int end) {
    (void)end;
    rl_attempted_completion_over = 1; /* no filename completion fallback */
    lua_State *L = completion_state;
    if (!L || completer_ref == LUA_NOREF) return NULL;
    free_completion_list();
    int top = lua_gettop(L);
    lua_pushcfunction(L, call_completer);
    lua_pushstring(L, text);
    lua_pushstring(L, rl_line_buffer ? rl_line_buffer : "");
    lua_pushinteger(L, start);
    if (lua_pcall(L, 3, 1, 0) != LUA_OK || !lua_istable(L, -1)) { lua_settop(L, top); return NULL; }
    size_t n = lua_rawlen(L, -1);
    completion_list = calloc(n + 1, sizeof *completion_list);
    if (!completion_list) { lua_settop(L, top); return NULL; }
    size_t k = 0;
    for (size_t i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, (lua_Integer)i);
        const char *s = lua_tostring(L, -1);
        if (s && (completion_list[k] = strdup(s)) != NULL) k++;
        lua_pop(L, 1);
    }
    lua_settop(L, top);
    completion_next = 0;
    if (k == 0) { free_completion_list(); return NULL; }
    return rl_completion_matches(text, next_match);
}

/* readline(prompt) -> line | nil (end of input) | false (Ctrl-C at the prompt) */
static int term_readline(lua_State *L) {
    const char *prompt = luaL_optstring(L, 1, "> ");
    completion_state = L;
    gr_interrupted = 0;
    char *line = readline(prompt);
    completion_state = NULL;
    if (gr_interrupted) {
        free(line);
        gr_clear_interrupt(L);
        fputc('\n', stdout);
        fflush(stdout);
        lua_pushboolean(L, 0);
        return 1;
    }
    if (!line) { lua_pushnil(L); return 1; }
    lua_pushstring(L, line);
    free(line);
    return 1;
}

static int term_add_history(lua_State *L) {
    add_history(luaL_checkstring(L, 1));
    return 0;
}

static int term_load_history(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    lua_pushboolean(L, read_history(path) == 0);
    return 1;
}

/* save_history(path, max_lines): written 0600, history may name hosts and paths. */
static int term_save_history(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    int max = (int)luaL_optinteger(L, 2, 1000);
    mode_t old = umask(077);
    int rc = write_history(path);
    umask(old);
    if (rc != 0) return gr_errno_error(L, "save_history: cannot write", path);
    history_truncate_file(path, max);
    lua_pushboolean(L, 1);
    return 1;
}

static int term_set_completer(lua_State *L) {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    if (completer_ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, completer_ref);
    lua_pushvalue(L, 1);
    completer_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

static int term_clear_interrupt(lua_State *L) {
    gr_clear_interrupt(L);
    return 0;
}

int gr_open_term(lua_State *L) {
    static const luaL_Reg fns[] = {
        {"readline", term_readline}, {"add_history", term_add_history},
        {"load_history", term_load_history}, {"save_history", term_save_history},
        {"set_completer", term_set_completer}, {"clear_interrupt", term_clear_interrupt},
        {NULL, NULL}
    };
    rl_getc_function = term_getc;
    rl_attempted_completion_function = complete;
    rl_basic_word_break_characters = " \t\n\"'`@$><=;|&{(,[+-*/%^~#";
    rl_catch_signals = 0;
    rl_completion_append_character = '\0';
    luaL_newlib(L, fns);
    return 1;
}
