/* sqliteload.h: libsqlite3, loaded when the first database opens. Linked, it cost
 * every start-up ~260 KiB of peak RSS (its symbol tables and relocated data), and a
 * run with nothing due, `gpurent --help` or a recipe that keeps no ledger never opens
 * one (tests/spec/startup_spec.lua). Each field has the type of the sqlite3_ function
 * it points to, taken from <sqlite3.h>, so a call through it is checked as before. */
#ifndef GPURENT_SQLITELOAD_H
#define GPURENT_SQLITELOAD_H

#include <sqlite3.h>

/* The sqlite3_<name> functions sqlite.c and main.c call. */
#define GR_SQLITE_CALLS(X)                                                             \
    X(libversion) X(open_v2) X(close_v2) X(extended_result_codes) X(busy_handler)      \
    X(progress_handler) X(errmsg) X(errstr) X(exec) X(free) X(prepare_v2) X(sql)       \
    X(bind_null) X(bind_int) X(bind_int64) X(bind_double) X(bind_text64)               \
    X(bind_parameter_count) X(bind_parameter_name) X(bind_parameter_index)             \
    X(clear_bindings) X(column_count) X(column_type) X(column_int64) X(column_double)  \
    X(column_blob) X(column_bytes) X(column_name) X(step) X(reset) X(finalize)         \
    X(changes64) X(last_insert_rowid) X(get_autocommit)

#define GR_SQLITE_FIELD(name) __typeof__(sqlite3_##name) *name;
typedef struct {
    GR_SQLITE_CALLS(GR_SQLITE_FIELD)
} gr_sqlite_api;
#undef GR_SQLITE_FIELD

/* The loaded API, or NULL with *err set to a message naming the library and the
 * Debian package that provides it. */
const gr_sqlite_api *gr_sqlite(const char **err);

#endif
