/* editload.c: dlopen()s libedit on first use and resolves the calls and variables
 * term.c uses (see editload.h for why it is not linked). */
#include "editload.h"

#include "libload.h"

#include <stddef.h>

static gr_edit_api api;
static gr_lib lib = {.soname = "libedit.so.2", .deb = "libedit2"};

#define RESOLVE(field, sym) \
    if (gr_lib_sym(&lib, (void **)&api.field, sym) < 0) return -1;

static int load(void) {
    if (gr_lib_open(&lib) < 0) return -1;
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
    if (lib.state == 0) lib.state = load();
    if (lib.state < 0) { if (err) *err = lib.failure; return NULL; }
    return &api;
}
