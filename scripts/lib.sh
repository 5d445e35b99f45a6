# shellcheck shell=bash
# Sourced by the scripts in this directory: the repository root, and cargo-style status lines on stderr
# (a verb right-aligned to 12 columns, bold green on a terminal), so stdout stays free for data.

# shellcheck disable=SC2034 # used by the scripts that source this file
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ -t 2 && -z ${NO_COLOR:-} ]]; then
    _GREEN=$'\e[1;32m' _YELLOW=$'\e[1;33m' _RED=$'\e[1;31m' _CYAN=$'\e[1;36m' _RESET=$'\e[0m'
else
    _GREEN='' _YELLOW='' _RED='' _CYAN='' _RESET=''
fi

# status VERB message...
status() { printf '%s%12s%s %s\n' "$_GREEN" "$1" "$_RESET" "${*:2}" >&2; }
# header message...: a step of a longer run (scripts/test, scripts/demo)
header() { printf '\n%s==>%s %s\n' "$_CYAN" "$_RESET" "$*" >&2; }
warn() { printf '%swarning%s: %s\n' "$_YELLOW" "$_RESET" "$*" >&2; }
error() { printf '%serror%s: %s\n' "$_RED" "$_RESET" "$*" >&2; }
die() { error "$@"; exit 1; }
