/* lease.h - stages run side by side lend each other the cores they leave
 * idle.
 *
 * The workflow runs two stages at once on a thread each (2 cores); when one
 * of them is alone (the last fine-tune, the end of a report part), the
 * other core idles. With MATS_LEASE_DIR set (recipes/workflow.mk sets it,
 * `CORE_LEASES=0` does not), each stage holds a lease on a core per thread
 * it was given, borrows the machine's other cores while no stage holds
 * them, and hands them back within 20 ms when a stage starts and needs
 * one. The bytes never change: the pool's split does, and no result
 * depends on it (pool.h). A stage that borrowed for a second or more says
 * so in one line on stderr when it ends well (a failing stage's last line
 * stays its error).
 */
#ifndef MC_LEASE_H
#define MC_LEASE_H

/* Take `base` core leases and start lending (a thread of its own), when
 * MATS_LEASE_DIR names the lease directory (made if missing); once per
 * process, before the pool's first loop; a no-op without the variable. */
void lease_start(int base);
/* The cores this process may run on (its affinity), as `nproc` counts them. */
int lease_cores(void);

#endif
