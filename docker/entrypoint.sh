#!/usr/bin/env bash
# The app container's entrypoint, and the launcher of every supervisord program (supervisord.conf runs each
# program through it), so that a program restarted by rotate-secrets starts with the rotated secrets.
#
#   entrypoint.sh COMMAND [ARGS...]
#
# Loads the rotated env file when there is one (strictly parsed, never executed as shell), mints a CRON_SECRET
# only when none is set, exports the names the stack server reads (secrets and public URLs), then execs COMMAND.
set -euo pipefail

lib_dir="${STACK_EMULATOR_LIB:-/usr/local/lib/stack-emulator}"
# shellcheck source-path=SCRIPTDIR source=lib/secret-input.sh
. "$lib_dir/secret-input.sh"

env_file="${STACK_ROTATED_ENV_FILE:-/var/lib/stack-auth/rotated-secrets.env}"

if [ "$#" -eq 0 ]; then
  echo "entrypoint: usage: entrypoint.sh COMMAND [ARGS...]" >&2
  exit 64
fi

if [ -e "$env_file" ]; then
  secrets_parse "entrypoint: $env_file" <"$env_file" ||
    {
      echo "entrypoint: refusing to start with a damaged $env_file; run rotate-secrets again or delete it" >&2
      exit 1
    }
  for key in "${SECRET_KEYS[@]}"; do export "$key=${SECRETS[$key]}"; done
fi

# The container is created with a CRON_SECRET (the placeholder, in snapshot images); a container started
# without one still gets a private value instead of running the cron routes unauthenticated.
if [ -z "${CRON_SECRET:-}" ]; then
  CRON_SECRET="$(secrets_random_value)"
  export CRON_SECRET
fi

# The contract's names (guest/cloud-init, the host) mapped to the names the stack server reads.
aliases=(
  STACK_PUBLISHABLE_CLIENT_KEY:NEXT_PUBLIC_STACK_PUBLISHABLE_CLIENT_KEY
  STACK_PUBLISHABLE_CLIENT_KEY:STACK_SEED_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY
  STACK_SECRET_SERVER_KEY:STACK_SEED_INTERNAL_PROJECT_SECRET_SERVER_KEY
  STACK_SUPER_SECRET_ADMIN_KEY:STACK_SEED_INTERNAL_PROJECT_SUPER_SECRET_ADMIN_KEY
  STACK_BACKEND_URL:NEXT_PUBLIC_STACK_API_URL
  STACK_BACKEND_URL:NEXT_PUBLIC_BROWSER_STACK_API_URL
  STACK_DASHBOARD_URL:NEXT_PUBLIC_STACK_DASHBOARD_URL
  STACK_DASHBOARD_URL:NEXT_PUBLIC_BROWSER_STACK_DASHBOARD_URL
)
for pair in "${aliases[@]}"; do
  from="${pair%%:*}"
  if [ -n "${!from:-}" ]; then export "${pair#*:}=${!from}"; fi
done

exec "$@"
