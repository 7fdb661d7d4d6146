#!/usr/bin/env bash
# Build the Debian package from the already built debug binary (no cargo build) and check it:
# control fields, files, conffiles, maintainer scripts; then run the packaged binary
# (`--version`, `check` of the shipped /etc/rtsup/rtsup.toml). As root, unless
# RTSUP_DEB_INSTALL=0, also install it with dpkg, check the result (binary, rtsup user, config,
# unit enabled but not started) and purge it again, leaving the machine as it was.
#
#   cargo build --locked --bin rtsup && scripts/deb-test.sh
#
# Needs: cargo-deb (installed here with `cargo install cargo-deb --locked` when missing),
# dpkg-dev (dpkg-shlibdeps, for Depends) and binutils (strip, readelf).
set -euo pipefail
cd "$(dirname "$0")/.."

ok() { printf 'ok: %s\n' "$*"; }
fail() {
  printf 'FAIL: %s\n' "$1" >&2
  shift
  local line
  for line in "$@"; do printf '  %s\n' "$line" >&2; done
  exit 1
}
# expect_eq WHAT EXPECTED ACTUAL
expect_eq() {
  [[ $3 == "$2" ]] || fail "$1" "expected: $2" "got:      $3"
  ok "$1: $3"
}
# expect_line WHAT LINE TEXT: LINE is a whole line of TEXT
expect_line() {
  grep -qxF -- "$2" <<<"$3" || fail "$1: no line '$2'" "in:" "$3"
  ok "$1"
}

# --- prerequisites ---------------------------------------------------------------------------
target_dir=$(cargo metadata --no-deps --format-version 1 --locked |
  grep -o '"target_directory":"[^"]*"' | sed 's/.*:"//; s/"$//')
bin="$target_dir/debug/rtsup"
[[ -x $bin ]] || fail "no debug binary at $bin" \
  "build it first (this script never builds): cargo build --locked --bin rtsup"
newer=$(find src supervisor/src balancer/src workers/src Cargo.toml -newer "$bin" -type f -print -quit 2>/dev/null || true)
[[ -z $newer ]] || echo "note: $bin is older than $newer: packaging the binary as built"
version=$(awk '/^\[/ { s = ($0 == "[package]") } s && /^version *=/ { gsub(/.*= *"|".*/, ""); print; exit }' Cargo.toml)
[[ -n $version ]] || fail "no version under [package] in Cargo.toml"
arch=$(dpkg --print-architecture)
for tool in dpkg-shlibdeps strip readelf; do
  command -v "$tool" >/dev/null ||
    fail "$tool not found" "install it: apt-get install -y dpkg-dev binutils"
done
if ! cargo deb --version >/dev/null 2>&1; then
  echo "cargo-deb missing: cargo install cargo-deb --locked"
  cargo install cargo-deb --version 3.8.0 --locked
fi
ok "$(cargo deb --version 2>/dev/null | head -n1), packaging $bin (rtsup $version, $arch)"

work=$(mktemp -d "${TMPDIR:-/tmp}/rtsup-deb.XXXXXX")
installed_here=0
cleanup() {
  local rc=$?
  if ((installed_here)); then
    echo "cleanup: dpkg --purge rtsup" >&2
    dpkg --purge rtsup >"$work/cleanup-purge.log" 2>&1 || cat "$work/cleanup-purge.log" >&2
  fi
  if ((rc == 0)); then rm -rf "$work"; else echo "kept for inspection: $work" >&2; fi
}
trap cleanup EXIT

# --- build the .deb --------------------------------------------------------------------------
# --no-build: package target/debug/rtsup as it is (cargo-deb maps its target/release/ asset
#   prefix to the profile's directory; it warns that dev is not a release profile).
# --strip, no dbgsym/separate symbols: the debug binary is ~300 MB, stripped ~50 MB.
# --fast: light compression, the package is for testing.
start=$(date +%s.%N)
if ! cargo deb --locked --no-build --profile dev --strip --no-dbgsym --no-separate-debug-symbols \
  --fast -o "$work/" >"$work/cargo-deb.log" 2>&1; then
  cat "$work/cargo-deb.log" >&2
  fail "cargo deb failed (output above)"
fi
secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
deb="$work/rtsup_${version}-1_${arch}.deb"
[[ -f $deb ]] || fail "cargo deb wrote no $deb" "$(ls -la "$work")" "$(cat "$work/cargo-deb.log")"
ok "cargo deb built $(basename "$deb") ($(du -h "$deb" | cut -f1)) in ${secs}s"

# --- control fields --------------------------------------------------------------------------
expect_eq "Package" rtsup "$(dpkg-deb -f "$deb" Package)"
expect_eq "Version" "${version}-1" "$(dpkg-deb -f "$deb" Version)"
expect_eq "Architecture" "$arch" "$(dpkg-deb -f "$deb" Architecture)"
expect_eq "Section" admin "$(dpkg-deb -f "$deb" Section)"
expect_eq "Priority" optional "$(dpkg-deb -f "$deb" Priority)"
depends=$(dpkg-deb -f "$deb" Depends)
[[ $depends == *libc6* ]] || fail "Depends has no libc6 (dpkg-shlibdeps, \$auto)" "got: $depends"
ok "Depends: $depends"
[[ -n $(dpkg-deb -f "$deb" Maintainer) ]] || fail "no Maintainer"
ok "Maintainer: $(dpkg-deb -f "$deb" Maintainer)"

# --- files -----------------------------------------------------------------------------------
listing=$(dpkg-deb -c "$deb")
files=$(awk '{ print $1, $2, $NF }' <<<"$listing")
expect_line "./usr/bin/rtsup, root, 0755" "-rwxr-xr-x 0/0 ./usr/bin/rtsup" "$files"
expect_line "./etc/rtsup/rtsup.toml, root, 0644" "-rw-r--r-- 0/0 ./etc/rtsup/rtsup.toml" "$files"
unit_path=""
for p in ./usr/lib/systemd/system/rtsup.service ./lib/systemd/system/rtsup.service; do
  if grep -qxF -- "-rw-r--r-- 0/0 $p" <<<"$files"; then unit_path=$p; fi
done
[[ -n $unit_path ]] || fail "no systemd unit rtsup.service (0644) in the package" "$listing"
ok "systemd unit: $unit_path"
expect_line "./usr/share/doc/rtsup/README.md" "-rw-r--r-- 0/0 ./usr/share/doc/rtsup/README.md" "$files"
expect_line "./usr/share/doc/rtsup/copyright" "-rw-r--r-- 0/0 ./usr/share/doc/rtsup/copyright" "$files"

# --- control archive: conffiles and maintainer scripts ---------------------------------------
expect_eq "conffiles" /etc/rtsup/rtsup.toml "$(dpkg-deb -I "$deb" conffiles)"
ctl="$work/control"
dpkg-deb -e "$deb" "$ctl"
for s in postinst postrm prerm; do
  [[ -x $ctl/$s ]] || fail "maintainer script $s missing or not executable"
  sh -n "$ctl/$s" || fail "$s: shell syntax error"
  ! grep -q '#DEBHELPER#' "$ctl/$s" || fail "$s: #DEBHELPER# left unreplaced"
done
ok "maintainer scripts postinst, postrm, prerm: executable, valid sh, #DEBHELPER# replaced"
postinst=$(cat "$ctl/postinst")
grep -qF 'adduser --system --quiet --group --no-create-home --home /nonexistent rtsup' <<<"$postinst" ||
  fail "postinst does not create the rtsup system user with adduser"
grep -qF 'getent passwd rtsup' <<<"$postinst" || fail "postinst creates the user even when it exists"
ok "postinst creates the system user rtsup (adduser, useradd fallback) when absent"
# cargo-deb's fragments must come after `set -e` and the user (a #DEBHELPER# in a comment
# would paste them above); grep -n gives the first occurrence of each.
first_line() { grep -nF -- "$1" "$ctl/postinst" | head -n1 | cut -d: -f1; }
l_sete=$(first_line 'set -e')
l_user=$(first_line 'getent passwd rtsup')
l_frag=$(first_line 'Automatically added by cargo-deb')
[[ -n $l_frag && $l_sete -lt $l_user && $l_user -lt $l_frag ]] ||
  fail "postinst order: want set -e < user creation < systemd fragments" \
    "lines: set -e $l_sete, user $l_user, fragments ${l_frag:-none}"
grep -qF 'deb-systemd-helper enable rtsup.service' <<<"$postinst" ||
  fail "postinst does not enable rtsup.service"
! grep -qE 'deb-systemd-invoke (start|restart) ' <<<"$postinst" ||
  fail "postinst starts rtsup.service on install (the package must only enable it)"
grep -qF 'deb-systemd-invoke try-restart rtsup.service' <<<"$postinst" ||
  fail "postinst does not try-restart a running rtsup on upgrade"
ok "postinst enables rtsup.service, does not start it, try-restarts it on upgrade"
grep -qF 'deb-systemd-invoke stop rtsup.service' "$ctl/prerm" || fail "prerm does not stop rtsup on remove"
grep -qF 'deluser --system --quiet rtsup' "$ctl/postrm" || fail "postrm does not remove the user on purge"
grep -qF 'deb-systemd-helper purge rtsup.service' "$ctl/postrm" || fail "postrm does not purge the unit state"
ok "prerm stops the service on remove; postrm removes the unit state and user on purge"

# --- extracted contents ----------------------------------------------------------------------
root="$work/root"
dpkg-deb -x "$deb" "$root"
cmp -s "$root/etc/rtsup/rtsup.toml" packaging/rtsup.toml ||
  fail "etc/rtsup/rtsup.toml differs from packaging/rtsup.toml"
ok "etc/rtsup/rtsup.toml is packaging/rtsup.toml"
cmp -s "$root/$unit_path" systemd/rtsup.service || fail "$unit_path differs from systemd/rtsup.service"
ok "$unit_path is systemd/rtsup.service"
sections=$(readelf -S --wide "$root/usr/bin/rtsup")
! grep -q '\.debug_info' <<<"$sections" || fail "usr/bin/rtsup still has debug info (not stripped)"
ok "usr/bin/rtsup stripped: $(du -h "$root/usr/bin/rtsup" | cut -f1) (built: $(du -h "$bin" | cut -f1))"
expect_eq "extracted usr/bin/rtsup --version" "rtsup $version" "$("$root/usr/bin/rtsup" --version)"
# As the unit runs it: its PATH (here with the extracted usr/bin first, so `command = "rtsup"`
# finds the packaged binary) and its control socket / log dir.
unit_env=(RTSUP_CONTROL_SOCKET=/run/rtsup/rtsup.sock RTSUP_LOG_DIR=/var/log/rtsup)
out=$(env "${unit_env[@]}" PATH="$root/usr/bin:/usr/local/bin:/usr/bin:/bin" \
  "$root/usr/bin/rtsup" check -c "$root/etc/rtsup/rtsup.toml" 2>&1) ||
  fail "rtsup check of the shipped config failed" "$out"
ok "extracted rtsup check -c etc/rtsup/rtsup.toml: $(tail -n1 <<<"$out" | sed "s|$root/||")"

# --- install, check, purge (root only) -------------------------------------------------------
if [[ $(id -u) -ne 0 ]]; then
  echo "skip: dpkg -i (not root)"
  exit 0
fi
if [[ ${RTSUP_DEB_INSTALL:-1} == 0 ]]; then
  echo "skip: dpkg -i (RTSUP_DEB_INSTALL=0)"
  exit 0
fi
# Never touch an installation that is not ours: the purge below would remove it.
pkg_state=$(dpkg-query -W -f='${db:Status-Status}' rtsup 2>/dev/null || true)
if [[ -n $pkg_state && $pkg_state != not-installed ]]; then
  fail "the rtsup package is already on this machine ($pkg_state); not installing over it" \
    "remove it (dpkg --purge rtsup) or run with RTSUP_DEB_INSTALL=0"
fi
for p in /usr/bin/rtsup /etc/rtsup /usr/lib/systemd/system/rtsup.service /etc/systemd/system/rtsup.service; do
  [[ ! -e $p ]] || fail "$p already exists (not from the package); not installing over it" \
    "move it away or run with RTSUP_DEB_INSTALL=0"
done
if getent passwd rtsup >/dev/null || getent group rtsup >/dev/null; then
  fail "a user or group rtsup already exists; the purge would delete it" \
    "run with RTSUP_DEB_INSTALL=0"
fi

installed_here=1
DEBIAN_FRONTEND=noninteractive dpkg -i "$deb" >"$work/dpkg-i.log" 2>&1 ||
  fail "dpkg -i failed" "$(cat "$work/dpkg-i.log")"
expect_eq "dpkg status after dpkg -i" "install ok installed" "$(dpkg-query -W -f='${Status}' rtsup)"
expect_eq "/usr/bin/rtsup --version" "rtsup $version" "$(/usr/bin/rtsup --version)"
pw=$(getent passwd rtsup) || fail "no user rtsup after install"
IFS=: read -r _ _ uid gid _ home shell <<<"$pw"
[[ $home == /nonexistent && $shell == */nologin && $uid -lt 1000 ]] ||
  fail "user rtsup is not a system user without home and login" "getent passwd: $pw"
[[ $(getent group rtsup | cut -d: -f3) == "$gid" ]] || fail "rtsup's primary group is not rtsup" "$pw"
ok "user rtsup: $pw"
[[ -f /etc/rtsup/rtsup.toml ]] || fail "/etc/rtsup/rtsup.toml not installed"
ok "/etc/rtsup/rtsup.toml installed ($(stat -c '%A %U:%G' /etc/rtsup/rtsup.toml))"
dpkg-query -W -f='${Conffiles}\n' rtsup | grep -q '^ /etc/rtsup/rtsup.toml ' ||
  fail "dpkg does not track /etc/rtsup/rtsup.toml as a conffile" "$(dpkg-query -W -f='${Conffiles}' rtsup)"
ok "dpkg tracks /etc/rtsup/rtsup.toml as a conffile"
out=$(runuser -u rtsup -- env "${unit_env[@]}" PATH=/usr/local/bin:/usr/bin:/bin \
  /usr/bin/rtsup check -c /etc/rtsup/rtsup.toml 2>&1) ||
  fail "rtsup check -c /etc/rtsup/rtsup.toml as the rtsup user failed" "$out"
ok "as user rtsup: $(tail -n1 <<<"$out")"
unit=/${unit_path#./}
[[ -f $unit ]] || fail "$unit not installed"
ok "unit installed: $unit"
wants=/etc/systemd/system/multi-user.target.wants/rtsup.service
if command -v deb-systemd-helper >/dev/null; then
  [[ -L $wants ]] || fail "rtsup.service not enabled: no $wants"
  ok "unit enabled: $wants -> $(readlink "$wants")"
else
  echo "skip: enable check (no deb-systemd-helper on this machine)"
fi
if [[ -d /run/systemd/system ]]; then
  ! systemctl is-active --quiet rtsup || fail "rtsup.service was started by the install"
  ok "rtsup.service installed but not started (systemctl is-active: $(systemctl is-active rtsup || true))"
else
  echo "skip: started check (systemd is not running on this machine)"
fi

# A reinstall runs the upgrade path (prerm upgrade, postinst configure OLD-VERSION): the
# operator's edit of the conffile and the existing user must be kept, without a prompt.
edit="# edited by scripts/deb-test.sh"
echo "$edit" >>/etc/rtsup/rtsup.toml
DEBIAN_FRONTEND=noninteractive dpkg -i "$deb" </dev/null >"$work/dpkg-reinstall.log" 2>&1 ||
  fail "dpkg -i over the installed package failed" "$(cat "$work/dpkg-reinstall.log")"
[[ $(tail -n1 /etc/rtsup/rtsup.toml) == "$edit" ]] ||
  fail "the reinstall replaced the edited /etc/rtsup/rtsup.toml"
[[ $(getent passwd rtsup) == "$pw" ]] || fail "the reinstall changed the user" "before: $pw" \
  "after:  $(getent passwd rtsup)"
[[ -L $wants ]] || ! command -v deb-systemd-helper >/dev/null || fail "the reinstall disabled rtsup.service"
ok "reinstall (upgrade path): the edited conffile, the user and the enable link are kept"

DEBIAN_FRONTEND=noninteractive dpkg --purge rtsup >"$work/dpkg-purge.log" 2>&1 ||
  fail "dpkg --purge rtsup failed" "$(cat "$work/dpkg-purge.log")"
installed_here=0
pkg_state=$(dpkg-query -W -f='${db:Status-Status}' rtsup 2>/dev/null || true)
[[ -z $pkg_state || $pkg_state == not-installed ]] || fail "rtsup is still known to dpkg after purge: $pkg_state"
ok "dpkg --purge rtsup: package gone"
for p in /usr/bin/rtsup /etc/rtsup "$unit" "$wants" /var/log/rtsup; do
  [[ ! -e $p && ! -L $p ]] || fail "$p still exists after purge"
done
ok "purged: /usr/bin/rtsup, /etc/rtsup, the unit and its enable link are gone"
! getent passwd rtsup >/dev/null || fail "user rtsup still exists after purge" "$(getent passwd rtsup)"
! getent group rtsup >/dev/null || fail "group rtsup still exists after purge" "$(getent group rtsup)"
ok "purged: user and group rtsup are gone"
