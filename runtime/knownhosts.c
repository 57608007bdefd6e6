/* knownhosts.c: the byte work behind known_hosts checking: base64, OpenSSH's
 * hashed host names (|1|salt|HMAC-SHA1(salt, host)), their random salts (for
 * HashKnownHosts yes) and SHA256 fingerprints.
 * Parsing the file and deciding what a mismatch means is lua/gpurent/transport/knownhosts.lua. */
#include "host.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <string.h>

/* b64decode(text) -> bytes | nil when text is not base64 */
static int kh_b64decode(lua_State *L) {
    size_t len;
    const char *in = luaL_checklstring(L, 1, &len);
    if (len % 4 != 0 || len > (1u << 20)) { lua_pushnil(L); return 1; }
    luaL_Buffer b;
    unsigned char *out = (unsigned char *)luaL_buffinitsize(L, &b, len / 4 * 3 + 1);
    int n = EVP_DecodeBlock(out, (const unsigned char *)in, (int)len);
    if (n < 0) { lua_pushnil(L); return 1; }
    /* EVP_DecodeBlock counts padding as zero bytes */
    if (len >= 1 && in[len - 1] == '=') n--;
    if (len >= 2 && in[len - 2] == '=') n--;
    luaL_pushresultsize(&b, (size_t)n);
    return 1;
}

static int kh_b64encode(lua_State *L) {
    size_t len;
    const unsigned char *in = (const unsigned char *)luaL_checklstring(L, 1, &len);
    luaL_Buffer b;
    char *out = luaL_buffinitsize(L, &b, (len + 2) / 3 * 4 + 1);
    int n = EVP_EncodeBlock((unsigned char *)out, in, (int)len);
    luaL_pushresultsize(&b, (size_t)n);
    return 1;
}

/* hmac_sha1(key, data) -> 20 raw bytes: the hash of a |1| known_hosts name. */
static int kh_hmac_sha1(lua_State *L) {
    size_t klen, dlen;
    const char *key = luaL_checklstring(L, 1, &klen);
    const char *data = luaL_checklstring(L, 2, &dlen);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (!HMAC(EVP_sha1(), key, (int)klen, (const unsigned char *)data, dlen, md, &mdlen))
        return luaL_error(L, "hmac_sha1 failed");
    lua_pushlstring(L, (const char *)md, mdlen);
    return 1;
}

/* random(n) -> n bytes from OpenSSL's CSPRNG (1..64): a hashed name's salt. */
static int kh_random(lua_State *L) {
    lua_Integer n = luaL_checkinteger(L, 1);
    luaL_argcheck(L, n >= 1 && n <= 64, 1, "1..64 bytes");
    unsigned char buf[64];
    if (RAND_bytes(buf, (int)n) != 1) return luaL_error(L, "known_hosts: RAND_bytes failed");
    lua_pushlstring(L, (const char *)buf, (size_t)n);
    return 1;
}

/* fingerprint(blob) -> "SHA256:<base64 without padding>", as ssh-keygen -l prints. */
static int kh_fingerprint(lua_State *L) {
    size_t len;
    const char *blob = luaL_checklstring(L, 1, &len);
    unsigned char d[32];
    unsigned int n = 0;
    if (EVP_Digest(blob, len, d, &n, EVP_sha256(), NULL) != 1) return luaL_error(L, "sha256 failed");
    char enc[64];
    int m = EVP_EncodeBlock((unsigned char *)enc, d, 32);
    while (m > 0 && enc[m - 1] == '=') m--;
    lua_pushfstring(L, "SHA256:%s", "");
    lua_pushlstring(L, enc, (size_t)m);
    lua_concat(L, 2);
    return 1;
}

int gr_open_knownhosts(lua_State *L) {
    static const luaL_Reg fns[] = {
        {"b64decode", kh_b64decode}, {"b64encode", kh_b64encode},
        {"hmac_sha1", kh_hmac_sha1}, {"fingerprint", kh_fingerprint},
        {"random", kh_random}, {NULL, NULL}
    };
    luaL_newlib(L, fns);
    return 1;
}
