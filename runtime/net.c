/* net.c: the local end of a tunnel (gpurent tunnel, inst:forward): a listening
 * TCP socket bound to a loopback address only, accept, and non-blocking
 * read/write/shutdown on the accepted sockets. Every call returns at once;
 * false means "would block": the Lua side waits on the fd through the scheduler
 * (lua/gpurent/transport/tunnel.lua) and calls again. Exposed as fields of core.ssh
 * (registered by ssh.c's gr_open_ssh), next to tcp_connect and close_fd. */
#include "host.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define NET_READ_MAX (1 << 20)

int gr_net_register(lua_State *L);

/* listen(addr, port) -> fd, bound port. addr must be an IPv4 loopback address
 * (127.0.0.0/8): a tunnel is never offered to the network. port 0 = any free. */
static int net_listen(lua_State *L) {
    const char *addr = luaL_checkstring(L, 1);
    lua_Integer port = luaL_checkinteger(L, 2);
    if (port < 0 || port > 65535) return luaL_argerror(L, 2, "port out of range");
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short)port);
    if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1 || (ntohl(sa.sin_addr.s_addr) >> 24) != 127)
        return luaL_error(L, "listen: %s is not a loopback IPv4 address (tunnels listen on 127.0.0.0/8 only)", addr);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return gr_errno_error(L, "socket for", addr);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 128) != 0) {
        int e = errno;
        close(fd);
        return luaL_error(L, "listen on %s:%d: %s", addr, (int)port, strerror(e));
    }
    socklen_t len = sizeof sa;
    getsockname(fd, (struct sockaddr *)&sa, &len);
    lua_pushinteger(L, fd);
    lua_pushinteger(L, ntohs(sa.sin_port));
    return 2;
}

/* accept(fd) -> new fd, "ip:port" of the peer; false when none is waiting;
 * nil, reason on a transient failure (EMFILE, ECONNABORTED...). */
static int net_accept(lua_State *L) {
    int fd = (int)luaL_checkinteger(L, 1);
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    int c = accept4(fd, (struct sockaddr *)&sa, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (c < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) { lua_pushboolean(L, 0); return 1; }
        lua_pushnil(L);
        lua_pushstring(L, strerror(errno));
        return 2;
    }
    int one = 1;
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char ip[INET_ADDRSTRLEN] = "?";
    inet_ntop(AF_INET, &sa.sin_addr, ip, sizeof ip);
    lua_pushinteger(L, c);
    lua_pushfstring(L, "%s:%d", ip, (int)ntohs(sa.sin_port));
    return 2;
}

/* sock_read(fd [, max]) -> data; "" at end of stream; false when nothing is there
 * yet; nil, reason when the peer reset the connection. */
static int net_read(lua_State *L) {
    int fd = (int)luaL_checkinteger(L, 1);
    lua_Integer max = luaL_optinteger(L, 2, 65536);
    if (max < 1) max = 1;
    if (max > NET_READ_MAX) max = NET_READ_MAX;
    luaL_Buffer b;
    char *p = luaL_buffinitsize(L, &b, (size_t)max);
    ssize_t n = recv(fd, p, (size_t)max, 0);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) { lua_pushboolean(L, 0); return 1; }
        lua_pushnil(L);
        lua_pushstring(L, strerror(errno));
        return 2;
    }
    luaL_pushresultsize(&b, (size_t)n);
    return 1;
}

/* sock_write(fd, data [, from]) -> bytes of data[from..] written; false when the
 * socket is full; nil, reason when the peer is gone (no SIGPIPE). */
static int net_write(lua_State *L) {
    int fd = (int)luaL_checkinteger(L, 1);
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);
    lua_Integer from = luaL_optinteger(L, 3, 1);
    if (from < 1 || (size_t)from > len + 1) return luaL_argerror(L, 3, "out of range");
    if ((size_t)from == len + 1) { lua_pushinteger(L, 0); return 1; }
    ssize_t n = send(fd, data + from - 1, len - (size_t)from + 1, MSG_NOSIGNAL);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) { lua_pushboolean(L, 0); return 1; }
        lua_pushnil(L);
        lua_pushstring(L, strerror(errno));
        return 2;
    }
    lua_pushinteger(L, (lua_Integer)n);
    return 1;
}

/* sock_shutdown(fd [, "w" | "rw"]): "w" (default) no more writes, the peer reads
 * end of stream; "rw" also ends reading, which wakes a task waiting on fd. */
static int net_shutdown(lua_State *L) {
    static const char *const hows[] = {"w", "rw", NULL};
    int how = luaL_checkoption(L, 2, "w", hows);
    shutdown((int)luaL_checkinteger(L, 1), how ? SHUT_RDWR : SHUT_WR);
    return 0;
}

/* Add the functions to the table on top of the stack (core.ssh). */
int gr_net_register(lua_State *L) {
    static const luaL_Reg fns[] = {
        {"listen", net_listen}, {"accept", net_accept}, {"sock_read", net_read},
        {"sock_write", net_write}, {"sock_shutdown", net_shutdown}, {NULL, NULL}
    };
    luaL_setfuncs(L, fns, 0);
    return 0;
}
