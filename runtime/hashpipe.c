/* hashpipe.c: the SHA-256 (and, for downloads, the local write) of a transfer
 * on a worker thread.
 *
 * Why: the transfer pumps (sftp.c) run libssh2 on the one scheduler thread,
 * and at loopback speed that thread is the bottleneck; hashing every byte
 * there cost an eighth of its time and writing downloads to the page cache
 * more. The pump hands each block here and goes back to the network; the
 * worker takes one block at a time, in order, so the file and the digest see
 * the bytes exactly as a serial loop would. A push waits for the previous
 * block, which bounds the memory to the pump's own buffers and lets it reuse
 * every buffer but the one just queued. The worker blocks all signals: SIGINT
 * stays with the scheduler thread, which owns cancellation. Small transfers
 * never start the thread. */
#include "hashpipe.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

/* Below this, a block is done at once if the worker is not running yet: a
 * thread per small file would cost more than it saves. */
#define START_AT (512u << 10)

struct gr_hashpipe {
    EVP_MD_CTX *ctx;
    int fd;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    const unsigned char *p;       /* the queued block; NULL: none */
    size_t n;
    int err;                      /* first failure: errno or GR_HASHPIPE_DIGEST_FAILED */
    int started, quit;
    pthread_t th;
};

static int write_all(int fd, const unsigned char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return errno;
        if (w == 0) return EIO;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int do_block(gr_hashpipe *hp, const unsigned char *p, size_t n) {
    if (hp->fd >= 0) {
        int e = write_all(hp->fd, p, n);
        if (e) return e;
    }
    return EVP_DigestUpdate(hp->ctx, p, n) == 1 ? 0 : GR_HASHPIPE_DIGEST_FAILED;
}

static void *worker(void *arg) {
    gr_hashpipe *hp = arg;
    pthread_mutex_lock(&hp->mu);
    for (;;) {
        while (!hp->p && !hp->quit) pthread_cond_wait(&hp->cv, &hp->mu);
        if (!hp->p) break;
        const unsigned char *p = hp->p;
        size_t n = hp->n;
        int failed = hp->err;
        pthread_mutex_unlock(&hp->mu);
        int e = failed ? 0 : do_block(hp, p, n);
        pthread_mutex_lock(&hp->mu);
        if (e && !hp->err) hp->err = e;
        hp->p = NULL;
        pthread_cond_broadcast(&hp->cv);
    }
    pthread_mutex_unlock(&hp->mu);
    return NULL;
}

static int start(gr_hashpipe *hp) {
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&hp->th, NULL, worker, hp);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    hp->started = rc == 0;
    return hp->started;
}

gr_hashpipe *gr_hashpipe_new(EVP_MD_CTX *ctx, int fd) {
    gr_hashpipe *hp = calloc(1, sizeof *hp);
    if (!hp) return NULL;
    hp->ctx = ctx;
    hp->fd = fd;
    if (pthread_mutex_init(&hp->mu, NULL) != 0) { free(hp); return NULL; }
    if (pthread_cond_init(&hp->cv, NULL) != 0) {
        pthread_mutex_destroy(&hp->mu);
        free(hp);
        return NULL;
    }
    return hp;
}

int gr_hashpipe_push(gr_hashpipe *hp, const unsigned char *p, size_t n) {
    if (n == 0) return gr_hashpipe_wait(hp);
    if (!hp->started && (n < START_AT || !start(hp))) {
        /* no worker (small so far, or no thread to be had): serial, same order */
        if (!hp->err) hp->err = do_block(hp, p, n);
        return hp->err;
    }
    pthread_mutex_lock(&hp->mu);
    while (hp->p) pthread_cond_wait(&hp->cv, &hp->mu);
    int e = hp->err;
    if (!e) {
        hp->p = p;
        hp->n = n;
        pthread_cond_broadcast(&hp->cv);
    }
    pthread_mutex_unlock(&hp->mu);
    return e;
}

int gr_hashpipe_wait(gr_hashpipe *hp) {
    if (!hp->started) return hp->err;
    pthread_mutex_lock(&hp->mu);
    while (hp->p) pthread_cond_wait(&hp->cv, &hp->mu);
    int e = hp->err;
    pthread_mutex_unlock(&hp->mu);
    return e;
}

void gr_hashpipe_free(gr_hashpipe *hp) {
    if (!hp) return;
    if (hp->started) {
        pthread_mutex_lock(&hp->mu);
        while (hp->p) pthread_cond_wait(&hp->cv, &hp->mu);
        hp->quit = 1;
        pthread_cond_broadcast(&hp->cv);
        pthread_mutex_unlock(&hp->mu);
        pthread_join(hp->th, NULL);
    }
    pthread_cond_destroy(&hp->cv);
    pthread_mutex_destroy(&hp->mu);
    free(hp);
}
