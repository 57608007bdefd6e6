/* aesctr.c: an OpenSSL 3 provider for AES-128/192/256-CTR that produces the
 * keystream 16 KiB at a time, preferred process-wide for SSH transport.
 *
 * Why: Debian 12's libssh2 1.10 encrypts and decrypts each SSH packet one
 * 16-byte block per EVP_Cipher() call. Through the default provider every such
 * call runs the full CTR machinery for a single block (no AES-NI pipelining),
 * which was a third of gpurent's CPU time in a 512 MiB SFTP transfer. CTR mode
 * is a keystream XORed with the data, so this provider asks the default
 * provider for the keystream in large batches (the same AES, the same counter
 * sequence) and serves each call by XOR. The output is byte-identical to the
 * default provider's for any sequence of call lengths (tests/c/aesctr_test.c
 * compares them); a keystream error could only corrupt packets, which the SSH
 * MAC rejects, never reuse a counter.
 *
 * gr_aesctr_install() loads the default provider explicitly (loading any
 * provider turns off its implicit loading), then this one, and sets the
 * optional default property "?provider=gpurent-aesctr": fetches of AES-*-CTR,
 * including libssh2's implicit fetch behind EVP_aes_128_ctr(), prefer this
 * provider; every other algorithm is unaffected. GPURENT_SSH_AESCTR=openssl
 * skips the installation (benchmarks compare both). */
#include "aesctr.h"

#include <openssl/core_dispatch.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/provider.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define PROVIDER_NAME "gpurent-aesctr"
#define KEYSTREAM (16u << 10)

typedef struct {
    EVP_CIPHER_CTX *inner;        /* default provider's AES-CTR: the keystream source */
    const EVP_CIPHER *alg;        /* fetched AES-<bits>-CTR of the default provider */
    size_t keylen;
    size_t pos;                   /* next unused byte of ks; KEYSTREAM = empty */
    unsigned char ks[KEYSTREAM];
} ctr_ctx;

/* The default provider's AES-128/192/256-CTR, fetched once at installation
 * and kept for the process's life. */
static EVP_CIPHER *default_alg[3];

static const EVP_CIPHER *alg_for(size_t keylen) {
    return default_alg[keylen == 16 ? 0 : keylen == 24 ? 1 : 2];
}

static void *ctr_new(size_t keylen) {
    ctr_ctx *c = OPENSSL_zalloc(sizeof *c);
    if (!c) return NULL;
    c->keylen = keylen;
    c->pos = KEYSTREAM;
    c->alg = alg_for(keylen);
    c->inner = EVP_CIPHER_CTX_new();
    if (!c->alg || !c->inner) { EVP_CIPHER_CTX_free(c->inner); OPENSSL_free(c); return NULL; }
    return c;
}
static void *ctr_new128(void *prov) { (void)prov; return ctr_new(16); }
static void *ctr_new192(void *prov) { (void)prov; return ctr_new(24); }
static void *ctr_new256(void *prov) { (void)prov; return ctr_new(32); }

static void ctr_free(void *vctx) {
    ctr_ctx *c = vctx;
    if (!c) return;
    EVP_CIPHER_CTX_free(c->inner);
    OPENSSL_clear_free(c, sizeof *c);
}

static void *ctr_dup(void *vctx) {
    ctr_ctx *src = vctx, *c = OPENSSL_malloc(sizeof *c);
    if (!c) return NULL;
    memcpy(c, src, sizeof *c);
    c->inner = EVP_CIPHER_CTX_new();
    if (!c->inner || EVP_CIPHER_CTX_copy(c->inner, src->inner) != 1) { ctr_free(c); return NULL; }
    return c;
}

/* Encrypt and decrypt are the same operation in CTR mode. A new key or IV
 * discards any keystream made under the old one. Key and IV may come in
 * separate calls (OpenSSL's CTR-DRBG does so): naming the cipher again would
 * reset the inner context and lose the key, so it is named only once. */
static int ctr_init(void *vctx, const unsigned char *key, size_t keylen,
                    const unsigned char *iv, size_t ivlen, const OSSL_PARAM params[]) {
    ctr_ctx *c = vctx;
    (void)params;
    if (key && keylen != c->keylen) return 0;
    if (iv && ivlen != 16) return 0;
    OPENSSL_cleanse(c->ks, sizeof c->ks);
    c->pos = KEYSTREAM;
    const EVP_CIPHER *alg = EVP_CIPHER_CTX_get0_cipher(c->inner) ? NULL : c->alg;
    return EVP_EncryptInit_ex(c->inner, alg, NULL, key, iv) == 1;
}

static int refill(ctr_ctx *c) {
    int n = 0;
    memset(c->ks, 0, KEYSTREAM);
    if (EVP_EncryptUpdate(c->inner, c->ks, &n, c->ks, KEYSTREAM) != 1 || n != KEYSTREAM) return 0;
    c->pos = 0;
    return 1;
}

static void xor_into(unsigned char *out, const unsigned char *in, const unsigned char *ks, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t a, k;
        memcpy(&a, in + i, 8);
        memcpy(&k, ks + i, 8);
        a ^= k;
        memcpy(out + i, &a, 8);
    }
    for (; i < n; i++) out[i] = in[i] ^ ks[i];
}

/* Stored keystream first, in order; a long run with none stored goes straight
 * through the default provider (same counter sequence, no extra pass). */
static int ctr_cipher(void *vctx, unsigned char *out, size_t *outl, size_t outsize,
                      const unsigned char *in, size_t inl) {
    ctr_ctx *c = vctx;
    if (outsize < inl) return 0;
    *outl = inl;
    if (inl == 16 && c->pos <= KEYSTREAM - 16) {     /* libssh2 1.10's one-block call */
        xor_into(out, in, c->ks + c->pos, 16);
        c->pos += 16;
        return 1;
    }
    while (inl > 0) {
        if (c->pos == KEYSTREAM && inl >= KEYSTREAM) {
            size_t run = inl - inl % KEYSTREAM;
            int n = 0;
            if (run > INT32_MAX) run = (size_t)INT32_MAX - (size_t)INT32_MAX % KEYSTREAM;
            if (EVP_EncryptUpdate(c->inner, out, &n, in, (int)run) != 1 || (size_t)n != run) return 0;
            in += run; out += run; inl -= run;
            continue;
        }
        if (c->pos == KEYSTREAM && !refill(c)) return 0;
        size_t n = KEYSTREAM - c->pos < inl ? KEYSTREAM - c->pos : inl;
        xor_into(out, in, c->ks + c->pos, n);
        c->pos += n; in += n; out += n; inl -= n;
    }
    return 1;
}

static int ctr_final(void *vctx, unsigned char *out, size_t *outl, size_t outsize) {
    (void)vctx; (void)out; (void)outsize;
    *outl = 0;
    return 1;
}

/* Parameters: what EVP asks of a stream cipher (block size 1, like the default
 * provider's CTR) and the context's key and IV lengths. */
static int set_size(OSSL_PARAM params[], const char *key, size_t v) {
    OSSL_PARAM *p = OSSL_PARAM_locate(params, key);
    return !p || OSSL_PARAM_set_size_t(p, v);
}
static int set_uint(OSSL_PARAM params[], const char *key, unsigned v) {
    OSSL_PARAM *p = OSSL_PARAM_locate(params, key);
    return !p || OSSL_PARAM_set_uint(p, v);
}
static int alg_params(OSSL_PARAM params[], size_t keylen) {
    return set_uint(params, OSSL_CIPHER_PARAM_MODE, EVP_CIPH_CTR_MODE)
        && set_size(params, OSSL_CIPHER_PARAM_KEYLEN, keylen)
        && set_size(params, OSSL_CIPHER_PARAM_IVLEN, 16)
        && set_size(params, OSSL_CIPHER_PARAM_BLOCK_SIZE, 1)
        && set_uint(params, OSSL_CIPHER_PARAM_AEAD, 0)
        && set_uint(params, OSSL_CIPHER_PARAM_CUSTOM_IV, 0)
        && set_uint(params, OSSL_CIPHER_PARAM_CTS, 0)
        && set_uint(params, OSSL_CIPHER_PARAM_TLS1_MULTIBLOCK, 0)
        && set_uint(params, OSSL_CIPHER_PARAM_HAS_RAND_KEY, 0);
}
static int params128(OSSL_PARAM params[]) { return alg_params(params, 16); }
static int params192(OSSL_PARAM params[]) { return alg_params(params, 24); }
static int params256(OSSL_PARAM params[]) { return alg_params(params, 32); }

static int ctx_params(void *vctx, OSSL_PARAM params[]) {
    ctr_ctx *c = vctx;
    return set_size(params, OSSL_CIPHER_PARAM_KEYLEN, c->keylen)
        && set_size(params, OSSL_CIPHER_PARAM_IVLEN, 16);
}

/* Padding has no meaning for a stream cipher; a different key length does. */
static int set_ctx_params(void *vctx, const OSSL_PARAM params[]) {
    ctr_ctx *c = vctx;
    const OSSL_PARAM *p = OSSL_PARAM_locate_const(params, OSSL_CIPHER_PARAM_KEYLEN);
    size_t keylen;
    if (p && (!OSSL_PARAM_get_size_t(p, &keylen) || keylen != c->keylen)) return 0;
    return 1;
}

static const OSSL_PARAM *gettable_params(void *prov) {
    static const OSSL_PARAM list[] = {
        OSSL_PARAM_uint(OSSL_CIPHER_PARAM_MODE, NULL),
        OSSL_PARAM_size_t(OSSL_CIPHER_PARAM_KEYLEN, NULL),
        OSSL_PARAM_size_t(OSSL_CIPHER_PARAM_IVLEN, NULL),
        OSSL_PARAM_size_t(OSSL_CIPHER_PARAM_BLOCK_SIZE, NULL),
        OSSL_PARAM_uint(OSSL_CIPHER_PARAM_AEAD, NULL),
        OSSL_PARAM_uint(OSSL_CIPHER_PARAM_CUSTOM_IV, NULL),
        OSSL_PARAM_uint(OSSL_CIPHER_PARAM_CTS, NULL),
        OSSL_PARAM_uint(OSSL_CIPHER_PARAM_TLS1_MULTIBLOCK, NULL),
        OSSL_PARAM_uint(OSSL_CIPHER_PARAM_HAS_RAND_KEY, NULL),
        OSSL_PARAM_END};
    (void)prov;
    return list;
}
static const OSSL_PARAM *gettable_ctx_params(void *vctx, void *prov) {
    static const OSSL_PARAM list[] = {
        OSSL_PARAM_size_t(OSSL_CIPHER_PARAM_KEYLEN, NULL),
        OSSL_PARAM_size_t(OSSL_CIPHER_PARAM_IVLEN, NULL),
        OSSL_PARAM_END};
    (void)vctx; (void)prov;
    return list;
}
static const OSSL_PARAM *settable_ctx_params(void *vctx, void *prov) {
    static const OSSL_PARAM list[] = {
        OSSL_PARAM_size_t(OSSL_CIPHER_PARAM_KEYLEN, NULL),
        OSSL_PARAM_uint(OSSL_CIPHER_PARAM_PADDING, NULL),
        OSSL_PARAM_END};
    (void)vctx; (void)prov;
    return list;
}

#define CTR_DISPATCH(bits)                                                                  \
    static const OSSL_DISPATCH ctr##bits##_functions[] = {                                  \
        {OSSL_FUNC_CIPHER_NEWCTX, (void (*)(void))ctr_new##bits},                           \
        {OSSL_FUNC_CIPHER_FREECTX, (void (*)(void))ctr_free},                               \
        {OSSL_FUNC_CIPHER_DUPCTX, (void (*)(void))ctr_dup},                                 \
        {OSSL_FUNC_CIPHER_ENCRYPT_INIT, (void (*)(void))ctr_init},                          \
        {OSSL_FUNC_CIPHER_DECRYPT_INIT, (void (*)(void))ctr_init},                          \
        {OSSL_FUNC_CIPHER_UPDATE, (void (*)(void))ctr_cipher},                              \
        {OSSL_FUNC_CIPHER_FINAL, (void (*)(void))ctr_final},                                \
        {OSSL_FUNC_CIPHER_CIPHER, (void (*)(void))ctr_cipher},                              \
        {OSSL_FUNC_CIPHER_GET_PARAMS, (void (*)(void))params##bits},                        \
        {OSSL_FUNC_CIPHER_GET_CTX_PARAMS, (void (*)(void))ctx_params},                      \
        {OSSL_FUNC_CIPHER_SET_CTX_PARAMS, (void (*)(void))set_ctx_params},                  \
        {OSSL_FUNC_CIPHER_GETTABLE_PARAMS, (void (*)(void))gettable_params},                \
        {OSSL_FUNC_CIPHER_GETTABLE_CTX_PARAMS, (void (*)(void))gettable_ctx_params},        \
        {OSSL_FUNC_CIPHER_SETTABLE_CTX_PARAMS, (void (*)(void))settable_ctx_params},        \
        {0, NULL}}
CTR_DISPATCH(128);
CTR_DISPATCH(192);
CTR_DISPATCH(256);

static const OSSL_ALGORITHM ciphers[] = {
    {"AES-128-CTR", "provider=" PROVIDER_NAME, ctr128_functions, "AES-128-CTR, batched keystream"},
    {"AES-192-CTR", "provider=" PROVIDER_NAME, ctr192_functions, "AES-192-CTR, batched keystream"},
    {"AES-256-CTR", "provider=" PROVIDER_NAME, ctr256_functions, "AES-256-CTR, batched keystream"},
    {NULL, NULL, NULL, NULL}};

static const OSSL_ALGORITHM *query(void *prov, int operation, int *no_cache) {
    (void)prov;
    *no_cache = 0;
    return operation == OSSL_OP_CIPHER ? ciphers : NULL;
}

static int provider_init(const OSSL_CORE_HANDLE *handle, const OSSL_DISPATCH *in,
                         const OSSL_DISPATCH **out, void **provctx) {
    static const OSSL_DISPATCH table[] = {
        {OSSL_FUNC_PROVIDER_QUERY_OPERATION, (void (*)(void))query}, {0, NULL}};
    (void)handle; (void)in;
    *out = table;
    *provctx = NULL;
    return 1;
}

const char *gr_aesctr_install(void) {
    static int done;
    static const char *result = "not installed";
    if (done) return result;
    done = 1;
    const char *choice = getenv("GPURENT_SSH_AESCTR");
    if (choice && strcmp(choice, "openssl") == 0) return result = "openssl (GPURENT_SSH_AESCTR)";
    static const char *const names[3] = {"AES-128-CTR", "AES-192-CTR", "AES-256-CTR"};
    /* kept for the process's life; volatile so the stores stay and leak
     * checkers see the providers as reachable */
    static OSSL_PROVIDER *volatile loaded[2];
    if (!(loaded[0] = OSSL_PROVIDER_load(NULL, "default"))) return result = "openssl (default provider not loaded)";
    for (int i = 0; i < 3; i++)
        if (!(default_alg[i] = EVP_CIPHER_fetch(NULL, names[i], "provider=default")))
            return result = "openssl (AES-CTR not found)";
    if (!OSSL_PROVIDER_add_builtin(NULL, PROVIDER_NAME, provider_init)
        || !(loaded[1] = OSSL_PROVIDER_load(NULL, PROVIDER_NAME))
        || !EVP_set_default_properties(NULL, "?provider=" PROVIDER_NAME))
        return result = "openssl (provider not loaded)";
    return result = "batched";
}
