# Shared by the guest scripts (sourced, busybox sh). Paths and helpers of the dev image's app.
# shellcheck shell=sh
# shellcheck disable=SC2034 # the variables are used by the scripts that source this file
STACK_RUN=/run/stack
SECRETS_FILE=$STACK_RUN/secrets.env
RUNTIME_ENV=$STACK_RUN/runtime.env
CONFIG_JSON=$STACK_RUN/config.json
SIGN_IN_HTML=$STACK_RUN/sign-in.html
KV_DIR=/data/kv
# Projects made by POST /api/v1/internal/local-emulator/project: <id>/keys.env, and by-path/<hash> -> <id>.
PROJECTS_DIR=/data/projects
# The project the four rotated secrets belong to (the real image's seeded project has the same id).
INTERNAL_PROJECT_ID=internal
CONFIG_MOUNT=/mnt/config
BACKEND_PORT=8102
DASHBOARD_PORT=8101
SECRET_NAMES="STACK_PUBLISHABLE_CLIENT_KEY STACK_SECRET_SERVER_KEY STACK_SUPER_SECRET_ADMIN_KEY CRON_SECRET"

# Messages go to stderr (the serial console for boot and the app), never secret values.
log() {
  echo "stack: $*" >&2
}

# Waits a fraction of a second without starting a process (busybox `sleep` is one, tens of milliseconds under TCG):
# `read -t` on a FIFO opened read-write, which nobody writes to and which never reaches end-of-file.
pause() { # seconds
  fifo=$STACK_RUN/pause.fifo
  [ -p "$fifo" ] || mkfifo -m 0600 "$fifo"
  # shellcheck disable=SC3045 # busybox ash's read has -t, fractions included
  read -r -t "$1" _ <>"$fifo"
  return 0
}
