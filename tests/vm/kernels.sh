# shellcheck shell=bash
# Sourced by tests/vm/run.sh: a Debian suite's kernel, ready to build
# against and boot.  Needs tests/debian/lib.sh sourced first.
#
# kernel_fetch SUITE sets
#   KVER      the kernel release (uname -r in the guest)
#   KDEB      the version of the suite's linux-image-amd64 (the cache key)
#   VMLINUZ   the image to boot
#   KMODDIR   .../modules/$KVER (its kernel/ holds the modules)
#   KHEADERS  the headers' directory, as `make -C` wants it
#   KROOT     the root the packages were unpacked into (/ for the host's)
#   KCC       the compiler the kernel was built with (e.g. gcc-12)
#   KDEBS     where the downloaded .debs are (unset for the host's kernel)
#
# bookworm is the host's own suite: its kernel comes from the host's apt
# (linux-image-amd64, linux-headers-amd64) like any build dependency.  Any
# other suite's packages are resolved and downloaded through a private apt
# view (tests/debian/lib.sh) and unpacked with dpkg-deb -x under
# $MMAPDEV_CACHE/kernels/<version>, never installed.  7.x splits the image
# into linux-binary-* (vmlinuz under /usr/lib/modules) + linux-modules-*.

# The packages that make up a kernel: the image, its split parts, the
# headers and the kbuild tools they need.  linux-base-<ver> carries the
# maintainer scripts only.
KERNEL_PKG_RE='^linux-(image|binary|modules|headers|kbuild)-'

# Prints "name=version" for every package of the closure of PKG=VER.
kernel_closure() {
	local suite=$1 todo=("$2") seen=" " item name ver dep
	while ((${#todo[@]})); do
		item=${todo[0]}
		todo=("${todo[@]:1}")
		[[ $seen == *" $item "* ]] && continue
		seen+="$item "
		echo "$item"
		# Depends: a (= 1), b, c | d  ->  one name per line, with its
		# exact version when there is one.
		while read -r name ver; do
			[[ $name =~ $KERNEL_PKG_RE ]] || continue
			[[ -n $ver ]] || ver=$(debian_version_in "$suite" "$name")
			[[ -n $ver ]] || ver=$(debian_version_in "$(debian_base_suite "$suite")" "$name")
			[[ -n $ver ]] || debian_die "no version of $name in $suite"
			todo+=("$name=$ver")
		done < <(debian_apt_cache "$suite" show "$item" 2>/dev/null |
			awk '/^Depends:/ { sub(/^Depends: */, ""); n = split($0, d, /, */)
				for (i = 1; i <= n; i++) { split(d[i], alt, / *[|] */); print alt[1] } exit }' |
			sed -E 's/ *\(= *([^)]*)\)/ \1/; s/ *\([^)]*\)//')
	done
}

kernel_find_parts() {
	local root=$1 dir
	for dir in "$root"/lib/modules/* "$root"/usr/lib/modules/*; do
		[[ -d $dir/kernel ]] || continue
		KVER=${dir##*/}
		KMODDIR=$dir
	done
	[[ -n ${KVER:-} ]] || debian_die "no modules directory under $root"
	for VMLINUZ in "$root/boot/vmlinuz-$KVER" "$KMODDIR/vmlinuz" ""; do
		[[ -z $VMLINUZ || -f $VMLINUZ ]] && break
	done
	[[ -n $VMLINUZ ]] || debian_die "no vmlinuz for $KVER under $root"
	KHEADERS=$root/usr/src/linux-headers-$KVER
	[[ -f $KHEADERS/.config ]] || debian_die "no headers for $KVER under $root"
}

# gcc-N from the kernel's configuration (CONFIG_CC_VERSION_TEXT).
kernel_compiler() {
	local text
	text=$(sed -n 's/^CONFIG_CC_VERSION_TEXT="\(.*\)"$/\1/p' "$1/.config")
	[[ $text =~ gcc-([0-9]+) ]] || [[ $text =~ \(Debian\ ([0-9]+)\. ]] ||
		debian_die "cannot tell the compiler of $1 from '$text'"
	echo "gcc-${BASH_REMATCH[1]}"
}

kernel_fetch_host() {
	local ver
	debian_host_install linux-image-amd64 linux-headers-amd64
	KROOT=/
	KDEB=$(dpkg-query -W -f='${Version}' linux-image-amd64)
	# Never `uname -r`: the host's own kernel may have no modules at all.
	for ver in ${MMAPDEV_KVER:-} $(ls /lib/modules | sort -rV); do
		if [[ -e /boot/vmlinuz-$ver && -f /usr/src/linux-headers-$ver/.config ]]; then
			KVER=$ver
			break
		fi
	done
	[[ -n ${KVER:-} ]] || debian_die "no kernel with both /boot/vmlinuz-<ver> and its headers"
	VMLINUZ=/boot/vmlinuz-$KVER
	KMODDIR=/lib/modules/$KVER
	KHEADERS=/usr/src/linux-headers-$KVER
}

kernel_fetch() {
	local suite=$1 dir pkgs deb
	KVER= KDEBS=
	if [[ $suite == bookworm ]]; then
		kernel_fetch_host
		KCC=$(kernel_compiler "$KHEADERS")
		return
	fi
	debian_apt_update "$suite"
	KDEB=$(debian_version_in "$suite" linux-image-amd64)
	[[ -n $KDEB ]] || debian_die "$suite carries no linux-image-amd64"
	dir=$MMAPDEV_CACHE/kernels/$KDEB
	if [[ ! -e $dir/.complete ]]; then
		debian_log "downloading the $suite kernel $KDEB"
		rm -rf "$dir"
		mkdir -p "$dir/debs" "$dir/root"
		mapfile -t pkgs < <({ kernel_closure "$suite" "linux-image-amd64=$KDEB"
			kernel_closure "$suite" "linux-headers-amd64=$KDEB"; } | sort -u)
		(cd "$dir/debs" && debian_apt_get "$suite" download "${pkgs[@]}" >/dev/null) ||
			debian_die "downloading ${pkgs[*]} failed"
		for deb in "$dir"/debs/*.deb; do
			dpkg-deb -x "$deb" "$dir/root"
			# Only the headers and kbuild .debs are unpacked again
			# (into a chroot); the rest is in root/ already.
			[[ ${deb##*/} =~ ^linux-(headers|kbuild)- ]] || rm -f "$deb"
		done
		touch "$dir/.complete"
	fi
	KROOT=$dir/root
	KDEBS=$dir/debs
	kernel_find_parts "$KROOT"
	# Debian's headers include their -common half by absolute path: point
	# it into the unpacked tree for builds on the host.
	sed -i "s|^include /usr/src/|include $KROOT/usr/src/|" "$KHEADERS/Makefile"
	KCC=$(kernel_compiler "$KHEADERS")
}

# Module files by module name (modinfo and depends use '_' for '-').
kernel_module_file() {
	local name=$1 file
	file=$(find "$KMODDIR/kernel" \( -name "$name.ko*" -o -name "${name//_/-}.ko*" \) \
		-print -quit)
	echo "$file"
}

# Copies the modules NAME... and what they depend on into DIR, decompressed,
# and prints their names in load order (dependencies first).  Modules built
# into the kernel have no file and are skipped.  The order comes from each
# module's own `depends` (6.12's 9pnet needs netfs, for instance).
kernel_modules_in_order() {
	local dir=$1 name file dep
	shift
	for name in "$@"; do
		[[ -e $dir/$name.ko || -e $dir/$name.none ]] && continue
		file=$(kernel_module_file "$name")
		if [[ -z $file ]]; then
			: >"$dir/$name.none"
			continue
		fi
		case $file in
		*.ko) cp "$file" "$dir/$name.ko" ;;
		*.ko.xz) xz -dc "$file" >"$dir/$name.ko" ;;
		*.ko.zst) zstd -qdc "$file" >"$dir/$name.ko" ;;
		*.ko.gz) gzip -dc "$file" >"$dir/$name.ko" ;;
		esac
		for dep in $(modinfo -F depends "$dir/$name.ko" | tr , ' '); do
			kernel_modules_in_order "$dir" "$dep"
		done
		echo "$name"
	done
}
