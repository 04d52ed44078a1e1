#!/usr/bin/env bash
# Debian's Chromium and ChromeDriver, for the dashboard's browser tests
# (tests/tests/dashboard.rs drives them through WebDriver).
set -euo pipefail
here="$(dirname "$0")"
bash "$here/apt-install.sh" chromium chromium "the dashboard's browser tests need a real browser"
bash "$here/apt-install.sh" chromedriver chromium-driver "the dashboard's browser tests drive Chromium through ChromeDriver"
