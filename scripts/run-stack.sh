#!/usr/bin/env bash
# make run: the Procfile's processes under honcho ("$@" is the honcho command line).
#
# Ctrl-C (or SIGTERM) is the way to stop the stack, not a failure: honcho then ends with the
# status of the first process the signal ended (130 or 143), which make would report as
# "make: *** [run] Error 143".  Those two mean "stopped"; any other status (a process that
# crashed on its own) is passed on.
set -u
"$@"
status=$?
case "$status" in
  0 | 130 | 143)
    echo "stack stopped"
    exit 0
    ;;
esac
exit "$status"
