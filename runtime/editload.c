/* editload.c: dlopen()s libedit on first use and resolves the calls and variables
 * term.c uses (see editload.h for why it is not linked). */
#include "editload.h"

#include <dlfcn.h>
#include <stddef.h>
#include <stdio.h>

#define LIBEDIT "libedit.so.2"
#define LIBEDIT_DEB "libedit2"

static gr_edit_api api;
static int state; /* 0 not tried, 1 loaded, -1 failed */
static char failure[512];

#define RESOLVE(field, sym)                                                       \
    do {                                                                          \
        *(void **)(&api.field) = dlsym(h, sym);                                   \
        if (!api.field) {                                                         \
            snprintf(failure, sizeof failure, LIBEDIT " lacks " sym              \
                     " (reinstall the Debian package " LIBEDIT_DEB ")");         \
            return -1;                                                            \
        }                                                                         \
    } while (0)

static int load(void) {
    void *h = dlopen(LIBEDIT, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *why = dlerror();
        snprintf(failure, sizeof failure, "cannot load " LIBEDIT " (install the Debian package "
                 LIBEDIT_DEB "): %s", why ? why : "dlopen failed");
        return -1;
    }
    RESOLVE(readline, "readline");
    RESOLVE(add_history, "add_history");
    RESOLVE(read_history, "read_history");
    RESOLVE(write_history, "write_history");
    RESOLVE(history_truncate_file, "history_truncate_file");
    RESOLVE(completion_matches, "rl_completion_matches");
    RESOLVE(line_buffer, "rl_line_buffer");
    RESOLVE(attempted_completion_over, "rl_attempted_completion_over");
    RESOLVE(attempted_completion_function, "rl_attempted_completion_function");
    RESOLVE(basic_word_break_characters, "rl_basic_word_break_characters");
    RESOLVE(catch_signals, "rl_catch_signals");
    RESOLVE(completion_append_character, "rl_completion_append_character");
    RESOLVE(getc_function, "rl_getc_function");
    return 1;
}

const gr_edit_api *gr_edit(const char **err) {
    if (state == 0) state = load();
    if (state < 0) { if (err) *err = failure; return NULL; }
    return &api;
}
