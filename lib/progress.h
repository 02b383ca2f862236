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
    double t0, last;
    int tty;
    double interval;
} mc_progress;

void progress_init(mc_progress *p, const char *label, int64_t total, const char *unit);
/* done: items finished so far; extra: optional text such as "loss 2.31". */
void progress_update(mc_progress *p, int64_t done, const char *extra);
void progress_finish(mc_progress *p, const char *extra);

/* Format seconds as "1h02m", "3m05s" or "4.2s". */
void progress_fmt_time(double s, char *out, int n);

#endif
