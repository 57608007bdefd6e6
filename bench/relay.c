/* bench/relay.c: a long link emulated in user space (the kernel here has no netem),
 * for the benches (the bench/..._bench.lua files, through bench/relay.lua) and the transfer specs.
 *
 *   relay --rtt-ms 50 --target 127.0.0.1:2222 [--listen 127.0.0.1:0] [--rate-mibps R]
 *         [--count FILE]
 *
 * It owns the link's behaviour: listens on --listen (port 0: any free port), prints
 * "PORT\n" on stdout once it accepts, and relays every connection to --target,
 * delaying each direction by RTT/2. Buffering is unbounded: bytes read are queued
 * with their delivery time and the reader never waits for the writer, so what is in
 * flight is bounded only by the tools' own windows (SSH channel windows; the TCP
 * windows of the two loopback legs are never the limit). EOF (half-close) crosses
 * after the same delay. --rate-mibps paces each direction of each connection to
 * R MiB/s (tests use it to stop a transfer midway). --count FILE keeps in FILE the
 * bytes delivered so far, both directions of every connection (rewritten atomically
 * at most every 20 ms: tests count what crossed the link). Loopback only; runs until
 * SIGTERM/SIGINT, then exits 0.
 *
 * One thread, one epoll loop, level-triggered; each direction is a FIFO queue of
 * chunks (deliver-at times only grow), so the next deadline is a queue head; reads
 * land in pooled 256 KiB blocks and are written from there (no copy). It is
 * written in C so that the emulated link costs the machine little CPU: a real link's
 * routers do not share the sender's cores.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (256 * 1024)      /* one block; one read fills what is left of it */
#define MIN_ROOM (32 * 1024)    /* a block with less room left is retired from reading */
#define POOL_KEEP 256           /* free blocks kept for reuse (64 MiB at most) */
#define MAX_IOV 64              /* due chunks written by one writev */
#define COUNT_EVERY_NS 20000000 /* --count: at most one rewrite per 20 ms */
#define PACE_SLEEP_NS 5000000   /* --rate-mibps: sleep only once worth 5 ms */

static const char *prog = "relay";

/* Bytes are read straight into blocks (no copy) that are kept in a pool once
 * delivered: no page is faulted in, zeroed and given back per transfer. A block is
 * shared by the reads it holds (refs: their chunks, plus 1 while it is the block its
 * direction reads into). */
struct block {
    struct block *next_free;
    int refs;
    size_t used;
    char data[CHUNK];
};

/* A queued piece of one direction: the bytes of one read, due at `at`;
 * len 0 (no block) marks the EOF read from the source. */
struct chunk {
    struct chunk *next;
    int64_t at;
    struct block *block;
    char *data;
    size_t len, off;
};

struct conn;

/* One socket of a connection: the client's (side 0) or the target's (side 1). */
struct leg {
    struct conn *conn;
    int fd;
    uint32_t events;  /* epoll interest now registered (0: not in the epoll set) */
};

/* One direction: read from legs[src], written to legs[1 - src] after the delay. */
struct dir {
    struct chunk *head, *tail;
    struct block *fill;  /* the block reads go into */
    int src;
    int read_done;    /* EOF (or an error) read from the source: queued, no more reads */
    int write_done;   /* EOF delivered, or the destination failed: nothing more written */
    int blocked;      /* the destination's send buffer is full: waiting for EPOLLOUT */
    int64_t free_at;  /* --rate-mibps: when the bytes written so far have gone out */
    int64_t pace_until;
};

struct conn {
    struct conn *prev, *next;
    struct leg legs[2];
    struct dir dirs[2];  /* dirs[0]: client -> target; dirs[1]: target -> client */
    int connecting;      /* the target's connect() has not completed yet */
};

static int ep = -1;
static struct conn *conns;
static int64_t delay_ns;
static double rate_bps;           /* bytes per second per direction; 0: unpaced */
static uint64_t delivered;        /* bytes written to either side, for --count */
static const char *count_path;
static char *count_tmp;
static uint64_t count_written = UINT64_MAX;
static int64_t count_next_at;
static char scratch[CHUNK];  /* reads whose destination is gone, discarded */
static struct block *pool;
static int pool_len;

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "%s: %s: %s\n", prog, what, detail);
    exit(1);
}

static void die_errno(const char *what) { die(what, strerror(errno)); }

static void warn_errno(const char *what)
{
    fprintf(stderr, "%s: %s: %s\n", prog, what, strerror(errno));
}

static int64_t now_ns(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
        die_errno("clock_gettime");
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void usage(FILE *to, const char *why, int status)
{
    fprintf(to, "%s: %s\nusage: %s --rtt-ms MS --target HOST:PORT [--listen HOST:PORT] "
            "[--rate-mibps R] [--count FILE]\n", prog, why, prog);
    exit(status);
}

static double parse_nonneg(const char *opt, const char *s)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !isfinite(v) || v < 0) {
        fprintf(stderr, "%s: %s: not a number >= 0: '%s'\n", prog, opt, s);
        exit(2);
    }
    return v;
}

/* HOST:PORT (the last colon splits; an empty host is 127.0.0.1; [::1]:P is accepted)
 * resolved to a loopback address, or exit naming the value. */
static void parse_hostport(const char *opt, const char *s, int port_zero_ok,
                           struct sockaddr_storage *sa, socklen_t *salen)
{
    const char *colon = strrchr(s, ':');
    if (colon == NULL)
        fprintf(stderr, "%s: %s: expected HOST:PORT, got '%s'\n", prog, opt, s), exit(2);
    char host[256];
    size_t hlen = (size_t)(colon - s);
    if (hlen >= sizeof host)
        fprintf(stderr, "%s: %s: host too long in '%s'\n", prog, opt, s), exit(2);
    memcpy(host, s, hlen);
    host[hlen] = '\0';
    if (hlen >= 2 && host[0] == '[' && host[hlen - 1] == ']') {
        memmove(host, host + 1, hlen - 2);
        host[hlen - 2] = '\0';
    }
    if (host[0] == '\0')
        strcpy(host, "127.0.0.1");
    char *end;
    errno = 0;
    long port = strtol(colon + 1, &end, 10);
    if (errno != 0 || end == colon + 1 || *end != '\0' || port < (port_zero_ok ? 0 : 1) || port > 65535)
        fprintf(stderr, "%s: %s: bad port in '%s'\n", prog, opt, s), exit(2);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res, *ai;
    int rc = getaddrinfo(host, NULL, &hints, &res);
    if (rc != 0)
        fprintf(stderr, "%s: %s: cannot resolve '%s': %s\n", prog, opt, host, gai_strerror(rc)), exit(1);
    for (ai = res; ai != NULL; ai = ai->ai_next) {
        int loop = 0;
        if (ai->ai_family == AF_INET)
            loop = (ntohl(((struct sockaddr_in *)ai->ai_addr)->sin_addr.s_addr) >> 24) == 127;
        else if (ai->ai_family == AF_INET6)
            loop = IN6_IS_ADDR_LOOPBACK(&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr);
        if (!loop)
            continue;
        memcpy(sa, ai->ai_addr, ai->ai_addrlen);
        *salen = ai->ai_addrlen;
        if (ai->ai_family == AF_INET)
            ((struct sockaddr_in *)sa)->sin_port = htons((uint16_t)port);
        else
            ((struct sockaddr_in6 *)sa)->sin6_port = htons((uint16_t)port);
        freeaddrinfo(res);
        return;
    }
    freeaddrinfo(res);
    fprintf(stderr, "%s: %s: loopback only, not '%s'\n", prog, opt, host);
    exit(1);
}

/* The epoll interest of a leg: reading while its outgoing direction still reads,
 * writing while its incoming direction waits for room. A leg with no interest
 * leaves the set (epoll reports HUP/ERR even on an empty mask: it would spin). */
static void update_leg(struct conn *c, int side)
{
    struct leg *l = &c->legs[side];
    uint32_t want = 0;
    if (c->connecting)
        want = side == 1 ? EPOLLOUT : 0;
    else {
        if (!c->dirs[side].read_done)
            want |= EPOLLIN;
        if (c->dirs[1 - side].blocked && !c->dirs[1 - side].write_done)
            want |= EPOLLOUT;
    }
    if (want == l->events)
        return;
    struct epoll_event ev = {.events = want, .data.ptr = l};
    int op = l->events == 0 ? EPOLL_CTL_ADD : want == 0 ? EPOLL_CTL_DEL : EPOLL_CTL_MOD;
    if (epoll_ctl(ep, op, l->fd, &ev) != 0)
        die_errno("epoll_ctl");
    l->events = want;
}

static struct block *block_get(void)
{
    struct block *b = pool;
    if (b != NULL) {
        pool = b->next_free;
        pool_len--;
    } else if ((b = malloc(sizeof *b)) == NULL)
        die("malloc", "out of memory");
    b->refs = 1;
    b->used = 0;
    return b;
}

static void block_put(struct block *b)
{
    if (b == NULL || --b->refs > 0)
        return;
    if (pool_len >= POOL_KEEP) {
        free(b);
        return;
    }
    b->next_free = pool;
    pool = b;
    pool_len++;
}

static void pop_chunk(struct dir *d)
{
    struct chunk *k = d->head;
    d->head = k->next;
    if (d->head == NULL)
        d->tail = NULL;
    block_put(k->block);
    free(k);
}

static void free_queue(struct dir *d)
{
    while (d->head != NULL)
        pop_chunk(d);
    block_put(d->fill);
    d->fill = NULL;
}

static void close_conn(struct conn *c)
{
    for (int side = 0; side < 2; side++) {
        struct leg *l = &c->legs[side];
        if (l->events != 0 && epoll_ctl(ep, EPOLL_CTL_DEL, l->fd, NULL) != 0)
            die_errno("epoll_ctl DEL");
        if (close(l->fd) != 0)
            warn_errno("close");
        free_queue(&c->dirs[side]);
    }
    if (c->prev)
        c->prev->next = c->next;
    else
        conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    free(c);
}

static int conn_done(const struct conn *c)
{
    return c->dirs[0].read_done && c->dirs[0].write_done && c->dirs[1].read_done && c->dirs[1].write_done;
}

static void enqueue(struct dir *d, struct block *b, char *data, size_t len, int64_t at)
{
    struct chunk *k = malloc(sizeof *k);
    if (k == NULL)
        die("malloc", "out of memory");
    k->next = NULL;
    k->at = at;
    k->block = b;
    if (b != NULL)
        b->refs++;
    k->data = data;
    k->len = len;
    k->off = 0;
    if (d->tail)
        d->tail->next = k;
    else
        d->head = k;
    d->tail = k;
}

/* One read from the source of d (level-triggered: the next epoll_wait returns again
 * if more is waiting). EOF or an error queues the EOF mark. */
static void pump_in(struct conn *c, struct dir *d)
{
    char *at = scratch;
    size_t room = sizeof scratch;
    if (!d->write_done) {  /* else the destination is gone: drain the source until EOF */
        if (d->fill != NULL && d->fill->refs == 1)
            d->fill->used = 0;  /* all it held is delivered: read from its start again */
        if (d->fill == NULL || CHUNK - d->fill->used < MIN_ROOM) {
            block_put(d->fill);
            d->fill = block_get();
        }
        at = d->fill->data + d->fill->used;
        room = CHUNK - d->fill->used;
    }
    ssize_t n = read(c->legs[d->src].fd, at, room);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n < 0)
        warn_errno(d->src == 0 ? "read from client" : "read from target");
    if (n <= 0)
        d->read_done = 1;
    if (d->write_done)
        return;
    if (n > 0) {
        enqueue(d, d->fill, at, (size_t)n, now_ns() + delay_ns);
        d->fill->used += (size_t)n;
    } else
        enqueue(d, NULL, NULL, 0, now_ns() + delay_ns);
}

static void write_failed(struct dir *d, const char *what)
{
    warn_errno(what);
    d->write_done = 1;
    d->blocked = 0;
    free_queue(d);
}

/* Writes what of d is due by `now` (and allowed by the pacing), until the queue's
 * head is not yet due or the destination is full. */
static void pump_out(struct conn *c, struct dir *d, int64_t now)
{
    int dst = c->legs[1 - d->src].fd;
    const char *what = d->src == 0 ? "write to target" : "write to client";
    while (!d->write_done && !d->blocked && d->head != NULL && d->head->at <= now && d->pace_until <= now) {
        if (d->head->len == 0) {  /* the EOF mark: half-close the destination */
            if (shutdown(dst, SHUT_WR) != 0)
                write_failed(d, d->src == 0 ? "shutdown to target" : "shutdown to client");
            d->write_done = 1;
            free_queue(d);
            break;
        }
        struct iovec iov[MAX_IOV];
        int cnt = 0;
        size_t want = 0;
        /* paced: one chunk per write, then the bucket decides whether to sleep */
        int max = rate_bps > 0 ? 1 : MAX_IOV;
        for (struct chunk *k = d->head; k != NULL && cnt < max && k->len > 0 && k->at <= now; k = k->next) {
            iov[cnt].iov_base = k->data + k->off;
            iov[cnt].iov_len = k->len - k->off;
            want += iov[cnt].iov_len;
            cnt++;
        }
        ssize_t n = writev(dst, iov, cnt);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                d->blocked = 1;
            else
                write_failed(d, what);
            break;
        }
        delivered += (uint64_t)n;
        size_t left = (size_t)n;
        while (left > 0) {
            struct chunk *k = d->head;
            size_t part = k->len - k->off;
            if (left < part) {
                k->off += left;
                break;
            }
            left -= part;
            pop_chunk(d);
        }
        if ((size_t)n < want)
            d->blocked = 1;  /* the send buffer is full: saves the EAGAIN round */
        if (rate_bps > 0) {
            int64_t t = now_ns();
            d->free_at = (d->free_at > t ? d->free_at : t) + (int64_t)((double)n / rate_bps * 1e9);
            if (d->free_at - t > PACE_SLEEP_NS)
                d->pace_until = d->free_at;
            now = t;
        }
    }
}

static void connected(struct conn *c)
{
    int one = 1;
    c->connecting = 0;
    for (int side = 0; side < 2; side++)
        if (setsockopt(c->legs[side].fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0)
            warn_errno("setsockopt TCP_NODELAY");
}

static struct sockaddr_storage target;
static socklen_t target_len;

static void accept_all(int lfd)
{
    for (;;) {
        int cfd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            warn_errno("accept");
            return;
        }
        int sfd = socket(target.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (sfd < 0) {
            warn_errno("socket");
            if (close(cfd) != 0)
                warn_errno("close");
            continue;
        }
        struct conn *c = calloc(1, sizeof *c);
        if (c == NULL)
            die("calloc", "out of memory");
        c->legs[0] = (struct leg){.conn = c, .fd = cfd};
        c->legs[1] = (struct leg){.conn = c, .fd = sfd};
        c->dirs[0].src = 0;
        c->dirs[1].src = 1;
        c->next = conns;
        if (conns)
            conns->prev = c;
        conns = c;
        if (connect(sfd, (struct sockaddr *)&target, target_len) == 0)
            connected(c);
        else if (errno == EINPROGRESS)
            c->connecting = 1;
        else {
            warn_errno("connect to target");
            close_conn(c);
            continue;
        }
        update_leg(c, 0);
        update_leg(c, 1);
    }
}

static void finish_connect(struct conn *c)
{
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c->legs[1].fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
        die_errno("getsockopt SO_ERROR");
    if (err == EINPROGRESS || err == EALREADY)
        return;
    if (err != 0) {
        errno = err;
        warn_errno("connect to target");
        close_conn(c);
        return;
    }
    connected(c);
    update_leg(c, 0);
    update_leg(c, 1);
}

static void write_count(int64_t now)
{
    char line[32];
    int len = snprintf(line, sizeof line, "%llu\n", (unsigned long long)delivered);
    int fd = open(count_tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        die(count_tmp, strerror(errno));
    if (write(fd, line, (size_t)len) != len)
        die(count_tmp, errno ? strerror(errno) : "short write");
    if (close(fd) != 0)
        die(count_tmp, strerror(errno));
    if (rename(count_tmp, count_path) != 0)
        die(count_path, strerror(errno));
    count_written = delivered;
    count_next_at = now + COUNT_EVERY_NS;
}

/* Writes what is due on every connection, closes the finished ones, and returns the
 * wait until the next deadline (ns; -1: nothing pending). */
static int64_t service(void)
{
    int64_t now = now_ns(), next = INT64_MAX;
    for (struct conn *c = conns, *cn; c != NULL; c = cn) {
        cn = c->next;
        if (c->connecting)
            continue;
        for (int i = 0; i < 2; i++) {
            struct dir *d = &c->dirs[i];
            pump_out(c, d, now);
            if (!d->write_done && !d->blocked && d->head != NULL) {
                int64_t at = d->head->at > d->pace_until ? d->head->at : d->pace_until;
                if (at < next)
                    next = at;
            }
        }
        if (conn_done(c)) {
            close_conn(c);
            continue;
        }
        update_leg(c, 0);
        update_leg(c, 1);
    }
    if (count_path && delivered != count_written) {
        if (now >= count_next_at)
            write_count(now);
        else if (count_next_at < next)
            next = count_next_at;
    }
    if (next == INT64_MAX)
        return -1;
    now = now_ns();
    return next <= now ? 0 : next - now;
}

/* epoll_pwait2 waits to the nanosecond (epoll_wait's milliseconds would add up to
 * 1 ms to each direction's delay); epoll_wait where the kernel lacks it (ENOSYS, or
 * EPERM from a container's seccomp profile that predates it). */
static int wait_events(struct epoll_event *evs, int max, int64_t wait_ns)
{
    static int no_pwait2;
    if (!no_pwait2) {
        struct timespec ts = {.tv_sec = wait_ns / 1000000000, .tv_nsec = wait_ns % 1000000000};
        int n = epoll_pwait2(ep, evs, max, wait_ns < 0 ? NULL : &ts, NULL);
        if (n >= 0 || (errno != ENOSYS && errno != EPERM))
            return n;
        no_pwait2 = 1;
    }
    int64_t ms = wait_ns < 0 ? -1 : (wait_ns + 999999) / 1000000;
    return epoll_wait(ep, evs, max, ms > 60000 ? 60000 : (int)ms);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"rtt-ms", required_argument, NULL, 'r'},  {"target", required_argument, NULL, 't'},
        {"listen", required_argument, NULL, 'l'},  {"rate-mibps", required_argument, NULL, 'p'},
        {"count", required_argument, NULL, 'c'},   {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    const char *rtt = NULL, *target_s = NULL, *listen_s = "127.0.0.1:0";
    double rate_mibps = 0;
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'r': rtt = optarg; break;
        case 't': target_s = optarg; break;
        case 'l': listen_s = optarg; break;
        case 'p': rate_mibps = parse_nonneg("--rate-mibps", optarg); break;
        case 'c': count_path = optarg; break;
        case 'h': usage(stdout, "a long link emulated in user space (bench/relay.c)", 0); break;
        default: usage(stderr, "bad option", 2);
        }
    }
    if (optind < argc)
        fprintf(stderr, "%s: unexpected argument '%s'\n", prog, argv[optind]), usage(stderr, "bad arguments", 2);
    if (rtt == NULL || target_s == NULL)
        usage(stderr, "--rtt-ms and --target are required", 2);
    delay_ns = (int64_t)(parse_nonneg("--rtt-ms", rtt) * 1e6 / 2);
    rate_bps = rate_mibps * 1048576.0;
    parse_hostport("--target", target_s, 0, &target, &target_len);
    struct sockaddr_storage lsa;
    socklen_t lsa_len;
    parse_hostport("--listen", listen_s, 1, &lsa, &lsa_len);
    if (count_path) {
        size_t n = strlen(count_path) + 5;
        count_tmp = malloc(n);
        if (count_tmp == NULL)
            die("malloc", "out of memory");
        snprintf(count_tmp, n, "%s.tmp", count_path);
    }

    if (signal(SIGPIPE, SIG_IGN) == SIG_ERR)
        die_errno("signal SIGPIPE");
    sigset_t stop;
    if (sigemptyset(&stop) != 0 || sigaddset(&stop, SIGTERM) != 0 || sigaddset(&stop, SIGINT) != 0)
        die_errno("sigset");
    if (sigprocmask(SIG_BLOCK, &stop, NULL) != 0)
        die_errno("sigprocmask");
    int sfd = signalfd(-1, &stop, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sfd < 0)
        die_errno("signalfd");

    int lfd = socket(lsa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (lfd < 0)
        die_errno("socket");
    int one = 1;
    if (setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0)
        die_errno("setsockopt SO_REUSEADDR");
    if (bind(lfd, (struct sockaddr *)&lsa, lsa_len) != 0)
        die(listen_s, strerror(errno));
    if (listen(lfd, 128) != 0)
        die_errno("listen");
    struct sockaddr_storage bound;
    socklen_t blen = sizeof bound;
    if (getsockname(lfd, (struct sockaddr *)&bound, &blen) != 0)
        die_errno("getsockname");
    int port = ntohs(bound.ss_family == AF_INET ? ((struct sockaddr_in *)&bound)->sin_port
                                                : ((struct sockaddr_in6 *)&bound)->sin6_port);

    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die_errno("epoll_create1");
    /* data.ptr NULL: the listener; &sfd: the signals; otherwise a struct leg */
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) != 0)
        die_errno("epoll_ctl listener");
    ev.data.ptr = &sfd;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &ev) != 0)
        die_errno("epoll_ctl signalfd");

    if (printf("%d\n", port) < 0 || fflush(stdout) != 0)
        die_errno("write stdout");

    for (;;) {
        int64_t wait_ns = service();
        struct epoll_event evs[64];
        int n = wait_events(evs, 64, wait_ns);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die_errno("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            void *p = evs[i].data.ptr;
            if (p == NULL) {
                accept_all(lfd);
                continue;
            }
            if (p == &sfd) {
                if (count_path && delivered != count_written)
                    write_count(now_ns());
                return 0;
            }
            struct leg *l = p;
            struct conn *c = l->conn;
            int side = (int)(l - c->legs);
            if (c->connecting) {
                finish_connect(c);  /* may close c: nothing else of c in this batch */
                continue;
            }
            uint32_t e = evs[i].events;
            /* ERR/HUP: the read or the write below meets the error and ends that side */
            if ((e & (EPOLLIN | EPOLLERR | EPOLLHUP)) && (l->events & EPOLLIN))
                pump_in(c, &c->dirs[side]);
            if ((e & (EPOLLOUT | EPOLLERR | EPOLLHUP)) && (l->events & EPOLLOUT))
                c->dirs[1 - side].blocked = 0;  /* service() writes it next */
        }
    }
}
