/* ssh_internal.h: what ssh.c and sftp.c share: the session userdata and the
 * step conventions (false, dirs when libssh2 would block; errors name the host). */
#ifndef GPURENT_SSH_INTERNAL_H
#define GPURENT_SSH_INTERNAL_H

#include "host.h"

#include <libssh2.h>
#include <libssh2_sftp.h>

#define GR_SESSION_MT "gpurent.ssh.session"

struct gr_sftp;

typedef struct {
    LIBSSH2_SESSION *s;
    struct gr_sftp *sftp;         /* at most one SFTP subsystem, shut down with the session */
    int fd;
    int dead;                     /* the connection is lost: reconnect, do not reuse */
    LIBSSH2_AGENT *agent;
    struct libssh2_agent_publickey *agent_id;
    int agent_started;            /* agent_id is mid-userauth (EAGAIN) */
    char host[160];               /* label for error messages: user@host:port */
} gr_session;

gr_session *gr_ssh_check(lua_State *L, int idx);
/* Push false, dirs (1 read, 2 write) for a step that would block. */
int gr_ssh_again(lua_State *L, gr_session *gs);
/* Raise "<host>: <op>: <libssh2 message>", marking the session dead on socket errors. */
int gr_ssh_fail(lua_State *L, gr_session *gs, const char *op, int rc);

/* true | false, dirs | nil, reason, rc for a libssh2 userauth return code. */
int gr_ssh_auth_result(lua_State *L, gr_session *gs, int rc, const char *op);

/* rsasha2.c: RSA user auth with rsa-sha2-256 signatures on libssh2 1.10. */
int gr_sess_auth_rsa_sha2_file(lua_State *L);   /* sess:auth_rsa_sha2_file(user, key [, pass]) */
int gr_rsa_sha2_agent_userauth(gr_session *gs, const char *user, const unsigned char *id_blob,
                               size_t id_len, char *err, size_t errn);
int gr_rsa_is_rsa_blob(const unsigned char *blob, size_t n);

int gr_sftp_init(lua_State *L);       /* sess:sftp_init() */
void gr_sftp_register(lua_State *L);  /* metatables for sftp, handles, transfers */
/* Close every SFTP handle and the subsystem; called in blocking mode by session close. */
void gr_sftp_release(gr_session *gs);

#endif
