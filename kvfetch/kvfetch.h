/* kvfetch.h: the subcommands of build/kvfetch (the loader CLI), one file each. Each returns a
 * process exit code as spec/kvblob.md documents: 0 ok, 1 verification failed or refused,
 * 2 usage or I/O error, others as the spec says. */
#ifndef KVPUB_KVFETCH_H
#define KVPUB_KVFETCH_H

int kvfetch_inspect_main(int argc, char **argv);
int kvfetch_verify_main(int argc, char **argv);
int kvfetch_generate_main(int argc, char **argv);
int kvfetch_get_main(int argc, char **argv);
int kvfetch_run_main(int argc, char **argv);
int kvfetch_compare_main(int argc, char **argv);

#endif
