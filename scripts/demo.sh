#!/usr/bin/env bash
# Placeholder: the Cruz demo is not written yet.
echo "demo: not written yet" >&2
exit 1
