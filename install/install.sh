#!/usr/bin/env bash
# Install, upgrade or remove the mPanel agent on Linux: a systemd service, or a cron job where
# systemd does not run. docs/install.md explains every step; `install.sh --help` lists options.
#
#   sudo ./install.sh --url https://panel.example.com --api-key agent_...
#   curl -fsSL https://panel.example.com/downloads/install.sh | sudo bash -s -- --url ... --api-key ...
#
# Everything is defined in functions and `main "$@"` is the last line: when the script is piped
# into bash, bash has then read all of it before anything runs, so no command can swallow the
# rest of the script from stdin.
set -euo pipefail
umask 022

readonly SERVICE=mpanel-agent
readonly DEFAULT_USER=mpanel-agent
# Paths as the installed system sees them; with --root they are prefixed on disk only.
readonly OPT_PATH=/opt/mpanel-agent
readonly ETC_PATH=/etc/mpanel-agent
readonly CONFIG_PATH=/etc/mpanel-agent/config.json
readonly STATE_PATH=/var/lib/mpanel-agent
readonly LOG_PATH=/var/log/mpanel-agent
readonly UNIT_PATH=/etc/systemd/system/mpanel-agent.service
readonly CRON_PATH=/etc/cron.d/mpanel-agent
# Loose checks, before anything is touched; the panel decides whether the key is valid.
readonly KEY_PATTERN='^agent_[A-Za-z0-9_-]+$'
readonly URL_PATTERN='^https?://[][A-Za-z0-9._~:/?#@!$&()*+,;=%-]+$'
readonly SAFE_PATH_PATTERN='^/[A-Za-z0-9_./+-]+$'

# The systemd unit, byte for byte the same as install/mpanel-agent.service (a unit test keeps
# the two equal): the installer has to work when piped from the panel with no file beside it.
# ExecStart, User and Group are rewritten at install time.
IFS= read -r -d '' UNIT_TEMPLATE <<'UNIT' || true
# systemd unit for the mPanel agent. install/install.sh puts agent.py in /opt/mpanel-agent and
# the config in /etc/mpanel-agent/config.json (mode 0600, owned by the agent's user).
# install.sh embeds a copy of this file (tests/unit/test_install_files.py keeps them equal) and
# rewrites ExecStart to the Python it chose, and User/Group to --user.
[Unit]
Description=mPanel monitoring agent
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
User=mpanel-agent
Group=mpanel-agent
# `-m agent` from its folder runs the bytecode compiled at install time: compiling agent.py
# at every start would cost ~3 MB of resident memory for the agent's whole life.
WorkingDirectory=/opt/mpanel-agent
ExecStart=/opt/mpanel-agent/venv/bin/python3 -m agent --config /etc/mpanel-agent/config.json
Restart=always
RestartSec=10
# SIGTERM: the agent saves its state and exits within 2 s.
TimeoutStopSec=15
StateDirectory=mpanel-agent
StateDirectoryMode=0700
LogsDirectory=mpanel-agent

# The agent only reads system statistics and makes outbound HTTPS requests.
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=read-only
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictSUIDSGID=yes
RestrictRealtime=yes
RestrictNamespaces=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
SystemCallArchitectures=native
CapabilityBoundingSet=
AmbientCapabilities=
ReadWritePaths=/var/lib/mpanel-agent /var/log/mpanel-agent
MemoryMax=128M
CPUQuota=20%

[Install]
WantedBy=multi-user.target
UNIT

# Builds config.json from the existing one (upgrade), a config.json shipped beside this script
# (tarball), or defaults; then applies --url/--api-key/--interval. The key arrives on stdin so it
# is never on a command line (visible in ps) and never printed.
# argv: existing template output url interval key_given auto_update (1, 0 or empty: unchanged)
IFS= read -r -d '' RENDER_CONFIG_PY <<'PY' || true
import json, re, sys

existing, template, output, url, interval, key_given, auto_update = sys.argv[1:8]
URL_RE = re.compile(r"https?://[\]\[A-Za-z0-9._~:/?#@!$&()*+,;=%-]+")
KEY_RE = re.compile(r"agent_[A-Za-z0-9_-]+")


def fail(message):
    print("error: " + message, file=sys.stderr)
    sys.exit(2)


source = existing or template
document = {}
if source:
    try:
        with open(source, encoding="utf-8") as handle:
            document = json.load(handle)
    except (OSError, ValueError) as err:
        fail(f"cannot read {source}: {err}")
    if not isinstance(document, dict):
        fail(f"{source} is not a JSON object")
before = json.dumps(document, sort_keys=True)
panel = document.setdefault("controlPanel", {})
agent = document.setdefault("agent", {})
logging = document.setdefault("logging", {})
if not existing:
    agent.setdefault("reportInterval", 60)
    agent.setdefault("stateDir", "/var/lib/mpanel-agent")
    logging.setdefault("level", "info")
    logging.setdefault("file", "/var/log/mpanel-agent/agent.log")
if url:
    panel["url"] = url.rstrip("/")
if key_given == "1":
    panel["apiKey"] = sys.stdin.read()
if interval:
    agent["reportInterval"] = int(interval)
if auto_update:
    agent["autoUpdate"] = auto_update == "1"

where = f" in {source}" if source else ""
if not panel.get("url"):
    fail(f"--url is required (no controlPanel.url{where})")
if not isinstance(panel["url"], str) or not URL_RE.fullmatch(panel["url"]):
    fail(f"controlPanel.url{where} must start with https:// or http:// and hold no spaces "
         "or quotes")
if not panel.get("apiKey"):
    fail(f"--api-key is required (no controlPanel.apiKey{where}); the panel shows the key "
         "once, when the server is added")
if not isinstance(panel["apiKey"], str) or not KEY_RE.fullmatch(panel["apiKey"]):
    fail(f"the API key{where} does not look like an mPanel key (agent_ then letters, digits, "
         "_ or -)")
changed = json.dumps(document, sort_keys=True) != before
if changed or not existing:
    with open(output, "w", encoding="utf-8") as handle:
        json.dump(document, handle, indent=2)
        handle.write("\n")
print("url=" + panel["url"])
print("changed=" + ("1" if changed or not existing else "0"))
PY

# ===== Output and small helpers ================================================================

say() { printf '%s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$1" >&2; exit "${2:-1}"; }

usage_error() {
  printf 'error: %s\n' "$1" >&2
  printf "Run 'install.sh --help' for the options.\n" >&2
  exit 2
}

usage() {
  cat <<'EOF'
Install the mPanel agent (Linux). Re-running it upgrades in place.

  sudo ./install.sh --url https://panel.example.com --api-key agent_...
  curl -fsSL https://panel.example.com/downloads/install.sh | sudo bash -s -- --url URL --api-key KEY

Options (--opt=value and --opt value both work):
  --url URL          the panel's address (https://; http:// only to a loopback panel)
  --api-key KEY      the server's key from the panel (agent_...)
  --interval N       seconds between reports (default 60)
  --auto-update      take the agent upgrades the panel rolls out (off unless given: the panel
                     can then run code of its choosing as the agent's user; docs/security.md)
  --no-auto-update   turn that off again (on an upgrade)
  --user NAME        system user the agent runs as (default mpanel-agent)
  --init KIND        systemd, cron or auto (default: systemd when it is running, else cron)
  --python PATH      Python 3 to run the agent with (or to build its venv from)
  --root DIR         install into DIR (packaging, tests): no systemctl, no host users or packages
  --skip-check       do not run `agent.py --check` against the panel before enabling
  --dry-run          print every action and change nothing (allowed without root)
  --uninstall        remove the service, files and user; keep state and logs
  --purge            with --uninstall: also remove /var/lib/mpanel-agent and the logs
  --help             this text

On an upgrade the existing /etc/mpanel-agent/config.json is kept; only --url, --api-key,
--interval and --auto-update/--no-auto-update given on the command line change it. Without
--url/--api-key they are read from a config.json beside this script (tarball install) or from
the existing config.
Exit codes: 0 done, 1 install failed (nothing left half-installed), 2 bad usage or not root.
EOF
}

# Shell-quoted command line, for --dry-run and messages.
quoted() {
  local out="" arg
  for arg in "$@"; do out+="${out:+ }$(printf '%q' "$arg")"; done
  printf '%s' "$out"
}

# Every change to the system goes through run: --dry-run prints it instead.
run() {
  if [ "$DRY_RUN" -eq 1 ]; then
    say "would: $(quoted "$@")"
    return 0
  fi
  "$@"
}

# ===== Arguments ==============================================================================

API_KEY="" API_KEY_GIVEN=0 URL="" INTERVAL="" USER_NAME="" INIT=auto ROOT="" PYTHON=""
DRY_RUN=0 UNINSTALL=0 PURGE=0 SKIP_CHECK=0 AUTO_UPDATE=""

parse_args() {
  local option value has_value position=0
  while [ $# -gt 0 ]; do
    option=$1 value="" has_value=0 position=$((position + 1))
    case $option in
      --*=*) value=${option#*=} option=${option%%=*} has_value=1 ;;
    esac
    case $option in
      --api-key | --url | --interval | --user | --init | --root | --python)
        if [ "$has_value" -eq 0 ]; then
          [ $# -ge 2 ] || usage_error "$option needs a value"
          value=$2
          shift
        fi
        ;;
      --dry-run | --uninstall | --purge | --skip-check | --auto-update | --no-auto-update | \
        --help | -h)
        [ "$has_value" -eq 0 ] || usage_error "$option takes no value"
        ;;
      --*) usage_error "unknown option $option" ;;
      # Not echoed: a stray argument may well be a key pasted without its option.
      *) usage_error "unexpected argument #$position (options start with --)" ;;
    esac
    case $option in
      --api-key) API_KEY=$value API_KEY_GIVEN=1 ;;
      --url) URL=$value ;;
      --interval) INTERVAL=$value ;;
      --user) USER_NAME=$value ;;
      --init) INIT=$value ;;
      --root) ROOT=$value ;;
      --python) PYTHON=$value ;;
      --dry-run) DRY_RUN=1 ;;
      --uninstall) UNINSTALL=1 ;;
      --purge) PURGE=1 ;;
      --skip-check) SKIP_CHECK=1 ;;
      --auto-update) AUTO_UPDATE=1 ;;
      --no-auto-update) AUTO_UPDATE=0 ;;
      --help | -h) usage; exit 0 ;;
    esac
    shift
  done
}

validate_args() {
  if [ "$API_KEY_GIVEN" -eq 1 ] && ! [[ $API_KEY =~ $KEY_PATTERN ]]; then
    usage_error "the API key does not look like an mPanel key (agent_ then letters, digits, _ or -)"
  fi
  if [ -n "$URL" ] && ! [[ $URL =~ $URL_PATTERN ]]; then
    usage_error "--url must start with https:// or http:// and hold no spaces or quotes"
  fi
  if [ -n "$INTERVAL" ] && ! { [[ $INTERVAL =~ ^[0-9]+$ ]] && [ "$INTERVAL" -ge 1 ] &&
    [ "$INTERVAL" -le 3600 ]; }; then
    usage_error "--interval must be a number of seconds from 1 to 3600"
  fi
  if [ -n "$USER_NAME" ] && ! [[ $USER_NAME =~ ^[a-z_][a-z0-9_-]{0,31}$ ]]; then
    usage_error "--user must be a plain user name (lowercase letters, digits, _ and -)"
  fi
  case $INIT in systemd | cron | auto) ;; *) usage_error "--init must be systemd, cron or auto" ;; esac
  if [ "$PURGE" -eq 1 ] && [ "$UNINSTALL" -eq 0 ]; then
    usage_error "--purge only goes with --uninstall"
  fi
  if [ -n "$ROOT" ]; then
    [ -d "$ROOT" ] || usage_error "--root $ROOT is not a directory"
    ROOT=$(cd "$ROOT" && pwd -P)
    [ "$ROOT" != / ] || ROOT=""
  fi
  if [ -n "$PYTHON" ]; then
    [[ $PYTHON =~ $SAFE_PATH_PATTERN ]] || usage_error "--python needs an absolute path without spaces"
    [ -x "$PYTHON" ] || usage_error "--python $PYTHON is not an executable file"
  fi
}

require_root() {
  [ "$(id -u)" -eq 0 ] && return 0
  [ "$DRY_RUN" -eq 1 ] && return 0
  die "install.sh must run as root: it creates a system user and writes to /etc, /opt and /var.
Run it with sudo, or add --dry-run to see what it would do." 2
}

# ===== Where things go ==========================================================================

set_paths() {
  OPT_DIR=$ROOT$OPT_PATH
  ETC_DIR=$ROOT$ETC_PATH
  CONFIG=$ROOT$CONFIG_PATH
  STATE_DIR=$ROOT$STATE_PATH
  LOG_DIR=$ROOT$LOG_PATH
  UNIT_FILE=$ROOT$UNIT_PATH
  CRON_FILE=$ROOT$CRON_PATH
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/mpanel-install.XXXXXX")
  mkdir "$WORK/backup"
}

# The user named in an installed unit or cron file, so an upgrade or uninstall without --user
# keeps to the user the install chose.
installed_user() {
  local name=""
  if [ -f "$UNIT_FILE" ]; then
    name=$(sed -n 's/^User=//p;T;q' "$UNIT_FILE")
  elif [ -f "$CRON_FILE" ]; then
    name=$(awk '/^[*0-9]/ { print $6; exit }' "$CRON_FILE")
  fi
  printf '%s' "$name"
}

choose_user() {
  [ -n "$USER_NAME" ] || USER_NAME=$(installed_user)
  [ -n "$USER_NAME" ] || USER_NAME=$DEFAULT_USER
}

# ===== Accounts (in ROOT/etc with --root, never the host's) ===================================

account_field() { # account_field passwd|group NAME FIELD -> the field, or status 1
  local database=$1 name=$2 field=$3
  if [ -z "$ROOT" ]; then
    getent "$database" "$name" | cut -d: -f"$field" | grep .
  else
    [ -f "$ROOT/etc/$database" ] || return 1
    awk -F: -v name="$name" -v field="$field" \
      '$1 == name { print $field; found = 1; exit } END { exit !found }' "$ROOT/etc/$database"
  fi
}

prefix_args() { # useradd and friends take --prefix DIR to edit DIR/etc/passwd and /etc/group
  [ -z "$ROOT" ] || printf '%s\n' --prefix "$ROOT"
}

nologin_shell() {
  local shell
  for shell in /usr/sbin/nologin /sbin/nologin; do
    if [ -x "$ROOT$shell" ] || [ -n "$ROOT" ]; then printf '%s' "$shell"; return; fi
  done
  printf '/bin/false'
}

USER_CREATED=0

ensure_user() {
  local prefix=() group_option=(--user-group)
  mapfile -t prefix < <(prefix_args)
  if account_field passwd "$USER_NAME" 3 >/dev/null; then
    say "user $USER_NAME exists"
  else
    command -v useradd >/dev/null || die "useradd is missing (install the passwd/shadow-utils package)"
    if [ -n "$ROOT" ] && [[ $(useradd --help 2>&1 || true) != *--prefix* ]]; then
      die "this useradd has no --prefix option: it cannot create the user inside $ROOT"
    fi
    if account_field group "$USER_NAME" 3 >/dev/null; then group_option=(--gid "$USER_NAME"); fi
    if [ -n "$ROOT" ]; then
      # useradd rewrites passwd, group, shadow and gshadow and leaves `-` backups: saving them
      # lets a failed install put the tree back exactly as it was.
      local file
      for file in passwd group shadow gshadow passwd- group- shadow- gshadow-; do
        remember "$ROOT/etc/$file"
      done
    fi
    say "creating system user $USER_NAME (no login shell, no home)"
    run useradd "${prefix[@]}" --system --no-create-home --home-dir /nonexistent \
      --shell "$(nologin_shell)" "${group_option[@]}" "$USER_NAME"
    USER_CREATED=1
  fi
  if account_field group docker 3 >/dev/null; then
    local members
    members=$(account_field group docker 4 || true)
    if [[ ,$members, != *",$USER_NAME,"* ]]; then
      say "adding $USER_NAME to the docker group: the docker collector reads the Docker socket"
      run usermod "${prefix[@]}" --append --groups docker "$USER_NAME"
    fi
  fi
  if [ "$DRY_RUN" -eq 1 ] && [ "$USER_CREATED" -eq 1 ]; then
    AGENT_UID=$USER_NAME AGENT_GID=$USER_NAME # shown in the printed commands only
  else
    AGENT_UID=$(account_field passwd "$USER_NAME" 3)
    AGENT_GID=$(account_field passwd "$USER_NAME" 4)
  fi
}

remove_user() {
  local prefix=()
  mapfile -t prefix < <(prefix_args)
  if account_field passwd "$USER_NAME" 3 >/dev/null; then
    say "removing user $USER_NAME"
    run userdel "${prefix[@]}" "$USER_NAME"
  fi
  # userdel leaves the user's own group behind when login.defs says so (or is absent, as in
  # a --root tree); it holds nothing else.
  if [ "$DRY_RUN" -eq 0 ] && account_field group "$USER_NAME" 3 >/dev/null; then
    run groupdel "${prefix[@]}" "$USER_NAME"
  fi
}

# ===== Undo: what a failed install puts back ==================================================

CREATED=() # paths that did not exist before this run, removed on failure (newest first)
SAVED=()   # paths that existed and were changed; a copy of each sits in $WORK/backup/<index>
APPLYING=0

remember() { # call before creating or changing a path
  local path=$1 known
  [ "$DRY_RUN" -eq 0 ] || return 0
  for known in ${CREATED[@]+"${CREATED[@]}"} ${SAVED[@]+"${SAVED[@]}"}; do
    [ "$known" != "$path" ] || return 0
  done
  if [ -e "$path" ] || [ -L "$path" ]; then
    cp -a -- "$path" "$WORK/backup/${#SAVED[@]}"
    SAVED+=("$path")
  else
    CREATED+=("$path")
  fi
}

rollback() {
  local index
  say "rolling back: $( [ "$UPGRADE" -eq 1 ] && echo "restoring the previous installation" ||
    echo "removing everything this run created")"
  for ((index = ${#CREATED[@]} - 1; index >= 0; index--)); do
    rm -rf -- "${CREATED[index]}"
  done
  for ((index = ${#SAVED[@]} - 1; index >= 0; index--)); do
    rm -rf -- "${SAVED[index]}"
    cp -a -- "$WORK/backup/$index" "${SAVED[index]}"
  done
  if [ "$USER_CREATED" -eq 1 ] && [ -z "$ROOT" ]; then
    userdel "$USER_NAME" 2>/dev/null || true
    groupdel "$USER_NAME" 2>/dev/null || true
  fi
  if [ "$UPGRADE" -eq 1 ]; then
    say "the previous agent, unit and config are back in place"
  else
    say "nothing was installed"
  fi
}

on_exit() {
  local status=$?
  if [ "$status" -ne 0 ] && [ "$APPLYING" -eq 1 ]; then
    APPLYING=0
    rollback || true
  fi
  [ -z "${WORK:-}" ] || rm -rf -- "$WORK"
  exit "$status"
}

# ===== Files ==================================================================================

DRY_RUN_DIRS=()

# make_dir MODE UID GID DIR: create it (and missing parents, 0755 root) or fix its mode/owner.
make_dir() {
  local mode=$1 uid=$2 gid=$3 dir=$4 top=$4
  if [ -d "$dir" ]; then
    if [ "$(stat -c '%a %u %g' "$dir")" != "${mode#0} $uid $gid" ]; then
      run chown "$uid:$gid" "$dir"
      run chmod "$mode" "$dir"
    fi
    return 0
  fi
  if [ "$DRY_RUN" -eq 1 ]; then # shown once, though it is never made
    local shown
    for shown in ${DRY_RUN_DIRS[@]+"${DRY_RUN_DIRS[@]}"}; do [ "$shown" != "$dir" ] || return 0; done
    DRY_RUN_DIRS+=("$dir")
  fi
  while [ ! -d "$(dirname "$top")" ]; do top=$(dirname "$top"); done
  remember "$top"
  run install -d -m "$mode" -o "$uid" -g "$gid" "$dir"
}

# put_file MODE UID GID DEST SOURCE: copy SOURCE to DEST with that mode and owner.
put_file() {
  remember "$4"
  run install -m "$1" -o "$2" -g "$3" "$5" "$4"
}

remove_path() {
  if [ -e "$1" ] || [ -L "$1" ]; then
    say "removing $1"
    run rm -rf -- "$1"
  fi
}

show_file() { # in --dry-run, what a file would contain
  [ "$DRY_RUN" -eq 1 ] || return 0
  sed 's/^/      | /' "$1"
}

# ===== Sources: agent.py and an optional config.json ==========================================

find_sources() {
  local script=${BASH_SOURCE[0]:-} dir
  AGENT_SOURCE="" CONFIG_TEMPLATE=""
  if [ -n "$script" ] && [ -f "$script" ]; then
    dir=$(cd "$(dirname "$script")" && pwd -P)
    # Beside the script in a tarball; one level up in a checkout of the repository.
    if [ -f "$dir/agent.py" ]; then
      AGENT_SOURCE=$dir/agent.py
    elif [ -f "$dir/../agent.py" ]; then
      AGENT_SOURCE=$(cd "$dir/.." && pwd -P)/agent.py
    fi
    [ ! -f "$dir/config.json" ] || CONFIG_TEMPLATE=$dir/config.json
  fi
}

download() { # download URL FILE, with whatever this system has
  if command -v curl >/dev/null; then
    curl -fsSL --retry 2 --connect-timeout 10 --max-time 120 -o "$2" "$1" </dev/null
  elif command -v wget >/dev/null; then
    wget -q --tries=3 --timeout=30 -O "$2" "$1" </dev/null
  else
    "$BASE_PYTHON" -c 'import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])' \
      "$1" "$2" </dev/null
  fi
}

fetch_agent() {
  if [ -n "$AGENT_SOURCE" ]; then
    say "agent.py: $AGENT_SOURCE"
    return 0
  fi
  local url=$PANEL_URL/downloads/agent.py
  if [ "$DRY_RUN" -eq 1 ]; then
    say "would: download $url"
    AGENT_SOURCE=$url
    return 0
  fi
  say "downloading $url"
  download "$url" "$WORK/agent.py" || die "could not download $url: is --url the panel's address?"
  grep -q '^__version__ = ' "$WORK/agent.py" ||
    die "$url did not return agent.py (is --url the panel's address?)"
  AGENT_SOURCE=$WORK/agent.py
}

agent_version() { sed -n 's/^__version__ = "\(.*\)"$/\1/p;T;q' "$1" 2>/dev/null || true; }

# ===== Python and its packages ================================================================

# What agent.py needs: Python 3.8+, psutil, and urllib3 1.26 or newer (1.26 is what Debian 12,
# Ubuntu 22.04 and RHEL 9 ship; the tests run the agent with both 1.26 and 2).
readonly REQUIREMENTS_PROBE='import sys, psutil, urllib3
version = tuple(int(part) for part in urllib3.__version__.split(".")[:2])
sys.exit(sys.version_info < (3, 8) or version < (1, 26))'

has_packages() { "$1" -c "$REQUIREMENTS_PROBE" >/dev/null 2>&1 </dev/null; }

find_base_python() {
  local candidate
  BASE_PYTHON=""
  for candidate in "$PYTHON" /usr/bin/python3 "$(command -v python3 || true)"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ]; then BASE_PYTHON=$candidate; return 0; fi
  done
  if [ -z "$ROOT" ] && install_os_packages python3; then
    BASE_PYTHON=/usr/bin/python3
    [ "$DRY_RUN" -eq 1 ] || [ -x "$BASE_PYTHON" ] || die "python3 is still missing"
    return 0
  fi
  die "Python 3 is required: install python3 (3.8 or newer) and run this again"
}

install_os_packages() { # apt or dnf install of these packages; status 1 when there is neither
  if command -v apt-get >/dev/null; then
    say "installing Debian packages: $*"
    if ! run env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "$@" </dev/null >/dev/null; then
      run apt-get update -qq </dev/null
      run env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "$@" </dev/null >/dev/null
    fi
  elif command -v dnf >/dev/null; then
    say "installing packages: $*"
    run dnf install -y -q "$@" </dev/null >/dev/null
  else
    return 1
  fi
}

# The version of urllib3 the distribution would install, without installing it.
distribution_urllib3() {
  if command -v apt-cache >/dev/null; then
    apt-cache policy python3-urllib3 2>/dev/null </dev/null | sed -n 's/^ *Candidate: //p;T;q'
  elif command -v dnf >/dev/null; then
    dnf -q repoquery --latest-limit=1 --qf '%{version}\n' python3-urllib3 2>/dev/null </dev/null |
      sed -n '1p'
  fi
}

# The interpreter the agent runs with: --python when it has the packages; else a venv kept from
# an earlier install; else the system's python3 when it has them, or gets them from the
# distribution's packages (not with --root: the host's packages are not the tree's); else a
# private venv with psutil and urllib3 from PyPI, built from --python or the system's python3.
choose_python() {
  local venv=$OPT_DIR/venv distribution
  if [ -n "$PYTHON" ] && has_packages "$PYTHON"; then
    AGENT_PYTHON=$PYTHON
  elif [ -z "$PYTHON" ] && [ -x "$venv/bin/python3" ] && has_packages "$venv/bin/python3"; then
    AGENT_PYTHON=$venv/bin/python3
  elif [ -z "$PYTHON" ] && has_packages "$BASE_PYTHON"; then
    AGENT_PYTHON=$BASE_PYTHON
  else
    distribution=""
    [ -n "$PYTHON" ] || [ -n "$ROOT" ] || distribution=$(distribution_urllib3 || true)
    if [[ $distribution =~ ^([0-9]+:)?(1\.26\.|[2-9]\.) ]] &&
      install_os_packages python3-psutil python3-urllib3 &&
      { [ "$DRY_RUN" -eq 1 ] || has_packages "$BASE_PYTHON"; }; then
      AGENT_PYTHON=$BASE_PYTHON
    else
      [ -z "$distribution" ] || [ "$distribution" = "(none)" ] ||
        say "the distribution's urllib3 is $distribution; the agent needs urllib3 1.26 or newer"
      make_venv "$venv"
    fi
  fi
  # What systemd and cron will run: the same file, seen from inside the installed system.
  AGENT_PYTHON_TARGET=${AGENT_PYTHON#"$ROOT"}
  [[ $AGENT_PYTHON_TARGET =~ $SAFE_PATH_PATTERN ]] ||
    die "the Python path $AGENT_PYTHON_TARGET has characters a unit file cannot hold"
  say "python: $AGENT_PYTHON_TARGET"
}

make_venv() {
  local venv=$1
  say "psutil and urllib3: a private venv in $OPT_PATH/venv, from PyPI"
  make_dir 0755 0 0 "$OPT_DIR"
  remember "$venv"
  if ! run "$BASE_PYTHON" -m venv "$venv" </dev/null; then
    # Debian and Ubuntu ship venv's pip bootstrap in a package of its own.
    if [ -n "$ROOT" ] || ! install_os_packages python3-venv; then
      die "could not create a venv with $BASE_PYTHON"
    fi
    rm -rf -- "$venv"
    run "$BASE_PYTHON" -m venv "$venv" </dev/null
  fi
  run "$venv/bin/python3" -m pip install --quiet --disable-pip-version-check psutil 'urllib3>=1.26' \
    </dev/null || die "pip could not install psutil and urllib3 into $venv"
  AGENT_PYTHON=$venv/bin/python3
  [ "$DRY_RUN" -eq 1 ] || has_packages "$AGENT_PYTHON" ||
    die "$venv has no working psutil and urllib3 (is $BASE_PYTHON 3.8 or newer?)"
}

# ===== Config =================================================================================

render_config() {
  local existing="" template="" output
  if [ "$UPGRADE" -eq 1 ]; then
    existing=$CONFIG
    if [ ! -r "$CONFIG" ]; then # --dry-run as a user who cannot read it
      say "upgrade: $CONFIG_PATH is kept (not readable here, so not checked)"
      CONFIG_CHANGED=0 PANEL_URL=$URL
      return 0
    fi
  else
    template=$CONFIG_TEMPLATE
  fi
  output=$(
    umask 077
    printf '%s' "$API_KEY" |
      "$BASE_PYTHON" -c "$RENDER_CONFIG_PY" "$existing" "$template" "$WORK/config.json" \
        "$URL" "$INTERVAL" "$API_KEY_GIVEN" "$AUTO_UPDATE"
  ) || exit 2
  PANEL_URL=$(sed -n 's/^url=//p' <<<"$output")
  CONFIG_CHANGED=$(sed -n 's/^changed=//p' <<<"$output")
  if [ "$UPGRADE" -eq 1 ]; then
    if [ "$CONFIG_CHANGED" -eq 1 ]; then
      say "upgrade: updating $CONFIG_PATH with the --url/--api-key/--interval given"
    else
      say "upgrade: keeping $CONFIG_PATH as it is (only --url, --api-key or --interval change it)"
    fi
  elif [ -n "$template" ]; then
    say "config: from $template"
  fi
}

# ===== Init system ============================================================================

systemd_running() { [ -z "$ROOT" ] && [ -d /run/systemd/system ]; }

choose_init() {
  if [ "$INIT" = auto ]; then
    # A --root tree is a system being built, not this one: it gets the unit.
    if [ -n "$ROOT" ] || systemd_running; then INIT=systemd; else INIT=cron; fi
  fi
  say "service: $INIT"
}

render_unit() {
  local line
  while IFS= read -r line; do
    case $line in
      ExecStart=*) printf 'ExecStart=%s -m agent --config %s\n' "$AGENT_PYTHON_TARGET" "$CONFIG_PATH" ;;
      User=*) printf 'User=%s\n' "$USER_NAME" ;;
      Group=*) printf 'Group=%s\n' "$USER_NAME" ;;
      *) printf '%s\n' "$line" ;;
    esac
  done <<<"${UNIT_TEMPLATE%$'\n'}"
}

render_cron() {
  local runner
  # flock -n: a run still going (slow panel, long retry) makes the next minute's run skip, so
  # runs never overlap. Without flock, timeout keeps each run inside its minute instead.
  if command -v flock >/dev/null || [ -x "$ROOT/usr/bin/flock" ]; then
    runner="flock -n $STATE_PATH/cron.lock"
  else
    runner="timeout 55"
    warn "flock (util-linux) is missing: each cron run is cut at 55 s instead, so runs do not overlap"
  fi
  cat <<EOF
# mPanel agent, installed by install.sh where systemd does not run: one sample a minute.
# Output goes to /dev/null: the agent logs to $LOG_PATH/agent.log itself (rotated); run the
# command by hand as $USER_NAME to see errors.
SHELL=/bin/sh
PATH=/usr/sbin:/usr/bin:/sbin:/bin
* * * * * $USER_NAME cd $OPT_PATH && $runner $AGENT_PYTHON_TARGET -m agent --config $CONFIG_PATH --once >/dev/null 2>&1
EOF
}

# ===== The check ==============================================================================

# As the agent's user, so a config or a Python it cannot read fails here, not in the service.
as_agent_user() {
  if command -v setpriv >/dev/null; then
    local groups=--clear-groups
    [ -n "$ROOT" ] || groups=--init-groups
    setpriv --reuid="$AGENT_UID" --regid="$AGENT_GID" "$groups" -- "$@"
  elif [ -z "$ROOT" ] && command -v runuser >/dev/null; then
    runuser -u "$USER_NAME" -- "$@"
  else
    "$BASE_PYTHON" -c 'import os, sys
os.setgroups([]); os.setgid(int(sys.argv[2])); os.setuid(int(sys.argv[1]))
os.execvp(sys.argv[3], sys.argv[3:])' "$AGENT_UID" "$AGENT_GID" "$@"
  fi
}

check_agent() {
  if [ "$SKIP_CHECK" -eq 1 ]; then
    say "skipping the check against the panel (--skip-check)"
    return 0
  fi
  if [ "$DRY_RUN" -eq 1 ]; then
    say "would: run '$AGENT_PYTHON_TARGET -m agent --config $CONFIG_PATH --check' as $USER_NAME"
    return 0
  fi
  say "checking that $PANEL_URL answers and accepts the key (agent.py --check as $USER_NAME)"
  # A clean environment, like the service's; with --root the tree's state and log folders.
  local environment=(env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8)
  if [ -n "$ROOT" ]; then
    environment+=("MPANEL_AGENT_STATE_DIR=$STATE_DIR" "MPANEL_AGENT_LOG_FILE=$LOG_DIR/agent.log")
  fi
  local output status=0
  output=$(cd "$OPT_DIR" && as_agent_user "${environment[@]}" "$AGENT_PYTHON" -m agent \
    --config "$CONFIG" --check 2>&1 </dev/null) || status=$?
  if [ "$status" -ne 0 ]; then
    printf '%s\n' "$output" | sed 's/^/  agent: /' >&2
    die "the agent's check failed (exit $status): fix the URL or key above, or the panel, and run this again"
  fi
  printf '%s\n' "$output" | sed 's/^/  agent: /'
}

# ===== Install and upgrade ====================================================================

install_agent() {
  UPGRADE=0
  [ ! -f "$CONFIG" ] || UPGRADE=1
  find_sources
  find_base_python
  render_config
  fetch_agent
  local new_version old_version=""
  new_version=$(agent_version "$AGENT_SOURCE" || true)
  [ ! -f "$OPT_DIR/agent.py" ] || old_version=$(agent_version "$OPT_DIR/agent.py")
  if [ "$UPGRADE" -eq 1 ]; then
    say "upgrading the mPanel agent ${old_version:-?} -> ${new_version:-?}${ROOT:+ in $ROOT}"
  else
    say "installing the mPanel agent ${new_version:-?}${ROOT:+ in $ROOT}"
  fi
  choose_init

  [ "$DRY_RUN" -eq 1 ] || APPLYING=1
  ensure_user
  choose_python

  make_dir 0755 0 0 "$OPT_DIR"
  put_file 0644 0 0 "$OPT_DIR/agent.py" "$AGENT_SOURCE"
  remember "$OPT_DIR/__pycache__"
  run "$AGENT_PYTHON" -c 'import py_compile, sys; py_compile.compile(sys.argv[1], doraise=True)' \
    "$OPT_DIR/agent.py" </dev/null

  make_dir 0750 0 "$AGENT_GID" "$ETC_DIR"
  if [ "$CONFIG_CHANGED" -eq 1 ]; then
    if [ "$DRY_RUN" -eq 1 ]; then
      say "would: write $CONFIG_PATH (mode 0600, owner $USER_NAME; the key is not shown)"
    else
      put_file 0600 "$AGENT_UID" "$AGENT_GID" "$CONFIG" "$WORK/config.json"
    fi
  elif [ "$(stat -c '%a %u %g' "$CONFIG" 2>/dev/null)" != "600 $AGENT_UID $AGENT_GID" ]; then
    run chown "$AGENT_UID:$AGENT_GID" "$CONFIG"
    run chmod 0600 "$CONFIG"
  fi

  make_dir 0700 "$AGENT_UID" "$AGENT_GID" "$STATE_DIR"
  make_dir 0750 "$AGENT_UID" "$AGENT_GID" "$LOG_DIR"
  # A reinstall after --uninstall may give the user another uid: its kept state must follow.
  if [ -n "$(find "$STATE_DIR" "$LOG_DIR" -mindepth 1 \( ! -uid "$AGENT_UID" -o ! -gid \
    "$AGENT_GID" \) -print -quit 2>/dev/null)" ]; then
    run chown -R "$AGENT_UID:$AGENT_GID" "$STATE_DIR" "$LOG_DIR"
  fi

  if [ "$INIT" = systemd ]; then
    render_unit >"$WORK/unit"
    make_dir 0755 0 0 "$(dirname "$UNIT_FILE")"
    put_file 0644 0 0 "$UNIT_FILE" "$WORK/unit"
    show_file "$WORK/unit"
  else
    render_cron >"$WORK/cron"
    make_dir 0755 0 0 "$(dirname "$CRON_FILE")"
    put_file 0644 0 0 "$CRON_FILE" "$WORK/cron"
    show_file "$WORK/cron"
  fi

  check_agent
  APPLYING=0
  activate
}

# Past the check: switch the service on (and the other kind off, if an earlier install used it).
activate() {
  if [ "$INIT" = systemd ]; then
    remove_path "$CRON_FILE"
    if [ -n "$ROOT" ]; then
      say "--root: the unit is in place; systemctl is not run for $ROOT"
    elif ! systemd_running; then
      warn "systemd is not running here: the unit is installed but not started"
    else
      run systemctl daemon-reload
      run systemctl enable --quiet "$SERVICE"
      run systemctl restart "$SERVICE"
    fi
  else
    if [ -f "$UNIT_FILE" ]; then
      if systemd_running; then run systemctl disable --now --quiet "$SERVICE" || true; fi
      remove_path "$UNIT_FILE"
      if systemd_running; then run systemctl daemon-reload || true; fi
    fi
    say "no systemd: cron runs the agent once a minute ($CRON_PATH, as $USER_NAME)"
    if [ -z "$ROOT" ] && ! command -v cron >/dev/null && ! command -v crond >/dev/null; then
      warn "no cron daemon found: install cron (or cronie) or the agent will not run"
    fi
  fi
  finish_message
}

finish_message() {
  [ "$DRY_RUN" -eq 0 ] || { say "dry run: nothing was changed"; return 0; }
  say ""
  say "The mPanel agent is installed${ROOT:+ in $ROOT}; it reports to $PANEL_URL."
  if [ "$INIT" = systemd ]; then
    say "  systemctl status $SERVICE"
    say "  journalctl -u $SERVICE -f"
  else
    say "  cat $CRON_PATH"
  fi
  say "  tail -f $LOG_PATH/agent.log"
  say "Config: $CONFIG_PATH (mode 0600). Re-run this script to upgrade; --uninstall removes it."
}

# ===== Uninstall ==============================================================================

uninstall_agent() {
  UPGRADE=0
  if [ -f "$UNIT_FILE" ]; then
    if systemd_running; then
      run systemctl disable --now --quiet "$SERVICE" || warn "systemctl could not stop $SERVICE"
    fi
    remove_path "$UNIT_FILE"
    if systemd_running; then run systemctl daemon-reload; fi
  fi
  remove_path "$CRON_FILE"
  remove_path "$OPT_DIR"
  remove_path "$ETC_DIR"
  remove_user
  if [ "$PURGE" -eq 1 ]; then
    remove_path "$STATE_DIR"
    remove_path "$LOG_DIR"
  else
    local kept
    for kept in "$STATE_DIR" "$LOG_DIR"; do
      [ ! -e "$kept" ] || say "keeping $kept (--purge removes it)"
    done
  fi
  if [ "$DRY_RUN" -eq 1 ]; then say "dry run: nothing was changed"; else say "the mPanel agent is uninstalled"; fi
}

main() {
  parse_args "$@"
  require_root
  validate_args
  trap on_exit EXIT
  trap 'exit 130' INT TERM
  set_paths
  choose_user
  if [ "$UNINSTALL" -eq 1 ]; then
    uninstall_agent
  else
    install_agent
  fi
}

main "$@"
