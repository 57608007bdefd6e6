/* approval.h: the approval capability (runtime/approval.c). Only the human-facing
 * host grants approvals: main.c from `--approve INSTANCE` on the command line, and
 * approval.c itself when the person types the instance name on the terminal.
 * Lua can ask and check, never grant. */
#ifndef GPURENT_APPROVAL_H
#define GPURENT_APPROVAL_H

/* Record the person's approval for instance (from argv). Returns 0, or -1 when the
 * name is empty/too long or the table is full. */
int gr_approval_grant(const char *instance);
/* 1 when the person approved actions on instance in this process. */
int gr_approval_granted(const char *instance);

/* How many approvals were recorded. */
int gr_approval_count(void);
/* 1 when an ancestor process runs this same executable (PID in *who): approvals
 * from the command line of a gpurent spawned by a gpurent are refused. */
int gr_approval_spawned_by_gpurent(long *who);

#endif
