# Shared by the guest scripts (sourced, busybox sh): the dev image's paths and helpers. The names mirror the real
# image's guest side (docs/guest-contract.md): the config disk at /mnt/stack-runtime, the app's env at
# /run/stack-auth/local-emulator.env, the rotated secrets at /run/stack-auth/rotated-secrets.env.
# shellcheck shell=sh
# shellcheck disable=SC2034 # the variables are used by the scripts that source this file
STACK_RUN=/run/stack
RUNTIME_MOUNT=/mnt/stack-runtime
APP_ENV=/run/stack-auth/local-emulator.env
ROTATED_ENV=/run/stack-auth/rotated-secrets.env
APP_LOG=/var/log/stack.log
PLACEHOLDERS=/etc/stack/placeholder-secrets.env
KV_DIR=/data/kv
# Projects made by POST /api/v1/internal/local-emulator/project: <id>/keys.env and <id>/path, by-path/<hash> -> <id>.
PROJECTS_DIR=/data/projects
# The project the four rotated secrets belong to.
INTERNAL_PROJECT_ID=internal
HOST_MOUNT=/host
SECRET_NAMES="STACK_SEED_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY STACK_SEED_INTERNAL_PROJECT_SECRET_SERVER_KEY STACK_SEED_INTERNAL_PROJECT_SUPER_SECRET_ADMIN_KEY CRON_SECRET"
# Ports that do not depend on the prefix: MinIO and Inbucket, as in the real image.
MINIO_PORT=9090
INBUCKET_PORT=9001

# Messages go to the app's log (journalctl -u stack.service shows it) and the serial console, not to the caller's
# output (a guest-exec's stderr is its error report); never secret values.
log() {
  echo "stack: $*" >>"$APP_LOG"
  echo "stack: $*" >/dev/console 2>/dev/null
}

# The rendered env, then the rotated secrets over it: what the app runs with. Sets BACKEND_PORT, DASHBOARD_PORT,
# STACK_EMULATOR_PORT_PREFIX, the four secrets and the rest of the app's settings in the calling shell.
load_app_env() {
  [ -r "$APP_ENV" ] || return 1
  # shellcheck source=/dev/null
  . "$APP_ENV"
  # shellcheck source=/dev/null
  [ -r "$ROTATED_ENV" ] && . "$ROTATED_ENV"
  return 0
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
