#!/usr/bin/env bash
# quiet.sh COMMAND...: run COMMAND with its stderr kept back; show it only
# if COMMAND fails (the workflow's tables print without report's progress
# lines, and a failure still says why).
err=$(mktemp)
"$@" 2>"$err"
rc=$?
[ $rc -ne 0 ] && cat "$err" >&2
rm -f "$err"
exit $rc
