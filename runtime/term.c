/* term.c: the interactive terminal: line editing and history on libedit's readline
 * interface (loaded on first use: editload.c), tab completion answered by a Lua
 * function, Ctrl-C at the prompt (which discards the line instead of ending the
 * program), and secret entry (a line read from /dev/tty with echo off, never through
 * readline's history, so it needs no libedit). */
#include "editload.h"
#include "host.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

static lua_State *completion_state;  /* valid only while readline() runs */
static int completer_ref = LUA_NOREF;
static const gr_edit_api *rl;        /* set once libedit is loaded and configured */

static int term_getc(FILE *f);
static char **complete(const char *text, int start, int end);

/* libedit, loaded and configured on the first call that needs it; a Lua error naming
 * the library and its Debian package when it cannot be loaded. */
static const gr_edit_api *edit(lua_State *L, const char *what) {
    if (rl) return rl;
    const char *err = NULL;
    const gr_edit_api *api = gr_edit(&err);
    if (!api) {
        luaL_error(L, "term.%s: %s; line editing and history need it", what, err);
        return NULL;
    }
    *api->getc_function = term_getc;
    *api->attempted_completion_function = complete;
    *api->basic_word_break_characters = " \t\n\"'`@$><=;|&{(,[+-*/%^~#";
    *api->catch_signals = 0;
    *api->completion_append_character = '\0';
    rl = api;
    return rl;
}

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
    *rl->attempted_completion_over = 1; /* no filename completion fallback */
    lua_State *L = completion_state;
    if (!L || completer_ref == LUA_NOREF) return NULL;
    free_completion_list();
    int top = lua_gettop(L);
    lua_pushcfunction(L, call_completer);
    lua_pushstring(L, text);
    lua_pushstring(L, *rl->line_buffer ? *rl->line_buffer : "");
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
    return rl->completion_matches(text, next_match);
}

/* readline(prompt) -> line | nil (end of input) | false (Ctrl-C at the prompt) */
static int term_readline(lua_State *L) {
    const char *prompt = luaL_optstring(L, 1, "> ");
    const gr_edit_api *api = edit(L, "readline");
    completion_state = L;
    gr_interrupted = 0;
    char *line = api->readline(prompt);
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

/* ---- secret entry: core.term.read_secret(label) -> string ---- */

#define SECRET_MAX 4096  /* the tty's canonical line buffer holds no more anyway */

static int write_tty(int fd, const char *s) {
    size_t n = strlen(s);
    while (n > 0) {
        ssize_t w = write(fd, s, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        s += w;
        n -= (size_t)w;
    }
    return 0;
}

/* One line from fd into out (NUL-terminated, no newline). Returns its length,
 * -1 on end of input, interrupt (gr_interrupted) or error, -2 when too long.
 * poll() first: it returns EINTR on SIGINT whatever SA_RESTART says. */
static ssize_t read_secret_line(int fd, char *out, size_t cap) {
    size_t len = 0;
    int too_long = 0;
    char c = 0;
    ssize_t rc = -1;
    for (;;) {
        struct pollfd p = {fd, POLLIN, 0};
        int r = poll(&p, 1, -1);
        if (r < 0 && errno == EINTR) { if (gr_interrupted) break; continue; }
        if (r < 0) break;
        ssize_t got = read(fd, &c, 1);
        if (got < 0 && errno == EINTR) { if (gr_interrupted) break; continue; }
        if (got <= 0) break;
        if (c == '\n') { rc = 0; break; }
        if (len + 1 < cap) out[len++] = c;
        else too_long = 1;  /* keep reading to the newline, so the rest is not run as a command */
    }
    explicit_bzero(&c, sizeof c);
    if (rc < 0) return -1;
    if (len > 0 && out[len - 1] == '\r') len--;
    out[len] = '\0';
    return too_long ? -2 : (ssize_t)len;
}

/* The secret is about to live in this process: no core file may carry it. */
/* Prompt, read with echo off, restore the mode whatever happened (a SIGINT only
 * sets gr_interrupted, so this returns before any Lua error is raised). */
static ssize_t ask_tty(int fd, const char *label, char *buf, size_t cap) {
    struct termios saved, quiet;
    if (tcgetattr(fd, &saved) != 0) return -3;
    quiet = saved;
    quiet.c_lflag &= ~(tcflag_t)(ECHO | ECHOE | ECHOK | ECHONL);
    quiet.c_lflag |= ICANON | ISIG;  /* a line, and Ctrl-C still interrupts */
    if (write_tty(fd, label) < 0 || write_tty(fd, ": ") < 0) return -3;
    if (tcsetattr(fd, TCSANOW, &quiet) != 0) return -3;
    ssize_t n = read_secret_line(fd, buf, cap);
    tcsetattr(fd, TCSANOW, &saved);
    write_tty(fd, "\n");  /* the Enter that echo did not show */
    return n;
}

static int secret_error(lua_State *L, ssize_t rc) {
    gr_raise_if_interrupted(L);
    if (rc == -2)
        return luaL_error(L, "secret.ask: the value is longer than %d bytes; pass it from the "
                             "environment instead: gpurent.secret(os.getenv(\"VAR\"))", SECRET_MAX - 1);
    if (rc == -3)
        return luaL_error(L, "secret.ask: cannot turn off echo on /dev/tty (%s); nothing was read",
                          strerror(errno));
    return luaL_error(L, "secret.ask: no value was typed (end of input on /dev/tty)");
}

/* read_secret(label) -> the line typed on the controlling terminal, not echoed.
 * /dev/tty, never stdin: a pipe or a redirected file cannot answer for the person. */
static int term_read_secret(lua_State *L) {
    const char *label = luaL_checkstring(L, 1);
    gr_raise_if_interrupted(L);  /* a Ctrl-C before the prompt still counts */
    int fd = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (fd < 0)
        return luaL_error(L, "secret.ask: cannot open /dev/tty (%s): secret.ask needs a terminal to "
                             "type the value on; without one, pass it from the environment: "
                             "gpurent.secret(os.getenv(\"VAR\"))", strerror(errno));
    gr_protect_secrets();
    char buf[SECRET_MAX];
    ssize_t n = ask_tty(fd, label, buf, sizeof buf);
    int saved_errno = errno;
    close(fd);
    if (n < 0) {
        explicit_bzero(buf, sizeof buf);
        errno = saved_errno;
        return secret_error(L, n);
    }
    lua_pushlstring(L, buf, (size_t)n);
    explicit_bzero(buf, sizeof buf);
    return 1;
}

static int term_add_history(lua_State *L) {
    const char *line = luaL_checkstring(L, 1);
    edit(L, "add_history")->add_history(line);
    return 0;
}

static int term_load_history(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    lua_pushboolean(L, edit(L, "load_history")->read_history(path) == 0);
    return 1;
}

/* save_history(path, max_lines): written 0600, history may name hosts and paths. */
static int term_save_history(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    int max = (int)luaL_optinteger(L, 2, 1000);
    const gr_edit_api *api = edit(L, "save_history");
    mode_t old = umask(077);
    int rc = api->write_history(path);
    umask(old);
    if (rc != 0) return gr_errno_error(L, "save_history: cannot write", path);
    api->history_truncate_file(path, max);
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
        {"read_secret", term_read_secret},
        {NULL, NULL}
    };
    luaL_newlib(L, fns);
    return 1;
}
