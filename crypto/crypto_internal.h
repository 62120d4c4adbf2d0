/* crypto_internal.h: helpers shared by the files of crypto/ (not part of the public contract). */
#ifndef KVPUB_CRYPTO_INTERNAL_H
#define KVPUB_CRYPTO_INTERNAL_H

#include "crypto/kvcrypto.h"

#include "base/base.h"

/* Key files and revocation lists are small; anything bigger is not one of ours. */
#define KVC_MAX_SMALL_FILE (1u << 20)

/* Reads a whole regular file of at most max bytes into a new NUL-terminated buffer (*out,
 * caller frees; wipe first if it held a secret). When private_mode is set, a file with any
 * group/other permission bit is refused with KVC_ERR_PERM before a byte is read. */
kvc_status kvc_read_small_file(const char *path, size_t max, int private_mode, char **out, size_t *outlen,
                               char *err, size_t errlen) KVC_WUR;

#endif
