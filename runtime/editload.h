/* editload.h: libedit (readline, history, completion), loaded on first use. Linked,
 * it and what it needs (libtinfo, libbsd, libmd) cost every start-up ~370 KiB of
 * peak RSS in relocated pages; only the REPL edits lines, so only it pays. The
 * readline variables are reached through pointers into the loaded library. */
#ifndef GPURENT_EDITLOAD_H
#define GPURENT_EDITLOAD_H

#include <stdio.h>
#include <editline/readline.h>

typedef struct {
    char *(*readline)(const char *prompt);
    int (*add_history)(const char *line);
    int (*read_history)(const char *path);
    int (*write_history)(const char *path);
    int (*history_truncate_file)(const char *path, int lines);
    char **(*completion_matches)(const char *text, rl_compentry_func_t *entry);
    char **line_buffer;                                /* rl_line_buffer */
    int *attempted_completion_over;                    /* rl_attempted_completion_over */
    rl_completion_func_t **attempted_completion_function;
    const char **basic_word_break_characters;
    int *catch_signals;
    int *completion_append_character;
    int (**getc_function)(FILE *);
} gr_edit_api;

/* The loaded API, or NULL with *err set to a message naming the library and the
 * Debian package that provides it. */
const gr_edit_api *gr_edit(const char **err);

#endif
