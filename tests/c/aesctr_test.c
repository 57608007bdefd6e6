/* aesctr_test.c: the batched AES-CTR provider (runtime/aesctr.c) against
 * OpenSSL's default provider. For each key size, random keys, IVs (counters
 * near a 32- and 64-bit wrap included) and call-length sequences (1..16 bytes
 * as libssh2 1.10 uses, odd sizes, runs longer than the batch), the two must
 * produce identical bytes, through EVP_Cipher (libssh2's call) and
 * EVP_CipherUpdate, after re-keying a context, and the implicit fetch behind
 * EVP_aes_*_ctr() must land on the provider. Prints one line per check and
 * exits non-zero on any difference. */
#include "../../runtime/aesctr.h"

#include <openssl/evp.h>
#include <openssl/provider.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DATA (200u << 10)

static int failures;

static void check(int ok, const char *what) {
    printf("%s %s\n", ok ? "ok" : "FAIL", what);
    if (!ok) failures++;
}

/* Encrypt data with ctx in calls of the lengths the pattern yields. */
static int run(EVP_CIPHER_CTX *ctx, int use_update, const unsigned char *in, unsigned char *out,
               size_t n, unsigned seed) {
    size_t off = 0;
    srand(seed);
    while (off < n) {
        size_t len;
        switch (rand() % 4) {
        case 0: len = 16; break;
        case 1: len = 1 + (size_t)rand() % 64; break;
        case 2: len = 1 + (size_t)rand() % 40000; break;
        default: len = 16 * (1 + (size_t)rand() % 2048); break;
        }
        if (len > n - off) len = n - off;
        if (use_update) {
            int got = 0;
            if (EVP_CipherUpdate(ctx, out + off, &got, in + off, (int)len) != 1 || (size_t)got != len) return 0;
        } else if (EVP_Cipher(ctx, out + off, in + off, (unsigned)len) < 0) {
            return 0;
        }
        off += len;
    }
    return 1;
}

static const char *provider_of(EVP_CIPHER_CTX *ctx) {
    const OSSL_PROVIDER *p = EVP_CIPHER_get0_provider(EVP_CIPHER_CTX_get0_cipher(ctx));
    return p ? OSSL_PROVIDER_get0_name(p) : "?";
}

int main(void) {
    const char *how = gr_aesctr_install();
    check(strcmp(how, "batched") == 0, "provider installed");
    unsigned char seed[32];
    check(RAND_bytes(seed, sizeof seed) == 1, "RAND_bytes (CTR-DRBG runs on AES-256-CTR too)");
    const EVP_CIPHER *legacy[3] = {EVP_aes_128_ctr(), EVP_aes_192_ctr(), EVP_aes_256_ctr()};
    const char *names[3] = {"AES-128-CTR", "AES-192-CTR", "AES-256-CTR"};
    unsigned char *in = malloc(DATA), *want = malloc(DATA), *got = malloc(DATA);
    if (!in || !want || !got || RAND_bytes(in, DATA) != 1) return 2;
    for (int k = 0; k < 3; k++) {
        EVP_CIPHER *ref = EVP_CIPHER_fetch(NULL, names[k], "provider=default");
        for (unsigned trial = 0; trial < 12; trial++) {
            unsigned char key[32], iv[16];
            if (RAND_bytes(key, sizeof key) != 1 || RAND_bytes(iv, sizeof iv) != 1) return 2;
            if (trial % 3 == 1) memset(iv + 12, 0xff, 4);      /* 32-bit counter wraps */
            if (trial % 3 == 2) memset(iv + 8, 0xff, 8);       /* 64-bit counter wraps */
            EVP_CIPHER_CTX *a = EVP_CIPHER_CTX_new(), *b = EVP_CIPHER_CTX_new();
            int enc = trial % 2;
            int ok = EVP_CipherInit(a, ref, key, iv, enc) == 1 && EVP_CipherInit(b, legacy[k], key, iv, enc) == 1;
            ok = ok && strcmp(provider_of(b), "gpurent-aesctr") == 0 && strcmp(provider_of(a), "default") == 0;
            ok = ok && run(a, 1, in, want, DATA, trial) && run(b, trial % 4 == 3, in, got, DATA, trial * 7 + 1);
            ok = ok && memcmp(want, got, DATA) == 0;
            /* re-key b mid-stream: nothing of the old keystream may leak through */
            if (RAND_bytes(key, sizeof key) != 1) return 2;
            ok = ok && EVP_CipherInit(a, NULL, key, iv, enc) == 1 && EVP_CipherInit(b, NULL, key, iv, enc) == 1;
            ok = ok && run(a, 1, in, want, DATA / 4, trial + 99) && run(b, 0, in, got, DATA / 4, trial + 5);
            ok = ok && memcmp(want, got, DATA / 4) == 0;
            /* key and IV in separate calls, as OpenSSL's CTR-DRBG sets them */
            iv[15] ^= 0x5a;
            ok = ok && EVP_CipherInit_ex(a, NULL, NULL, key, NULL, -1) == 1 && EVP_CipherInit_ex(a, NULL, NULL, NULL, iv, -1) == 1;
            ok = ok && EVP_CipherInit_ex(b, NULL, NULL, key, NULL, -1) == 1 && EVP_CipherInit_ex(b, NULL, NULL, NULL, iv, -1) == 1;
            ok = ok && run(a, 1, in, want, 4096, trial) && run(b, 1, in, got, 4096, trial + 3);
            ok = ok && memcmp(want, got, 4096) == 0;
            char what[96];
            snprintf(what, sizeof what, "%s trial %u (%s, %s)", names[k], trial, enc ? "encrypt" : "decrypt",
                     provider_of(b));
            check(ok, what);
            EVP_CIPHER_CTX_free(a);
            EVP_CIPHER_CTX_free(b);
        }
        EVP_CIPHER_free(ref);
    }
    /* other algorithms are not affected by the default property */
    EVP_MD *md = EVP_MD_fetch(NULL, "SHA256", NULL);
    check(md && strcmp(OSSL_PROVIDER_get0_name(EVP_MD_get0_provider(md)), "default") == 0, "SHA256 still from default");
    EVP_MD_free(md);
    free(in); free(want); free(got);
    printf("%d failed\n", failures);
    return failures ? 1 : 0;
}
