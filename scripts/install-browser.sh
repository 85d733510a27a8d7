#!/usr/bin/env bash
# Make sure headless Chromium and its WebDriver are installed from Debian's packages, for the
# console's browser tests.  Safe to run any number of times: it does nothing when both are
# there, and runs `apt-get update` only when something is missing.  Nothing here downloads a
# browser build of its own.
set -euo pipefail

# fonts-liberation: legible screenshots on a machine without any font.
PACKAGES=(chromium chromium-driver fonts-liberation)

missing=()
for package in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$package")
    fi
done

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

echo "browser: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
test -x /usr/bin/chromium
test -x /usr/bin/chromedriver
