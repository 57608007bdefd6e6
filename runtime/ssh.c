/* ssh.c: libssh2 sessions and exec channels as non-blocking steps.
 *
 * Every "step" either finishes (returns its results, never false) or returns
 * false, dirs when libssh2 would block: dirs is 1 (wait readable), 2 (writable)
 * or 3. lua/gpurent/transport/ssh.lua then waits on the session's fd through the
 * scheduler and calls the step again. Errors raise "<host>: <op>: <libssh2 msg>";
 * socket-level failures also mark the session dead so the Lua side can tell a
 * lost connection (reconnect) from a refused operation (report).
 *
 * Owns: TCP connect, the session (handshake, host key, auth, keepalive), exec
 * channels, and the TTY passphrase prompt. SFTP is in sftp.c; known_hosts in
 * knownhosts.c; ssh_config and policy in Lua. */
#include "ssh_internal.h"
#include "aesctr.h"
#include "sshproxy.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#define CHANNEL_MT "gpurent.ssh.channel"
#define READ_CHUNK 65536

static int libssh2_ready = 0;

/* ---- errors -------------------------------------------------------------- */

static int is_socket_error(int rc) {
    return rc == LIBSSH2_ERROR_SOCKET_SEND || rc == LIBSSH2_ERROR_SOCKET_RECV ||
           rc == LIBSSH2_ERROR_SOCKET_DISCONNECT || rc == LIBSSH2_ERROR_SOCKET_TIMEOUT ||
           rc == LIBSSH2_ERROR_TIMEOUT || rc == LIBSSH2_ERROR_BANNER_RECV ||
           rc == LIBSSH2_ERROR_BANNER_SEND || rc == LIBSSH2_ERROR_KEX_FAILURE ||
           rc == LIBSSH2_ERROR_DECRYPT || rc == LIBSSH2_ERROR_SOCKET_NONE;
}

int gr_ssh_fail(lua_State *L, gr_session *gs, const char *op, int rc) {
    char *msg = NULL;
    if (gs->s) libssh2_session_last_error(gs->s, &msg, NULL, 0);
    if (is_socket_error(rc) || !gs->s) gs->dead = 1;
    return luaL_error(L, "%s: %s: %s (libssh2 error %d)%s", gs->host, op,
                      msg && *msg ? msg : "failed", rc, gs->dead ? " [connection lost]" : "");
}

int gr_ssh_again(lua_State *L, gr_session *gs) {
    int d = gs->s ? libssh2_session_block_directions(gs->s) : 0;
    lua_pushboolean(L, 0);
    lua_pushinteger(L, (d & LIBSSH2_SESSION_BLOCK_INBOUND ? 1 : 0) |
                       (d & LIBSSH2_SESSION_BLOCK_OUTBOUND ? 2 : 0) | (d ? 0 : 1));
    return 2;
}

gr_session *gr_ssh_check(lua_State *L, int idx) {
    gr_session *gs = luaL_checkudata(L, idx, GR_SESSION_MT);
    if (!gs->s) luaL_error(L, "%s: session is closed", gs->host);
    return gs;
}

/* ---- TCP ----------------------------------------------------------------- */

/* tcp_connect(host, port [, family]) -> fd: a non-blocking socket whose connect is
 * in progress; wait writable, then call connect_result(fd). family is ssh_config's
 * AddressFamily: "any" (default), "inet" or "inet6". Name resolution is
 * synchronous (getaddrinfo); ssh_config targets are usually IPs or local names. */
static int ssh_tcp_connect(lua_State *L) {
    static const char *const families[] = {"any", "inet", "inet6", NULL};
    static const int family_values[] = {AF_UNSPEC, AF_INET, AF_INET6};
    const char *host = luaL_checkstring(L, 1);
    lua_Integer port = luaL_checkinteger(L, 2);
    int family = family_values[luaL_checkoption(L, 3, "any", families)];
    char sport[16];
    snprintf(sport, sizeof sport, "%d", (int)port);
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_family = family;
    int g = getaddrinfo(host, sport, &hints, &res);
    if (g != 0) return luaL_error(L, "%s: cannot resolve host: %s", host, gai_strerror(g));
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) { freeaddrinfo(res); return gr_errno_error(L, "socket for", host); }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int rc = connect(fd, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    if (rc != 0 && errno != EINPROGRESS) {
        int e = errno;
        close(fd);
        return luaL_error(L, "%s:%d: connect: %s", host, (int)port, strerror(e));
    }
    lua_pushinteger(L, fd);
    return 1;
}

/* connect_result(fd) -> true, or nil, "strerror" when the connect failed. */
static int ssh_connect_result(lua_State *L) {
    int fd = (int)luaL_checkinteger(L, 1), err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
    if (err == 0) { lua_pushboolean(L, 1); return 1; }
    lua_pushnil(L);
    lua_pushstring(L, strerror(err));
    return 2;
}

/* aesctr() -> what SSH's AES-CTR runs on ("batched" or "openssl (why)"). */
static int ssh_aesctr(lua_State *L) {
    lua_pushstring(L, gr_aesctr_install());
    return 1;
}

static int ssh_close_fd(lua_State *L) {
    close((int)luaL_checkinteger(L, 1));
    return 0;
}

/* ---- session ------------------------------------------------------------- */

/* session(fd, hostlabel) -> session owning fd (closed on close/gc). */
static int ssh_session(lua_State *L) {
    int fd = (int)luaL_checkinteger(L, 1);
    const char *label = luaL_checkstring(L, 2);
    if (!libssh2_ready) {
        gr_aesctr_install();
        if (libssh2_init(0) != 0) return luaL_error(L, "libssh2_init failed");
        libssh2_ready = 1;
    }
    gr_session *gs = lua_newuserdatauv(L, sizeof *gs, 0);
    memset(gs, 0, sizeof *gs);
    gs->fd = -1;
    snprintf(gs->host, sizeof gs->host, "%s", label);
    luaL_setmetatable(L, GR_SESSION_MT);
    gs->s = libssh2_session_init();
    if (!gs->s) return luaL_error(L, "%s: cannot allocate libssh2 session", label);
    gs->fd = fd;
    libssh2_session_set_blocking(gs->s, 0);
    return 1;
}

static const int method_types[] = {LIBSSH2_METHOD_HOSTKEY, LIBSSH2_METHOD_CRYPT_CS,
                                   LIBSSH2_METHOD_CRYPT_SC, LIBSSH2_METHOD_MAC_CS,
                                   LIBSSH2_METHOD_MAC_SC, LIBSSH2_METHOD_KEX};
static const char *const method_names[] = {"hostkey", "cipher", "cipher_sc", "mac", "mac_sc", "kex", NULL};

/* Keep only the algorithms this libssh2 supports: libssh2 1.10's method_pref
 * drops unknown names with an overlapping memcpy (undefined behaviour). */
static int filter_supported(lua_State *L, LIBSSH2_SESSION *s, int type, const char *prefs, luaL_Buffer *b) {
    const char **algs = NULL;
    int n = libssh2_session_supported_algs(s, type, &algs);
    if (n <= 0) return n;
    luaL_buffinit(L, b);
    int added = 0;
    const char *p = prefs;
    while (*p) {
        size_t len = strcspn(p, ",");
        for (int i = 0; i < n; i++) {
            if (strlen(algs[i]) == len && strncmp(algs[i], p, len) == 0) {
                if (added++) luaL_addchar(b, ',');
                luaL_addlstring(b, p, len);
                break;
            }
        }
        p += len;
        if (*p == ',') p++;
    }
    libssh2_free(s, algs);
    luaL_pushresult(b);
    return added;
}

/* sess:method_pref(kind, "alg1,alg2") before handshake; "cipher"/"mac" set both
 * ways. Unsupported names are dropped; none supported is an error. */
static int sess_method_pref(lua_State *L) {
    gr_session *gs = gr_ssh_check(L, 1);
    int i = luaL_checkoption(L, 2, NULL, method_names);
    const char *prefs = luaL_checkstring(L, 3);
    int ways = (i == 1 || i == 3) ? 2 : 1;
    for (int w = 0; w < ways; w++) {
        luaL_Buffer b;
        int n = filter_supported(L, gs->s, method_types[i + w], prefs, &b);
        if (n <= 0) return luaL_error(L, "%s: no supported %s algorithm in \"%s\"", gs->host, method_names[i], prefs);
        int rc = libssh2_session_method_pref(gs->s, method_types[i + w], lua_tostring(L, -1));
        lua_pop(L, 1);
        if (rc != 0) return gr_ssh_fail(L, gs, "method_pref", rc);
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* sess:compress(on) before handshake: offer zlib (zlib@openssh.com, zlib) in both
 * directions; the server chooses, as with OpenSSH's Compression yes. */
static int sess_compress(lua_State *L) {
    gr_session *gs = gr_ssh_check(L, 1);
    int rc = libssh2_session_flag(gs->s, LIBSSH2_FLAG_COMPRESS, lua_toboolean(L, 2) ? 1 : 0);
    if (rc != 0) return gr_ssh_fail(L, gs, "compression flag", rc);
    lua_pushboolean(L, 1);
    return 1;
}

/* sess:negotiated(kind) after handshake -> the algorithm agreed for kind: "kex",
 * "hostkey", "cipher"/"cipher_sc", "mac"/"mac_sc", "comp"/"comp_sc" ("none" when
 * not compressing; _sc is server to client). */
static int sess_negotiated(lua_State *L) {
    static const char *const kinds[] = {"kex", "hostkey", "cipher", "cipher_sc", "mac", "mac_sc",
                                        "comp", "comp_sc", NULL};
    static const int types[] = {LIBSSH2_METHOD_KEX, LIBSSH2_METHOD_HOSTKEY, LIBSSH2_METHOD_CRYPT_CS,
                                LIBSSH2_METHOD_CRYPT_SC, LIBSSH2_METHOD_MAC_CS, LIBSSH2_METHOD_MAC_SC,
                                LIBSSH2_METHOD_COMP_CS, LIBSSH2_METHOD_COMP_SC};
    gr_session *gs = gr_ssh_check(L, 1);
    int i = luaL_checkoption(L, 2, NULL, kinds);
    const char *name = libssh2_session_methods(gs->s, types[i]);
    if (!name) return luaL_error(L, "%s: no %s algorithm negotiated (before the handshake?)", gs->host, kinds[i]);
    lua_pushstring(L, name);
    return 1;
}

static int sess_handshake(lua_State *L) {
    gr_session *gs = gr_ssh_check(L, 1);
    int rc = libssh2_session_handshake(gs->s, gs->fd);
    if (rc == LIBSSH2_ERROR_EAGAIN) return gr_ssh_again(L, gs);
    if (rc != 0) return gr_ssh_fail(L, gs, "SSH handshake", rc);
    lua_pushboolean(L, 1);
    return 1;
}

static const char *hostkey_type_name(int t) {
    switch (t) {
    case LIBSSH2_HOSTKEY_TYPE_RSA: return "ssh-rsa";
    case LIBSSH2_HOSTKEY_TYPE_DSS: return "ssh-dss";
#ifdef LIBSSH2_HOSTKEY_TYPE_ECDSA_256
    case LIBSSH2_HOSTKEY_TYPE_ECDSA_256: return "ecdsa-sha2-nistp256";
    case LIBSSH2_HOSTKEY_TYPE_ECDSA_384: return "ecdsa-sha2-nistp384";
    case LIBSSH2_HOSTKEY_TYPE_ECDSA_521: return "ecdsa-sha2-nistp521";
#endif
#ifdef LIBSSH2_HOSTKEY_TYPE_ED25519
    case LIBSSH2_HOSTKEY_TYPE_ED25519: return "ssh-ed25519";
#endif
    default: return "unknown";
    }
}

/* sess:hostkey() -> blob, type name (as in known_hosts). */
static int sess_hostkey(lua_State *L) {
    gr_session *gs = gr_ssh_check(L, 1);
    size_t len = 0;
    int type = 0;
    const char *key = libssh2_session_hostkey(gs->s, &len, &type);
    if (!key) return gr_ssh_fail(L, gs, "host key", LIBSSH2_ERROR_HOSTKEY_INIT);
    lua_pushlstring(L, key, len);
    lua_pushstring(L, hostkey_type_name(type));
    return 2;
}

/* sess:userauth_list(user) -> "publickey,password" | true when "none" auth succeeded. */
static int sess_userauth_list(lua_State *L) {
    gr_session *gs = gr_ssh_check(L, 1);
    size_t ulen;
    const char *user = luaL_checklstring(L, 2, &ulen);
    char *list = libssh2_userauth_list(gs->s, user, (unsigned int)ulen);
    if (list) { lua_pushstring(L, list); return 1; }
    if (libssh2_userauth_authenticated(gs->s)) { lua_pushboolean(L, 1); return 1; }
    int rc = libssh2_session_last_errno(gs->s);
    if (rc == LIBSSH2_ERROR_EAGAIN) return gr_ssh_again(L, gs);
    return gr_ssh_fail(L, gs, "auth methods", rc);
}

/* Auth outcome shared by the methods: true; false, dirs; or nil, reason for a
 * rejected credential (the caller tries the next one). */
int gr_ssh_auth_result(lua_State *L, gr_session *gs, int rc, const char *op) {
    if (rc == 0) { lua_pushboolean(L, 1); return 1; }
    if (rc == LIBSSH2_ERROR_EAGAIN) return gr_ssh_again(L, gs);
    if (is_socket_error(rc)) return gr_ssh_fail(L, gs, op, rc);
    char *msg = NULL;
    libssh2_session_last_error(gs->s, &msg, NULL, 0);
    lua_pushnil(L);
    lua_pushstring(L, msg && *msg ? msg : "rejected");
    lua_pushinteger(L, rc);
    return 3;
}

/* sess:auth_pubkey(user, privkey_path [, passphrase [, pubkey_path]]): with the
 * .pub file libssh2 need not derive the public key (its RSA derivation leaks). */
static int sess_auth_pubkey(lua_State *L) {
    gr_session *gs = gr_ssh_check(L, 1);
    size_t ulen;
    const char *user = luaL_checklstring(L, 2, &ulen);
    const char *priv = luaL_checkstring(L, 3);
    const char *pass = luaL_optstring(L, 4, NULL);
    const char *pub = luaL_optstring(L, 5, NULL);
    int rc = libssh2_userauth_publickey_fromfile_ex(gs->s, user, (unsigned int)ulen, pub, priv, pass);
    return gr_ssh_auth_result(L, gs, rc, "public key auth");
}

/* sess:auth_password(user, password) */
static int sess_auth_password(lua_State *L) {
    gr_session *gs = gr_ssh_check(L, 1);
    size_t ulen, plen;
    const char *user = luaL_checklstring(L, 2, &ulen);
    const char *pw = luaL_checklstring(L, 3, &plen);
    int rc = libssh2_userauth_password_ex(gs->s, user, (unsigned int)ulen, pw, (unsigned int)plen, NULL);
    return gr_ssh_auth_result(L, gs, rc, "password auth");
}

/* Is this agent identity one the caller allows? only is a set {[blob] = true} or nil (all). */
static int agent_id_allowed(lua_State *L, int only, struct libssh2_agent_publickey *id) {
    if (lua_isnoneornil(L, only)) return 1;
    lua_pushlstring(L, (const char *)id->blob, id->blob_len);
    int ok = lua_rawget(L, only) != LUA_TNIL;
    lua_pop(L, 1);
    return ok;
}

/* sess:auth_agent(user [, rsa_sha2 [, socket [, only]]]) -> true | false, dirs | nil,
 * reason. Tries every agent identity in turn; state survives between calls so EAGAIN
 * resumes the same key. With rsa_sha2, RSA identities sign rsa-sha2-256 (rsasha2.c).
 * socket: the agent's socket path (IdentityAgent), else $SSH_AUTH_SOCK. only: a set
 * of public key blobs (IdentitiesOnly: the agent may sign only for configured keys). */
static int sess_auth_agent(lua_State *L) {
    gr_session *gs = gr_ssh_check(L, 1);
    const char *user = luaL_checkstring(L, 2);
    int rsa_sha2 = lua_toboolean(L, 3);
    const char *sock = luaL_optstring(L, 4, NULL);
    if (!lua_isnoneornil(L, 5)) luaL_checktype(L, 5, LUA_TTABLE);
    if (!gs->agent) {
        if (!sock && !getenv("SSH_AUTH_SOCK")) { lua_pushnil(L); lua_pushstring(L, "no SSH_AUTH_SOCK"); return 2; }
        gs->agent = libssh2_agent_init(gs->s);
        if (!gs->agent) return gr_ssh_fail(L, gs, "agent init", LIBSSH2_ERROR_ALLOC);
        if (sock) libssh2_agent_set_identity_path(gs->agent, sock);
        if (libssh2_agent_connect(gs->agent) != 0 || libssh2_agent_list_identities(gs->agent) != 0) {
            lua_pushnil(L); lua_pushstring(L, "cannot talk to ssh-agent"); return 2;
        }
        gs->agent_id = NULL;
        gs->agent_started = 0;
    }
    for (;;) {
        if (!gs->agent_started) {
            struct libssh2_agent_publickey *next = NULL;
            int g = libssh2_agent_get_identity(gs->agent, &next, gs->agent_id);
            if (g != 0) { lua_pushnil(L); lua_pushstring(L, "no agent key accepted"); return 2; }
            gs->agent_id = next;
            if (!agent_id_allowed(L, 5, next)) continue;
            gs->agent_started = 1;
        }
        struct libssh2_agent_publickey *id = gs->agent_id;
        int rc = rsa_sha2 && gr_rsa_is_rsa_blob(id->blob, id->blob_len)
                     ? gr_rsa_sha2_agent_userauth(gs, user, id->blob, id->blob_len, NULL, 0)
                     : libssh2_agent_userauth(gs->agent, user, id);
        if (rc == LIBSSH2_ERROR_EAGAIN) return gr_ssh_again(L, gs);
        gs->agent_started = 0;
        if (rc == 0) { lua_pushboolean(L, 1); return 1; }
        if (is_socket_error(rc)) return gr_ssh_fail(L, gs, "agent auth", rc);
    }
}

/* sess:banner() -> the server's identification string ("SSH-2.0-OpenSSH_9.2p1 ...") */
static int sess_banner(lua_State *L) {
    gr_session *gs = gr_ssh_check(L, 1);
    const char *b = libssh2_session_banner_get(gs->s);
    if (b) lua_pushstring(L, b); else lua_pushnil(L);
    return 1;
}

static int sess_authenticated(lua_State *L) {
    gr_session *gs = gr_ssh_check(L, 1);
    lua_pushboolean(L, libssh2_userauth_authenticated(gs->s));
    return 1;
}

/* sess:keepalive_config(interval_s): libssh2 sends keepalive@openssh.com (want reply). */
static int sess_keepalive_config(lua_State *L) {
    gr_session *gs = gr_ssh_check(L, 1);
    libssh2_keepalive_config(gs->s, 1, (unsigned)luaL_checkinteger(L, 2));
    return 0;
}

/* sess:keepalive_send() -> seconds until the next one is due. */
static int sess_keepalive_send(lua_State *L) {
    gr_session *gs = gr_ssh_check(L, 1);
    int next = 0;
    int rc = libssh2_keepalive_send(gs->s, &next);
    if (rc == LIBSSH2_ERROR_EAGAIN) return gr_ssh_again(L, gs);
    if (rc != 0) return gr_ssh_fail(L, gs, "keepalive", rc);
    lua_pushinteger(L, next);
    return 1;
}

static int sess_fd(lua_State *L) {
    gr_session *gs = luaL_checkudata(L, 1, GR_SESSION_MT);
    lua_pushinteger(L, gs->fd);
    return 1;
}

static int sess_alive(lua_State *L) {
    gr_session *gs = luaL_checkudata(L, 1, GR_SESSION_MT);
    lua_pushboolean(L, gs->s && !gs->dead);
    return 1;
}

static int sess_mark_dead(lua_State *L) {
    gr_session *gs = luaL_checkudata(L, 1, GR_SESSION_MT);
    gs->dead = 1;
    return 0;
}

/* Free everything; a live session says goodbye first, bounded by a short
 * blocking timeout so a hung peer cannot hang close(). */
static void session_free(gr_session *gs, const char *why) {
    if (gs->s) {
        if (gs->agent) { libssh2_agent_disconnect(gs->agent); libssh2_agent_free(gs->agent); gs->agent = NULL; }
        libssh2_session_set_timeout(gs->s, 500);
        libssh2_session_set_blocking(gs->s, 1);
        gr_sftp_release(gs);
        if (!gs->dead) libssh2_session_disconnect(gs->s, why);
        libssh2_session_free(gs->s);
        gs->s = NULL;
    }
    if (gs->fd >= 0) { close(gs->fd); gs->fd = -1; }
}

static int sess_close(lua_State *L) {
    gr_session *gs = luaL_checkudata(L, 1, GR_SESSION_MT);
    session_free(gs, luaL_optstring(L, 2, "gpurent closing"));
    return 0;
}

static int sess_gc(lua_State *L) {
    session_free(luaL_checkudata(L, 1, GR_SESSION_MT), "gpurent: session collected");
    return 0;
}

static int sess_tostring(lua_State *L) {
    gr_session *gs = luaL_checkudata(L, 1, GR_SESSION_MT);
    lua_pushfstring(L, "ssh session %s (%s)", gs->host, gs->s ? (gs->dead ? "dead" : "open") : "closed");
    return 1;
}

/* ---- channels ------------------------------------------------------------ */

typedef struct { LIBSSH2_CHANNEL *ch; gr_session *gs; } gr_channel;

/* The channel keeps its session userdata as uservalue 1: a live channel keeps the
 * session alive, and once the session is closed the channel refuses to run. */
static gr_channel *check_channel(lua_State *L) {
    gr_channel *c = luaL_checkudata(L, 1, CHANNEL_MT);
    if (!c->gs->s) luaL_error(L, "%s: session is closed", c->gs->host);
    if (!c->ch) luaL_error(L, "%s: channel is closed", c->gs->host);
    return c;
}

/* sess:channel_open() -> channel (a "session" channel, for exec). */
static int sess_channel_open(lua_State *L) {
    gr_session *gs = gr_ssh_check(L, 1);
    LIBSSH2_CHANNEL *ch = libssh2_channel_open_session(gs->s);
    if (!ch) {
        int rc = libssh2_session_last_errno(gs->s);
        if (rc == LIBSSH2_ERROR_EAGAIN) return gr_ssh_again(L, gs);
        return gr_ssh_fail(L, gs, "open channel", rc);
    }
    gr_channel *c = lua_newuserdatauv(L, sizeof *c, 1);
    c->ch = ch;
    c->gs = gs;
    luaL_setmetatable(L, CHANNEL_MT);
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 1);
    return 1;
}

static int ch_exec(lua_State *L) {
    gr_channel *c = check_channel(L);
    size_t len;
    const char *cmd = luaL_checklstring(L, 2, &len);
    int rc = libssh2_channel_process_startup(c->ch, "exec", 4, cmd, (unsigned int)len);
    if (rc == LIBSSH2_ERROR_EAGAIN) return gr_ssh_again(L, c->gs);
    if (rc != 0) return gr_ssh_fail(L, c->gs, "exec", rc);
    lua_pushboolean(L, 1);
    return 1;
}

/* ch:write(data [, from]) -> bytes of data[from..] written (>= 1), or false, dirs. */
static int ch_write(lua_State *L) {
    gr_channel *c = check_channel(L);
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);
    lua_Integer from = luaL_optinteger(L, 3, 1);
    if (from < 1 || (size_t)from > len + 1) return luaL_argerror(L, 3, "out of range");
    if ((size_t)from == len + 1) { lua_pushinteger(L, 0); return 1; }
    ssize_t n = libssh2_channel_write(c->ch, data + from - 1, len - (size_t)from + 1);
    if (n == LIBSSH2_ERROR_EAGAIN) return gr_ssh_again(L, c->gs);
    if (n < 0) return gr_ssh_fail(L, c->gs, "channel write", (int)n);
    lua_pushinteger(L, (lua_Integer)n);
    return 1;
}

static int ch_send_eof(lua_State *L) {
    gr_channel *c = check_channel(L);
    int rc = libssh2_channel_send_eof(c->ch);
    if (rc == LIBSSH2_ERROR_EAGAIN) return gr_ssh_again(L, c->gs);
    if (rc != 0) return gr_ssh_fail(L, c->gs, "send eof", rc);
    lua_pushboolean(L, 1);
    return 1;
}

/* Read one stream until it would block, ends, or max bytes. Returns 1 when the
 * stream is drained (would block or at its end), 0 when max was reached. */
static int drain(lua_State *L, gr_channel *c, int stream, luaL_Buffer *b, size_t max, int *again) {
    size_t got = 0;
    *again = 0;
    while (got < max) {
        char *p = luaL_prepbuffsize(b, READ_CHUNK);
        ssize_t n = libssh2_channel_read_ex(c->ch, stream, p, READ_CHUNK);
        if (n == LIBSSH2_ERROR_EAGAIN) { *again = 1; return 1; }
        if (n < 0) return gr_ssh_fail(L, c->gs, stream ? "read stderr" : "read stdout", (int)n);
        if (n == 0) return 1;
        luaL_addsize(b, (size_t)n);
        got += (size_t)n;
    }
    return 0;
}

/* ch:read([max]) -> out, err, eof; or false, dirs when there is nothing yet.
 * Reads both streams in C so 100 MB of output costs few Lua round trips; eof
 * is reported only once both streams are drained. Reading one stream makes
 * libssh2 read the socket, which can buffer the other stream's data and the EOF:
 * so passes repeat until one pass brings nothing, or the caller would wait on a
 * socket with nothing more to say while the data sits in libssh2's buffers. */
/* Drain one stream into the string at acc (appending); returns bytes read. */
static size_t drain_into(lua_State *L, gr_channel *c, int stream, int acc, size_t max,
                         int *all, int *again) {
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    *all = drain(L, c, stream, &b, max, again);
    luaL_pushresult(&b);
    size_t n = lua_rawlen(L, -1);
    lua_pushvalue(L, acc);
    lua_insert(L, -2);
    lua_concat(L, 2);
    lua_replace(L, acc);
    return n;
}

static int ch_read(lua_State *L) {
    gr_channel *c = check_channel(L);
    size_t max = (size_t)luaL_optinteger(L, 2, 4 << 20);
    int again_out = 0, again_err = 0, all_out = 1, all_err = 1;
    lua_settop(L, 2);
    lua_pushliteral(L, "");
    lua_pushliteral(L, "");
    size_t out = 0, err = 0;
    for (int pass = 0; pass < 16; pass++) {
        size_t n = drain_into(L, c, 0, 3, max - out, &all_out, &again_out);
        n += drain_into(L, c, SSH_EXTENDED_DATA_STDERR, 4, max - err, &all_err, &again_err);
        out = lua_rawlen(L, 3);
        err = lua_rawlen(L, 4);
        if (!all_out || !all_err) break;
        /* nothing this pass, and nothing left in libssh2's buffers either: the
         * socket is the only place more can come from, so waiting on it is right */
        if (n == 0 && libssh2_poll_channel_read(c->ch, 1) <= 0) break;
    }
    int eof = all_out && all_err && libssh2_channel_eof(c->ch);
    if (!eof && out == 0 && err == 0 && (again_out || again_err)) {
        lua_settop(L, 2);
        return gr_ssh_again(L, c->gs);
    }
    lua_pushboolean(L, eof);
    return 3;
}

/* ch:exit() -> exit code, signal name (nil without a signal). */
static int ch_exit(lua_State *L) {
    gr_channel *c = check_channel(L);
    char *sig = NULL;
    size_t siglen = 0;
    lua_pushinteger(L, libssh2_channel_get_exit_status(c->ch));
    libssh2_channel_get_exit_signal(c->ch, &sig, &siglen, NULL, NULL, NULL, NULL);
    if (sig && siglen) lua_pushlstring(L, sig, siglen); else lua_pushnil(L);
    if (sig) libssh2_free(c->gs->s, sig);
    return 2;
}

static int ch_close(lua_State *L) {
    gr_channel *c = check_channel(L);
    int rc = libssh2_channel_close(c->ch);
    if (rc == LIBSSH2_ERROR_EAGAIN) return gr_ssh_again(L, c->gs);
    if (rc != 0) return gr_ssh_fail(L, c->gs, "channel close", rc);
    lua_pushboolean(L, 1);
    return 1;
}

static int ch_wait_closed(lua_State *L) {
    gr_channel *c = check_channel(L);
    int rc = libssh2_channel_wait_closed(c->ch);
    if (rc == LIBSSH2_ERROR_EAGAIN) return gr_ssh_again(L, c->gs);
    if (rc != 0) return gr_ssh_fail(L, c->gs, "channel wait closed", rc);
    lua_pushboolean(L, 1);
    return 1;
}

/* ch:free(): a step too, since freeing may need to send CHANNEL_CLOSE. */
static int ch_free(lua_State *L) {
    gr_channel *c = luaL_checkudata(L, 1, CHANNEL_MT);
    if (!c->ch || !c->gs->s) { c->ch = NULL; lua_pushboolean(L, 1); return 1; }
    int rc = libssh2_channel_free(c->ch);
    if (rc == LIBSSH2_ERROR_EAGAIN) return gr_ssh_again(L, c->gs);
    c->ch = NULL;
    if (rc != 0) return gr_ssh_fail(L, c->gs, "channel free", rc);
    lua_pushboolean(L, 1);
    return 1;
}

/* GC of a channel that was not freed: try once; if libssh2 would block, the
 * session frees it with itself. */
static int ch_gc(lua_State *L) {
    gr_channel *c = luaL_checkudata(L, 1, CHANNEL_MT);
    if (c->ch && c->gs->s && !c->gs->dead) libssh2_channel_free(c->ch);
    c->ch = NULL;
    return 0;
}

/* ---- direct-tcpip channels (tunnels) ------------------------------------------
 * A direct-tcpip channel is a gr_channel like an exec one: ch:read, ch:write,
 * ch:send_eof, ch:close, ch:free work on it unchanged. The local listener
 * (listen, accept, sock_read, ...) is in net.c. */

int gr_net_register(lua_State *L);   /* runtime/net.c */

#define TUNNEL_WINDOW (4u << 20)

static void put_u32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24); p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8); p[3] = (unsigned char)v;
}

/* sess:direct_tcpip(host, port [, from_host, from_port]) -> channel, or false, dirs.
 * libssh2 keeps one channel-open state per session: the retry after false must
 * be this same call, with no other channel opened in between (the Lua side
 * serialises opens). A refusal by the server (nothing listens at host:port,
 * forwarding disabled) raises without marking the session dead. */
static int sess_direct_tcpip(lua_State *L) {
    gr_session *gs = gr_ssh_check(L, 1);
    const char *host = luaL_checkstring(L, 2);
    lua_Integer port = luaL_checkinteger(L, 3);
    const char *shost = luaL_optstring(L, 4, "127.0.0.1");
    lua_Integer sport = luaL_optinteger(L, 5, 0);
    if (port < 1 || port > 65535) return luaL_argerror(L, 3, "port out of range");
    if (sport < 0 || sport > 65535) return luaL_argerror(L, 5, "port out of range");
    /* libssh2_channel_direct_tcpip_ex's open, with a receive window of TUNNEL_WINDOW
     * instead of libssh2's 2 MiB: the box-to-laptop direction of a tunnel moves at
     * most a window a round trip (2 MiB at 50 ms: 40 MiB/s, 0.8x of ssh -L measured) */
    size_t hlen = strlen(host), slen = strlen(shost);
    if (hlen > 255 || slen > 255) return luaL_error(L, "direct-tcpip: host name too long");
    unsigned char msg[4 + 255 + 4 + 4 + 255 + 4], *m = msg;
    put_u32(m, (uint32_t)hlen); memcpy(m + 4, host, hlen); m += 4 + hlen;
    put_u32(m, (uint32_t)port); m += 4;
    put_u32(m, (uint32_t)slen); memcpy(m + 4, shost, slen); m += 4 + slen;
    put_u32(m, (uint32_t)sport); m += 4;
    LIBSSH2_CHANNEL *ch = libssh2_channel_open_ex(gs->s, "direct-tcpip", 12, TUNNEL_WINDOW,
                                                  LIBSSH2_CHANNEL_PACKET_DEFAULT, (const char *)msg,
                                                  (unsigned int)(m - msg));
    if (!ch) {
        int rc = libssh2_session_last_errno(gs->s);
        if (rc == LIBSSH2_ERROR_EAGAIN) return gr_ssh_again(L, gs);
        char op[300];
        snprintf(op, sizeof op, "direct-tcpip to %s:%d", host, (int)port);
        return gr_ssh_fail(L, gs, op, rc);
    }
    gr_channel *c = lua_newuserdatauv(L, sizeof *c, 1);
    c->ch = ch;
    c->gs = gs;
    luaL_setmetatable(L, CHANNEL_MT);
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 1);
    return 1;
}

/* sess:sending() -> true while libssh2 holds a partly sent packet. Until the call
 * that queued it is repeated and completes, no other call may send on the
 * session: libssh2 would flush that packet in place of the new one. */
static int sess_sending(lua_State *L) {
    gr_session *gs = gr_ssh_check(L, 1);
    lua_pushboolean(L, (libssh2_session_block_directions(gs->s) & LIBSSH2_SESSION_BLOCK_OUTBOUND) != 0);
    return 1;
}

/* ch:eof() -> true once the remote end sent EOF (buffered data may remain). */
static int ch_eof(lua_State *L) {
    gr_channel *c = check_channel(L);
    lua_pushboolean(L, libssh2_channel_eof(c->ch) == 1);
    return 1;
}

/* Called by gr_open_ssh with core.ssh's table on top: adds the tunnel methods to
 * the session and channel metatables and net.c's functions to the table. */
static void forward_register(lua_State *L) {
    static const luaL_Reg sess_fwd[] = {{"direct_tcpip", sess_direct_tcpip}, {"sending", sess_sending}, {NULL, NULL}};
    static const luaL_Reg ch_fwd[] = {{"eof", ch_eof}, {NULL, NULL}};
    luaL_getmetatable(L, GR_SESSION_MT);
    lua_getfield(L, -1, "__index");
    luaL_setfuncs(L, sess_fwd, 0);
    lua_pop(L, 2);
    luaL_getmetatable(L, CHANNEL_MT);
    lua_getfield(L, -1, "__index");
    luaL_setfuncs(L, ch_fwd, 0);
    lua_pop(L, 2);
    gr_net_register(L);
}

/* ---- TTY prompt ---------------------------------------------------------- */

/* askpass(prompt [, echo]) -> line read from /dev/tty, echo off unless echo (a
 * yes/no answer); nil without a TTY. */
static int ssh_askpass(lua_State *L) {
    const char *prompt = luaL_checkstring(L, 1);
    int echo = lua_toboolean(L, 2);
    int fd = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) { lua_pushnil(L); return 1; }
    struct termios old, quiet;
    int have = !echo && tcgetattr(fd, &old) == 0;
    if (have) { quiet = old; quiet.c_lflag &= ~(tcflag_t)ECHO; tcsetattr(fd, TCSAFLUSH, &quiet); }
    if (write(fd, prompt, strlen(prompt)) < 0) { /* prompt is best effort */ }
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    char ch;
    ssize_t n;
    while ((n = read(fd, &ch, 1)) == 1 && ch != '\n' && ch != '\r') luaL_addchar(&b, ch);
    int e = errno;
    if (have) tcsetattr(fd, TCSAFLUSH, &old);
    if (!echo && write(fd, "\n", 1) < 0) { /* best effort */ }
    close(fd);
    if (n < 0 && e == EINTR) gr_raise_if_interrupted(L);
    luaL_pushresult(&b);
    return 1;
}

/* chmod(path, mode): downloads keep the remote file's mode (lfs has no chmod). */
static int ssh_chmod(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    if (chmod(path, (mode_t)(luaL_checkinteger(L, 2) & 07777)) != 0) return gr_errno_error(L, "chmod", path);
    return 0;
}

int gr_open_ssh(lua_State *L) {
    static const luaL_Reg sess_methods[] = {
        {"method_pref", sess_method_pref}, {"handshake", sess_handshake},
        {"compress", sess_compress}, {"negotiated", sess_negotiated},
        {"hostkey", sess_hostkey}, {"userauth_list", sess_userauth_list},
        {"auth_pubkey", sess_auth_pubkey}, {"auth_password", sess_auth_password},
        {"auth_agent", sess_auth_agent}, {"authenticated", sess_authenticated},
        {"auth_rsa_sha2_file", gr_sess_auth_rsa_sha2_file},
        {"banner", sess_banner},
        {"keepalive_config", sess_keepalive_config}, {"keepalive_send", sess_keepalive_send},
        {"fd", sess_fd}, {"alive", sess_alive}, {"mark_dead", sess_mark_dead},
        {"close", sess_close}, {"channel_open", sess_channel_open},
        {"sftp_init", gr_sftp_init}, {NULL, NULL}
    };
    static const luaL_Reg ch_methods[] = {
        {"exec", ch_exec}, {"write", ch_write}, {"send_eof", ch_send_eof}, {"read", ch_read},
        {"exit", ch_exit}, {"close", ch_close}, {"wait_closed", ch_wait_closed},
        {"free", ch_free}, {NULL, NULL}
    };
    static const luaL_Reg fns[] = {
        {"tcp_connect", ssh_tcp_connect}, {"connect_result", ssh_connect_result},
        {"close_fd", ssh_close_fd}, {"session", ssh_session}, {"askpass", ssh_askpass},
        {"chmod", ssh_chmod}, {"aesctr", ssh_aesctr}, {"proxy_spawn", gr_sshproxy_spawn}, {NULL, NULL}
    };
    luaL_newmetatable(L, GR_SESSION_MT);
    luaL_newlib(L, sess_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, sess_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, sess_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
    luaL_newmetatable(L, CHANNEL_MT);
    luaL_newlib(L, ch_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, ch_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    gr_sftp_register(L);
    gr_sshproxy_register(L);
    luaL_newlib(L, fns);
    forward_register(L);   /* direct-tcpip + the local listener (tunnels) */
    return 1;
}
