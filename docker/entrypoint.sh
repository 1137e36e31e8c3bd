#!/usr/bin/env bash
# The app container's entrypoint, and the launcher of every supervisord program (supervisord.conf runs each
# program through it), so that a program restarted by rotate-secrets starts with the rotated secrets.
#
#   entrypoint.sh COMMAND [ARGS...]
#
# Loads the rotated env file when there is one (strictly parsed, never executed as shell), mints a CRON_SECRET
# only when none is set, sets the names the stack server's processes read the internal project's keys by from the
# seed names (as the server's own entrypoint does), then execs COMMAND.
set -euo pipefail

lib_dir="${STACK_EMULATOR_LIB:-/usr/local/lib/stack-emulator}"
# shellcheck source-path=SCRIPTDIR source=lib/secret-input.sh
. "$lib_dir/secret-input.sh"

env_file="${STACK_ROTATED_ENV_FILE:-/run/stack-auth/rotated-secrets.env}"

if [ "$#" -eq 0 ]; then
  echo "entrypoint: usage: entrypoint.sh COMMAND [ARGS...]" >&2
  exit 64
fi

if [ -e "$env_file" ]; then
  secrets_parse "entrypoint: $env_file" --mirrored <"$env_file" ||
    {
      echo "entrypoint: refusing to start with a damaged $env_file; run rotate-secrets again or delete it" >&2
      exit 1
    }
  for key in "${!SECRETS[@]}"; do export "$key=${SECRETS[$key]}"; done
fi

# The container is created with a CRON_SECRET (the placeholder, in snapshot images); a container started
# without one still gets a private value instead of running the cron routes unauthenticated.
if [ -z "${CRON_SECRET:-}" ]; then
  CRON_SECRET="$(secrets_random_value)"
  export CRON_SECRET
fi

# base.env sets the mirrors to development values; the seed names are the ones in force.
for pair in "${MIRRORED_KEYS[@]}"; do
  source_name="${pair#*=}"
  if [ -n "${!source_name:-}" ]; then export "${pair%%=*}=${!source_name}"; fi
done

exec "$@"
