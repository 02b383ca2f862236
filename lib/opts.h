/* opts.h - command lines: one table per program says each option once.
 *
 * A program describes its options as a table of opt_spec rows (name, kind,
 * where the value goes, range, whether it may repeat, what it names, help),
 * and everything about its command line derives from that table:
 *
 *   - parsing (opts_parse): `--name VALUE` pairs and flags in any order,
 *     then positionals for the rows whose name does not start with '-';
 *   - validation, before the program does any work: integers and floats by
 *     one strict number parser (opts_parse_int / opts_parse_float: no
 *     fractions, overflow or trailing junk in an integer, no NaN or infinity
 *     unless the row allows it) against the row's declared range; choices;
 *     cache keys (32 lowercase hex); no empty element in a comma list; an
 *     option given twice is an error unless its row is a list or repeats;
 *     an unknown option or a stray argument is an error; required rows;
 *   - the output check (opts_check_output): the output row's path must be
 *     writable (its nearest existing directory writable), not something other
 *     than a regular file (a directory for OPT_OUTPUT_DIR rows), and not the
 *     same file (device and inode, links resolved) as any input row's path;
 *   - `--help` / `-h`: the synopsis and one line per row, on stdout, exit 0
 *     (no arguments at all where some are required: on stderr, exit 2).
 *
 * Every error is one line naming the option and the value, and exits 1
 * (die). The number parsers are also what configuration files use
 * (config.c), so `--iterations 1.5` and `train.steps = 1.5` fail alike.
 *
 * Rows name their key entry (`key`): the config value or key line the option
 * becomes, shown by --help; a row whose `call` is cfg_opt_key (config.h)
 * applies its value as that config entry (train's --seed is --set
 * train.seed=...). config.h and device.h hold the rows every stage shares
 * (--config, --set, --device); OPT_ROW_KEY and OPT_ROW_OUT below.
 */
#ifndef MC_OPTS_H
#define MC_OPTS_H

#include <stddef.h>

typedef enum {
    OPT_FLAG = 0,   /* no value; int *dst = 1 */
    OPT_INT = 1,    /* long *dst: a decimal integer in [lo, hi] */
    OPT_FLOAT = 2,  /* double *dst: a finite number in [lo, hi] */
    OPT_STR = 3,    /* const char **dst (points into argv) */
    OPT_LIST = 4,   /* opt_list *dst: comma-separated (positional: one per argument); repeats append */
    OPT_CHOICE = 5, /* int *dst: the index of the value in `choices` */
} opt_kind;

enum {
    OPT_REQUIRED = 1 << 0,   /* must be given */
    OPT_REPEAT = 1 << 1,     /* may be given more than once; each value goes to `call` in order */
    OPT_INPUT = 1 << 2,      /* names input file(s): the output may not be one of them */
    OPT_INPUT_DIR = 1 << 3,  /* names an input directory: the output may not overwrite a file in it */
    OPT_OUTPUT = 1 << 4,     /* the output file */
    OPT_OUTPUT_DIR = 1 << 5, /* the output directory */
    OPT_NONFINITE = 1 << 6,  /* OPT_FLOAT: NaN and infinities are allowed */
    OPT_HEX32 = 1 << 7,      /* OPT_STR: 32 lowercase hex digits (a cache key) */
    OPT_OPEN_HI = 1 << 8,    /* the range excludes hi: [lo, hi) */
};

/* A comma list (or the positionals of a list row); elements are malloc'd and
 * live until exit. */
typedef struct {
    char **v;
    int n;
} opt_list;

typedef struct opt_spec opt_spec;
struct opt_spec {
    const char *name;           /* "--lambda", "-o"; a positional: its name in --help ("FILE") */
    opt_kind kind;
    void *dst;                  /* where the value goes (see opt_kind), or call's context */
    const char *arg;            /* the value's name in --help: "N", "FILE.msgpack" */
    const char *help;           /* one line */
    unsigned flags;             /* OPT_* above */
    double lo, hi;              /* OPT_INT / OPT_FLOAT range; lo == hi == 0: any finite value */
    const char *const *choices; /* OPT_CHOICE: NULL-ended */
    const char *def;            /* the default (stored before parsing; --help shows it), or NULL */
    const char *key;            /* the config value or key line this option becomes, or NULL */
    /* Instead of storing: apply the (validated) value; 0, or -1 with mc_error(). */
    int (*call)(const opt_spec *o, const char *value);
};

typedef struct {
    const char *name;  /* "merge", "art diff": the prefix of its messages */
    const char *usage; /* synopsis lines; NULL: generated from the rows */
    const char *about; /* text after the options, or NULL */
    opt_spec *opts;    /* rows; the last has name NULL */
} opt_prog;

/* --key HEX and -o OUT, as every stage has them. */
#define OPT_ROW_KEY(dst_)                                                                         \
    {.name = "--key", .kind = OPT_STR, .dst = (dst_), .arg = "HEX", .flags = OPT_HEX32,            \
     .help = "the cache key to record (the workflow's); default: computed from the inputs"}
#define OPT_ROW_OUT(dst_, arg_, help_)                                                            \
    {.name = "-o", .kind = OPT_STR, .dst = (dst_), .arg = (arg_), .flags = OPT_OUTPUT | OPT_REQUIRED, \
     .help = (help_)}

/* Parse argv[0..argc) (the program's arguments, its name excluded) against
 * p's table; dies with one line on the first error. Then checks the output
 * row against the input rows and the file system (opts_check_output). */
void opts_parse(const opt_prog *p, int argc, char **argv);

/* How many times the row named `name` was given by the last opts_parse of
 * the table it belongs to (0: not given). */
int opts_given(const opt_prog *p, const char *name);

/* The text of the row named `name` as the last opts_parse of p's table took
 * it: the value last given on the command line, else the row's default;
 * NULL for neither. Points into argv or the table. */
const char *opts_text(const opt_prog *p, const char *name);

/* A `call` for repeatable rows that collect their values in order: appends
 * the value, whole (no comma splitting), to the opt_list at o->dst. */
int opts_append(const opt_spec *o, const char *value);

/* Print p's usage: synopsis and one line per row. */
void opts_usage(const opt_prog *p, void *file /* FILE* */);

/* One input of opts_check_output: the option that named it and its path. */
typedef struct {
    const char *opt;
    const char *path;
    int is_dir; /* an input directory: the output may not be an existing file in it */
} opt_input;

/* Check before any work that output `out`, named by option `opt`, may be
 * written: it does not exist, or is a regular file (is_dir: a directory);
 * its nearest existing ancestor directory is writable; and it is not the same
 * file (device and inode, after links) as any of in[0..n), nor an existing
 * file inside an input directory. 0, or -1 with a one-line mc_error(). */
int opts_check_output(const char *opt, const char *out, int is_dir, const opt_input *in, int n);

/* The strict number parsers. An integer: optional sign and decimal digits,
 * nothing else, within the range of long and then [lo, hi]; a float: what
 * strtod takes, nothing after it, finite unless `nonfinite`, within [lo, hi]
 * (lo == hi == 0: no bounds). 0, or -1 with mc_error() saying what is wrong
 * with `s` ("'1.5' is not an integer", "99999 is outside [1, 1024]"). */
int opts_parse_int(const char *s, double lo, double hi, long *out);
int opts_parse_float(const char *s, double lo, double hi, int nonfinite, double *out);

#endif
