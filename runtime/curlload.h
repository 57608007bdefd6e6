/* curlload.h: libcurl, loaded on first use. Linking libcurl pulls in GnuTLS, LDAP,
 * Kerberos and RTMP, whose constructors cost several milliseconds at every start-up;
 * only billing calls need HTTP, so they pay for it and nothing else does. */
#ifndef GPURENT_CURLLOAD_H
#define GPURENT_CURLLOAD_H

#include <curl/curl.h>

typedef struct {
    CURLcode (*global_init)(long flags);
    CURL *(*easy_init)(void);
    CURLcode (*easy_setopt)(CURL *curl, CURLoption option, ...);
    CURLcode (*easy_perform)(CURL *curl);
    CURLcode (*easy_getinfo)(CURL *curl, CURLINFO info, ...);
    void (*easy_cleanup)(CURL *curl);
    const char *(*easy_strerror)(CURLcode);
    struct curl_slist *(*slist_append)(struct curl_slist *list, const char *s);
    void (*slist_free_all)(struct curl_slist *list);
    curl_version_info_data *(*version_info)(CURLversion v);
    CURLM *(*multi_init)(void);
    CURLMcode (*multi_add_handle)(CURLM *m, CURL *e);
    CURLMcode (*multi_remove_handle)(CURLM *m, CURL *e);
    CURLMcode (*multi_perform)(CURLM *m, int *running);
    CURLMcode (*multi_poll)(CURLM *m, struct curl_waitfd extra[], unsigned n, int ms, int *numfds);
    CURLMsg *(*multi_info_read)(CURLM *m, int *msgs);
    CURLMcode (*multi_cleanup)(CURLM *m);
} gr_curl_api;

/* The loaded API, or NULL with *err set to a message naming the library. */
const gr_curl_api *gr_curl(const char **err);

#endif
