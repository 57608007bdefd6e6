/* yaml.c: YAML text -> Lua values on libyaml's event parser. Resolves the core
 * schema (null, bool, int, float, str), anchors and aliases, merge keys (<<), and
 * reports errors as "name:line:col: problem". Optionally records where each mapping
 * key stood, so profile validation can name the line of a bad key.
 *
 * Aliases share one Lua table, so loading costs time linear in the text; but every
 * consumer that walks the result (profile validation, JSON encoding) pays for the
 * expanded document. Nested aliases grow that exponentially ("billion laughs": nine
 * levels of nine aliases in a few hundred bytes expand to 387 million nodes), so the
 * loader counts the nodes each alias stands for and refuses past MAX_ALIAS_NODES, as
 * libyaml-based loaders do. An alias to a node that is still open (a cycle) is
 * refused too: walkers of the result then never loop. */
#include "host.h"

#include <errno.h>
#include <stdarg.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#define MAX_DEPTH 256
/* Nodes reachable through aliases, summed over one load. Profiles use a handful;
 * a million keeps any walk of the result well under a second. */
#define MAX_ALIAS_NODES 1000000

typedef struct {
    yaml_parser_t parser;
    yaml_event_t event;
    int have_event;
    int parser_ok;
    const char *name;   /* for messages */
    const char *text;   /* to locate reader errors by byte offset */
    size_t len;
    int anchors;        /* stack index of the anchors table */
    int anchor_sizes;   /* stack index: anchor -> expanded node count, false while open */
    lua_Integer alias_nodes; /* nodes reached through aliases so far (capped) */
    int positions;      /* stack index of the positions table, 0 if not asked */
} loader;

/* Raise without luaL_error's "caller:line:" prefix: the message already says
 * where in the YAML the problem is. */
static int raise(lua_State *L, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    return lua_error(L);
}

static void loader_release(loader *ld) {
    if (ld->have_event) yaml_event_delete(&ld->event);
    if (ld->parser_ok) yaml_parser_delete(&ld->parser);
    ld->have_event = ld->parser_ok = 0;
}

/* __gc: frees libyaml's memory when a Lua error unwound the load midway. */
static int loader_gc(lua_State *L) {
    loader_release(luaL_checkudata(L, 1, "gpurent.yaml.loader"));
    return 0;
}

/* Line and column (1-based) of a byte offset, for reader errors that carry no mark. */
static void offset_to_mark(const loader *ld, size_t off, size_t *line, size_t *col) {
    *line = 1; *col = 1;
    for (size_t i = 0; i < off && i < ld->len; i++) {
        if (ld->text[i] == '\n') { (*line)++; *col = 1; } else (*col)++;
    }
}

static int parse_error(lua_State *L, loader *ld) {
    yaml_parser_t *p = &ld->parser;
    size_t line, col;
    if (p->error == YAML_READER_ERROR) {
        offset_to_mark(ld, p->problem_offset, &line, &col);
        return raise(L, "%s:%d:%d: %s (byte offset %d)", ld->name, (int)line, (int)col,
                          p->problem ? p->problem : "cannot read input", (int)p->problem_offset);
    }
    line = p->problem_mark.line + 1;
    col = p->problem_mark.column + 1;
    if (p->context)
        return raise(L, "%s:%d:%d: %s %s", ld->name, (int)line, (int)col, p->problem, p->context);
    return raise(L, "%s:%d:%d: %s", ld->name, (int)line, (int)col,
                      p->problem ? p->problem : "invalid YAML");
}

static void next_event(lua_State *L, loader *ld) {
    if (ld->have_event) { yaml_event_delete(&ld->event); ld->have_event = 0; }
    if (!yaml_parser_parse(&ld->parser, &ld->event)) parse_error(L, ld);
    ld->have_event = 1;
}

static int error_at(lua_State *L, loader *ld, yaml_mark_t m, const char *what, const char *arg) {
    return raise(L, "%s:%d:%d: %s%s", ld->name, (int)m.line + 1, (int)m.column + 1, what,
                      arg ? arg : "");
}

/* ---- scalar resolution (YAML 1.2 core schema) ---- */

static int is_one_of(const char *s, const char *const *list) {
    for (; *list; list++) if (strcmp(s, *list) == 0) return 1;
    return 0;
}

static int push_int(lua_State *L, const char *s) {
    const char *digits = s;
    int base = 10, neg = 0;
    if (*digits == '-' || *digits == '+') { neg = (*digits == '-'); digits++; }
    if (digits[0] == '0' && (digits[1] == 'x' || digits[1] == 'o')) {
        base = digits[1] == 'x' ? 16 : 8;
        digits += 2;
        if (neg || s[0] == '+') return 0; /* core schema: no sign on hex/octal */
    }
    if (!*digits) return 0;
    for (const char *c = digits; *c; c++) {
        int ok = base == 16 ? (strchr("0123456789abcdefABCDEF", *c) != NULL)
               : base == 8 ? (*c >= '0' && *c <= '7') : (*c >= '0' && *c <= '9');
        if (!ok) return 0;
    }
    errno = 0;
    char *end;
    long long v = strtoll(digits, &end, base);
    if (errno == ERANGE || *end) {
        if (base != 10) return 0;
        lua_pushnumber(L, strtod(s, NULL)); /* too big for an integer: a float */
        return 1;
    }
    lua_pushinteger(L, neg ? -v : v);
    return 1;
}

static int push_float(lua_State *L, const char *s) {
    static const char *const inf[] = {".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF", NULL};
    static const char *const ninf[] = {"-.inf", "-.Inf", "-.INF", NULL};
    static const char *const nan[] = {".nan", ".NaN", ".NAN", NULL};
    if (is_one_of(s, inf)) { lua_pushnumber(L, HUGE_VAL); return 1; }
    if (is_one_of(s, ninf)) { lua_pushnumber(L, -HUGE_VAL); return 1; }
    if (is_one_of(s, nan)) { lua_pushnumber(L, NAN); return 1; }
    /* [-+]? ( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )? */
    const char *c = s;
    int mant = 0;
    if (*c == '-' || *c == '+') c++;
    while (*c >= '0' && *c <= '9') { c++; mant++; }
    if (*c == '.') { c++; while (*c >= '0' && *c <= '9') { c++; mant++; } }
    if (!mant) return 0;
    if (*c == 'e' || *c == 'E') {
        c++;
        if (*c == '-' || *c == '+') c++;
        if (!(*c >= '0' && *c <= '9')) return 0;
        while (*c >= '0' && *c <= '9') c++;
    }
    if (*c) return 0;
    lua_pushnumber(L, strtod(s, NULL));
    return 1;
}

static void push_null(lua_State *L) { lua_pushlightuserdata(L, NULL); }

static void push_plain_scalar(lua_State *L, const char *s, size_t len) {
    static const char *const nulls[] = {"", "~", "null", "Null", "NULL", NULL};
    static const char *const trues[] = {"true", "True", "TRUE", NULL};
    static const char *const falses[] = {"false", "False", "FALSE", NULL};
    if (strlen(s) != len) { lua_pushlstring(L, s, len); return; } /* embedded NUL */
    if (is_one_of(s, nulls)) push_null(L);
    else if (is_one_of(s, trues)) lua_pushboolean(L, 1);
    else if (is_one_of(s, falses)) lua_pushboolean(L, 0);
    else if (!push_int(L, s) && !push_float(L, s)) lua_pushlstring(L, s, len);
}

/* An explicit tag (!!int, !!str ...) overrides resolution. */
static void push_tagged_scalar(lua_State *L, loader *ld, const char *tag, const char *s, size_t len) {
    if (strcmp(tag, YAML_STR_TAG) == 0) { lua_pushlstring(L, s, len); return; }
    if (strcmp(tag, YAML_NULL_TAG) == 0) { push_null(L); return; }
    if (strcmp(tag, YAML_BOOL_TAG) == 0 || strcmp(tag, YAML_INT_TAG) == 0 ||
        strcmp(tag, YAML_FLOAT_TAG) == 0) {
        int before = lua_gettop(L);
        push_plain_scalar(L, s, len);
        int t = lua_type(L, -1);
        int ok = (strcmp(tag, YAML_BOOL_TAG) == 0) ? t == LUA_TBOOLEAN
               : (strcmp(tag, YAML_INT_TAG) == 0) ? lua_isinteger(L, -1)
               : t == LUA_TNUMBER;
        if (ok && t == LUA_TNUMBER && strcmp(tag, YAML_FLOAT_TAG) == 0) {
            lua_pushnumber(L, lua_tonumber(L, -1)); /* !!float 2 is 2.0 */
            lua_remove(L, -2);
        }
        if (ok) return;
        lua_settop(L, before);
        if (strcmp(tag, YAML_FLOAT_TAG) == 0 && push_int(L, s)) {
            lua_pushnumber(L, lua_tonumber(L, -1));
            lua_remove(L, -2);
            return;
        }
        error_at(L, ld, ld->event.start_mark, "value does not match its tag ", tag);
    }
    lua_pushlstring(L, s, len); /* unknown local tags: keep the text */
}

static void push_scalar(lua_State *L, loader *ld) {
    yaml_event_t *e = &ld->event;
    const char *s = (const char *)e->data.scalar.value;
    size_t len = e->data.scalar.length;
    const char *tag = (const char *)e->data.scalar.tag;
    if (tag && strcmp(tag, "!") != 0) push_tagged_scalar(L, ld, tag, s, len);
    else if (e->data.scalar.style == YAML_PLAIN_SCALAR_STYLE && !tag) push_plain_scalar(L, s, len);
    else lua_pushlstring(L, s, len);
}

/* ---- nodes ---- */

static lua_Integer parse_node(lua_State *L, loader *ld, int depth);

/* anchors[name] = the value on top; anchor_sizes[name] = its expanded node count
 * (size), or false (size 0) while the node is still being parsed: an alias to it
 * then would make a cycle. */
static void remember_anchor(lua_State *L, loader *ld, const yaml_char_t *anchor, lua_Integer size) {
    if (!anchor) return;
    lua_pushvalue(L, -1);
    lua_setfield(L, ld->anchors, (const char *)anchor);
    if (size > 0) lua_pushinteger(L, size); else lua_pushboolean(L, 0);
    lua_setfield(L, ld->anchor_sizes, (const char *)anchor);
}

/* The collection at tbl, anchored as the string at name_idx (0: none), is complete.
 * The event that carried the anchor is gone by now, hence the name on the stack. */
static void anchor_closed(lua_State *L, loader *ld, int name_idx, int tbl, lua_Integer size) {
    if (!name_idx) return;
    lua_pushvalue(L, name_idx);
    int same = lua_rawget(L, ld->anchors) == LUA_TTABLE && lua_rawequal(L, -1, tbl);
    lua_pop(L, 1);
    if (!same) return; /* re-anchored inside itself: the inner node's count stands */
    lua_pushvalue(L, name_idx);
    lua_pushinteger(L, size);
    lua_rawset(L, ld->anchor_sizes);
}

/* Anchor the collection on top of the stack; push its name (or nothing) and
 * return the name's stack index, 0 when there is no anchor. */
static int anchor_open(lua_State *L, loader *ld, const yaml_char_t *anchor) {
    if (!anchor) return 0;
    remember_anchor(L, ld, anchor, 0);
    lua_pushstring(L, (const char *)anchor);
    return lua_gettop(L);
}

/* Push the value an alias names; return the node count it expands to, having
 * added that to the load's alias total and refused past the cap. */
static lua_Integer push_alias(lua_State *L, loader *ld) {
    const char *name = (const char *)ld->event.data.alias.anchor;
    yaml_mark_t m = ld->event.start_mark;
    if (lua_getfield(L, ld->anchors, name) == LUA_TNIL)
        error_at(L, ld, m, "unknown alias *", name);
    int t = lua_getfield(L, ld->anchor_sizes, name);
    lua_Integer size = t == LUA_TNUMBER ? lua_tointeger(L, -1) : -1;
    lua_pop(L, 1);
    if (size < 0)
        error_at(L, ld, m, "alias refers to the node that contains it (a cycle): *", name);
    if (size > MAX_ALIAS_NODES - ld->alias_nodes)
        raise(L, "%s:%d:%d: alias *%s takes the document past %d nodes reached through aliases "
                 "(the cap against nested-alias \"billion laughs\" expansion); "
                 "write the repeated part out or nest fewer aliases",
              ld->name, (int)m.line + 1, (int)m.column + 1, name, MAX_ALIAS_NODES);
    ld->alias_nodes += size;
    return size;
}

static void record_position(lua_State *L, loader *ld, int tbl, yaml_mark_t m) {
    /* positions[tbl][key] = {line, col}; key on top of stack */
    if (!ld->positions) return;
    lua_pushvalue(L, tbl);
    if (lua_rawget(L, ld->positions) != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, tbl);
        lua_pushvalue(L, -2);
        lua_rawset(L, ld->positions);
    }
    lua_pushvalue(L, -2);
    lua_createtable(L, 2, 0);
    lua_pushinteger(L, (lua_Integer)m.line + 1);
    lua_rawseti(L, -2, 1);
    lua_pushinteger(L, (lua_Integer)m.column + 1);
    lua_rawseti(L, -2, 2);
    lua_rawset(L, -3);
    lua_pop(L, 1);
}

/* Merge key: copy the entries of a mapping (or a sequence of mappings) that the
 * target does not already have, noting them in `merged` so that an explicit key
 * later in the mapping overrides them. Value on top, target at tbl. */
static void merge_into(lua_State *L, loader *ld, int tbl, int merged, yaml_mark_t m) {
    int src = lua_gettop(L);
    if (lua_type(L, src) != LUA_TTABLE) error_at(L, ld, m, "merge key << needs a mapping", NULL);
    int is_seq = lua_rawlen(L, src) > 0;
    int n = is_seq ? (int)lua_rawlen(L, src) : 1;
    for (int i = 1; i <= n; i++) {
        if (is_seq) lua_rawgeti(L, src, i); else lua_pushvalue(L, src);
        if (lua_type(L, -1) != LUA_TTABLE) error_at(L, ld, m, "merge key << needs mappings", NULL);
        lua_pushnil(L);
        while (lua_next(L, -2)) {
            lua_pushvalue(L, -2);
            if (lua_rawget(L, tbl) == LUA_TNIL) {
                lua_pop(L, 1);
                lua_pushvalue(L, -2);
                lua_pushvalue(L, -2);
                lua_rawset(L, tbl);
                lua_pushvalue(L, -2);
                lua_pushboolean(L, 1);
                lua_rawset(L, merged);
            } else lua_pop(L, 1);
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

/* Parse a mapping and push it; return its node count with aliases expanded. */
static lua_Integer parse_mapping(lua_State *L, loader *ld, int depth) {
    lua_newtable(L);
    int tbl = lua_gettop(L);
    int name_idx = anchor_open(L, ld, ld->event.data.mapping_start.anchor);
    lua_newtable(L);
    int merged = lua_gettop(L); /* keys that came from << and may be overridden */
    lua_Integer size = 1;
    for (;;) {
        next_event(L, ld);
        if (ld->event.type == YAML_MAPPING_END_EVENT) break;
        yaml_mark_t key_mark = ld->event.start_mark;
        int is_merge = ld->event.type == YAML_SCALAR_EVENT &&
                       ld->event.data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
                       strcmp((const char *)ld->event.data.scalar.value, "<<") == 0;
        size += parse_node(L, ld, depth + 1);       /* key */
        int kt = lua_type(L, -1);
        if (kt == LUA_TTABLE || kt == LUA_TLIGHTUSERDATA)
            error_at(L, ld, key_mark, "mapping keys must be scalars", NULL);
        if (kt == LUA_TNUMBER && lua_tonumber(L, -1) != lua_tonumber(L, -1))
            error_at(L, ld, key_mark, "a mapping key cannot be NaN", NULL);
        next_event(L, ld);
        size += parse_node(L, ld, depth + 1);       /* value */
        if (is_merge) { lua_remove(L, -2); merge_into(L, ld, tbl, merged, key_mark); continue; }
        lua_pushvalue(L, -2);
        int from_merge = lua_rawget(L, merged) != LUA_TNIL;
        lua_pop(L, 1);
        lua_pushvalue(L, -2);
        if (lua_rawget(L, tbl) != LUA_TNIL && !from_merge) {
            lua_pop(L, 1);
            lua_pushvalue(L, -2);
            const char *k = luaL_tolstring(L, -1, NULL);
            error_at(L, ld, key_mark, "duplicate mapping key: ", k);
        }
        lua_pop(L, 1);
        lua_pushvalue(L, -2);
        record_position(L, ld, tbl, key_mark);
        lua_pop(L, 1);
        lua_rawset(L, tbl);
    }
    anchor_closed(L, ld, name_idx, tbl, size);
    lua_settop(L, tbl);
    return size;
}

/* Parse a sequence and push it; return its node count with aliases expanded. */
static lua_Integer parse_sequence(lua_State *L, loader *ld, int depth) {
    lua_newtable(L);
    int tbl = lua_gettop(L);
    int name_idx = anchor_open(L, ld, ld->event.data.sequence_start.anchor);
    lua_Integer n = 0, size = 1;
    for (;;) {
        next_event(L, ld);
        if (ld->event.type == YAML_SEQUENCE_END_EVENT) break;
        size += parse_node(L, ld, depth + 1);
        lua_rawseti(L, tbl, ++n);
    }
    anchor_closed(L, ld, name_idx, tbl, size);
    lua_settop(L, tbl);
    return size;
}

/* Parse the node whose first event is current; push its value and return the
 * number of nodes it stands for once aliases are expanded. */
static lua_Integer parse_node(lua_State *L, loader *ld, int depth) {
    if (depth > MAX_DEPTH)
        error_at(L, ld, ld->event.start_mark, "nesting deeper than the limit of 256", NULL);
    if (!lua_checkstack(L, 8)) luaL_error(L, "%s: out of Lua stack", ld->name);
    switch (ld->event.type) {
    case YAML_SCALAR_EVENT:
        push_scalar(L, ld);
        remember_anchor(L, ld, ld->event.data.scalar.anchor, 1); /* complete once read */
        return 1;
    case YAML_ALIAS_EVENT: return push_alias(L, ld);
    case YAML_MAPPING_START_EVENT: return parse_mapping(L, ld, depth);
    case YAML_SEQUENCE_START_EVENT: return parse_sequence(L, ld, depth);
    default: error_at(L, ld, ld->event.start_mark, "unexpected YAML event", NULL);
    }
    return 0; /* not reached: error_at raises */
}

/* core.yaml.load(text, name, multi, positions) -> docs (a list) [, positions] */
static int yaml_load(lua_State *L) {
    size_t len;
    const char *text = luaL_checklstring(L, 1, &len);
    const char *name = luaL_optstring(L, 2, "<string>");
    int multi = lua_toboolean(L, 3);
    int want_pos = lua_toboolean(L, 4);
    lua_settop(L, 2);
    loader *ld = lua_newuserdatauv(L, sizeof *ld, 0);
    memset(ld, 0, sizeof *ld);
    luaL_setmetatable(L, "gpurent.yaml.loader");
    ld->name = name; ld->text = text; ld->len = len;
    if (!yaml_parser_initialize(&ld->parser)) return luaL_error(L, "%s: cannot initialise libyaml", name);
    ld->parser_ok = 1;
    yaml_parser_set_input_string(&ld->parser, (const unsigned char *)text, len);
    lua_newtable(L); ld->anchors = lua_gettop(L);
    lua_newtable(L); ld->anchor_sizes = lua_gettop(L);
    if (want_pos) { lua_newtable(L); ld->positions = lua_gettop(L); }
    lua_newtable(L);
    int docs = lua_gettop(L), ndocs = 0;
    for (;;) {
        next_event(L, ld);
        yaml_event_type_t t = ld->event.type;
        if (t == YAML_STREAM_END_EVENT) break;
        if (t != YAML_DOCUMENT_START_EVENT) continue;
        if (ndocs == 1 && !multi)
            error_at(L, ld, ld->event.start_mark,
                     "a second YAML document where one was expected (load it with multi=true)", NULL);
        next_event(L, ld);
        parse_node(L, ld, 0);
        lua_rawseti(L, docs, ++ndocs);
        lua_newtable(L); lua_replace(L, ld->anchors); /* anchors do not cross documents */
        lua_newtable(L); lua_replace(L, ld->anchor_sizes);
        next_event(L, ld); /* DOCUMENT_END */
    }
    loader_release(ld); /* free libyaml memory now, not at the next GC */
    lua_pushvalue(L, docs);
    if (want_pos) { lua_pushvalue(L, ld->positions); return 2; }
    return 1;
}

static int yaml_version(lua_State *L) {
    lua_pushstring(L, yaml_get_version_string());
    return 1;
}

int gr_open_yaml(lua_State *L) {
    static const luaL_Reg fns[] = {{"load", yaml_load}, {"version", yaml_version}, {NULL, NULL}};
    if (luaL_newmetatable(L, "gpurent.yaml.loader")) {
        lua_pushcfunction(L, loader_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    luaL_newlib(L, fns);
    push_null(L);
    lua_setfield(L, -2, "null");
    return 1;
}
