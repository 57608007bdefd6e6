/* curlload.c: dlopen()s libcurl on first use and resolves the calls gpurent makes
 * (see curlload.h for why it is not linked). */
#include "curlload.h"

#include "libload.h"

#include <stdio.h>

static gr_curl_api api;
static gr_lib lib = {.soname = "libcurl.so.4", .deb = "libcurl4"};

#define RESOLVE(field, sym) \
    if (gr_lib_sym(&lib, (void **)&api.field, sym) < 0) return -1;

static int load(void) {
    if (gr_lib_open(&lib) < 0) return -1;
    RESOLVE(global_init, "curl_global_init");
    RESOLVE(easy_init, "curl_easy_init");
    RESOLVE(easy_setopt, "curl_easy_setopt");
    RESOLVE(easy_perform, "curl_easy_perform");
    RESOLVE(easy_getinfo, "curl_easy_getinfo");
    RESOLVE(easy_cleanup, "curl_easy_cleanup");
    RESOLVE(easy_strerror, "curl_easy_strerror");
    RESOLVE(slist_append, "curl_slist_append");
    RESOLVE(slist_free_all, "curl_slist_free_all");
    RESOLVE(version_info, "curl_version_info");
    RESOLVE(multi_init, "curl_multi_init");
    RESOLVE(multi_add_handle, "curl_multi_add_handle");
    RESOLVE(multi_remove_handle, "curl_multi_remove_handle");
    RESOLVE(multi_perform, "curl_multi_perform");
    RESOLVE(multi_poll, "curl_multi_poll");
    RESOLVE(multi_info_read, "curl_multi_info_read");
    RESOLVE(multi_cleanup, "curl_multi_cleanup");
    if (api.global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        snprintf(lib.failure, sizeof lib.failure, "curl_global_init failed");
        return -1;
    }
    return 1;
}

const gr_curl_api *gr_curl(const char **err) {
    if (lib.state == 0) lib.state = load();
    if (lib.state < 0) { if (err) *err = lib.failure; return NULL; }
    return &api;
}
