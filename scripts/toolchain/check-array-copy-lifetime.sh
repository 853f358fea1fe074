#!/usr/bin/env bash
# Does this Swift toolchain free a discarded array before copying into it? (see array-copy-lifetime.swift)
# Exit 0: sound; 1: the miscompile is present; 2: could not compile.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
swiftc -O -sanitize=address "$here/array-copy-lifetime.swift" -o "$out/check" >"$out/build.log" 2>&1 || { cat "$out/build.log" >&2; exit 2; }
if "$out/check" >"$out/run.log" 2>&1; then
  echo "$(swiftc --version 2>&1 | head -1): sound (the discarded array is not freed before it is filled)"
  exit 0
fi
grep -m1 "ERROR: AddressSanitizer" "$out/run.log" >&2
echo "$(swiftc --version 2>&1 | head -1): HAS the miscompile (a discarded array is freed before it is filled)" >&2
exit 1
