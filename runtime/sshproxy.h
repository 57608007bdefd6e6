/* sshproxy.h: ProxyCommand / ProxyJump transport for ssh.c (see sshproxy.c). */
#ifndef GPURENT_SSHPROXY_H
#define GPURENT_SSHPROXY_H

#include "host.h"

/* Metatable of the proxy userdata; called once from gr_open_ssh. */
void gr_sshproxy_register(lua_State *L);
/* core.ssh.proxy_spawn(cmd, label) -> fd, proxy */
int gr_sshproxy_spawn(lua_State *L);

#endif
