#!/usr/bin/env bash
# Debian's prometheus, for the Prometheus provider's tests. The tests start
# their own server on loopback; the package's service is never started.
exec bash "$(dirname "$0")/apt-install.sh" prometheus prometheus "the Prometheus provider's tests need a real Prometheus"
