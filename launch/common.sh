# shellcheck shell=bash
# Shell helpers shared by the launch scripts (sourced, not run).

die() {
  echo "$(basename "$0"): error: $*" >&2
  exit 1
}

# Prints one word so that a shell reads it back unchanged.
shell_quote() {
  local escaped="'\\''"
  case $1 in
    '' | *[!A-Za-z0-9_./:=@%+,-]*) printf "'%s'" "${1//\'/$escaped}" ;;
    *) printf '%s' "$1" ;;
  esac
}

# Prints the command as one '+ ' line: on stdout for a dry run (DRY_RUN=1), else on stderr.
show() {
  local line='+' word
  for word in "$@"; do
    line+=" $(shell_quote "$word")"
  done
  if [[ $DRY_RUN == 1 ]]; then
    printf '%s\n' "$line"
  else
    printf '%s\n' "$line" >&2
  fi
}

# Prints the command, then runs it unless DRY_RUN=1.
run() {
  show "$@"
  if [[ $DRY_RUN == 0 ]]; then "$@"; fi
}
