/* http.c: one HTTP request over libcurl (dlopen()ed, see curlload.h). Owns the
 * transfer only: method, URL, headers, body, timeouts, status code, response headers
 * and body. JSON, envelopes and retries are policy (lua/gpurent/util/http.lua,
 * lua/gpurent/platform/); the provider token and the approval check are provider.c's.
 *
 * A request is a handle driven in steps (curl multi), so the Lua side can let other
 * coroutines run between steps (gpurent.sched) instead of blocking the process:
 *   local h = core.http.start{method=, url=, headers={"K: V", ...}, body=,
 *                             timeout=, connect_timeout=, max_body=, noproxy=}
 *   repeat until h:step(wait_seconds)        -- true when the transfer is over
 *   local r = h:result()  -- {status=, headers={lower-name=value}, body=, seconds=}
 *   core.http.request(t)  -- the same, blocking (steps of 100 ms, SIGINT-aware)
 *
 * This raw primitive never carries a provider token, and it refuses (exit 3) any URL
 * on a host that a profile names as a provider API (provider.c), so a recipe that read
 * the token file itself cannot send it there. Errors name the method and URL, never a
 * header value. */
#include "host.h"
#include "curlload.h"
#include "provider.h"

#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

#define HTTP_MT "gpurent.http.request"
#define DEFAULT_MAX_BODY (16 * 1024 * 1024)

static void register_mt(lua_State *L);

typedef struct {
    char *data;
    size_t len, cap, max;
    int overflow;
} buf_t;

typedef struct {
    const gr_curl_api *api;
    CURL *easy;
    CURLM *multi;
    struct curl_slist *headers;
    char *method, *url, *body;
    buf_t resp, hdrs;
    char errbuf[CURL_ERROR_SIZE];
    int done;
    CURLcode result;
} req_t;

static int buf_add(buf_t *b, const char *p, size_t n) {
    if (b->len + n > b->max) { b->overflow = 1; return 0; }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1) cap *= 2;
        char *d = realloc(b->data, cap);
        if (!d) return 0;
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 1;
}

static size_t on_body(char *p, size_t size, size_t n, void *ud) {
    buf_t *b = ud;
    return buf_add(b, p, size * n) ? size * n : 0; /* 0 aborts the transfer */
}

static size_t on_header(char *p, size_t size, size_t n, void *ud) {
    buf_t *b = ud;
    return buf_add(b, p, size * n) ? size * n : 0;
}

static void req_free(req_t *r) {
    if (r->multi && r->easy) r->api->multi_remove_handle(r->multi, r->easy);
    if (r->easy) r->api->easy_cleanup(r->easy);
    if (r->multi) r->api->multi_cleanup(r->multi);
    /* a header may hold the provider token: wipe it before the memory is reused */
    for (struct curl_slist *h = r->headers; h; h = h->next)
        if (h->data) OPENSSL_cleanse(h->data, strlen(h->data));
    if (r->headers) r->api->slist_free_all(r->headers);
    free(r->method); free(r->url); free(r->body);
    free(r->resp.data); free(r->hdrs.data);
    r->easy = NULL; r->multi = NULL; r->headers = NULL;
    r->method = r->url = r->body = NULL;
    r->resp.data = r->hdrs.data = NULL;
}

static req_t *check_req(lua_State *L) {
    req_t *r = luaL_checkudata(L, 1, HTTP_MT);
    if (!r->easy) luaL_error(L, "http: request already closed");
    return r;
}

static char *dup_field(lua_State *L, int t, const char *k, const char *def) {
    lua_getfield(L, t, k);
    const char *s = lua_isnil(L, -1) ? def : lua_tostring(L, -1);
    if (!s && !lua_isnil(L, -1)) luaL_error(L, "http: field %s must be a string", k);
    char *d = s ? strdup(s) : NULL;
    lua_pop(L, 1);
    return d;
}

static double num_field(lua_State *L, int t, const char *k, double def) {
    lua_getfield(L, t, k);
    int ok = 1;
    double v = lua_isnil(L, -1) ? def : lua_tonumberx(L, -1, &ok);
    if (!ok) luaL_error(L, "http: field %s must be a number", k);
    lua_pop(L, 1);
    return v;
}

/* Set a curl option and raise naming the request if curl refuses it. */
#define SETOPT(opt, val)                                                            \
    do {                                                                            \
        CURLcode rc_ = r->api->easy_setopt(r->easy, opt, val);                      \
        if (rc_ != CURLE_OK)                                                        \
            return luaL_error(L, "http %s %s: setting " #opt ": %s", r->method,     \
                              r->url, r->api->easy_strerror(rc_));                  \
    } while (0)

static int add_headers(lua_State *L, req_t *r, int t, const char *extra) {
    lua_getfield(L, t, "headers");
    if (!lua_isnil(L, -1)) {
        luaL_checktype(L, -1, LUA_TTABLE);
        lua_Integer n = luaL_len(L, -1);
        for (lua_Integer i = 1; i <= n; i++) {
            lua_rawgeti(L, -1, i);
            const char *h = lua_tostring(L, -1);
            /* the value may be a token: the message names the position only */
            if (!h || strchr(h, '\n') || strchr(h, '\r'))
                return luaL_error(L, "http %s %s: header %d is not a single-line string",
                                  r->method, r->url, (int)i);
            struct curl_slist *nl = r->api->slist_append(r->headers, h);
            if (!nl) return luaL_error(L, "http %s %s: out of memory", r->method, r->url);
            r->headers = nl;
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
    /* curl adds "Expect: 100-continue" to large bodies: one round trip more */
    struct curl_slist *nl = r->api->slist_append(r->headers, "Expect:");
    if (nl && extra) { r->headers = nl; nl = r->api->slist_append(r->headers, extra); }
    if (!nl) return luaL_error(L, "http %s %s: out of memory", r->method, r->url);
    r->headers = nl;
    return 0;
}

static int configure(lua_State *L, req_t *r, int t, const char *extra, int https_only) {
    double timeout = num_field(L, t, "timeout", 30), ctimeout = num_field(L, t, "connect_timeout", 10);
    if (timeout <= 0 || ctimeout <= 0)
        return luaL_error(L, "http %s %s: timeouts must be positive", r->method, r->url);
    SETOPT(CURLOPT_URL, r->url);
    SETOPT(CURLOPT_PROTOCOLS_STR, https_only ? "https" : "http,https");
    SETOPT(CURLOPT_FOLLOWLOCATION, 0L);  /* never carry the token to another host */
    SETOPT(CURLOPT_NOSIGNAL, 1L);
    SETOPT(CURLOPT_TIMEOUT_MS, (long)(timeout * 1000));
    SETOPT(CURLOPT_CONNECTTIMEOUT_MS, (long)(ctimeout * 1000));
    SETOPT(CURLOPT_ERRORBUFFER, r->errbuf);
    SETOPT(CURLOPT_WRITEFUNCTION, on_body);
    SETOPT(CURLOPT_WRITEDATA, &r->resp);
    SETOPT(CURLOPT_HEADERFUNCTION, on_header);
    SETOPT(CURLOPT_HEADERDATA, &r->hdrs);
    SETOPT(CURLOPT_USERAGENT, "gpurent/" GPURENT_VERSION);
    char *noproxy = dup_field(L, t, "noproxy", NULL);
    if (noproxy) {
        CURLcode rc = r->api->easy_setopt(r->easy, CURLOPT_NOPROXY, noproxy);
        free(noproxy); /* curl copies string options */
        if (rc != CURLE_OK)
            return luaL_error(L, "http %s %s: setting CURLOPT_NOPROXY: %s", r->method, r->url,
                              r->api->easy_strerror(rc));
    }
    SETOPT(CURLOPT_CUSTOMREQUEST, r->method);
    if (strcmp(r->method, "HEAD") == 0) SETOPT(CURLOPT_NOBODY, 1L);
    lua_getfield(L, t, "body");
    size_t blen = 0;
    const char *body = lua_isnil(L, -1) ? NULL : lua_tolstring(L, -1, &blen);
    if (!body && !lua_isnil(L, -1)) return luaL_error(L, "http %s %s: body must be a string", r->method, r->url);
    if (body) {
        r->body = malloc(blen + 1);
        if (!r->body) return luaL_error(L, "http %s %s: out of memory", r->method, r->url);
        memcpy(r->body, body, blen);
        r->body[blen] = '\0';
        /* POSTFIELDS also sends a body with GET, which a provider's status call may need */
        SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)blen);
        SETOPT(CURLOPT_POSTFIELDS, r->body);
    }
    lua_pop(L, 1);
    add_headers(L, r, t, extra);
    SETOPT(CURLOPT_HTTPHEADER, r->headers);
    return 0;
}

/* Start the request described by the table at index t; pushes the handle. extra is
 * one more header line kept in C memory only (provider.c's token); https_only limits
 * the protocols curl may use for it. */
int gr_http_start(lua_State *L, int t, const char *extra, int https_only) {
    t = lua_absindex(L, t);
    luaL_checktype(L, t, LUA_TTABLE);
    const char *err = NULL;
    const gr_curl_api *api = gr_curl(&err);
    register_mt(L);
    req_t *r = lua_newuserdatauv(L, sizeof *r, 0);
    memset(r, 0, sizeof *r);
    luaL_setmetatable(L, HTTP_MT);
    r->api = api;
    r->method = dup_field(L, t, "method", "GET");
    r->url = dup_field(L, t, "url", NULL);
    if (!r->url) return luaL_error(L, "http: url is required");
    for (char *m = r->method; *m; m++)
        if (*m < 'A' || *m > 'Z') return luaL_error(L, "http: bad method %s", r->method);
    if (!api) return luaL_error(L, "http %s %s: %s", r->method, r->url, err);
    r->resp.max = (size_t)num_field(L, t, "max_body", DEFAULT_MAX_BODY);
    r->hdrs.max = 256 * 1024;
    r->easy = api->easy_init();
    if (!r->easy) return luaL_error(L, "http %s %s: curl_easy_init failed", r->method, r->url);
    r->multi = api->multi_init();
    if (!r->multi) return luaL_error(L, "http %s %s: curl_multi_init failed", r->method, r->url);
    configure(L, r, t, extra, https_only);
    CURLMcode mc = api->multi_add_handle(r->multi, r->easy);
    if (mc != CURLM_OK) return luaL_error(L, "http %s %s: curl_multi_add_handle failed (%d)", r->method, r->url, (int)mc);
    return 1;
}

/* core.http.start(t) -> request handle. Never to a provider's API host. */
static int http_start(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_getfield(L, 1, "approval");
    if (!lua_isnil(L, -1))
        return luaL_error(L, "http: the field approval is gone: gated provider requests go through "
                             "gpurent.core.provider (the billing client), which checks approval in C");
    lua_pop(L, 1);
    lua_getfield(L, 1, "url");
    const char *url = lua_tostring(L, -1);
    if (url) gr_provider_refuse_raw_url(L, url);
    lua_pop(L, 1);
    return gr_http_start(L, 1, NULL, 0);
}

static int collect(req_t *r) {
    int msgs = 0;
    CURLMsg *m;
    while ((m = r->api->multi_info_read(r->multi, &msgs)) != NULL) {
        if (m->msg == CURLMSG_DONE && m->easy_handle == r->easy) {
            r->done = 1;
            r->result = m->data.result;
        }
    }
    return r->done;
}

/* h:step([wait_seconds]) -> done. Moves the transfer on; waits at most wait_seconds
 * for socket activity (0: do not wait). */
static int http_step(lua_State *L) {
    req_t *r = check_req(L);
    lua_Number wait = luaL_optnumber(L, 2, 0);
    if (r->done) { lua_pushboolean(L, 1); return 1; }
    int running = 0;
    CURLMcode mc = r->api->multi_perform(r->multi, &running);
    if (mc != CURLM_OK) return luaL_error(L, "http %s %s: curl_multi_perform failed (%d)", r->method, r->url, (int)mc);
    if (!collect(r) && running && wait > 0) {
        int nfds = 0;
        mc = r->api->multi_poll(r->multi, NULL, 0, (int)(wait * 1000), &nfds);
        if (mc != CURLM_OK) return luaL_error(L, "http %s %s: curl_multi_poll failed (%d)", r->method, r->url, (int)mc);
        gr_raise_if_interrupted(L);
        mc = r->api->multi_perform(r->multi, &running);
        if (mc != CURLM_OK) return luaL_error(L, "http %s %s: curl_multi_perform failed (%d)", r->method, r->url, (int)mc);
        collect(r);
    }
    lua_pushboolean(L, r->done);
    return 1;
}

/* Response headers as {lower-case name = last value}, from the final response only
 * (a 100-continue or proxy CONNECT answer comes first in the raw text). */
static void push_headers(lua_State *L, req_t *r) {
    lua_newtable(L);
    if (!r->hdrs.data) return;
    char *p = r->hdrs.data;
    while (*p) {
        char *eol = strstr(p, "\r\n");
        size_t n = eol ? (size_t)(eol - p) : strlen(p);
        if (n >= 5 && strncmp(p, "HTTP/", 5) == 0) { lua_pop(L, 1); lua_newtable(L); }
        else {
            char *colon = memchr(p, ':', n);
            if (colon) {
                luaL_Buffer b;
                luaL_buffinit(L, &b);
                for (char *c = p; c < colon; c++) luaL_addchar(&b, (char)((*c >= 'A' && *c <= 'Z') ? *c + 32 : *c));
                luaL_pushresult(&b);
                char *v = colon + 1;
                while (v < p + n && (*v == ' ' || *v == '\t')) v++;
                size_t vl = (size_t)(p + n - v);
                while (vl > 0 && (v[vl - 1] == ' ' || v[vl - 1] == '\t')) vl--;
                lua_pushlstring(L, v, vl);
                lua_settable(L, -3);
            }
        }
        if (!eol) break;
        p = eol + 2;
    }
}

/* h:result() -> {status, headers, body, seconds}; raises on a transport failure. */
static int http_result(lua_State *L) {
    req_t *r = check_req(L);
    if (!r->done) return luaL_error(L, "http %s %s: result() before the transfer finished", r->method, r->url);
    if (r->resp.overflow)
        return luaL_error(L, "http %s %s: response body larger than %d bytes", r->method, r->url, (int)r->resp.max);
    if (r->result != CURLE_OK) {
        const char *why = r->errbuf[0] ? r->errbuf : r->api->easy_strerror(r->result);
        /* an error of kind transport; code says which: "timeout" or "connection" */
        lua_createtable(L, 0, 5);
        lua_pushfstring(L, "http %s %s: %s", r->method, r->url, why);
        lua_setfield(L, -2, "msg");
        lua_pushstring(L, r->result == CURLE_OPERATION_TIMEDOUT ? "timeout" : "connection");
        lua_setfield(L, -2, "code");
        lua_pushinteger(L, (lua_Integer)r->result);
        lua_setfield(L, -2, "curl_code");
        gr_make_error(L, "transport");
        return lua_error(L);
    }
    long code = 0;
    double secs = 0;
    CURLcode rc = r->api->easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &code);
    if (rc != CURLE_OK) return luaL_error(L, "http %s %s: reading the status: %s", r->method, r->url, r->api->easy_strerror(rc));
    rc = r->api->easy_getinfo(r->easy, CURLINFO_TOTAL_TIME, &secs);
    if (rc != CURLE_OK) return luaL_error(L, "http %s %s: reading the time: %s", r->method, r->url, r->api->easy_strerror(rc));
    lua_createtable(L, 0, 4);
    lua_pushinteger(L, code);
    lua_setfield(L, -2, "status");
    push_headers(L, r);
    lua_setfield(L, -2, "headers");
    lua_pushlstring(L, r->resp.data ? r->resp.data : "", r->resp.len);
    lua_setfield(L, -2, "body");
    lua_pushnumber(L, secs);
    lua_setfield(L, -2, "seconds");
    return 1;
}

static int http_close(lua_State *L) {
    req_t *r = luaL_checkudata(L, 1, HTTP_MT);
    req_free(r);
    return 0;
}

/* Run the started handle at index h to its end (steps of 100 ms, SIGINT-aware),
 * push its result and free it. */
int gr_http_finish(lua_State *L, int h) {
    h = lua_absindex(L, h);
    for (;;) {
        lua_pushcfunction(L, http_step);
        lua_pushvalue(L, h);
        lua_pushnumber(L, 0.1);
        lua_call(L, 2, 1);
        int done = lua_toboolean(L, -1);
        lua_pop(L, 1);
        if (done) break;
        gr_raise_if_interrupted(L);
    }
    lua_pushcfunction(L, http_result);
    lua_pushvalue(L, h);
    lua_call(L, 1, 1);
    req_free(luaL_checkudata(L, h, HTTP_MT));
    return 1;
}

/* core.http.request(t) -> result: start, step until done (SIGINT-aware), result. */
static int http_request(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    lua_pushcfunction(L, http_start);
    lua_pushvalue(L, 1);
    lua_call(L, 1, 1);
    return gr_http_finish(L, 2);
}

static void register_mt(lua_State *L) {
    static const luaL_Reg methods[] = {
        {"step", http_step}, {"result", http_result}, {"close", http_close}, {NULL, NULL}
    };
    if (!luaL_newmetatable(L, HTTP_MT)) { lua_pop(L, 1); return; }
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, http_close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, http_close);
    lua_setfield(L, -2, "__close");
    lua_pushstring(L, HTTP_MT);      /* the handle's metatable (and its headers) stay out of reach */
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 1);
}

int gr_open_http(lua_State *L) {
    static const luaL_Reg fns[] = {{"start", http_start}, {"request", http_request}, {NULL, NULL}};
    register_mt(L);
    luaL_newlib(L, fns);
    return 1;
}
