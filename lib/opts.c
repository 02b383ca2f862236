/* opts.c - see opts.h. */
#include "opts.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"

/* ------------------------------------------------------------ numbers */

static void range_text(char *buf, size_t cap, double lo, double hi, int open_hi) {
    snprintf(buf, cap, "[%.15g, %.15g%s", lo, hi, open_hi ? ")" : "]");
}

static int in_range(double x, double lo, double hi, int open_hi) {
    if (lo == 0 && hi == 0) return 1;
    return x >= lo && (open_hi ? x < hi : x <= hi);
}

int opts_parse_int(const char *s, double lo, double hi, long *out) {
    const char *p = s;
    if (*p == '+' || *p == '-') p++;
    if (!*p) return mc_fail("'%s' is not an integer", s);
    for (const char *q = p; *q; q++)
        if (*q < '0' || *q > '9') return mc_fail("'%s' is not an integer", s);
    errno = 0;
    char *end;
    long v = strtol(s, &end, 10);
    if (errno == ERANGE || *end) return mc_fail("'%s' is too large for an integer", s);
    if (!in_range((double)v, lo, hi, 0)) {
        char r[96];
        range_text(r, sizeof r, lo, hi, 0);
        return mc_fail("%ld is outside %s", v, r);
    }
    *out = v;
    return 0;
}

int opts_parse_float(const char *s, double lo, double hi, int nonfinite, double *out) {
    if (!*s || *s == ' ' || *s == '\t' || *s == '\n') return mc_fail("'%s' is not a number", s);
    errno = 0;
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end) return mc_fail("'%s' is not a number", s);
    if (!isfinite(v)) {
        /* strtod says ERANGE for overflow (inf) and for underflow (tiny, fine) */
        if (!nonfinite) return mc_fail("'%s' is not a finite number", s);
        *out = v;
        return 0;
    }
    if (!in_range(v, lo, hi, 0)) {
        char r[96];
        range_text(r, sizeof r, lo, hi, 0);
        return mc_fail("%s is outside %s", s, r);
    }
    *out = v;
    return 0;
}

/* ------------------------------------------------------------ the output check */

/* The directory part of path ("." when there is none); caller frees. */
static char *dir_of(const char *path) {
    char *d = strdupCheck(path);
    size_t n = strlen(d);
    while (n > 1 && d[n - 1] == '/') d[--n] = 0;
    char *slash = strrchr(d, '/');
    if (!slash) {
        free(d);
        return strdupCheck(".");
    }
    if (slash == d) slash[1] = 0;
    else *slash = 0;
    return d;
}

static const char *file_type(mode_t m) {
    return S_ISDIR(m)    ? "a directory"
           : S_ISCHR(m)  ? "a character device"
           : S_ISBLK(m)  ? "a block device"
           : S_ISFIFO(m) ? "a named pipe"
           : S_ISSOCK(m) ? "a socket"
           : S_ISREG(m)  ? "a regular file"
                         : "not a regular file";
}

/* Can a file be created in directory d? Tried for real (a probe file made
 * and removed at once): permissions, read-only mounts and root alike. */
static int dir_writable(const char *d) {
    char probe[4200];
    snprintf(probe, sizeof probe, "%s/.mats-write-probe.%d", d, (int)getpid());
    int fd = open(probe, O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (fd < 0) return -1;
    close(fd);
    unlink(probe);
    return 0;
}

int opts_check_output(const char *opt, const char *out, int is_dir, const opt_input *in, int n) {
    if (!*out) return mc_fail("%s: an empty path: give the output's path", opt);
    struct stat so;
    int exists = stat(out, &so) == 0;
    if (!exists && errno != ENOENT && errno != ENOTDIR) return mc_fail("%s %s: %s", opt, out, strerror(errno));
    if (exists && (is_dir ? !S_ISDIR(so.st_mode) : !S_ISREG(so.st_mode)))
        return mc_fail("%s %s: exists and is %s, not a %s: give another path", opt, out,
                       file_type(so.st_mode), is_dir ? "directory" : "regular file");
    /* the directory that receives it: the writer makes missing ones, so the
     * nearest existing ancestor must take new entries */
    char *d = is_dir && exists ? strdupCheck(out) : dir_of(out);
    struct stat sd;
    for (;;) {
        if (stat(d, &sd) == 0) break;
        if (errno != ENOENT && errno != ENOTDIR) {
            int e = errno;
            mc_fail("%s %s: %s: %s", opt, out, d, strerror(e));
            free(d);
            return -1;
        }
        char *up = dir_of(d);
        free(d);
        d = up;
    }
    if (!S_ISDIR(sd.st_mode)) {
        mc_fail("%s %s: %s is %s, not a directory", opt, out, d, file_type(sd.st_mode));
        free(d);
        return -1;
    }
    if (dir_writable(d) < 0) {
        int e = errno;
        mc_fail("%s %s: cannot create files in directory %s (%s): give a writable place", opt, out, d,
                strerror(e));
        free(d);
        return -1;
    }
    free(d);
    if (!exists) return 0;
    struct stat sp;
    char *parent = dir_of(out);
    int have_parent = stat(parent, &sp) == 0;
    free(parent);
    for (int i = 0; i < n; i++) {
        struct stat si;
        if (!in[i].path || stat(in[i].path, &si) != 0) continue; /* the loader will say */
        if (si.st_dev == so.st_dev && si.st_ino == so.st_ino)
            return mc_fail("%s %s is the input %s %s: writing it would replace that input; give another "
                           "output path", opt, out, in[i].opt, in[i].path);
        if (in[i].is_dir && !is_dir && have_parent && S_ISDIR(si.st_mode) && si.st_dev == sp.st_dev &&
            si.st_ino == sp.st_ino)
            return mc_fail("%s %s is a file of the input directory %s %s: writing it would replace what "
                           "is read from there; give a path outside it", opt, out, in[i].opt, in[i].path);
    }
    return 0;
}

/* ------------------------------------------------------------ parsing */

enum { MAX_ROWS = 64 };
static const opt_prog *g_prog;
static int g_count[MAX_ROWS];
static const char *g_last[MAX_ROWS];

static int n_rows(const opt_prog *p) {
    int n = 0;
    while (p->opts[n].name) n++;
    if (n > MAX_ROWS) die("internal: %s has more than %d option rows", p->name, MAX_ROWS);
    return n;
}

static int is_positional(const opt_spec *o) { return o->name[0] != '-'; }
static int takes_value(const opt_spec *o) { return o->kind != OPT_FLAG; }

static const char *choice_list(const opt_spec *o, char *buf, size_t cap) {
    buf[0] = 0;
    for (int i = 0; o->choices && o->choices[i]; i++) {
        size_t l = strlen(buf);
        snprintf(buf + l, cap - l, "%s%s", i ? ", " : "", o->choices[i]);
    }
    return buf;
}

static int is_hex32(const char *s) {
    if (strlen(s) != 32) return 0;
    for (int i = 0; i < 32; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
    return 1;
}

static void list_push(opt_list *l, const char *s, size_t len) {
    l->v = reallocCheck(l->v, sizeof(char *) * (size_t)(l->n + 2));
    char *e = mallocCheck(len + 1);
    memcpy(e, s, len);
    e[len] = 0;
    l->v[l->n++] = e;
    l->v[l->n] = NULL;
}

int opts_append(const opt_spec *o, const char *value) {
    list_push((opt_list *)o->dst, value, strlen(value));
    return 0;
}

typedef struct {
    opt_input *in;
    int n, cap;
} inputs;

static void add_input(inputs *ins, const opt_spec *o, const char *path) {
    if (ins->n == ins->cap) ins->in = reallocCheck(ins->in, sizeof(opt_input) * (size_t)(ins->cap = ins->cap ? 2 * ins->cap : 16));
    ins->in[ins->n++] = (opt_input){o->name, path, (o->flags & OPT_INPUT_DIR) != 0};
}

/* Validate value v of row o, then store or apply it; the inputs it names go
 * to ins (NULL: a default, which names none). */
static void set_value(const opt_spec *o, const char *v, inputs *ins) {
    if (o->kind != OPT_FLAG && (o->flags & (OPT_INPUT | OPT_INPUT_DIR | OPT_OUTPUT | OPT_OUTPUT_DIR)) && !*v)
        die("%s: an empty path", o->name);
    long iv = 0;
    double fv = 0;
    int ci = -1;
    switch (o->kind) {
    case OPT_FLAG: break;
    case OPT_INT:
        if (opts_parse_int(v, o->lo, o->hi, &iv) < 0) die("%s: %s", o->name, mc_error());
        break;
    case OPT_FLOAT:
        if (opts_parse_float(v, o->lo, o->hi, (o->flags & OPT_NONFINITE) != 0, &fv) < 0)
            die("%s: %s", o->name, mc_error());
        if ((o->flags & OPT_OPEN_HI) && !(fv < o->hi)) {
            char rt[96];
            range_text(rt, sizeof rt, o->lo, o->hi, 1);
            die("%s: %s is outside %s", o->name, v, rt);
        }
        break;
    case OPT_STR:
        if ((o->flags & OPT_HEX32) && !is_hex32(v))
            die("%s '%s' is not 32 lowercase hex digits (a cache key)", o->name, v);
        break;
    case OPT_LIST: break;
    case OPT_CHOICE:
        for (int i = 0; o->choices[i]; i++)
            if (!strcmp(v, o->choices[i])) ci = i;
        if (ci < 0) {
            char buf[512];
            die("%s '%s' is not one of %s", o->name, v, choice_list(o, buf, sizeof buf));
        }
        break;
    }
    if (o->kind == OPT_LIST) {
        opt_list *l = (opt_list *)o->dst;
        int before = l->n;
        if (is_positional(o)) {
            list_push(l, v, strlen(v));
        } else {
            for (const char *s = v;;) {
                const char *c = strchr(s, ',');
                size_t len = c ? (size_t)(c - s) : strlen(s);
                if (!len)
                    die("%s '%s': an empty element in the comma-separated list: give NAME,NAME,...", o->name, v);
                list_push(l, s, len);
                if (!c) break;
                s = c + 1;
            }
        }
        if (ins && (o->flags & (OPT_INPUT | OPT_INPUT_DIR)))
            for (int i = before; i < l->n; i++) add_input(ins, o, l->v[i]);
    } else if (ins && (o->flags & (OPT_INPUT | OPT_INPUT_DIR))) {
        add_input(ins, o, v);
    }
    if (o->call) {
        if (o->call(o, v) < 0) die("%s", mc_error());
        return;
    }
    switch (o->kind) {
    case OPT_FLAG: *(int *)o->dst = 1; break;
    case OPT_INT: *(long *)o->dst = iv; break;
    case OPT_FLOAT: *(double *)o->dst = fv; break;
    case OPT_STR: *(const char **)o->dst = v; break;
    case OPT_LIST: break;
    case OPT_CHOICE: *(int *)o->dst = ci; break;
    }
}

/* Row r given once more, with value v. */
static void take(const opt_prog *p, int r, const char *v, inputs *ins) {
    const opt_spec *o = &p->opts[r];
    g_count[r]++;
    if (g_count[r] > 1 && o->kind != OPT_LIST && !(o->flags & OPT_REPEAT)) {
        if (o->kind == OPT_FLAG) die("%s is given twice: give it once (see %s --help)", o->name, p->name);
        die("%s is given twice ('%s', then '%s'): give it once (see %s --help)", o->name, g_last[r], v, p->name);
    }
    g_last[r] = v;
    set_value(o, v, ins);
}

static int find_row(const opt_prog *p, const char *a) {
    for (int r = 0; p->opts[r].name; r++)
        if (!is_positional(&p->opts[r]) && !strcmp(p->opts[r].name, a)) return r;
    return -1;
}

/* "-0.5" or "-3=x" is a value, not an option, when no row has that name */
static int looks_like_option(const char *a) {
    return a[0] == '-' && a[1] && !(a[1] >= '0' && a[1] <= '9') && a[1] != '.';
}

void opts_parse(const opt_prog *p, int argc, char **argv) {
    int nr = n_rows(p);
    g_prog = p;
    memset(g_count, 0, sizeof g_count);
    memset(g_last, 0, sizeof g_last);
    int required = 0;
    for (int r = 0; r < nr; r++) required |= (p->opts[r].flags & OPT_REQUIRED) != 0;
    if (argc == 0 && required) {
        opts_usage(p, stderr);
        exit(2);
    }
    /* the defaults: the table says them once, here they are stored */
    for (int r = 0; r < nr; r++)
        if (p->opts[r].def && !p->opts[r].call && p->opts[r].kind != OPT_FLAG && p->opts[r].kind != OPT_LIST)
            set_value(&p->opts[r], p->opts[r].def, NULL);
    inputs ins = {0};
    int pos = 0; /* the next positional row to fill */
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            opts_usage(p, stdout);
            exit(0);
        }
        int r = find_row(p, a);
        if (r < 0 && looks_like_option(a)) die("unknown option '%s' (see %s --help)", a, p->name);
        if (r < 0) { /* a positional */
            while (pos < nr && !is_positional(&p->opts[pos])) pos++;
            if (pos >= nr) die("unexpected argument '%s' (see %s --help)", a, p->name);
            take(p, pos, a, &ins);
            if (p->opts[pos].kind != OPT_LIST) pos++;
            continue;
        }
        if (!takes_value(&p->opts[r])) {
            take(p, r, "", &ins);
            continue;
        }
        if (i + 1 >= argc) die("%s needs a value: %s %s (see %s --help)", a, a, p->opts[r].arg ? p->opts[r].arg : "VALUE", p->name);
        take(p, r, argv[++i], &ins);
    }
    for (int r = 0; r < nr; r++) {
        const opt_spec *o = &p->opts[r];
        if (!(o->flags & OPT_REQUIRED) || g_count[r]) continue;
        if (is_positional(o)) die("%s is required (see %s --help)", o->name, p->name);
        die("%s is required: %s %s (see %s --help)", o->name, o->name, o->arg ? o->arg : "VALUE", p->name);
    }
    for (int r = 0; r < nr; r++) {
        const opt_spec *o = &p->opts[r];
        if (!(o->flags & (OPT_OUTPUT | OPT_OUTPUT_DIR)) || !g_count[r]) continue;
        if (opts_check_output(o->name, g_last[r], (o->flags & OPT_OUTPUT_DIR) != 0, ins.in, ins.n) < 0)
            die("%s", mc_error());
    }
    free(ins.in);
}

int opts_given(const opt_prog *p, const char *name) {
    if (p != g_prog) return 0;
    for (int r = 0; p->opts[r].name; r++)
        if (!strcmp(p->opts[r].name, name)) return g_count[r];
    return 0;
}

const char *opts_text(const opt_prog *p, const char *name) {
    for (int r = 0; p->opts[r].name; r++)
        if (!strcmp(p->opts[r].name, name)) return p == g_prog && g_count[r] ? g_last[r] : p->opts[r].def;
    return NULL;
}

/* ------------------------------------------------------------ usage */

static void synopsis(const opt_prog *p, FILE *f) {
    if (p->usage) {
        fprintf(f, "usage: %s\n", p->usage);
        return;
    }
    size_t col = fprintf(f, "usage: %s", p->name), indent = strlen("usage: ") + strlen(p->name);
    for (int r = 0; p->opts[r].name; r++) {
        const opt_spec *o = &p->opts[r];
        char item[256];
        const char *arg = o->arg ? o->arg : "VALUE";
        int req = (o->flags & OPT_REQUIRED) != 0, many = o->kind == OPT_LIST || (o->flags & OPT_REPEAT);
        if (is_positional(o)) snprintf(item, sizeof item, req ? "%s%s" : "[%s]%s", o->name, many ? "..." : "");
        else if (!takes_value(o)) snprintf(item, sizeof item, req ? "%s" : "[%s]", o->name);
        else snprintf(item, sizeof item, req ? "%s %s%s" : "[%s %s]%s", o->name, arg,
                      (o->flags & OPT_REPEAT) ? "..." : "");
        if (col + 1 + strlen(item) > 100) {
            fprintf(f, "\n%*s", (int)indent, "");
            col = indent;
        }
        col += fprintf(f, " %s", item);
    }
    fputc('\n', f);
}

void opts_usage(const opt_prog *p, void *file) {
    FILE *f = file;
    synopsis(p, f);
    for (int r = 0; p->opts[r].name; r++) {
        const opt_spec *o = &p->opts[r];
        char head[128], buf[512];
        snprintf(head, sizeof head, "%s%s%s", o->name, takes_value(o) && !is_positional(o) ? " " : "",
                 takes_value(o) && !is_positional(o) ? (o->arg ? o->arg : "VALUE") : "");
        fprintf(f, "  %-26s%s%s", head, strlen(head) > 26 ? "\n                            " : "",
                o->help ? o->help : "");
        if (o->kind == OPT_CHOICE && !(o->arg && strchr(o->arg, '|')))
            fprintf(f, "; one of %s", choice_list(o, buf, sizeof buf));
        if ((o->kind == OPT_INT || o->kind == OPT_FLOAT) && !(o->lo == 0 && o->hi == 0)) {
            range_text(buf, sizeof buf, o->lo, o->hi, (o->flags & OPT_OPEN_HI) != 0);
            fprintf(f, "; in %s", buf);
        }
        if (o->def) fprintf(f, "; default %s", o->def);
        if (o->flags & OPT_REQUIRED) fprintf(f, " (required)");
        if (o->kind == OPT_LIST && !is_positional(o)) fprintf(f, " (comma-separated; repeats append)");
        else if (o->flags & OPT_REPEAT) fprintf(f, " (repeatable)");
        if (o->key) fprintf(f, " [key: %s]", o->key);
        fputc('\n', f);
    }
    if (p->about) fprintf(f, "%s\n", p->about);
}
