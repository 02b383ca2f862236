/* key - print the cache key of a stage run (the canonical text of lib/key.h).
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
#include "opts.h"

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
    const char *stage = NULL, *binary = NULL, *ns = NULL, *digest = NULL, *list = NULL;
    int get = 0, paths = 0, text = 0, files = 0;
    mc_cfg *cfg = cfg_new();
    mc_key *k = NULL;
    opt_list inputs = {0}, args = {0};
    opt_spec rows[] = {
        {.name = "--stage", .kind = OPT_STR, .dst = &stage, .arg = "NAME", .help = "the stage whose key to print"},
        {.name = "--binary", .kind = OPT_STR, .dst = &binary, .arg = "PATH", .help = "the stage binary (its digest)"},
        {.name = "--binary-digest", .kind = OPT_STR, .dst = &digest, .arg = "HEX", .flags = OPT_HEX32,
         .help = "the binary's digest, known (Make computes it once per binary with --file)"},
        OPT_ROWS_CONFIG(cfg),
        {.name = "--ns", .kind = OPT_STR, .dst = &ns, .arg = "NS[,NS...]",
         .help = "the config namespaces that enter the key"},
        {.name = "--input", .kind = OPT_STR, .dst = &inputs, .arg = "ROLE=HEX|ROLE=@ARTIFACT", .flags = OPT_REPEAT,
         .call = opts_append, .help = "an input artifact's key by role"},
        {.name = "--text", .kind = OPT_FLAG, .dst = &text, .help = "print the canonical text instead of the digest"},
        {.name = "--file", .kind = OPT_FLAG, .dst = &files, .help = "print XXH3-128 of the PATH arguments, as xxh128sum"},
        {.name = "--get", .kind = OPT_FLAG, .dst = &get, .help = "print the config values of the KEY arguments (\"\" if unset)"},
        {.name = "--get-path", .kind = OPT_FLAG, .dst = &paths,
         .help = "as --get, a relative value taken relative to the file that set it"},
        {.name = "--list", .kind = OPT_STR, .dst = &list, .arg = "PREFIX",
         .help = "print REST=VALUE for every config key PREFIXREST, sorted"},
        {.name = "PATH|KEY", .kind = OPT_LIST, .dst = &args, .help = "files (--file) or config keys (--get)"},
        {0}};
    const opt_prog prog = {
        .name = "key", .opts = rows,
        .usage = "key --stage NAME [--binary PATH|--binary-digest HEX] [--config FILE]... [--ns NS[,NS...]]\n"
                 "           [--set k=v]... [--input ROLE=HEX|ROLE=@ARTIFACT]... [--text]\n"
                 "       key --file PATH...\n"
                 "       key --config FILE... [--set k=v]... --get KEY... | --get-path KEY... | --list PREFIX\n"
                 "       key --batch JOB :: JOB ...\n"
                 "       key --batch-file FILE"};
    opts_parse(&prog, argc - 1, argv + 1);
    if (files + (get || paths) + (list != NULL) + (stage != NULL) > 1)
        die("give one of --stage, --file, --get / --get-path or --list (see key --help)");
    if (args.n && !files && !get && !paths)
        die("unexpected argument '%s' (see key --help)", args.v[0]);
    if (files) {
        if (!args.n) die("--file needs PATH arguments");
        for (int i = 0; i < args.n; i++) {
            char hex[33];
            if (key_file_hex(args.v[i], hex) != 0) die("%s", mc_error());
            printf("%s  %s\n", hex, args.v[i]);
        }
        return 0;
    }
    if (get || paths) {
        if (!args.n) die("--get needs KEY arguments");
        for (int i = 0; i < args.n; i++) {
            const char *v = cfg_peek(cfg, args.v[i]);
            const char *w = cfg_where(cfg, args.v[i]);
            if (paths && v && *v && *v != '/' && w && strcmp(w, "--set") != 0) {
                const char *colon = strrchr(w, ':'), *slash = NULL;
                for (const char *p = w; p < colon; p++) if (*p == '/') slash = p;
                if (slash) printf("%.*s/", (int)(slash - w), w);
            }
            puts(v ? v : "");
        }
        cfg_free(cfg);
        return 0;
    }
    if (list) {
        size_t n = strlen(list);
        for (size_t i = 0; i < cfg_count(cfg); i++)
            if (!strncmp(cfg_key_at(cfg, i), list, n) && cfg_key_at(cfg, i)[n])
                printf("%s=%s\n", cfg_key_at(cfg, i) + n, cfg_value_at(cfg, i));
        cfg_free(cfg);
        return 0;
    }
    if (!stage) die("give --stage NAME, --file, --get or --list (see key --help)");
    k = key_new(stage);
    if (binary && key_binary_file(k, binary) != 0) die("%s", mc_error());
    if (digest) key_binary_hex(k, digest);
    for (size_t i = 0; i < cfg_count(cfg); i++)
        if (in_ns(cfg_key_at(cfg, i), ns)) key_config(k, cfg_key_at(cfg, i), cfg_value_at(cfg, i));
    for (int i = 0; i < inputs.n; i++) {
        char *role = strdupCheck(inputs.v[i]);
        char *eq = strchr(role, '=');
        if (!eq) die("--input '%s': expected ROLE=HEX or ROLE=@ARTIFACT", inputs.v[i]);
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
    return 0;
}
