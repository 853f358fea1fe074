#!/usr/bin/env bash
# Installs swift-offload as a gateway operator would run it: the release binary, the systemd units
# with their env files (never overwriting an env file already there: it holds the operator's
# settings), shell completions for bash, zsh and fish, and the man page.
#
#   sudo scripts/install.sh                 # into /usr/local (binary), /etc/systemd/system, /etc/default
#   PREFIX=/opt/offload DESTDIR=/tmp/stage scripts/install.sh   # elsewhere, or staged for a package
#   sudo scripts/install.sh --binary ./offload   # a binary built elsewhere: no Swift toolchain needed here
#
# Without --binary it builds the release binary with `swift build`; when there is no `swift` on
# this machine it installs .build/release/offload if that was built (copied from a build host).
# Undo with `sudo scripts/install.sh --uninstall` (the settings in /etc/default stay).
set -euo pipefail
usage() { echo "usage: $0 [--binary PATH | --uninstall]" >&2; exit 2; }
binary=""
uninstall=no
while [[ $# -gt 0 ]]; do
    case "$1" in
        --binary) [[ $# -ge 2 ]] || usage; binary=$(realpath "$2"); shift 2 ;;
        --uninstall) uninstall=yes; shift ;;
        *) usage ;;
    esac
done
cd "$(dirname "$0")/.."
PREFIX=${PREFIX:-/usr/local}
DESTDIR=${DESTDIR:-}
BIN="$DESTDIR$PREFIX/bin"
MAN="$DESTDIR$PREFIX/share/man/man1"
UNITS="$DESTDIR/etc/systemd/system"
ETC="$DESTDIR/etc/default"
BASH_COMPLETION="$DESTDIR$PREFIX/share/bash-completion/completions"
ZSH_COMPLETION="$DESTDIR$PREFIX/share/zsh/site-functions"
FISH_COMPLETION="$DESTDIR$PREFIX/share/fish/vendor_completions.d"

if [[ $uninstall == yes ]]; then
    rm -f "$BIN/offload" "$MAN/offload"*.1 "$BASH_COMPLETION/offload" "$ZSH_COMPLETION/_offload" \
        "$FISH_COMPLETION/offload.fish"
    for unit in contrib/*.service; do rm -f "$UNITS/$(basename "$unit")"; done
    echo "removed swift-offload (kept $ETC/offload-*: your settings)"
    exit 0
fi

have_swift=no
built_here=no
command -v swift >/dev/null 2>&1 && have_swift=yes
if [[ -n "$binary" ]]; then
    [[ -x "$binary" ]] || { echo "$0: --binary $binary: not an executable file" >&2; exit 1; }
elif [[ $have_swift == yes ]]; then
    echo "building the release binary..."
    swift build -c release --product offload
    binary=$(swift build -c release --show-bin-path)/offload
    built_here=yes
elif [[ -x .build/release/offload ]]; then
    binary=$PWD/.build/release/offload
    echo "no swift here: installing the binary already built, $binary"
else
    echo "$0: no swift toolchain here and no built binary: build on another machine and give it with --binary PATH" >&2
    exit 1
fi
install -d "$BIN" "$MAN" "$UNITS" "$ETC" "$BASH_COMPLETION" "$ZSH_COMPLETION" "$FISH_COMPLETION"
install -m 0755 "$binary" "$BIN/offload"

# The units run /usr/local/bin/offload: point them at PREFIX when it is another.
for unit in contrib/*.service; do
    sed "s|/usr/local/bin/offload|$PREFIX/bin/offload|g" "$unit" \
        > "$UNITS/$(basename "$unit")"
    chmod 0644 "$UNITS/$(basename "$unit")"
done
for env in contrib/*.env; do
    target="$ETC/$(basename "$env" .env)"  # the units read /etc/default/offload-NAME
    if [[ -e "$target" ]]; then
        echo "kept $target (yours); the shipped example is $env"
    else
        install -m 0600 "$env" "$target"
    fi
done

"$binary" --generate-completion-script bash > "$BASH_COMPLETION/offload"
"$binary" --generate-completion-script zsh > "$ZSH_COMPLETION/_offload"
"$binary" --generate-completion-script fish > "$FISH_COMPLETION/offload.fish"

# The man page from argument-parser's manual plugin (one page, every subcommand in it): made with
# the toolchain when we build here; with --binary, a page made before is installed if there is one.
if [[ $built_here == yes ]] && swift package plugin --list 2>/dev/null | grep -q generate-manual; then
    swift package plugin generate-manual >/dev/null
fi
man_pages=0
for page in $(find .build/plugins/GenerateManual -name 'offload*.1' 2>/dev/null); do
    install -m 0644 "$page" "$MAN/"
    man_pages=$((man_pages + 1))
done

echo "installed swift-offload $("$BIN/offload" --version) into $BIN/offload"
if [[ $man_pages -gt 0 ]]; then man="man offload"; else man="no man page (it is made with the Swift toolchain: swift package plugin generate-manual)"; fi
echo "units in $UNITS, their settings in $ETC (mode 0600); $man; completions for bash, zsh, fish"
echo "next: edit $ETC/offload-<unit>, then systemctl daemon-reload && systemctl enable --now offload-siit (or another unit)"
