/* kvfetch.h: the subcommands of build/kvfetch (the loader CLI), one file each. Each returns a
 * process exit code as spec/kvblob.md documents: 0 ok, 1 verification failed or refused,
 * 2 usage or I/O error, others as the spec says. */
#ifndef KVPUB_KVFETCH_H
#define KVPUB_KVFETCH_H

#include "fetch/fetch.h"
#include "format/kvblob.h"

/* Process exit codes of kvfetch get/run/compare (documented in their --help). */
enum {
    KVF_EXIT_OK = 0,
    KVF_EXIT_REFUSED = 1,   /* verification failed, or blob refused for this model */
    KVF_EXIT_USAGE = 2,     /* usage, I/O, network, HTTP errors */
    KVF_EXIT_MALFORMED = 3, /* malformed, truncated or unsupported blob (kvb_exit_code) */
    KVF_EXIT_DENIED = 4,    /* server refused access: buy a (new) token */
    KVF_EXIT_ROLLBACK = 5,  /* a snapshot older than one seen before (spec/repository.md) */
    KVF_EXIT_FROZEN = 6,    /* an expired snapshot */
};

/* Exit code for a fetch status; vst says how verification failed with KVF_ERR_VERIFY. */
int kvf_exit_code(kvf_status st, kvb_status vst);

int kvfetch_inspect_main(int argc, char **argv);
int kvfetch_verify_main(int argc, char **argv);
int kvfetch_generate_main(int argc, char **argv);
int kvfetch_tokenize_main(int argc, char **argv);
int kvfetch_export_main(int argc, char **argv);
int kvfetch_get_main(int argc, char **argv);
int kvfetch_run_main(int argc, char **argv);
int kvfetch_compare_main(int argc, char **argv);
int kvfetch_search_main(int argc, char **argv);
int kvfetch_trust_main(int argc, char **argv);
int kvfetch_buy_main(int argc, char **argv);

/* cmd_buy.c, for get: when go carries no token, the one `kvfetch buy` stored for the blob go
 * names and the origin of its server (or URL) goes into go->http, bound to that origin; rec
 * gets it (rec->token "" when none). Returns 0, or 2 after printing (a token file that is not
 * private). */
int kvf_stored_token(kvf_get_opts *go, kvf_token_rec *rec, const char *prog);
/* After a download was denied: one line on stderr saying why and how to buy a token (expired
 * at now, refused, or none stored); nothing for a token the user gave. */
void kvf_token_hint(const kvf_get_opts *go, const kvf_token_rec *rec, int64_t now, const char *prog);

/* cmd_verify.c, for inspect too: what `kvfetch inspect` and `kvfetch verify` take. */
typedef struct kvf_blob_args {
    const char *file, *trust_dir;
    int as_json, hash_only, threads;
} kvf_blob_args;
/* Parses FILE, --trust DIR, --json and --help; for verify also --hash-only, --threads N and
 * FILE '-' (stdin). Returns -1 to go on, or the exit code after printing: 0 after --help (usage
 * on stdout), 2 on a usage error. */
int kvf_blob_args_parse(int argc, char **argv, int verify, void (*usage)(FILE *f), kvf_blob_args *a);

#endif
