/* aesctr.h: the batched-keystream AES-CTR provider (see aesctr.c). */
#ifndef GPURENT_AESCTR_H
#define GPURENT_AESCTR_H

/* Installs the provider once per process (before libssh2 makes its first
 * cipher context) and returns what SSH's AES-CTR now runs on: "batched", or
 * "openssl (<why not>)". */
const char *gr_aesctr_install(void);

#endif
