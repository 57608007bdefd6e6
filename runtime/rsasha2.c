/* rsasha2.c: RSA user authentication with rsa-sha2-256 signatures on libssh2 1.10.
 *
 * Why: libssh2 1.10 signs RSA user auth with SHA-1 only ("ssh-rsa"), which
 * OpenSSH 8.8 and later refuse by default, so an id_rsa stopped working. 1.10's
 * libssh2_userauth_publickey() takes the algorithm name from the first string of
 * the public key blob it is given and lets the caller sign, so this file hands it
 * the key's blob with "ssh-rsa" replaced by "rsa-sha2-256" (OpenSSH decodes that
 * blob as the same RSA key: RFC 8332 names the algorithm, not a new key type) and
 * signs the request with SHA-256 itself: with the private key file through
 * OpenSSL (PEM, PKCS#8, or the unencrypted OpenSSH format parsed here), or by
 * asking ssh-agent with the SSH_AGENT_RSA_SHA2_256 flag. The policy (when to use
 * this, what to tell the user) is in lua/gpurent/transport/ssh.lua. */
#include "ssh_internal.h"

#include <errno.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define ALG "rsa-sha2-256"
#define AGENTC_SIGN_REQUEST 13
#define AGENT_SIGN_RESPONSE 14
#define AGENT_RSA_SHA2_256 2

typedef struct {
    EVP_PKEY *key;                       /* file signer */
    const unsigned char *agent_blob;     /* agent signer: the identity's ssh-rsa blob */
    size_t agent_blob_len;
    char err[256];
} signer;

/* ---- SSH wire helpers ---------------------------------------------------- */

typedef struct { const unsigned char *p; size_t n; } cursor;

static int take_u32(cursor *c, uint32_t *v) {
    if (c->n < 4) return 0;
    *v = (uint32_t)c->p[0] << 24 | (uint32_t)c->p[1] << 16 | (uint32_t)c->p[2] << 8 | c->p[3];
    c->p += 4; c->n -= 4;
    return 1;
}

static int take_str(cursor *c, const unsigned char **s, size_t *len) {
    uint32_t n;
    if (!take_u32(c, &n) || n > c->n) return 0;
    *s = c->p; *len = n;
    c->p += n; c->n -= n;
    return 1;
}

static unsigned char *put_u32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24); p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8); p[3] = (unsigned char)v;
    return p + 4;
}

static unsigned char *put_str(unsigned char *p, const void *s, size_t n) {
    p = put_u32(p, (uint32_t)n);
    memcpy(p, s, n);
    return p + n;
}

/* An SSH mpint of a non-negative BIGNUM: big-endian, a 0 byte first when the
 * top bit is set. out needs BN_num_bytes + 5 bytes. */
static unsigned char *put_mpint(unsigned char *p, const BIGNUM *bn) {
    int n = BN_num_bytes(bn);
    unsigned char *body = p + 4;
    size_t len = (size_t)n;
    if (n > 0) {
        BN_bn2bin(bn, body + 1);
        if (body[1] & 0x80) { body[0] = 0; len++; }
        else memmove(body, body + 1, (size_t)n);
    }
    put_u32(p, (uint32_t)len);
    return p + 4 + len;
}

/* ---- keys ----------------------------------------------------------------- */

/* The unencrypted OpenSSH private key format (PROTOCOL.key) holding one RSA key. */
static EVP_PKEY *openssh_rsa(const char *text, signer *sg) {
    const char *b = strstr(text, "-----BEGIN OPENSSH PRIVATE KEY-----");
    const char *e = b ? strstr(b, "-----END OPENSSH PRIVATE KEY-----") : NULL;
    if (!b || !e) { snprintf(sg->err, sizeof sg->err, "not a PEM or OpenSSH private key"); return NULL; }
    b += strlen("-----BEGIN OPENSSH PRIVATE KEY-----");
    size_t cap = (size_t)(e - b), n = 0;
    char *b64 = malloc(cap + 1);
    unsigned char *bin = malloc(cap + 1);
    EVP_PKEY *key = NULL;
    if (!b64 || !bin) goto out;
    for (const char *p = b; p < e; p++) if (*p != '\n' && *p != '\r' && *p != ' ' && *p != '\t') b64[n++] = *p;
    int len = EVP_DecodeBlock(bin, (const unsigned char *)b64, (int)n);
    if (len < 0) { snprintf(sg->err, sizeof sg->err, "bad base64 in OpenSSH private key"); goto out; }
    while (n > 0 && b64[n - 1] == '=') { n--; len--; }   /* DecodeBlock counts padding */
    static const char magic[] = "openssh-key-v1";
    cursor c = {bin, (size_t)len};
    const unsigned char *cipher, *kdf, *kdfopt, *pub, *priv, *s;
    size_t cipher_n, kdf_n, kdfopt_n, pub_n, priv_n, s_n;
    uint32_t nkeys, check1, check2;
    if (c.n < sizeof magic || memcmp(c.p, magic, sizeof magic) != 0) {
        snprintf(sg->err, sizeof sg->err, "not an openssh-key-v1 private key"); goto out;
    }
    c.p += sizeof magic; c.n -= sizeof magic;
    if (!take_str(&c, &cipher, &cipher_n) || !take_str(&c, &kdf, &kdf_n) || !take_str(&c, &kdfopt, &kdfopt_n)
        || !take_u32(&c, &nkeys) || nkeys != 1 || !take_str(&c, &pub, &pub_n) || !take_str(&c, &priv, &priv_n)) {
        snprintf(sg->err, sizeof sg->err, "malformed OpenSSH private key"); goto out;
    }
    if (cipher_n != 4 || memcmp(cipher, "none", 4) != 0) {
        snprintf(sg->err, sizeof sg->err, "passphrase-protected OpenSSH-format RSA key: add it to ssh-agent "
                 "(ssh-add), or convert it to PEM (ssh-keygen -p -m PEM -f KEY)");
        goto out;
    }
    cursor k = {priv, priv_n};
    const unsigned char *part[6];
    size_t part_n[6];
    if (!take_u32(&k, &check1) || !take_u32(&k, &check2) || check1 != check2 || !take_str(&k, &s, &s_n)
        || s_n != 7 || memcmp(s, "ssh-rsa", 7) != 0) {
        snprintf(sg->err, sizeof sg->err, "not an RSA key"); goto out;
    }
    for (int i = 0; i < 6; i++)           /* n, e, d, iqmp, p, q */
        if (!take_str(&k, &part[i], &part_n[i])) { snprintf(sg->err, sizeof sg->err, "truncated RSA key"); goto out; }
    BIGNUM *bn[6] = {0}, *dmp1 = BN_new(), *dmq1 = BN_new(), *t = BN_new();
    BN_CTX *bctx = BN_CTX_new();
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *pctx = NULL;
    int ok = dmp1 && dmq1 && t && bctx && bld;
    for (int i = 0; ok && i < 6; i++) ok = (bn[i] = BN_bin2bn(part[i], (int)part_n[i], NULL)) != NULL;
    /* d mod (p-1), d mod (q-1): the CRT exponents the format leaves out */
    ok = ok && BN_copy(t, bn[4]) && BN_sub_word(t, 1) && BN_mod(dmp1, bn[2], t, bctx)
            && BN_copy(t, bn[5]) && BN_sub_word(t, 1) && BN_mod(dmq1, bn[2], t, bctx);
    ok = ok && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn[0])
            && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, bn[1])
            && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_D, bn[2])
            && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_FACTOR1, bn[4])
            && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_FACTOR2, bn[5])
            && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_EXPONENT1, dmp1)
            && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_EXPONENT2, dmq1)
            && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_COEFFICIENT1, bn[3]);
    ok = ok && (params = OSSL_PARAM_BLD_to_param(bld)) != NULL
            && (pctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL)) != NULL
            && EVP_PKEY_fromdata_init(pctx) == 1 && EVP_PKEY_fromdata(pctx, &key, EVP_PKEY_KEYPAIR, params) == 1;
    if (!ok) snprintf(sg->err, sizeof sg->err, "cannot build the RSA key");
    EVP_PKEY_CTX_free(pctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_CTX_free(bctx);
    for (int i = 0; i < 6; i++) BN_clear_free(bn[i]);
    BN_clear_free(dmp1); BN_clear_free(dmq1); BN_clear_free(t);
out:
    if (b64) { OPENSSL_cleanse(b64, cap); free(b64); }
    if (bin) { OPENSSL_cleanse(bin, cap); free(bin); }
    return key;
}

/* A private key file: PEM or PKCS#8 through OpenSSL (encrypted ones with the
 * passphrase), else the OpenSSH format. Must be RSA. */
static EVP_PKEY *load_rsa(const char *path, const char *passphrase, signer *sg) {
    FILE *f = fopen(path, "rb");
    if (!f) { snprintf(sg->err, sizeof sg->err, "%s", strerror(errno)); return NULL; }
    char *text = NULL;
    size_t cap = 0, n = 0;
    for (;;) {
        if (n + 4096 + 1 > cap) {
            char *t = realloc(text, cap = cap * 2 + 8192);
            if (!t) { free(text); fclose(f); snprintf(sg->err, sizeof sg->err, "out of memory"); return NULL; }
            text = t;
        }
        size_t r = fread(text + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0) break;
    }
    fclose(f);
    text[n] = '\0';
    EVP_PKEY *key = NULL;
    BIO *bio = BIO_new_mem_buf(text, (int)n);
    if (bio && !strstr(text, "OPENSSH PRIVATE KEY"))
        key = PEM_read_bio_PrivateKey(bio, NULL, NULL, (void *)(passphrase ? passphrase : ""));
    BIO_free(bio);
    if (!key && strstr(text, "OPENSSH PRIVATE KEY")) key = openssh_rsa(text, sg);
    else if (!key) snprintf(sg->err, sizeof sg->err, "cannot read the key (wrong passphrase?)");
    OPENSSL_cleanse(text, n);
    free(text);
    if (key && !EVP_PKEY_is_a(key, "RSA")) {
        snprintf(sg->err, sizeof sg->err, "not an RSA key");
        EVP_PKEY_free(key);
        key = NULL;
    }
    return key;
}

/* The "rsa-sha2-256" blob of the key: string alg, mpint e, mpint n. */
static unsigned char *alg_blob_of_key(EVP_PKEY *key, size_t *len) {
    BIGNUM *e = NULL, *n = NULL;
    unsigned char *blob = NULL;
    if (EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_RSA_E, &e) == 1
        && EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_RSA_N, &n) == 1
        && (blob = malloc(4 + strlen(ALG) + (size_t)BN_num_bytes(e) + (size_t)BN_num_bytes(n) + 10))) {
        unsigned char *p = put_str(blob, ALG, strlen(ALG));
        p = put_mpint(p, e);
        p = put_mpint(p, n);
        *len = (size_t)(p - blob);
    }
    BN_free(e);
    BN_free(n);
    return blob;
}

/* An agent identity's "ssh-rsa" blob with the algorithm renamed. */
static unsigned char *alg_blob_of_rsa_blob(const unsigned char *blob, size_t n, size_t *len) {
    cursor c = {blob, n};
    const unsigned char *type;
    size_t type_n;
    if (!take_str(&c, &type, &type_n) || type_n != 7 || memcmp(type, "ssh-rsa", 7) != 0) return NULL;
    unsigned char *out = malloc(4 + strlen(ALG) + c.n);
    if (!out) return NULL;
    unsigned char *p = put_str(out, ALG, strlen(ALG));
    memcpy(p, c.p, c.n);
    *len = (size_t)(p - out) + c.n;
    return out;
}

/* ---- signing ------------------------------------------------------------- */

static int sign_with_key(signer *sg, unsigned char **sig, size_t *sig_len, const unsigned char *data, size_t n) {
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    size_t len = 0;
    int ok = md && EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, sg->key) == 1
             && EVP_DigestSign(md, NULL, &len, data, n) == 1 && (*sig = malloc(len)) != NULL
             && EVP_DigestSign(md, *sig, &len, data, n) == 1;
    EVP_MD_CTX_free(md);
    if (!ok) { snprintf(sg->err, sizeof sg->err, "RSA-SHA256 signing failed"); return -1; }
    *sig_len = len;
    return 0;
}

static int io_all(int fd, unsigned char *p, size_t n, int out) {
    while (n > 0) {
        struct pollfd pfd = {fd, (short)(out ? POLLOUT : POLLIN), 0};
        if (poll(&pfd, 1, 10000) <= 0) return -1;           /* a local agent answers at once */
        ssize_t r = out ? write(fd, p, n) : read(fd, p, n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

/* SSH2_AGENTC_SIGN_REQUEST with the SHA-256 flag; the reply's signature is
 * string "rsa-sha2-256", string bytes: libssh2 wants the bytes. */
static int sign_with_agent(signer *sg, unsigned char **sig, size_t *sig_len, const unsigned char *data, size_t n) {
    const char *sock = getenv("SSH_AUTH_SOCK");
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (!sock || strlen(sock) >= sizeof sa.sun_path) { snprintf(sg->err, sizeof sg->err, "no SSH_AUTH_SOCK"); return -1; }
    strcpy(sa.sun_path, sock);
    size_t req_n = 4 + 1 + 4 + sg->agent_blob_len + 4 + n + 4;
    unsigned char *req = malloc(req_n), head[4], *resp = NULL;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), rc = -1;
    uint32_t resp_n = 0;
    if (!req || fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        snprintf(sg->err, sizeof sg->err, "cannot reach ssh-agent at %s", sock);
        goto out;
    }
    unsigned char *p = put_u32(req, (uint32_t)(req_n - 4));
    *p++ = AGENTC_SIGN_REQUEST;
    p = put_str(p, sg->agent_blob, sg->agent_blob_len);
    p = put_str(p, data, n);
    put_u32(p, AGENT_RSA_SHA2_256);
    cursor c = {head, 4};
    if (io_all(fd, req, req_n, 1) != 0 || io_all(fd, head, 4, 0) != 0 || !take_u32(&c, &resp_n)
        || resp_n == 0 || resp_n > 65536 || !(resp = malloc(resp_n)) || io_all(fd, resp, resp_n, 0) != 0) {
        snprintf(sg->err, sizeof sg->err, "ssh-agent did not answer the sign request");
        goto out;
    }
    cursor r = {resp + 1, resp_n - 1}, s;
    const unsigned char *outer, *alg, *bytes;
    size_t outer_n, alg_n, bytes_n;
    if (resp[0] != AGENT_SIGN_RESPONSE || !take_str(&r, &outer, &outer_n)) {
        snprintf(sg->err, sizeof sg->err, "ssh-agent refused to sign with rsa-sha2-256");
        goto out;
    }
    s = (cursor){outer, outer_n};
    if (!take_str(&s, &alg, &alg_n) || alg_n != strlen(ALG) || memcmp(alg, ALG, alg_n) != 0
        || !take_str(&s, &bytes, &bytes_n) || !(*sig = malloc(bytes_n))) {
        snprintf(sg->err, sizeof sg->err, "ssh-agent answered with another signature type");
        goto out;
    }
    memcpy(*sig, bytes, bytes_n);
    *sig_len = bytes_n;
    rc = 0;
out:
    if (fd >= 0) close(fd);
    free(req);
    free(resp);
    return rc;
}

static int sign_cb(LIBSSH2_SESSION *session, unsigned char **sig, size_t *sig_len,
                   const unsigned char *data, size_t data_len, void **abstract) {
    signer *sg = *abstract;
    (void)session;
    return sg->key ? sign_with_key(sg, sig, sig_len, data, data_len)
                   : sign_with_agent(sg, sig, sig_len, data, data_len);
}

/* One step of libssh2_userauth_publickey with the renamed blob and our signer.
 * A signer failure is the answer's reason (nil, reason); the server's refusal
 * is libssh2's. */
static int auth_step(lua_State *L, gr_session *gs, const char *user, const unsigned char *blob,
                     size_t blob_len, signer *sg) {
    void *abstract = sg;
    int rc = libssh2_userauth_publickey(gs->s, user, blob, blob_len, sign_cb, &abstract);
    if (rc != 0 && rc != LIBSSH2_ERROR_EAGAIN && sg->err[0]) {
        lua_pushnil(L);
        lua_pushstring(L, sg->err);
        return 2;
    }
    return gr_ssh_auth_result(L, gs, rc, "rsa-sha2-256 auth");
}

/* sess:auth_rsa_sha2_file(user, key_path [, passphrase]) -> true | false, dirs | nil, reason */
int gr_sess_auth_rsa_sha2_file(lua_State *L) {
    gr_session *gs = gr_ssh_check(L, 1);
    const char *user = luaL_checkstring(L, 2);
    const char *path = luaL_checkstring(L, 3);
    const char *pass = luaL_optstring(L, 4, NULL);
    signer sg = {0};
    if (!(sg.key = load_rsa(path, pass, &sg))) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", path, sg.err);
        return 2;
    }
    size_t blob_len = 0;
    unsigned char *blob = alg_blob_of_key(sg.key, &blob_len);
    if (!blob) { EVP_PKEY_free(sg.key); return luaL_error(L, "%s: cannot encode the public key", path); }
    int n = auth_step(L, gs, user, blob, blob_len, &sg);
    free(blob);
    EVP_PKEY_free(sg.key);
    return n;
}

/* The agent identity blob (ssh-rsa) signed through the agent with SHA-256; a
 * libssh2 return code, and the signer's reason in err (size errn) when it failed. */
int gr_rsa_sha2_agent_userauth(gr_session *gs, const char *user, const unsigned char *id_blob,
                               size_t id_len, char *err, size_t errn) {
    signer sg = {.agent_blob = id_blob, .agent_blob_len = id_len};
    size_t blob_len = 0;
    unsigned char *blob = alg_blob_of_rsa_blob(id_blob, id_len, &blob_len);
    if (!blob) return LIBSSH2_ERROR_PUBLICKEY_UNVERIFIED;
    void *abstract = &sg;
    int rc = libssh2_userauth_publickey(gs->s, user, blob, blob_len, sign_cb, &abstract);
    free(blob);
    if (err && errn) snprintf(err, errn, "%s", sg.err);
    return rc;
}

/* Is this agent identity an RSA key? */
int gr_rsa_is_rsa_blob(const unsigned char *blob, size_t n) {
    cursor c = {blob, n};
    const unsigned char *type;
    size_t type_n;
    return take_str(&c, &type, &type_n) && type_n == 7 && memcmp(type, "ssh-rsa", 7) == 0;
}
