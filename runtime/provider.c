/* provider.c: the one path for authenticated provider requests (gpurent.core.provider).
 * Owns what Lua must not be able to steer:
 *   - the provider token: read here from the environment or a 0600 file on each
 *     request, attached as a header in C memory, wiped after use; Lua gets at most a
 *     handle that prints *** and has no accessor;
 *   - where the token may go: the API URLs of the installed profile and the person's
 *     config dir only (never a working directory's, a library's or a recipe's), over
 *     https, or plain http to a loopback address named by the profile's base_url_env
 *     variable (the testbed);
 *   - the gated verbs: the endpoints the installed profiles mark `gated`, plus
 *     release and power_off always; Lua may add one, never remove one;
 *   - the approval check: a gated request is sent only when the person approved (the
 *     --approve flag or the name typed on the terminal, approval.c) the very instance
 *     the request names, by uuid or by the name the provider lists for that uuid.
 *     Otherwise: nothing sent, a ledger line, exit 3 (sticky, see provider.h).
 * Which keys to read (endpoints, token variables, how to look an instance up) is data
 * in the profile's billing.api; nothing here names a provider. */
#include "host.h"
#include "approval.h"
#include "provider.h"

#include <dirent.h>
#include <stdarg.h>
#include <errno.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

int luaopen_cjson(lua_State *L);

#define MAX_PROVIDERS 8
#define MAX_ENDPOINTS 32
#define MAX_HOSTS 64
#define STR 512
#define TOKEN_MAX 4096
#define TOKEN_MT "gpurent.provider.token"

typedef struct {
    char name[64], method[8], path[STR], base[STR];
    int gated;
} endpoint_t;

typedef struct {
    char name[64], label[64], files[STR * 2];
    char base[STR], base_env[64], auth_header[64], content_type[64];
    char token_env[64], token_file_env[64], token_config_key[128];
    char inst_field[64], lookup[64], lookup_body[STR], page_field[64], pages[64];
    char items[64], id_key[64], name_key[64];
    endpoint_t ep[MAX_ENDPOINTS];
    int n_ep;
} provider_t;

int gr_provider_refusals = 0;
static provider_t providers[MAX_PROVIDERS];
static int n_providers, scanned;
static char api_hosts[MAX_HOSTS][STR];   /* "host:port" of every provider URL seen */
static int n_hosts;
static const char *const always_gated[] = {"release", "power_off", NULL};

/* ---- small helpers ---------------------------------------------------------- */

static void set_str(lua_State *L, char *dst, size_t n, const char *src, const char *what, const char *file) {
    if (strlen(src) >= n) luaL_error(L, "%s: %s is too long (%d bytes at most)", file, what, (int)n - 1);
    memcpy(dst, src, strlen(src) + 1);
}

/* t[k] as a string into dst when present; a value of another type is an error. */
static void field_str(lua_State *L, int t, const char *k, char *dst, size_t n, const char *file) {
    lua_getfield(L, t, k);
    if (lua_type(L, -1) == LUA_TSTRING) set_str(L, dst, n, lua_tostring(L, -1), k, file);
    else if (!lua_isnil(L, -1)) luaL_error(L, "%s: billing.api key %s must be a string", file, k);
    lua_pop(L, 1);
}

/* Push t[k] when it is a table and return 1; else push nothing and return 0. */
static int sub_table(lua_State *L, int t, const char *k) {
    lua_getfield(L, t, k);
    if (lua_istable(L, -1)) return 1;
    lua_pop(L, 1);
    return 0;
}

static void config_dir(char *out, size_t n) {
    const char *x = getenv("XDG_CONFIG_HOME"), *home = getenv("HOME");
    if (x && *x) snprintf(out, n, "%s/gpurent", x);
    else snprintf(out, n, "%s/.config/gpurent", home ? home : "");
}

/* Read a whole file; NULL (errno set) when it cannot be read. */
static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rbe");
    if (!f) return NULL;
    size_t cap = 8192, n = 0;
    char *buf = malloc(cap);
    for (size_t got; buf && (got = fread(buf + n, 1, cap - n - 1, f)) > 0;) {
        n += got;
        if (cap - n < 2) { char *b = realloc(buf, cap *= 2); if (!b) { free(buf); buf = NULL; } else buf = b; }
    }
    fclose(f);
    if (buf) buf[n] = '\0';
    if (len) *len = n;
    return buf;
}

/* Push the YAML document of path (via gpurent.core.yaml's loader); 0 when absent. */
static int push_yaml_file(lua_State *L, const char *path) {
    size_t len;
    char *text = slurp(path, &len);
    if (!text) {
        if (errno == ENOENT) return 0;
        luaL_error(L, "reading %s: %s", path, strerror(errno));
    }
    gr_open_yaml(L);
    lua_getfield(L, -1, "load");
    lua_remove(L, -2);
    lua_pushlstring(L, text, len);
    free(text);
    lua_pushstring(L, path);
    lua_call(L, 2, 1);            /* the list of documents: a profile is the first */
    lua_rawgeti(L, -1, 1);
    lua_remove(L, -2);
    return 1;
}

/* "host:port" of a URL (lower-case host, default port by scheme); 0 when unparsable. */
static int url_hostport(const char *url, char *out, size_t n, int *https) {
    const char *p = strstr(url, "://");
    if (!p) return 0;
    size_t slen = (size_t)(p - url);
    *https = slen == 5 && strncasecmp(url, "https", 5) == 0;
    if (!*https && !(slen == 4 && strncasecmp(url, "http", 4) == 0)) return 0;
    p += 3;
    const char *end = p + strcspn(p, "/?#");
    const char *at = memchr(p, '@', (size_t)(end - p));
    if (at) p = at + 1;
    const char *host = p, *colon = NULL;
    if (*p == '[') { const char *rb = memchr(p, ']', (size_t)(end - p)); if (!rb) return 0; colon = rb + 1 < end && rb[1] == ':' ? rb + 1 : NULL; }
    else colon = memchr(p, ':', (size_t)(end - p));
    size_t hlen = (size_t)((colon ? colon : end) - host);
    if (hlen == 0 || hlen >= 256) return 0;
    char h[256];
    for (size_t i = 0; i < hlen; i++) h[i] = (char)((host[i] >= 'A' && host[i] <= 'Z') ? host[i] + 32 : host[i]);
    h[hlen] = '\0';
    int port = colon ? atoi(colon + 1) : (*https ? 443 : 80);
    snprintf(out, n, "%s:%d", h, port);
    return 1;
}

static int is_loopback_hostport(const char *hp) {
    return strncmp(hp, "127.", 4) == 0 || strncmp(hp, "localhost:", 10) == 0 || strncmp(hp, "[::1]:", 6) == 0;
}

static void note_host(const char *url) {
    char hp[STR];
    int https;
    if (!url || !*url || !url_hostport(url, hp, sizeof hp, &https)) return;
    for (int i = 0; i < n_hosts; i++) if (strcmp(api_hosts[i], hp) == 0) return;
    if (n_hosts < MAX_HOSTS) snprintf(api_hosts[n_hosts++], STR, "%s", hp);
}

/* ---- refusals ------------------------------------------------------------------ */

/* A line in the ledger, written by the installed ledger module (loaded from its file,
 * not through package.loaded): the audit trail of a refusal a recipe may have caught. */
static void ledger_line(lua_State *L, const char *profile, const char *verb, const char *instance, const char *reason) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/lua/gpurent/state/ledger.lua", gr_host_share_dir());
    static const char chunk[] =
        "local load_ledger, instance, verb, reason, profile = ...\n"
        "local L = load_ledger().open()\n"
        "local ok, err = pcall(function()\n"
        "  L:upsert_instance{name = instance, profile = profile}\n"
        "  L:record_gate{gate = 'provider', action = verb, decision = 'refuse', reason = reason, instance = instance}\n"
        "end)\n"
        "L:close()\n"
        "if not ok then error(err, 0) end\n";
    int top = lua_gettop(L);
    if (luaL_loadbuffer(L, chunk, sizeof chunk - 1, "=provider ledger") == LUA_OK &&
        luaL_loadfile(L, path) == LUA_OK) {
        lua_pushstring(L, instance);
        lua_pushstring(L, verb);
        lua_pushstring(L, reason);
        lua_pushstring(L, profile);
        if (lua_pcall(L, 5, 0, 0) == LUA_OK) { lua_settop(L, top); return; }
    }
    fprintf(stderr, "gpurent: (ledger: the refusal could not be recorded: %s)\n",
            lua_isstring(L, -1) ? lua_tostring(L, -1) : "?");
    lua_settop(L, top);
}

/* Raise an error of kind refusal (exit 3, printed as msg); counts toward the sticky exit. */
static int refuse(lua_State *L, const provider_t *p, const char *verb, const char *instance, const char *fmt, ...) {
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    gr_provider_refusals++;
    if (verb && p) ledger_line(L, p->name, verb, instance ? instance : "?", msg);
    return gr_raise_error(L, "refusal", msg);
}

/* ---- configuration from the installed profile and the person's config dir ------- */

static endpoint_t *endpoint_of(provider_t *p, const char *name) {
    for (int i = 0; i < p->n_ep; i++) if (strcmp(p->ep[i].name, name) == 0) return &p->ep[i];
    return NULL;
}

static void apply_endpoints(lua_State *L, provider_t *p, int t, const char *file) {
    lua_pushnil(L);
    while (lua_next(L, t)) {
        if (lua_type(L, -2) == LUA_TSTRING && lua_istable(L, -1)) {
            const char *name = lua_tostring(L, -2);
            endpoint_t *e = endpoint_of(p, name);
            if (!e) {
                if (p->n_ep >= MAX_ENDPOINTS) luaL_error(L, "%s: more than %d endpoints", file, MAX_ENDPOINTS);
                e = &p->ep[p->n_ep++];
                memset(e, 0, sizeof *e);
                set_str(L, e->name, sizeof e->name, name, "an endpoint name", file);
            }
            int et = lua_gettop(L);
            field_str(L, et, "method", e->method, sizeof e->method, file);
            field_str(L, et, "path", e->path, sizeof e->path, file);
            field_str(L, et, "base_url", e->base, sizeof e->base, file);
            lua_getfield(L, et, "gated");
            if (lua_toboolean(L, -1)) e->gated = 1;     /* a layer may add a gate, never lift one */
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
}

/* One profile layer's billing.api (the table at index t) over what is already known. */
static void apply_api(lua_State *L, provider_t *p, int t, const char *file) {
    field_str(L, t, "label", p->label, sizeof p->label, file);
    field_str(L, t, "base_url", p->base, sizeof p->base, file);
    field_str(L, t, "base_url_env", p->base_env, sizeof p->base_env, file);
    field_str(L, t, "auth_header", p->auth_header, sizeof p->auth_header, file);
    field_str(L, t, "content_type", p->content_type, sizeof p->content_type, file);
    if (sub_table(L, t, "token")) {
        int k = lua_gettop(L);
        field_str(L, k, "env", p->token_env, sizeof p->token_env, file);
        field_str(L, k, "file_env", p->token_file_env, sizeof p->token_file_env, file);
        field_str(L, k, "config_key", p->token_config_key, sizeof p->token_config_key, file);
        lua_pop(L, 1);
    }
    if (sub_table(L, t, "approval")) {
        int k = lua_gettop(L);
        field_str(L, k, "instance_field", p->inst_field, sizeof p->inst_field, file);
        field_str(L, k, "lookup", p->lookup, sizeof p->lookup, file);
        field_str(L, k, "page_field", p->page_field, sizeof p->page_field, file);
        field_str(L, k, "pages", p->pages, sizeof p->pages, file);
        field_str(L, k, "items", p->items, sizeof p->items, file);
        field_str(L, k, "id", p->id_key, sizeof p->id_key, file);
        field_str(L, k, "name", p->name_key, sizeof p->name_key, file);
        if (sub_table(L, k, "lookup_body")) {     /* kept as JSON text */
            luaopen_cjson(L);
            lua_getfield(L, -1, "encode");
            lua_pushvalue(L, -3);
            lua_call(L, 1, 1);
            set_str(L, p->lookup_body, sizeof p->lookup_body, lua_tostring(L, -1), "approval.lookup_body", file);
            lua_pop(L, 3);
        }
        lua_pop(L, 1);
    }
    if (sub_table(L, t, "endpoints")) { apply_endpoints(L, p, lua_gettop(L), file); lua_pop(L, 1); }
}

/* Apply billing.api of the profile file at path, if it has one; 1 when it did. */
static int apply_file(lua_State *L, provider_t *p, const char *path) {
    int top = lua_gettop(L);
    if (!push_yaml_file(L, path)) return 0;
    int found = 0;
    if (lua_istable(L, -1) && sub_table(L, -1, "billing")) {
        if (sub_table(L, -1, "api")) {
            apply_api(L, p, lua_gettop(L), path);
            size_t used = strlen(p->files);
            snprintf(p->files + used, sizeof p->files - used, "%s%s", used ? ", " : "", path);
            found = 1;
        }
    }
    lua_settop(L, top);
    return found;
}

static void finish_provider(provider_t *p) {
    for (int i = 0; always_gated[i]; i++) {
        endpoint_t *e = endpoint_of(p, always_gated[i]);
        if (e) e->gated = 1;
    }
    if (!p->auth_header[0]) snprintf(p->auth_header, sizeof p->auth_header, "Authorization");
    if (!p->content_type[0]) snprintf(p->content_type, sizeof p->content_type, "application/json");
    if (!p->label[0]) memcpy(p->label, p->name, sizeof p->label);   /* both 64 bytes */
    note_host(p->base);
    for (int i = 0; i < p->n_ep; i++) note_host(p->ep[i].base);
}

/* The provider of profile `name`, configured once from the installed profile and the
 * person's config dir; NULL when neither has a billing.api. */
static provider_t *provider_load(lua_State *L, const char *name) {
    for (int i = 0; i < n_providers; i++) if (strcmp(providers[i].name, name) == 0) return &providers[i];
    if (!*name || strlen(name) >= 64 || strchr(name, '/') || name[0] == '.')
        luaL_error(L, "provider: bad profile name '%s'", name);
    if (n_providers >= MAX_PROVIDERS) luaL_error(L, "provider: more than %d providers", MAX_PROVIDERS);
    provider_t *p = &providers[n_providers];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    char path[PATH_MAX], cfg[PATH_MAX - 128];
    snprintf(path, sizeof path, "%s/profiles/%s.yaml", gr_host_share_dir(), name);
    int found = apply_file(L, p, path);
    config_dir(cfg, sizeof cfg);
    snprintf(path, sizeof path, "%s/profiles/%s.yaml", cfg, name);
    found |= apply_file(L, p, path);
    if (!found) return NULL;
    finish_provider(p);
    n_providers++;
    return p;
}

static void scan_dir(lua_State *L, const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        size_t n = strlen(e->d_name);
        if (n < 6 || n > 60 || strcmp(e->d_name + n - 5, ".yaml") != 0 || strcmp(e->d_name, "schema.yaml") == 0) continue;
        char name[64];
        snprintf(name, sizeof name, "%.*s", (int)(n - 5), e->d_name);
        provider_load(L, name);
    }
    closedir(d);
}

/* Every provider the installed profiles and the config dir know (for the raw-URL rule). */
static void scan_all(lua_State *L) {
    if (scanned) return;
    scanned = 1;
    char dir[PATH_MAX], cfg[PATH_MAX - 16];
    snprintf(dir, sizeof dir, "%s/profiles", gr_host_share_dir());
    scan_dir(L, dir);
    config_dir(cfg, sizeof cfg);
    snprintf(dir, sizeof dir, "%s/profiles", cfg);
    scan_dir(L, dir);
}

static provider_t *check_provider(lua_State *L, int idx) {
    const char *name = luaL_checkstring(L, idx);
    provider_t *p = provider_load(L, name);
    if (!p) luaL_error(L, "provider %s: no billing.api in the installed profile %s/profiles/%s.yaml "
                          "or in the config dir", name, gr_host_share_dir(), name);
    return p;
}

static endpoint_t *check_endpoint(lua_State *L, provider_t *p, int idx) {
    const char *name = luaL_checkstring(L, idx);
    endpoint_t *e = endpoint_of(p, name);
    if (!e || !e->path[0]) luaL_error(L, "%s: no endpoint %s in billing.api of %s", p->label, name, p->files);
    return e;
}

/* ---- where the token may go ------------------------------------------------------ */

/* The URL of endpoint e into out; raises a refusal when the token may not go there. */
static void endpoint_url(lua_State *L, provider_t *p, endpoint_t *e, char *out, size_t n) {
    const char *over = p->base_env[0] ? getenv(p->base_env) : NULL;
    const char *base = (over && *over) ? over : (e->base[0] ? e->base : p->base);
    size_t bl = strlen(base);
    while (bl > 0 && base[bl - 1] == '/') bl--;
    if (bl + strlen(e->path) + 1 > n) luaL_error(L, "%s %s: URL too long", p->label, e->name);
    snprintf(out, n, "%.*s%s", (int)bl, base, e->path);
    char hp[STR];
    int https = 0;
    if (!url_hostport(out, hp, sizeof hp, &https))
        refuse(L, NULL, NULL, NULL, "%s %s: refused: %s is not an http(s) URL (from %s)", p->label, e->name, out,
               (over && *over) ? p->base_env : p->files);
    if (https) return;
    if (over && *over && is_loopback_hostport(hp)) return;
    refuse(L, NULL, NULL, NULL, "%s %s: refused: the token goes only over https, or to a loopback address set in $%s; "
           "not to %s (from %s)", p->label, e->name, out, p->base_env[0] ? p->base_env : "(no base_url_env)",
           (over && *over) ? p->base_env : p->files);
}

void gr_provider_refuse_raw_url(lua_State *L, const char *url) {
    scan_all(L);
    char hp[STR];
    int https;
    if (!url_hostport(url, hp, sizeof hp, &https)) return;   /* curl will refuse it */
    for (int i = 0; i < n_providers; i++) {
        const char *over = providers[i].base_env[0] ? getenv(providers[i].base_env) : NULL;
        if (over && *over) note_host(over);
    }
    for (int i = 0; i < n_hosts; i++) {
        if (strcmp(api_hosts[i], hp) != 0) continue;
        refuse(L, NULL, NULL, NULL, "http %s: refused: %s is a provider API; its requests go only through the "
               "billing client (gpurent.core.provider), which holds the token and checks approval", url, hp);
    }
}

/* ---- the token --------------------------------------------------------------------- */

/* The token file named by a dotted key of the person's config.yaml, into out. */
static int config_token_file(lua_State *L, provider_t *p, char *out, size_t n) {
    if (!p->token_config_key[0]) return 0;
    char path[PATH_MAX], cfg[PATH_MAX - 16];
    const char *env = getenv("GPURENT_CONFIG");
    config_dir(cfg, sizeof cfg);
    if (env && *env) snprintf(path, sizeof path, "%s", env);
    else snprintf(path, sizeof path, "%s/config.yaml", cfg);
    int top = lua_gettop(L);
    if (!push_yaml_file(L, path)) return 0;
    char key[128];
    snprintf(key, sizeof key, "%s", p->token_config_key);
    for (char *save = NULL, *part = strtok_r(key, ".", &save); part; part = strtok_r(NULL, ".", &save)) {
        if (!lua_istable(L, -1)) break;
        lua_getfield(L, -1, part);
    }
    int ok = lua_type(L, -1) == LUA_TSTRING && lua_rawlen(L, -1) < n;
    if (ok) snprintf(out, n, "%s", lua_tostring(L, -1));
    lua_settop(L, top);
    return ok;
}

/* The token into out (NUL-terminated); 0 when none is configured. Raises on a file
 * that others can read or write, an unreadable or an empty one. */
static int read_token(lua_State *L, provider_t *p, char *out, size_t n) {
    const char *env = p->token_env[0] ? getenv(p->token_env) : NULL;
    if (env && *env) {
        if (strlen(env) >= n) luaL_error(L, "%s token in $%s is too long", p->label, p->token_env);
        gr_protect_secrets();
        snprintf(out, n, "%s", env);
        return 1;
    }
    char file[PATH_MAX];
    const char *fenv = p->token_file_env[0] ? getenv(p->token_file_env) : NULL;
    if (fenv && *fenv) snprintf(file, sizeof file, "%s", fenv);
    else if (!config_token_file(L, p, file, sizeof file)) return 0;
    struct stat st;
    if (stat(file, &st) != 0) return luaL_error(L, "%s token file %s: %s", p->label, file, strerror(errno));
    if (st.st_mode & 077) {
        char mode[8];
        snprintf(mode, sizeof mode, "%03o", (unsigned)(st.st_mode & 0777));
        return luaL_error(L, "%s token file %s is readable or writable by others (mode %s): run chmod 600 %s",
                          p->label, file, mode, file);
    }
    gr_protect_secrets();
    size_t len;
    char *text = slurp(file, &len);
    if (!text) return luaL_error(L, "%s token file %s: %s", p->label, file, strerror(errno));
    char *s = text, *e = text + len;
    while (s < e && (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')) s++;
    while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r')) e--;
    size_t tl = (size_t)(e - s);
    int bad = tl == 0 ? 1 : (tl >= n || memchr(s, '\n', tl)) ? 2 : 0;
    if (!bad) { memcpy(out, s, tl); out[tl] = '\0'; }
    OPENSSL_cleanse(text, len);
    free(text);
    if (bad == 1) return luaL_error(L, "%s token file %s is empty", p->label, file);
    if (bad == 2) return luaL_error(L, "%s token file %s: not a single-line token", p->label, file);
    return 1;
}

/* ---- sending ------------------------------------------------------------------------- */

/* Push a started request of endpoint e with body (JSON text), the token attached in C. */
static void start_request(lua_State *L, provider_t *p, endpoint_t *e, const char *body, double timeout) {
    char url[STR * 2], token[TOKEN_MAX], header[TOKEN_MAX + 80];
    endpoint_url(L, p, e, url, sizeof url);
    if (!read_token(L, p, token, sizeof token))
        luaL_error(L, "%s: no developer token (set $%s, or a 0600 file in $%s)", p->label,
                   p->token_env[0] ? p->token_env : "?", p->token_file_env[0] ? p->token_file_env : "?");
    snprintf(header, sizeof header, "%s: %s", p->auth_header, token);
    OPENSSL_cleanse(token, sizeof token);
    lua_createtable(L, 0, 6);
    lua_pushstring(L, e->method[0] ? e->method : "POST"); lua_setfield(L, -2, "method");
    lua_pushstring(L, url); lua_setfield(L, -2, "url");
    lua_pushstring(L, body); lua_setfield(L, -2, "body");
    lua_pushnumber(L, timeout); lua_setfield(L, -2, "timeout");
    lua_pushstring(L, "localhost,127.0.0.1,::1"); lua_setfield(L, -2, "noproxy");
    lua_createtable(L, 1, 0);
    lua_pushfstring(L, "Content-Type: %s", p->content_type);
    lua_rawseti(L, -2, 1);
    lua_setfield(L, -2, "headers");
    int t = lua_gettop(L);
    int https_only = strncasecmp(url, "https://", 8) == 0;
    gr_http_start(L, t, header, https_only);      /* the handle owns a copy of the header */
    OPENSSL_cleanse(header, sizeof header);
    lua_remove(L, t);
}

/* Decode JSON text with a fresh cjson (no Lua caller can have touched it); pushes the
 * value, or nil when the text is not JSON. */
static void push_json(lua_State *L, const char *text, size_t len) {
    luaopen_cjson(L);
    lua_getfield(L, -1, "decode");
    lua_remove(L, -2);
    lua_pushlstring(L, text, len);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) { lua_pop(L, 1); lua_pushnil(L); }
}

/* One page of the instance listing: pushes data (a table) or returns 0. */
static int lookup_page(lua_State *L, provider_t *p, int page) {
    endpoint_t *e = endpoint_of(p, p->lookup);
    if (!e) return 0;
    push_json(L, p->lookup_body[0] ? p->lookup_body : "{}", strlen(p->lookup_body[0] ? p->lookup_body : "{}"));
    if (!lua_istable(L, -1)) { lua_pop(L, 1); return 0; }
    if (p->page_field[0]) { lua_pushinteger(L, page); lua_setfield(L, -2, p->page_field); }
    luaopen_cjson(L);
    lua_getfield(L, -1, "encode");
    lua_remove(L, -2);
    lua_insert(L, -2);
    lua_call(L, 1, 1);
    start_request(L, p, e, lua_tostring(L, -1), 20);
    lua_remove(L, -2);
    gr_http_finish(L, -1);
    lua_remove(L, -2);
    lua_getfield(L, -1, "body");
    size_t len;
    const char *body = lua_tolstring(L, -1, &len);
    push_json(L, body ? body : "", body ? len : 0);
    lua_remove(L, -2);
    lua_remove(L, -2);
    if (!lua_istable(L, -1) || !sub_table(L, -1, "data")) { lua_pop(L, 1); return 0; }
    lua_remove(L, -2);
    return 1;
}

/* The name the provider lists for instance id into out; 0 when not found. */
static int lookup_name(lua_State *L, provider_t *p, const char *id, char *out, size_t n) {
    int top = lua_gettop(L);
    for (int page = 1, last = 1; page <= last && page <= 50; page++) {
        if (!lookup_page(L, p, page)) break;
        if (p->pages[0]) { lua_getfield(L, -1, p->pages); if (lua_isinteger(L, -1)) last = (int)lua_tointeger(L, -1); lua_pop(L, 1); }
        if (!sub_table(L, -1, p->items)) { lua_pop(L, 1); continue; }
        for (lua_Integer i = 1; lua_rawgeti(L, -1, i) == LUA_TTABLE; i++) {
            lua_getfield(L, -1, p->id_key);
            lua_getfield(L, -2, p->name_key);
            int hit = lua_type(L, -2) == LUA_TSTRING && strcmp(lua_tostring(L, -2), id) == 0 &&
                      lua_type(L, -1) == LUA_TSTRING;
            if (hit) snprintf(out, n, "%s", lua_tostring(L, -1));
            lua_pop(L, 3);
            if (hit) { lua_settop(L, top); return 1; }
        }
        lua_settop(L, top);
    }
    lua_settop(L, top);
    return 0;
}

/* lookup_name under pcall: (provider lightuserdata, id) -> name | nil */
static int lookup_name_call(lua_State *L) {
    provider_t *p = lua_touserdata(L, 1);
    char name[256];
    if (lookup_name(L, p, luaL_checkstring(L, 2), name, sizeof name)) lua_pushstring(L, name);
    else lua_pushnil(L);
    return 1;
}

/* A gated request goes out only with the person's approval for the instance it names. */
static void check_approval(lua_State *L, provider_t *p, endpoint_t *e, const char *body) {
    if (!p->inst_field[0])
        refuse(L, p, e->name, "?", "%s %s: refused: the profile (%s) says no billing.api.approval.instance_field, "
               "so gpurent cannot tell which instance this gated request touches", p->label, e->name, p->files);
    char id[256] = "", name[256] = "";
    push_json(L, body, strlen(body));
    if (lua_istable(L, -1)) {
        lua_getfield(L, -1, p->inst_field);
        if (lua_type(L, -1) == LUA_TSTRING && lua_rawlen(L, -1) < sizeof id) snprintf(id, sizeof id, "%s", lua_tostring(L, -1));
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    if (!id[0])
        refuse(L, p, e->name, "?", "%s %s: refused: the request names no instance in %s", p->label, e->name, p->inst_field);
    if (gr_approval_granted(id)) return;
    lua_pushcfunction(L, lookup_name_call);
    lua_pushlightuserdata(L, p);
    lua_pushstring(L, id);
    if (lua_pcall(L, 2, 1, 0) != LUA_OK) {
        const char *why = luaL_tolstring(L, -1, NULL);
        refuse(L, p, e->name, id, "%s %s of %s: refused: the person has not approved %s by that id, and its name "
               "could not be looked up to check an approval by name (%s); nothing was sent",
               p->label, e->name, id, id, why);
    }
    if (lua_type(L, -1) == LUA_TSTRING && lua_rawlen(L, -1) < sizeof name) snprintf(name, sizeof name, "%s", lua_tostring(L, -1));
    lua_pop(L, 1);
    if (name[0] && gr_approval_granted(name)) return;
    const char *who = name[0] ? name : id;
    refuse(L, p, e->name, who, "%s %s of %s%s%s%s: refused: the person has not approved it (pass --approve %s on the "
           "gpurent command line, or type the name when asked); nothing was sent", p->label, e->name, who,
           name[0] ? " (" : "", name[0] ? id : "", name[0] ? ")" : "", who);
}

/* core.provider.start(provider, endpoint, body_json [, timeout]) -> http handle */
static int l_start(lua_State *L) {
    provider_t *p = check_provider(L, 1);
    endpoint_t *e = check_endpoint(L, p, 2);
    const char *body = luaL_optstring(L, 3, "{}");
    double timeout = luaL_optnumber(L, 4, 20);
    if (e->gated) check_approval(L, p, e, body);
    start_request(L, p, e, body, timeout);
    return 1;
}

/* core.provider.request(...) -> {status, headers, body, seconds}: start, run to the end. */
static int l_request(lua_State *L) {
    l_start(L);
    return gr_http_finish(L, -1);
}

/* core.provider.has_token(provider) -> bool (raises on a token file others can read). */
static int l_has_token(lua_State *L) {
    provider_t *p = check_provider(L, 1);
    char token[TOKEN_MAX];
    int has = read_token(L, p, token, sizeof token);
    OPENSSL_cleanse(token, sizeof token);
    lua_pushboolean(L, has);
    return 1;
}

static int token_tostring(lua_State *L) { lua_pushliteral(L, "***"); return 1; }

/* "x" .. token and token .. "x": the handle's side renders as ***. */
static int token_concat(lua_State *L) {
    for (int i = 1; i <= 2; i++) {
        if (luaL_testudata(L, i, TOKEN_MT)) lua_pushliteral(L, "***");
        else luaL_tolstring(L, i, NULL);
    }
    lua_concat(L, 2);
    return 1;
}
static int token_index(lua_State *L) {
    return luaL_error(L, "the provider token stays in gpurent's C host: its handle has no field %s",
                      lua_tostring(L, 2) ? lua_tostring(L, 2) : "?");
}

/* core.provider.token(provider) -> a handle printing *** (nil when no token is set). */
static int l_token(lua_State *L) {
    l_has_token(L);
    if (!lua_toboolean(L, -1)) { lua_pushnil(L); return 1; }
    lua_newuserdatauv(L, 0, 0);
    if (luaL_newmetatable(L, TOKEN_MT)) {
        lua_pushcfunction(L, token_tostring); lua_setfield(L, -2, "__tostring");
        lua_pushcfunction(L, token_tostring); lua_setfield(L, -2, "__json");
        lua_pushcfunction(L, token_index); lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, token_concat); lua_setfield(L, -2, "__concat");
        lua_pushliteral(L, TOKEN_MT); lua_setfield(L, -2, "__metatable");
    }
    lua_setmetatable(L, -2);
    return 1;
}

/* core.provider.describe(provider, endpoint) -> method, url, auth_header, gated */
static int l_describe(lua_State *L) {
    provider_t *p = check_provider(L, 1);
    endpoint_t *e = check_endpoint(L, p, 2);
    char url[STR * 2];
    endpoint_url(L, p, e, url, sizeof url);
    lua_pushstring(L, e->method[0] ? e->method : "POST");
    lua_pushstring(L, url);
    lua_pushstring(L, p->auth_header);
    lua_pushboolean(L, e->gated);
    return 4;
}

/* core.provider.gate(provider, endpoint): gate one more verb (there is no ungate). */
static int l_gate(lua_State *L) {
    provider_t *p = check_provider(L, 1);
    check_endpoint(L, p, 2)->gated = 1;
    return 0;
}

/* core.provider.gated(provider) -> sorted-as-listed names of the gated endpoints */
static int l_gated(lua_State *L) {
    provider_t *p = check_provider(L, 1);
    lua_newtable(L);
    for (int i = 0, n = 0; i < p->n_ep; i++)
        if (p->ep[i].gated) { lua_pushstring(L, p->ep[i].name); lua_rawseti(L, -2, ++n); }
    return 1;
}

/* core.provider.exists(provider) -> bool; core.provider.note_api(url): one more host
 * the raw http primitive refuses (a profile loaded in Lua names it). */
static int l_exists(lua_State *L) {
    lua_pushboolean(L, provider_load(L, luaL_checkstring(L, 1)) != NULL);
    return 1;
}

static int l_note_api(lua_State *L) {
    note_host(luaL_checkstring(L, 1));
    return 0;
}

int gr_open_provider(lua_State *L) {
    static const luaL_Reg fns[] = {
        {"start", l_start}, {"request", l_request}, {"has_token", l_has_token}, {"token", l_token},
        {"describe", l_describe}, {"gate", l_gate}, {"gated", l_gated}, {"exists", l_exists},
        {"note_api", l_note_api}, {NULL, NULL}
    };
    luaL_newlib(L, fns);
    return 1;
}
