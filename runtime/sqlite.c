/* sqlite.c: a small SQLite binding, gpurent.core.sqlite. Owns the mechanism only:
 * opening a database with a busy handler that waits (bounded) and honours SIGINT,
 * exec, prepared statements (bind/step/reset/finalize), a query(sql, ...) -> rows
 * helper, and transaction(fn, mode). Every SQLite return code is checked; errors are
 * Lua errors naming the operation, the database path and the SQL. Schema and policy
 * (WAL, migrations) live in lua/gpurent/state/ledger.lua.
 *
 *   db = sqlite.open(path [, {busy_timeout = ms, readonly = bool, create = bool}])
 *   db:exec(sql)                      several statements, no results
 *   db:run(sql, ...) -> changes, rowid one statement, params bound
 *   db:query(sql, ...) -> {row, ...}  rows keyed by column name (NULL = absent)
 *   db:prepare(sql) -> stmt           stmt:bind(...), stmt:step() -> row|nil,
 *                                     stmt:reset(), stmt:finalize()
 *   db:transaction(fn [, "IMMEDIATE"|"DEFERRED"|"EXCLUSIVE"]) -> fn's results
 *   db:autocommit(), db:path(), db:close()
 * Parameters: positional values fill ?/?NNN; a single table fills :name/@name/$name
 * (a key the SQL does not use is an error, so a typo does not silently bind NULL).
 * Values: nil -> NULL, boolean -> 0/1, integer, float, string -> TEXT.
 * libsqlite3 is loaded by the first open (sqliteload.c): a Db exists only after it. */
#include "host.h"
#include "sqliteload.h"

#include <errno.h>
#include <string.h>
#include <time.h>

#define DB_MT "gpurent.sqlite.db"
#define STMT_MT "gpurent.sqlite.stmt"

static const gr_sqlite_api *sq;  /* set by the first open(); every Db implies it */

/* Load libsqlite3 (once) or raise an error naming it and its Debian package. */
static void need_sqlite(lua_State *L, const char *what) {
    const char *err = NULL;
    if (!sq && !(sq = gr_sqlite(&err))) luaL_error(L, "sqlite %s: %s", what, err);
}

typedef struct {
    sqlite3 *db;
    int busy_timeout_ms;
    char path[4096];
} Db;

typedef struct {
    sqlite3_stmt *stmt;
    Db *db; /* kept alive by the statement's user value */
} Stmt;

/* ---- errors ---------------------------------------------------------------- */

/* Raise "sqlite <op> <path>: <message> [(<code name>)] [in: <sql>]". SQL is cut so a
 * long migration does not drown the message. */
/* lua_pushfstring has no precision: push the SQL cut to 200 bytes, return it. */
static const char *snip(lua_State *L, const char *sql) {
    size_t n = sql ? strlen(sql) : 0;
    if (n <= 200) { lua_pushstring(L, sql ? sql : ""); return lua_tostring(L, -1); }
    lua_pushlstring(L, sql, 200);
    lua_pushliteral(L, "...");
    lua_concat(L, 2);
    return lua_tostring(L, -1);
}

static int raise_rc(lua_State *L, Db *d, int rc, const char *op, const char *sql) {
    const char *msg = d && d->db ? sq->errmsg(d->db) : sq->errstr(rc);
    if (rc == SQLITE_INTERRUPT && gr_interrupted) return luaL_error(L, "interrupted");
    if (sql)
        return luaL_error(L, "sqlite %s %s: %s (%s) in: %s", op, d ? d->path : "?",
                          msg, sq->errstr(rc), snip(L, sql));
    return luaL_error(L, "sqlite %s %s: %s (%s)", op, d ? d->path : "?", msg, sq->errstr(rc));
}

static Db *check_db(lua_State *L, int idx) {
    Db *d = luaL_checkudata(L, idx, DB_MT);
    if (!d->db) luaL_error(L, "sqlite: database %s is closed", d->path);
    return d;
}

static Stmt *check_stmt(lua_State *L, int idx) {
    Stmt *s = luaL_checkudata(L, idx, STMT_MT);
    if (!s->stmt) luaL_error(L, "sqlite statement is finalized");
    if (!s->db->db) luaL_error(L, "sqlite: database %s is closed", s->db->path);
    return s;
}

/* ---- busy and interrupt handling --------------------------------------------- */

/* Wait for a lock with growing sleeps up to busy_timeout_ms; give up at once when
 * SIGINT arrived, so a blocked writer never hides an interrupt. */
static int busy_handler(void *arg, int count) {
    Db *d = arg;
    static const int delays_ms[] = {1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100};
    const int n = (int)(sizeof delays_ms / sizeof delays_ms[0]);
    if (gr_interrupted) return 0;
    int waited = 0;
    for (int i = 0; i < count; i++) waited += i < n ? delays_ms[i] : delays_ms[n - 1];
    if (waited >= d->busy_timeout_ms) return 0;
    int delay = count < n ? delays_ms[count] : delays_ms[n - 1];
    if (waited + delay > d->busy_timeout_ms) delay = d->busy_timeout_ms - waited;
    struct timespec ts = {delay / 1000, (long)(delay % 1000) * 1000000L};
    nanosleep(&ts, NULL); /* EINTR: the next call sees gr_interrupted */
    return !gr_interrupted;
}

/* Long statements stop with SQLITE_INTERRUPT once SIGINT arrived. */
static int progress_handler(void *arg) {
    (void)arg;
    return gr_interrupted;
}

/* ---- open / close ------------------------------------------------------------ */

static int opt_bool(lua_State *L, int t, const char *k, int dflt) {
    if (lua_type(L, t) != LUA_TTABLE) return dflt;
    lua_getfield(L, t, k);
    int v = lua_isnil(L, -1) ? dflt : lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

static lua_Integer opt_int(lua_State *L, int t, const char *k, lua_Integer dflt) {
    if (lua_type(L, t) != LUA_TTABLE) return dflt;
    lua_getfield(L, t, k);
    lua_Integer v = lua_isnil(L, -1) ? dflt : luaL_checkinteger(L, -1);
    lua_pop(L, 1);
    return v;
}

static int db_open(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TTABLE);
    int readonly = opt_bool(L, 2, "readonly", 0);
    int create = opt_bool(L, 2, "create", 1);
    lua_Integer timeout = opt_int(L, 2, "busy_timeout", 10000);
    if (timeout < 0 || timeout > 3600000) return luaL_error(L, "sqlite open %s: busy_timeout out of range", path);
    lua_pushfstring(L, "open %s", path);
    need_sqlite(L, lua_tostring(L, -1));
    lua_pop(L, 1);
    Db *d = lua_newuserdatauv(L, sizeof *d, 0);
    memset(d, 0, sizeof *d);
    snprintf(d->path, sizeof d->path, "%s", path);
    d->busy_timeout_ms = (int)timeout;
    luaL_setmetatable(L, DB_MT);
    int flags = readonly ? SQLITE_OPEN_READONLY
                         : SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0);
    int rc = sq->open_v2(path, &d->db, flags, NULL);
    if (rc != SQLITE_OK) {
        /* the handle exists even on failure (unless out of memory): read, then close */
        lua_pushfstring(L, "sqlite open %s: %s", path, d->db ? sq->errmsg(d->db) : sq->errstr(rc));
        sq->close_v2(d->db);
        d->db = NULL;
        return lua_error(L);
    }
    if ((rc = sq->extended_result_codes(d->db, 1)) != SQLITE_OK) return raise_rc(L, d, rc, "open", NULL);
    if ((rc = sq->busy_handler(d->db, busy_handler, d)) != SQLITE_OK) return raise_rc(L, d, rc, "open", NULL);
    sq->progress_handler(d->db, 1000, progress_handler, NULL); /* returns void */
    return 1;
}

static int db_close(lua_State *L) {
    Db *d = luaL_checkudata(L, 1, DB_MT);
    if (d->db) {
        /* close_v2: statements not yet finalized keep the handle alive until their
         * own __gc; they check d->db and refuse to run. */
        int rc = sq->close_v2(d->db);
        if (rc != SQLITE_OK) return raise_rc(L, d, rc, "close", NULL);
        d->db = NULL;
    }
    return 0;
}

static int db_gc(lua_State *L) {
    Db *d = luaL_checkudata(L, 1, DB_MT);
    if (d->db) sq->close_v2(d->db); /* no error can be raised from __gc */
    d->db = NULL;
    return 0;
}

/* ---- exec --------------------------------------------------------------------- */

static int db_exec(lua_State *L) {
    Db *d = check_db(L, 1);
    const char *sql = luaL_checkstring(L, 2);
    char *err = NULL;
    int rc = sq->exec(d->db, sql, NULL, NULL, &err);
    if (rc != SQLITE_OK) {
        if (rc == SQLITE_INTERRUPT && gr_interrupted) { sq->free(err); return luaL_error(L, "interrupted"); }
        lua_pushfstring(L, "sqlite exec %s: %s (%s) in: %s", d->path, err ? err : sq->errmsg(d->db),
                        sq->errstr(rc), snip(L, sql));
        sq->free(err);
        return lua_error(L);
    }
    return 0;
}

/* ---- statements ------------------------------------------------------------------ */

/* Prepare one statement into a userdata at the top of the stack, so that a Lua error
 * later (bind, out of memory) still finalizes it through __gc. */
static Stmt *push_stmt(lua_State *L, int dbidx, Db *d, const char *sql, size_t len) {
    Stmt *s = lua_newuserdatauv(L, sizeof *s, 1);
    s->stmt = NULL;
    s->db = d;
    lua_pushvalue(L, dbidx);
    lua_setiuservalue(L, -2, 1);
    luaL_setmetatable(L, STMT_MT);
    const char *tail = NULL;
    int rc = sq->prepare_v2(d->db, sql, (int)len, &s->stmt, &tail);
    if (rc != SQLITE_OK) raise_rc(L, d, rc, "prepare", sql);
    if (!s->stmt) luaL_error(L, "sqlite prepare %s: no statement in: %s", d->path, snip(L, sql));
    while (tail && *tail && strchr(" \t\r\n;", *tail)) tail++;
    if (tail && *tail)
        luaL_error(L, "sqlite prepare %s: more than one statement (use exec) in: %s", d->path, snip(L, sql));
    return s;
}

static void bind_value(lua_State *L, Stmt *s, int i, int idx) {
    int rc;
    switch (lua_type(L, idx)) {
    case LUA_TNIL: case LUA_TNONE: rc = sq->bind_null(s->stmt, i); break;
    case LUA_TBOOLEAN: rc = sq->bind_int(s->stmt, i, lua_toboolean(L, idx)); break;
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) rc = sq->bind_int64(s->stmt, i, (sqlite3_int64)lua_tointeger(L, idx));
        else rc = sq->bind_double(s->stmt, i, (double)lua_tonumber(L, idx));
        break;
    case LUA_TSTRING: {
        size_t n;
        const char *p = lua_tolstring(L, idx, &n);
        rc = sq->bind_text64(s->stmt, i, p, (sqlite3_uint64)n, SQLITE_TRANSIENT, SQLITE_UTF8);
        break;
    }
    default:
        luaL_error(L, "sqlite bind %s: parameter %d: cannot bind a %s in: %s", s->db->path, i,
                   luaL_typename(L, idx), snip(L, sq->sql(s->stmt)));
        return;
    }
    if (rc != SQLITE_OK) raise_rc(L, s->db, rc, "bind", sq->sql(s->stmt));
}

/* Bind the Lua values at first..top: one table binds by name, else by position. */
static void bind_args(lua_State *L, Stmt *s, int first) {
    int top = lua_gettop(L), nparams = sq->bind_parameter_count(s->stmt);
    const char *sql = sq->sql(s->stmt);
    int rc = sq->clear_bindings(s->stmt);
    if (rc != SQLITE_OK) raise_rc(L, s->db, rc, "bind", sql);
    if (top == first && lua_type(L, first) == LUA_TTABLE) {
        for (int i = 1; i <= nparams; i++) {
            const char *name = sq->bind_parameter_name(s->stmt, i);
            if (!name) luaL_error(L, "sqlite bind %s: parameter %d is positional but a table was given in: %s",
                                  s->db->path, i, snip(L, sql));
            lua_getfield(L, first, name + 1);
            bind_value(L, s, i, -1);
            lua_pop(L, 1);
        }
        /* every non-nil key must have been used */
        lua_pushnil(L);
        while (lua_next(L, first)) {
            lua_pop(L, 1);
            if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "sqlite bind %s: parameter table has a non-string key in: %s", s->db->path, snip(L, sql));
            const char *k = lua_tostring(L, -1);
            char buf[256];
            int found = 0;
            for (const char *pre = ":@$"; *pre && !found; pre++) {
                snprintf(buf, sizeof buf, "%c%s", *pre, k);
                found = sq->bind_parameter_index(s->stmt, buf) > 0;
            }
            if (!found) luaL_error(L, "sqlite bind %s: no parameter :%s in: %s", s->db->path, k, snip(L, sql));
        }
        return;
    }
    int nargs = top - first + 1;
    if (nargs != nparams)
        luaL_error(L, "sqlite bind %s: %d parameter%s given, the statement takes %d in: %s", s->db->path,
                   nargs, nargs == 1 ? "" : "s", nparams, snip(L, sql));
    for (int i = 1; i <= nparams; i++) bind_value(L, s, i, first + i - 1);
}

static void push_row(lua_State *L, sqlite3_stmt *st) {
    int n = sq->column_count(st);
    lua_createtable(L, 0, n);
    for (int i = 0; i < n; i++) {
        switch (sq->column_type(st, i)) {
        case SQLITE_INTEGER: lua_pushinteger(L, (lua_Integer)sq->column_int64(st, i)); break;
        case SQLITE_FLOAT: lua_pushnumber(L, (lua_Number)sq->column_double(st, i)); break;
        case SQLITE_TEXT: case SQLITE_BLOB: {
            const void *p = sq->column_blob(st, i);
            int len = sq->column_bytes(st, i);
            lua_pushlstring(L, p ? p : "", (size_t)len);
            break;
        }
        default: continue; /* NULL: the key stays absent */
        }
        lua_setfield(L, -2, sq->column_name(st, i));
    }
}

/* Step once: 1 with a row pushed, 0 when done. On error the statement is reset
 * (so it can run again) and the error raised with the step's message. */
static int step(lua_State *L, Stmt *s) {
    int rc = sq->step(s->stmt);
    if (rc == SQLITE_ROW) { push_row(L, s->stmt); return 1; }
    if (rc == SQLITE_DONE) return 0;
    lua_pushfstring(L, "sqlite step %s: %s (%s) in: %s", s->db->path, sq->errmsg(s->db->db),
                    sq->errstr(rc), snip(L, sq->sql(s->stmt)));
    lua_remove(L, -2); /* the snippet */
    sq->reset(s->stmt); /* returns the same error again; already reported */
    if (rc == SQLITE_INTERRUPT && gr_interrupted) return luaL_error(L, "interrupted");
    return lua_error(L);
}

static int stmt_reset_rc(lua_State *L, Stmt *s) {
    int rc = sq->reset(s->stmt);
    if (rc != SQLITE_OK) raise_rc(L, s->db, rc, "reset", sq->sql(s->stmt));
    return 0;
}

static int db_prepare(lua_State *L) {
    Db *d = check_db(L, 1);
    size_t len;
    const char *sql = luaL_checklstring(L, 2, &len);
    push_stmt(L, 1, d, sql, len);
    return 1;
}

static int stmt_bind(lua_State *L) {
    Stmt *s = check_stmt(L, 1);
    stmt_reset_rc(L, s);
    bind_args(L, s, 2);
    lua_settop(L, 1);
    return 1;
}

static int stmt_step(lua_State *L) {
    Stmt *s = check_stmt(L, 1);
    if (!step(L, s)) lua_pushnil(L);
    return 1;
}

static int stmt_reset(lua_State *L) {
    Stmt *s = check_stmt(L, 1);
    stmt_reset_rc(L, s);
    lua_settop(L, 1);
    return 1;
}

static int stmt_finalize(lua_State *L) {
    Stmt *s = luaL_checkudata(L, 1, STMT_MT);
    if (s->stmt) {
        /* finalize's code repeats the last step's error, which step already raised */
        sq->finalize(s->stmt);
        s->stmt = NULL;
    }
    return 0;
}

/* query(sql, ...) -> array of rows; run(sql, ...) -> changes, last_insert_rowid. */
/* Prepare db:method(sql, ...) and bind its arguments; leaves the statement at 3. */
static Stmt *prepare_bound(lua_State *L) {
    Db *d = check_db(L, 1);
    size_t len;
    const char *sql = luaL_checklstring(L, 2, &len);
    Stmt *s = push_stmt(L, 1, d, sql, len);
    /* move the statement below the arguments so bind_args sees them at the top */
    lua_insert(L, 3);
    bind_args(L, s, 4);
    lua_settop(L, 3);
    return s;
}

static int db_query(lua_State *L) {
    Stmt *s = prepare_bound(L);
    lua_newtable(L);
    for (lua_Integer n = 1; step(L, s); n++) lua_rawseti(L, -2, n);
    sq->finalize(s->stmt);
    s->stmt = NULL;
    return 1;
}

static int db_run(lua_State *L) {
    Stmt *s = prepare_bound(L);
    Db *d = check_db(L, 1);
    while (step(L, s)) lua_pop(L, 1); /* RETURNING rows, if any, are dropped */
    sq->finalize(s->stmt);
    s->stmt = NULL;
    lua_pushinteger(L, (lua_Integer)sq->changes64(d->db));
    lua_pushinteger(L, (lua_Integer)sq->last_insert_rowid(d->db));
    return 2;
}

/* ---- transactions -------------------------------------------------------------- */

static void exec_simple(lua_State *L, Db *d, const char *sql, const char *op) {
    int rc = sq->exec(d->db, sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK) raise_rc(L, d, rc, op, sql);
}

/* transaction(fn [, mode]): BEGIN <mode>; fn(db); COMMIT. Any error in fn (or in
 * COMMIT) rolls back and is re-raised as it was, so error objects keep exit codes. */
static int db_transaction(lua_State *L) {
    Db *d = check_db(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    static const char *const modes[] = {"IMMEDIATE", "DEFERRED", "EXCLUSIVE", NULL};
    static const char *const begins[] = {"BEGIN IMMEDIATE", "BEGIN DEFERRED", "BEGIN EXCLUSIVE"};
    int mode = luaL_checkoption(L, 3, "IMMEDIATE", modes);
    if (!sq->get_autocommit(d->db))
        return luaL_error(L, "sqlite begin %s: a transaction is already open (nested transaction)", d->path);
    exec_simple(L, d, begins[mode], "begin");
    lua_settop(L, 2);
    lua_pushvalue(L, 1); /* stack: db, fn, db -> after the call: db, results... */
    int status = lua_pcall(L, 1, LUA_MULTRET, 0);
    if (status == LUA_OK) {
        int rc = sq->exec(d->db, "COMMIT", NULL, NULL, NULL);
        if (rc == SQLITE_OK) return lua_gettop(L) - 1; /* fn's results follow the db */
        lua_pushfstring(L, "sqlite commit %s: %s (%s)", d->path, sq->errmsg(d->db), sq->errstr(rc));
    }
    /* the error object is on top; roll back if SQLite has not already done so */
    if (!sq->get_autocommit(d->db)) {
        int rc = sq->exec(d->db, "ROLLBACK", NULL, NULL, NULL);
        if (rc != SQLITE_OK)
            return luaL_error(L, "sqlite rollback %s: %s (%s), after: %s", d->path, sq->errmsg(d->db),
                              sq->errstr(rc), luaL_tolstring(L, -1, NULL));
    }
    return lua_error(L);
}

static int db_autocommit(lua_State *L) {
    Db *d = check_db(L, 1);
    lua_pushboolean(L, sq->get_autocommit(d->db));
    return 1;
}

static int db_path(lua_State *L) {
    Db *d = luaL_checkudata(L, 1, DB_MT);
    lua_pushstring(L, d->path);
    return 1;
}

static int db_tostring(lua_State *L) {
    Db *d = luaL_checkudata(L, 1, DB_MT);
    lua_pushfstring(L, "sqlite.db(%s%s)", d->path, d->db ? "" : ", closed");
    return 1;
}

static int sqlite_version(lua_State *L) {
    need_sqlite(L, "version");
    lua_pushstring(L, sq->libversion());
    return 1;
}

int gr_open_sqlite(lua_State *L) {
    static const luaL_Reg db_methods[] = {
        {"exec", db_exec}, {"run", db_run}, {"query", db_query}, {"prepare", db_prepare},
        {"transaction", db_transaction}, {"autocommit", db_autocommit}, {"path", db_path},
        {"close", db_close}, {NULL, NULL}
    };
    static const luaL_Reg stmt_methods[] = {
        {"bind", stmt_bind}, {"step", stmt_step}, {"reset", stmt_reset},
        {"finalize", stmt_finalize}, {NULL, NULL}
    };
    if (luaL_newmetatable(L, DB_MT)) {
        luaL_newlib(L, db_methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, db_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, db_gc);
        lua_setfield(L, -2, "__close");
        lua_pushcfunction(L, db_tostring);
        lua_setfield(L, -2, "__tostring");
    }
    lua_pop(L, 1);
    if (luaL_newmetatable(L, STMT_MT)) {
        luaL_newlib(L, stmt_methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, stmt_finalize);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, stmt_finalize);
        lua_setfield(L, -2, "__close");
    }
    lua_pop(L, 1);
    static const luaL_Reg fns[] = {{"open", db_open}, {"version", sqlite_version}, {NULL, NULL}};
    luaL_newlib(L, fns);
    return 1;
}
