#!/usr/bin/env bash
# Fetches the emoji sources with `npm pack` (no npm install, no scripts run) into DIR
# (default: data/sources/emoji) and unpacks each package as DIR/NAME/package/.
set -euo pipefail
dir=${1:-data/sources/emoji}
mkdir -p "$dir"
cd "$dir"
for spec in emoji-datasource-twitter@16.0.0 emoji-datasource-google@16.0.0 \
            cldr-annotations-full@48.2.0 cldr-annotations-derived-full@48.2.0; do
  name=${spec%@*}
  if [ ! -d "$name/package" ]; then
    tgz=$(npm pack --silent "$spec")
    mkdir -p "$name.tmp" && tar xzf "$tgz" -C "$name.tmp" && mv "$name.tmp" "$name" && rm -f "$tgz"
  fi
done
echo "emoji sources in $dir"
