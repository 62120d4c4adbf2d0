/* kvsynth/model.c: placeholder until its owner lands the real command. */
#include "kvsynth/kvsynth.h"

#include <stdio.h>

int kvsynth_model_main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fputs("kvsynth: this command is still being written\n", stderr);
    return 2;
}
