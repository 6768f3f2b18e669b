# shellcheck shell=bash
# Sourced by tests/debian/*.sh and tests/vm/run.sh: the cache and a private
# apt view of any Debian suite.
#
# Other suites are reached only through apt's -o Dir::* options pointing at
# files under the cache: /etc/apt is never edited and nothing from another
# suite is installed into the host.  Mirrors may serve Release files past
# their Valid-Until; that check is off (the signatures are still checked).
#
#   MMAPDEV_CACHE          cache root (default ~/.cache/pymmapdev, or under
#                          $XDG_CACHE_HOME)
#   MMAPDEV_DEBIAN_MIRROR  default http://deb.debian.org/debian
#   MMAPDEV_APT_MAX_AGE    seconds a private package list stays fresh (6 h)

MMAPDEV_CACHE=${MMAPDEV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pymmapdev}
DEBIAN_MIRROR=${MMAPDEV_DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBIAN_SUITES=(bullseye bookworm bookworm-backports trixie sid experimental)

debian_log() { printf '%s: %s\n' "${DEBIAN_LOG_TAG:-debian}" "$*" >&2; }
debian_die() { debian_log "FAIL: $*"; exit 1; }

debian_check_suite() {
	local s
	for s in "${DEBIAN_SUITES[@]}"; do
		[[ $1 == "$s" ]] && return 0
	done
	debian_die "unknown suite '$1' (one of: ${DEBIAN_SUITES[*]})"
}

# The suite whose chroot has the toolchain and libc of SUITE's kernel
# packages: backports are built for their base suite, experimental for sid.
debian_base_suite() {
	case $1 in
	bookworm-backports) echo bookworm ;;
	experimental) echo sid ;;
	*) echo "$1" ;;
	esac
}

# sources.list lines of SUITE's private view: overlay suites need their base.
debian_sources() {
	local base
	base=$(debian_base_suite "$1")
	echo "deb $DEBIAN_MIRROR $base main"
	[[ $base == "$1" ]] || echo "deb $DEBIAN_MIRROR $1 main"
}

debian_apt_dir() { echo "$MMAPDEV_CACHE/apt/$1"; }

# apt's options for SUITE's private view.  An empty dpkg status: what the
# host has installed must not influence what we resolve for another suite.
debian_apt_opts() {
	local d
	d=$(debian_apt_dir "$1")
	printf '%s\n' -o "Dir::Etc::SourceList=$d/sources.list" \
		-o Dir::Etc::SourceParts=/dev/null \
		-o "Dir::State=$d/state" -o "Dir::State::Lists=$d/lists" \
		-o "Dir::State::status=$d/status" -o "Dir::Cache=$d/cache" \
		-o Acquire::Check-Valid-Until=false -o APT::Architecture=amd64 \
		-o Debug::NoLocking=1 -o APT::Sandbox::User=root
}

# Refreshes SUITE's package lists when missing or older than MMAPDEV_APT_MAX_AGE.
debian_apt_update() {
	local d stamp age opts
	d=$(debian_apt_dir "$1")
	stamp=$d/updated
	mkdir -p "$d/lists/partial" "$d/state" "$d/cache/archives/partial"
	debian_sources "$1" >"$d/sources.list.new"
	if ! cmp -s "$d/sources.list.new" "$d/sources.list"; then
		mv "$d/sources.list.new" "$d/sources.list"
		rm -f "$stamp"
	else
		rm -f "$d/sources.list.new"
	fi
	: >>"$d/status"
	if [[ -e $stamp ]]; then
		age=$(($(date +%s) - $(stat -c %Y "$stamp")))
		((age < ${MMAPDEV_APT_MAX_AGE:-21600})) && return 0
	fi
	mapfile -t opts < <(debian_apt_opts "$1")
	debian_log "updating the package lists of $1"
	apt-get -q "${opts[@]}" update >"$d/update.log" 2>&1 || {
		cat "$d/update.log" >&2
		debian_die "apt-get update of $1 ($DEBIAN_MIRROR) failed"
	}
	touch "$stamp"
}

# apt-get / apt-cache in SUITE's private view (after debian_apt_update).
debian_apt_get() {
	local suite=$1 opts
	shift
	mapfile -t opts < <(debian_apt_opts "$suite")
	apt-get -q "${opts[@]}" "$@"
}

debian_apt_cache() {
	local suite=$1 opts
	shift
	mapfile -t opts < <(debian_apt_opts "$suite")
	apt-cache "${opts[@]}" "$@"
}

# The version of PACKAGE that SUITE itself carries (not its base suite's).
debian_version_in() {
	local suite=$1 pkg=$2
	debian_apt_cache "$suite" madison "$pkg" |
		awk -F' *[|] *' -v s="$suite/main" '$3 ~ (" " s " ") { print $2; exit }'
}

# Installs host packages (the host's own suite, through its own apt) that
# are missing.
debian_host_install() {
	local missing=() pkg sudo=()
	for pkg in "$@"; do
		dpkg-query -W -f='${Status}\n' "$pkg" 2>/dev/null | grep -q ' installed$' ||
			missing+=("$pkg")
	done
	((${#missing[@]})) || return 0
	[[ $(id -u) == 0 ]] || sudo=(sudo)
	debian_log "installing ${missing[*]}"
	"${sudo[@]}" apt-get update -q >/dev/null
	DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q \
		--no-install-recommends "${missing[@]}" >/dev/null
}
