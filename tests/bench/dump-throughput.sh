#!/usr/bin/env bash
# Placeholder: the checkpoint dump-throughput benchmark is not written yet.
echo "bench: not written yet" >&2
exit 1
