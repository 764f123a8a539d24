#!/bin/bash
# Copied into a run's folder on the remote host by jitplan.launch.ssh, and started detached there:
#   setsid nohup bash run_remote.sh CODE_DIR COMMAND... </dev/null >/dev/null 2>&1 &
# It runs COMMAND in the run folder with CODE_DIR on PYTHONPATH, appends all output to train.log,
# writes its pid to `pid` (the process-group leader: `jitplan stop RUN` signals the group)
# and the exit code to `exit_code` when COMMAND ends.
set -u
run_dir=$(cd "$(dirname "$0")" && pwd)
code_dir=$(cd "$1" && pwd)
shift
cd "$run_dir" || exit 2
export PYTHONPATH="${code_dir}${PYTHONPATH:+:$PYTHONPATH}"
rm -f exit_code
echo "$$" > pid.tmp && mv pid.tmp pid
# A trap with a command (not an ignore) is reset in children, so the trainer still gets SIGTERM and can
# checkpoint; this shell only waits for it and records how it ended.
trap 'true' TERM INT HUP
"$@" >> train.log 2>&1 &
child=$!
while true; do
  wait "$child"
  rc=$?
  kill -0 "$child" 2>/dev/null || break  # wait returned early because of a trapped signal
done
echo "$rc" > exit_code.tmp && mv exit_code.tmp exit_code
exit "$rc"
