#!/usr/bin/env bash
# Regenerates the pictures of docs/architecture.md (needs graphviz's dot):
#   docs/images/packages.svg   which package imports which (from go list)
#   docs/images/flow.svg       the path of a request, from docs/images/flow.dot
#   docs/images/network.svg, docs/images/checkpoint-sequence.svg (docs/cluster-install.md), from their .dot
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v dot >/dev/null || { echo "docs-images: needs graphviz (apt-get install graphviz)" >&2; exit 1; }
mod=github.com/cruz-hpc/cruz/
{
	echo 'digraph packages {'
	echo '  rankdir=TB; node [shape=box, style="rounded,filled", fillcolor="#eef3fb", fontname="Helvetica", fontsize=11]; edge [color="#7788aa"];'
	echo '  "cmd/cruz" [fillcolor="#fdf1d6"]; "cmd/cruzd" [fillcolor="#fdf1d6"];'
	echo '  "agent" [fillcolor="#dcefdc"]; "internal/node" [fillcolor="#dcefdc"]; "internal/pod" [fillcolor="#f6dede"]; "internal/criu" [fillcolor="#f6dede"];'
	go list -f '{{.ImportPath}} {{join .Imports " "}}' ./cmd/... ./agent ./launcher ./policy ./internal/... |
		while read -r pkg imports; do
			p=${pkg#"$mod"}
			for i in $imports; do
				case $i in "$mod"*) echo "  \"$p\" -> \"${i#"$mod"}\";" ;; esac
			done
		done
	echo '}'
} >docs/images/packages.dot
dot -Tsvg docs/images/packages.dot -o docs/images/packages.svg
for f in flow network checkpoint-sequence; do
	dot -Tsvg "docs/images/$f.dot" -o "docs/images/$f.svg"
done
echo "docs-images: wrote docs/images/packages.svg, flow.svg, network.svg and checkpoint-sequence.svg"
