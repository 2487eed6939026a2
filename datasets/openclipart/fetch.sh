#!/usr/bin/env bash
# Fetches Debian's openclipart-png and openclipart-svg with `apt-get download` (nothing is
# installed) into DIR (default: data/sources/openclipart) and unpacks both there with dpkg-deb.
set -euo pipefail
dir=${1:-data/sources/openclipart}
mkdir -p "$dir"
cd "$dir"
if [ ! -d usr/share/openclipart/png ] || [ ! -d usr/share/openclipart/svg ]; then
  apt-get download openclipart-png openclipart-svg
  for deb in openclipart-png_*.deb openclipart-svg_*.deb; do dpkg-deb -x "$deb" .; done
  rm -f openclipart-*.deb
fi
echo "openclipart sources in $dir"
