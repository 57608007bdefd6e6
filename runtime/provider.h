/* provider.h: the one C path for authenticated provider requests (provider.c) and
 * the pieces of http.c it drives. */
#ifndef GPURENT_PROVIDER_H
#define GPURENT_PROVIDER_H

#include <lua.h>

/* Refusals by the provider boundary in this process. Sticky: once one happened the
 * process exits 3 whatever a Lua caller did with the error (main.c). */
extern int gr_provider_refusals;

/* gpurent.core.provider */
int gr_open_provider(lua_State *L);

/* Raise a refusal (exit 3) when url is on a host a profile names as a provider API. */
void gr_provider_refuse_raw_url(lua_State *L, const char *url);

/* http.c: start the request described by the table at index t (extra: one more
 * header line held in C memory only; https_only: no plain http), pushing the handle;
 * run a started handle to its end, pushing the result table. */
int gr_http_start(lua_State *L, int t, const char *extra, int https_only);
int gr_http_finish(lua_State *L, int h);

#endif
