#!/usr/bin/env bash
# Secret input shared by rotate-secrets and the entrypoint (in the app container) and by trigger-fast-rotate
# (in the guest), so that both sides of the hand-off accept exactly the same input. Source it; do not run it.
#
# Input format (docs/guest-contract.md, section 2): `KEY=value` lines, one per name of SECRET_KEYS, each present
# exactly once, each value 64 hex characters (either case, as the original's rotate-secrets accepts). Empty lines
# are ignored; lines may end in CRLF. Values are never echoed: they are secrets, and a bad value may be an attempt to
# inject something into a terminal or a log.

SECRET_KEYS=(
  STACK_SEED_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY
  STACK_SEED_INTERNAL_PROJECT_SECRET_SERVER_KEY
  STACK_SEED_INTERNAL_PROJECT_SUPER_SECRET_ADMIN_KEY
  CRON_SECRET
)
# The names the app's processes read the internal project's keys by (the stack server's entrypoint derives them from
# the seed names at start), as MIRROR=SOURCE. The rotated env file carries them too, as the original's does, so that
# a program restarted with that file agrees with itself whichever name it reads.
MIRRORED_KEYS=(
  NEXT_PUBLIC_STACK_PUBLISHABLE_CLIENT_KEY=STACK_SEED_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY
  STACK_SECRET_SERVER_KEY=STACK_SEED_INTERNAL_PROJECT_SECRET_SERVER_KEY
  STACK_SUPER_SECRET_ADMIN_KEY=STACK_SEED_INTERNAL_PROJECT_SUPER_SECRET_ADMIN_KEY
)
declare -gA SECRETS=()

# Reads KEY=value lines from stdin into SECRETS. With --mirrored (the rotated env file) the MIRRORED_KEYS are expected
# as well, each equal to its source. Prints every problem found (prefixed with $1) to stderr and returns 1 when there
# is any; SECRETS is then empty, so a caller cannot act on half-valid input.
secrets_parse() {
  local who="$1" mirrored="${2:-}" line key value pair lineno=0 errors=0
  local -a expected=("${SECRET_KEYS[@]}")
  if [ "$mirrored" = --mirrored ]; then
    for pair in "${MIRRORED_KEYS[@]}"; do expected+=("${pair%%=*}"); done
  fi
  SECRETS=()
  while IFS= read -r line || [ -n "$line" ]; do
    lineno=$((lineno + 1))
    # CRLF is tolerated, as by the dev image, so a host on any OS can send the same text to either image.
    line="${line%$'\r'}"
    [ -z "$line" ] && continue
    if [[ ! $line =~ ^([A-Z][A-Z0-9_]{0,63})=(.*)$ ]]; then
      printf '%s: line %d: expected KEY=value with an upper-case KEY\n' "$who" "$lineno" >&2
      errors=$((errors + 1))
      continue
    fi
    key="${BASH_REMATCH[1]}"
    value="${BASH_REMATCH[2]}"
    if [[ " ${expected[*]} " != *" $key "* ]]; then
      printf '%s: line %d: unknown key %s (expected: %s)\n' "$who" "$lineno" "$key" "${expected[*]}" >&2
      errors=$((errors + 1))
    elif [ -n "${SECRETS[$key]+set}" ]; then
      printf '%s: line %d: %s is given twice\n' "$who" "$lineno" "$key" >&2
      errors=$((errors + 1))
    elif ! secrets_is_value "$value"; then
      printf '%s: line %d: %s must be exactly 64 hex characters (0-9, a-f, A-F)\n' "$who" "$lineno" "$key" >&2
      errors=$((errors + 1))
      SECRETS[$key]=""
    else
      SECRETS[$key]="$value"
    fi
  done
  for key in "${expected[@]}"; do
    if [ -z "${SECRETS[$key]+set}" ]; then
      printf '%s: %s is missing\n' "$who" "$key" >&2
      errors=$((errors + 1))
    fi
  done
  if [ "$mirrored" = --mirrored ] && [ "$errors" -eq 0 ]; then
    for pair in "${MIRRORED_KEYS[@]}"; do
      if [ "${SECRETS[${pair%%=*}]}" != "${SECRETS[${pair#*=}]}" ]; then
        printf '%s: %s differs from %s\n' "$who" "${pair%%=*}" "${pair#*=}" >&2
        errors=$((errors + 1))
      fi
    done
  fi
  if [ "$errors" -gt 0 ]; then
    SECRETS=()
    return 1
  fi
}

secrets_is_value() {
  [[ $1 =~ ^[0-9a-fA-F]{64}$ ]]
}

# The canonical text of SECRETS, in SECRETS_TEXT: fixed key order, one KEY=value line each, so equal secrets always
# give byte-identical files. A variable rather than output, so that callers need no subshell.
secrets_render() {
  local key
  SECRETS_TEXT=""
  for key in "${SECRET_KEYS[@]}"; do SECRETS_TEXT+="$key=${SECRETS[$key]}"$'\n'; done
}

# The same followed by the MIRRORED_KEYS: the rotated env file.
secrets_render_mirrored() {
  local pair
  secrets_render
  for pair in "${MIRRORED_KEYS[@]}"; do SECRETS_TEXT+="${pair%%=*}=${SECRETS[${pair#*=}]}"$'\n'; done
}

secrets_random_value() {
  od -An -N32 -tx1 /dev/urandom | tr -d ' \n'
}

# Writes $2 to the file $1 with mode 0600, atomically: readers see the old file or the new one, never a partial
# one, and the secret is never readable by others, not even for a moment. Sets the shell's umask to 077, which
# every caller runs with anyway. Builtins but one `mv` (and `mkdir` for a missing directory): each process
# started costs tens of milliseconds in a guest just resumed from a snapshot.
write_private_file() {
  local dest="$1" text="$2" dir tmp
  local - # the noclobber below ends with this function
  [[ $dest == */* ]] || dest="./$dest"
  dir="${dest%/*}"
  [ -d "$dir" ] || mkdir -p -- "$dir" || return 1
  umask 077
  # noclobber opens with O_EXCL: the temp file is always new, never one somebody else prepared.
  set -o noclobber
  tmp="$dir/.${dest##*/}.$$.$RANDOM$RANDOM"
  : >"$tmp" || return 1
  if ! printf '%s' "$text" >|"$tmp" || ! mv -f -- "$tmp" "$dest"; then
    rm -f -- "$tmp"
    return 1
  fi
}
