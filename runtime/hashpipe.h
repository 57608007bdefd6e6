/* hashpipe.h: a worker thread that hashes (and for downloads writes) the
 * blocks a transfer pump hands it, in order, while the pump goes on talking to
 * libssh2 (see hashpipe.c). */
#ifndef GPURENT_HASHPIPE_H
#define GPURENT_HASHPIPE_H

#include <openssl/evp.h>
#include <stddef.h>

typedef struct gr_hashpipe gr_hashpipe;

/* The error a push or wait returns when the digest itself failed (else errno). */
#define GR_HASHPIPE_DIGEST_FAILED (-1)

/* ctx: the digest to update (the pipe uses it only between push and wait).
 * fd >= 0: each block is also written there before it is hashed. */
gr_hashpipe *gr_hashpipe_new(EVP_MD_CTX *ctx, int fd);

/* Queue [p, p+n): waits for the previous block first, so the caller may reuse
 * any buffer but this one. Small blocks before the worker starts are done at
 * once. Returns 0, or the errno of a failed write (or GR_HASHPIPE_DIGEST_FAILED) (every later call returns it
 * too, and nothing more is written). */
int gr_hashpipe_push(gr_hashpipe *hp, const unsigned char *p, size_t n);

/* Wait until every queued block is done; returns 0 or the errno of a failure. */
int gr_hashpipe_wait(gr_hashpipe *hp);

/* Wait, stop the worker, free. NULL is fine. */
void gr_hashpipe_free(gr_hashpipe *hp);

#endif
