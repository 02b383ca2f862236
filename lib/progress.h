/* progress.h - progress reporting on stderr.
 *
 * On a terminal: one line redrawn in place with a bar, count, rate and ETA.
 * Otherwise (logs, CI): a plain line at most every MATS_PROGRESS_SECONDS
 * seconds (default 10) and one at the end, so logs stay short.
 */
#ifndef MC_PROGRESS_H
#define MC_PROGRESS_H

#include <stdint.h>

typedef struct {
    char label[64];
    char unit[16];
    int64_t total;
    int64_t done;
    int64_t start; /* items done before this run (a resumed run): the rate and ETA count from here */
    double t0, last;
    int tty;
    double interval;
} mc_progress;

void progress_init(mc_progress *p, const char *label, int64_t total, const char *unit);
/* done: items finished so far; extra: optional text such as "loss 2.31". */
void progress_update(mc_progress *p, int64_t done, const char *extra);
/* A run resumed at `done` items: the bar starts there, the rate counts only
 * the items this run does. */
void progress_resume(mc_progress *p, int64_t done);
void progress_finish(mc_progress *p, const char *extra);

/* Format seconds as "1h02m", "3m05s" or "4.2s". */
void progress_fmt_time(double s, char *out, int n);

#endif
