/* progress.c - see progress.h. */
#include "progress.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"

void progress_fmt_time(double s, char *out, int n) {
    if (s < 0 || s != s) snprintf(out, n, "?");
    else if (s < 60) snprintf(out, n, "%.1fs", s);
    else if (s < 3600) snprintf(out, n, "%dm%02ds", (int)s / 60, (int)s % 60);
    else snprintf(out, n, "%dh%02dm", (int)s / 3600, ((int)s % 3600) / 60);
}

void progress_init(mc_progress *p, const char *label, int64_t total, const char *unit) {
    memset(p, 0, sizeof *p);
    snprintf(p->label, sizeof p->label, "%s", label);
    snprintf(p->unit, sizeof p->unit, "%s", unit ? unit : "");
    p->total = total;
    p->t0 = p->last = mc_now();
    p->tty = isatty(2);
    const char *s = getenv("MATS_PROGRESS_SECONDS");
    p->interval = s && *s ? atof(s) : 10.0;
    if (p->tty) p->interval = 0.1;
}

static void draw(mc_progress *p, const char *extra, int final) {
    double now = mc_now(), el = now - p->t0;
    double rate = el > 0 ? (p->done - p->start) / el : 0;
    char eta[32] = "", elapsed[32];
    progress_fmt_time(el, elapsed, sizeof elapsed);
    if (!final && p->total > 0 && rate > 0) {
        char t[24];
        progress_fmt_time((p->total - p->done) / rate, t, sizeof t);
        snprintf(eta, sizeof eta, " eta %s", t);
    }
    char bar[24] = "";
    if (p->total > 0) {
        int w = 20, k = (int)(w * (double)p->done / p->total);
        if (k > w) k = w;
        bar[0] = '[';
        for (int i = 0; i < w; i++) bar[1 + i] = i < k ? '#' : '.';
        bar[w + 1] = ']';
        bar[w + 2] = 0;
    }
    char count[64];
    if (p->total > 0) snprintf(count, sizeof count, "%lld/%lld", (long long)p->done, (long long)p->total);
    else snprintf(count, sizeof count, "%lld", (long long)p->done);
    fprintf(stderr, "%s%s: %s %s %s  %.1f %s/s  %s%s%s%s%s", p->tty ? "\r\033[K" : "", p->label, bar, count,
            p->unit, rate, p->unit[0] ? p->unit : "it", elapsed, eta, extra && *extra ? "  " : "",
            extra ? extra : "", (!p->tty || final) ? "\n" : "");
    fflush(stderr);
    p->last = now;
}

void progress_update(mc_progress *p, int64_t done, const char *extra) {
    p->done = done;
    if (mc_now() - p->last >= p->interval) draw(p, extra, 0);
}

void progress_resume(mc_progress *p, int64_t done) { p->start = p->done = done; }

void progress_finish(mc_progress *p, const char *extra) { draw(p, extra, 1); }
