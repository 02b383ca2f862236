/* key - print the cache key of a stage run (DESIGN.md section 5; lib/key.h).
 *
 *   key --stage NAME [--binary PATH] [--config FILE]... [--ns NS[,NS...]]
 *       [--set k=v]... [--input ROLE=HEX | ROLE=@ARTIFACT]... [--text]
 *   key --file PATH...        XXH3-128 of files, as xxh128sum prints it
 *   key --batch JOB :: JOB :: ...
 *                             several of the above in one process (Make)
 *   key --batch-file FILE     the same with one job per line of FILE
 *   key --config FILE... [--set k=v]... --get KEY...
 *                             print config values, one per line ("" if unset)
 *   key --config FILE... [--set k=v]... --get-path KEY...
 *                             the same, a relative value taken relative to
 *                             the directory of the file that set it
 *   key --config FILE... [--set k=v]... --list PREFIX
 *                             print "REST=VALUE" for every key PREFIXREST, sorted
 *
 * --binary-digest HEX gives the binary's digest directly (Make computes it
 * once per binary with --file).
 *
 * Config entries come from the --config files (with includes) and --set
 * overrides; only those whose namespace (the part before the first '.') is in
 * --ns enter the key. With --text the canonical text is printed instead of
 * the digest; `xxh128sum` of that text equals the digest.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "art.h"
#include "common.h"
#include "config.h"
#include "key.h"

static void usage(void) {
    fprintf(stderr,
            "usage: key --stage NAME [--binary PATH] [--config FILE]... [--ns NS[,NS...]]\n"
            "           [--set k=v]... [--input ROLE=HEX|ROLE=@ARTIFACT]... [--text]\n"
            "       key --file PATH...\n"
            "       key --config FILE... [--set k=v]... --get KEY...\n"
            "       key --config FILE... [--set k=v]... --list PREFIX\n");
    exit(2);
}

static int in_ns(const char *key, const char *ns) {
    if (!ns) return 0;
    const char *dot = strchr(key, '.');
    size_t n = dot ? (size_t)(dot - key) : strlen(key);
    const char *p = ns;
    while (*p) {
        const char *c = strchr(p, ',');
        size_t m = c ? (size_t)(c - p) : strlen(p);
        if (m == n && strncmp(p, key, n) == 0) return 1;
        if (!c) break;
        p = c + 1;
    }
    return 0;
}

static int job(int argc, char **argv);

int main(int argc, char **argv) {
    mc_set_progname(argv[0]);
    if (argc == 3 && strcmp(argv[1], "--batch-file") == 0) {
        /* key --batch-file FILE: one job per line, arguments separated by
         * blanks (so no argument may contain one); for batches larger than
         * one command line may be. */
        unsigned char *buf;
        size_t len;
        if (mc_read_file(argv[2], &buf, &len) != 0) die("%s", mc_error());
        char *text = reallocCheck(buf, len + 1);
        text[len] = 0;
        char **av = mallocCheck(sizeof(char *) * (len / 2 + 2));
        for (char *line = text, *next; line; line = next) {
            next = strchr(line, '\n');
            if (next) *next++ = 0;
            int ac = 0;
            av[ac++] = argv[0];
            for (char *tok = strtok(line, " \t\r"); tok; tok = strtok(NULL, " \t\r")) av[ac++] = tok;
            if (ac > 1) job(ac, av);
        }
        free(av);
        free(text);
        return 0;
    }
    if (argc > 1 && strcmp(argv[1], "--batch") == 0) {
        /* key --batch ARGS... :: ARGS... : one key (or text) per job, in
         * order; what Make uses to compute many keys with one process. */
        int start = 2;
        for (int i = 2; i <= argc; i++)
            if (i == argc || strcmp(argv[i], "::") == 0) {
                if (i > start) {
                    argv[start - 1] = argv[0];
                    job(i - start + 1, argv + start - 1);
                }
                start = i + 1;
            }
        return 0;
    }
    return job(argc, argv);
}

static int job(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--file") == 0) {
        if (argc < 3) usage();
        for (int i = 2; i < argc; i++) {
            char hex[33];
            if (key_file_hex(argv[i], hex) != 0) die("%s", mc_error());
            printf("%s  %s\n", hex, argv[i]);
        }
        return 0;
    }
    const char *stage = NULL, *binary = NULL, *ns = NULL, *digest = NULL;
    int get = 0, paths = 0;
    const char *list = NULL;
    int text = 0;
    mc_cfg *cfg = cfg_new();
    mc_key *k = NULL;
    char **inputs = callocCheck(argc, sizeof(char *));
    int ninputs = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int more = i + 1 < argc;
        if (!strcmp(a, "--stage") && more) stage = argv[++i];
        else if (!strcmp(a, "--binary") && more) binary = argv[++i];
        else if (!strcmp(a, "--binary-digest") && more) digest = argv[++i];
        else if (!strcmp(a, "--get")) { get = i + 1; break; }
        else if (!strcmp(a, "--get-path")) { get = i + 1; paths = 1; break; }
        else if (!strcmp(a, "--list") && more) list = argv[++i];
        else if (!strcmp(a, "--ns") && more) ns = argv[++i];
        else if (!strcmp(a, "--config") && more) {
            if (cfg_load(cfg, argv[++i]) != 0) die("%s", mc_error());
        } else if (!strcmp(a, "--set") && more) {
            if (cfg_set(cfg, argv[++i]) != 0) die("%s", mc_error());
        } else if (!strcmp(a, "--input") && more) inputs[ninputs++] = argv[++i];
        else if (!strcmp(a, "--text")) text = 1;
        else {
            fprintf(stderr, "key: unknown option '%s'\n", a);
            usage();
        }
    }
    if (get) {
        if (get >= argc) usage();
        for (int i = get; i < argc; i++) {
            const char *v = cfg_peek(cfg, argv[i]);
            const char *w = cfg_where(cfg, argv[i]);
            if (paths && v && *v && *v != '/' && w && strcmp(w, "--set") != 0) {
                const char *colon = strrchr(w, ':'), *slash = NULL;
                for (const char *p = w; p < colon; p++) if (*p == '/') slash = p;
                if (slash) printf("%.*s/", (int)(slash - w), w);
            }
            puts(v ? v : "");
        }
        cfg_free(cfg);
        free(inputs);
        return 0;
    }
    if (list) {
        size_t n = strlen(list);
        for (size_t i = 0; i < cfg_count(cfg); i++)
            if (!strncmp(cfg_key_at(cfg, i), list, n) && cfg_key_at(cfg, i)[n])
                printf("%s=%s\n", cfg_key_at(cfg, i) + n, cfg_value_at(cfg, i));
        cfg_free(cfg);
        free(inputs);
        return 0;
    }
    if (!stage) usage();
    k = key_new(stage);
    if (binary && key_binary_file(k, binary) != 0) die("%s", mc_error());
    if (digest) {
        if (!key_is_hex(digest)) die("--binary-digest '%s' is not 32 lowercase hex digits", digest);
        key_binary_hex(k, digest);
    }
    for (size_t i = 0; i < cfg_count(cfg); i++)
        if (in_ns(cfg_key_at(cfg, i), ns)) key_config(k, cfg_key_at(cfg, i), cfg_value_at(cfg, i));
    for (int i = 0; i < ninputs; i++) {
        char *role = strdupCheck(inputs[i]);
        char *eq = strchr(role, '=');
        if (!eq) die("--input '%s': expected ROLE=HEX or ROLE=@ARTIFACT", inputs[i]);
        *eq = 0;
        const char *v = eq + 1;
        char hex[33];
        if (*v == '@') {
            art_file *a = art_open(v + 1, NULL);
            if (!a) die("%s", mc_error());
            if (!a->key[0]) die("%s: artifact has an empty key; it cannot be an input of a keyed stage", v + 1);
            snprintf(hex, sizeof hex, "%s", a->key);
            art_close(a);
            v = hex;
        }
        if (key_input(k, role, v) != 0) die("%s", mc_error());
        free(role);
    }
    if (text) fputs(key_text(k), stdout);
    else {
        char out[33];
        key_digest(k, out);
        puts(out);
    }
    key_free(k);
    cfg_free(cfg);
    free(inputs);
    return 0;
}
