/* kvpub_internal.h: what kvpub/'s files share and no one else needs. */
#ifndef KVPUB_KVPUB_INTERNAL_H
#define KVPUB_KVPUB_INTERNAL_H

#include <stdio.h>

#include "kvpub/kvpub.h"

/* Writes the printf-style message (format first in the ...) to err when err is non-NULL and
 * errlen non-zero; evaluates to st. */
#define kvp_fail(err, errlen, st, ...) \
    ((err) && (errlen) ? (void)snprintf((err), (errlen), __VA_ARGS__) : (void)0, (st))

#endif
