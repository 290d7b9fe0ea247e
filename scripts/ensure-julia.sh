#!/usr/bin/env bash
# ensure-julia.sh — make a working Julia available and print its path.
#
# Usage:  JULIA_BIN=$(scripts/ensure-julia.sh)
#
# The path of the `julia` executable is the last line on stdout; all progress
# goes to stderr. Order of preference:
#   1. $JULIA (a path, or a command name on PATH)
#   2. `julia` on PATH
#   3. a previous local install in <repo>/.julia-local (reused, no download)
#   4. a fresh local install of Debian bullseye's Julia 1.5.3 into
#      <repo>/.julia-local, fetched with a private apt configuration (the
#      system's apt sources are left untouched).
# Exits non-zero, with instructions, when none of this is possible.
set -euo pipefail
exec </dev/null # never wait on stdin (CI runs with it closed)

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX="$REPO/.julia-local"
LOCAL_JULIA="$PREFIX/usr/bin/julia"

# Bullseye's own libraries are mandatory: with bookworm's libunwind every
# exception segfaults, with bookworm's libmpfr BigFloat results are wrong.
PACKAGES=(julia julia-common libjulia1 libllvm9 libgit2-1.1 libmbedtls12
  libmbedcrypto3 libmbedx509-0 libopenlibm3 libdsfmt-19937-1 libutf8proc2
  libffi7 libgfortran5 libquadmath0 libhttp-parser2.9 libpcre3 libunwind8
  libgmp10 libmpfr6 libpcre2-8-0 libssh2-1 libcurl3-gnutls libldap-2.4-2)
# Add bullseye packages here if the ldd check below reports a library missing
# on some machine (none were needed on Debian 12 with the usual base packages).
EXTRA_PACKAGES=()
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

log() { printf 'ensure-julia: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

install_help() {
  log "cannot provide Julia automatically: $*"
  cat >&2 <<'EOF'
Please install Julia >= 1.5 yourself, for example:
  - juliaup (recommended): curl -fsSL https://install.julialang.org | sh
  - official binaries:     https://julialang.org/downloads/
Then put `julia` on PATH, or set JULIA=/path/to/julia, and rerun.
EOF
  exit 1
}

# Exercises what broke in earlier attempts: BigFloat (libmpfr), exceptions
# (libunwind), the stdlibs we use, and a child julia started with a replaced
# environment (no LD_LIBRARY_PATH crutch).
SANITY_JL='
x = sqrt(big(2.0)); @assert startswith(string(x), "1.41421")
f() = try error("x") catch; 1 end; @assert f() == 1
using Libdl, Test, Serialization, Printf, Statistics, InteractiveUtils, Distributed, Random, Pkg
g() = @test_throws ErrorException error("e"); g()
run(setenv(`$(Base.julia_cmd()) --startup-file=no -e "exit(0)"`, ["PATH=/usr/bin:/bin"]))
print("ok")'

sanity_check() { # $1 = julia executable; returns non-zero on failure
  local out
  out="$("$1" --startup-file=no -e "$SANITY_JL" 2>&1)" || { printf '%s\n' "$out" >&2; return 1; }
  [ "$out" = ok ] || { printf '%s\n' "$out" >&2; return 1; }
}

found() { # print the path and stop
  log "using $1"
  printf '%s\n' "$1"
  exit 0
}

warn_if_old() { # external julia: just a hint, the project needs >= 1.5
  local v
  v="$("$1" --version 2>/dev/null | sed -n 's/^julia version \([0-9]*\.[0-9]*\).*/\1/p')" || true
  case "$v" in
    '') die "$1 does not run (\`$1 --version\` failed)" ;;
    0.* | 1.[0-4]) log "WARNING: $1 is Julia $v; this project needs >= 1.5" ;;
  esac
}

# --- 1. explicit $JULIA, 2. julia on PATH ----------------------------------
if [ -n "${JULIA:-}" ]; then
  case "$JULIA" in
    */*) j="$JULIA" ;;
    *) j="$(command -v -- "$JULIA" || true)" ;;
  esac
  [ -n "$j" ] && [ -f "$j" ] && [ -x "$j" ] || die "JULIA='$JULIA' is not an executable"
  j="$(cd "$(dirname "$j")" && pwd)/$(basename "$j")"
  warn_if_old "$j"
  found "$j"
fi
if j="$(command -v julia)"; then
  warn_if_old "$j"
  found "$j"
fi

# --- 3. previous local install ---------------------------------------------
if [ -f "$PREFIX/.complete" ] && [ -x "$LOCAL_JULIA" ]; then
  sanity_check "$LOCAL_JULIA" ||
    die "local Julia in $PREFIX fails the sanity check; remove that directory to reinstall"
  found "$LOCAL_JULIA"
fi

# --- 4. fresh local install ------------------------------------------------
command -v apt-get >/dev/null && command -v dpkg >/dev/null ||
  install_help "no julia found and this is not a Debian system with apt-get"
[ "$(dpkg --print-architecture)" = amd64 ] ||
  install_help "the automatic install is only set up for amd64"
MULTIARCH=x86_64-linux-gnu

# The system's Debian archive URI: from the stanza/line whose suite is this
# release's codename (not -security/-updates, not third-party repositories).
codename="$(. /etc/os-release 2>/dev/null && [ "${ID:-}" = debian ] && printf '%s' "${VERSION_CODENAME:-}")" || true
[ -n "$codename" ] || install_help "no julia found and this is not Debian (see /etc/os-release)"

deb822_uri() { # deb822 .sources files (paragraph mode: one stanza per record)
  awk -v want="$codename" '
    BEGIN { RS = ""; FS = "\n" }
    {
      types = ""; uris = ""; suites = ""; enabled = "yes"
      for (i = 1; i <= NF; i++) {
        if ($i ~ /^[ \t]*#/ || !match($i, /^[A-Za-z-]+:/)) continue
        key = tolower(substr($i, 1, RLENGTH - 1)); val = substr($i, RLENGTH + 1)
        if (key == "types") types = val
        else if (key == "uris") uris = val
        else if (key == "suites") suites = val
        else if (key == "enabled") enabled = val
      }
      if (types !~ /(^|[ \t])deb([ \t]|$)/ || enabled ~ /[Nn]o/) next
      n = split(suites, s, /[ \t]+/)
      for (j = 1; j <= n; j++) if (s[j] == want) {
        m = split(uris, u, /[ \t]+/)
        for (k = 1; k <= m; k++) if (u[k] != "") { print u[k]; exit }
      }
    }' "$@" 2>/dev/null
}
list_uri() { # one-line format: deb [options] URI suite components...
  awk -v want="$codename" '
    $1 == "deb" {
      i = 2
      if ($2 ~ /^\[/) { while (i < NF && $i !~ /\]$/) i++; i++ }
      if ($(i + 1) == want) { print $i; exit }
    }' "$@" 2>/dev/null
}
shopt -s nullglob
uri="$(deb822_uri /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list.d/*.sources || true)"
uri="${uri%%$'\n'*}"
[ -n "$uri" ] || { uri="$(list_uri /etc/apt/sources.list /etc/apt/sources.list.d/*.list || true)"; uri="${uri%%$'\n'*}"; }
shopt -u nullglob
[ -n "$uri" ] || install_help "no julia found and no Debian archive ($codename) in the apt sources"

log "no julia found; installing Debian bullseye's Julia 1.5.3 into $PREFIX (from $uri)"

WORK="$(mktemp -d)"                           # apt state, downloaded .debs
STAGE="$(mktemp -d "$PREFIX.partial.XXXXXX")" # same filesystem: atomic rename
trap 'rm -rf "$WORK" "$STAGE"' EXIT
mkdir -p "$WORK/lists/partial" "$WORK/cache/archives/partial" "$WORK/debs"

# Private apt: only our sources list, our lists and cache. The sandbox user is
# set to root because _apt cannot enter the private mktemp directories (the
# option is ignored when not running as root).
apt_private() {
  apt-get -q -o Dir::Etc::sourcelist="$WORK/sources.list" \
    -o Dir::Etc::sourceparts=/dev/null -o Dir::State::Lists="$WORK/lists" \
    -o Dir::Cache="$WORK/cache" -o APT::Sandbox::User=root "$@" >&2
}
update_bullseye() { # $1 = apt source options; succeeds if the index arrived
  printf 'deb [%s] %s bullseye main\n' "$1" "$uri" >"$WORK/sources.list"
  apt_private update || true
  compgen -G "$WORK/lists/*_dists_bullseye_main_binary-*_Packages*" >/dev/null
}
[ -f "$KEYRING" ] || die "missing $KEYRING (install the debian-archive-keyring package)"
if ! update_bullseye "signed-by=$KEYRING"; then
  # Fallback only: an old keyring may lack bullseye's key. The packages are
  # then checked against the unverified index only.
  log "WARNING: bullseye index not verifiable with $KEYRING; retrying with trusted=yes"
  update_bullseye "trusted=yes" || install_help "could not fetch bullseye's package index from $uri"
fi

log "downloading ${#PACKAGES[@]} packages"
(cd "$WORK/debs" && apt_private download "${PACKAGES[@]/%//bullseye}" \
  ${EXTRA_PACKAGES[@]+"${EXTRA_PACKAGES[@]/%//bullseye}"}) || die "apt-get download failed"

log "unpacking"
for deb in "$WORK"/debs/*.deb; do dpkg -x "$deb" "$STAGE"; done
libdir="$STAGE/usr/lib/$MULTIARCH"
if [ -d "$STAGE/lib/$MULTIARCH" ]; then # e.g. libpcre3 ships in /lib
  cp -a "$STAGE/lib/$MULTIARCH/." "$libdir/"
  rm -rf "$STAGE/lib"
fi

# Make the prefix self-contained: each library finds its siblings through its
# own RUNPATH (RUNPATH is not inherited), so no LD_LIBRARY_PATH is needed and
# the system's same-soname libraries are not picked up. libjulia already has
# the right RUNPATH ($ORIGIN/julia:$ORIGIN), and so does the julia binary.
if ! command -v patchelf >/dev/null; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null && sudo -n true 2>/dev/null ||
      die "patchelf is required: install it (apt-get install patchelf) and rerun"
    SUDO="sudo -n"
  fi
  log "installing patchelf (system package)"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q patchelf >&2 ||
    { $SUDO apt-get update -q >&2 &&
      $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q patchelf >&2; } ||
    die "could not install patchelf"
fi
log "setting RUNPATH of the bundled libraries"
find "$libdir" "$libdir/julia" -maxdepth 1 -type f -name '*.so*' ! -name 'libjulia.so.1.5*' \
  -exec patchelf --set-rpath '$ORIGIN:$ORIGIN/..' {} + # '$ORIGIN' is literal on purpose

# Every library must resolve (ldd shows "not found" otherwise).
missing="$(find "$STAGE/usr/bin/julia" "$libdir" "$libdir/julia" -maxdepth 1 -type f \
  \( -name julia -o -name '*.so*' \) -exec ldd {} + 2>/dev/null | grep 'not found' | sort -u || true)"
[ -z "$missing" ] || die "unresolved libraries (add their bullseye packages to EXTRA_PACKAGES):
$missing"

log "checking the new install"
sanity_check "$STAGE/usr/bin/julia" || die "the freshly installed Julia fails the sanity check"

chmod 755 "$STAGE"
rm -rf "$PREFIX" # leftovers of an interrupted install (no .complete marker)
mv -T "$STAGE" "$PREFIX"
touch "$PREFIX/.complete" # last: marks the install as good
found "$LOCAL_JULIA"
