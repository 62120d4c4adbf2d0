/* clock.c: base_now_s, the monotonic clock the tools time their phases with. */
#include "base/base.h"

#include <time.h>

double base_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}
