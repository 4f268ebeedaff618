// Command cruz is the Cruz command line: it starts MPI jobs in pods and
// checkpoints, restarts and inspects them through the node's cruzd.
package main

import (
	"context"
	"os"

	"github.com/cruz-hpc/cruz/launcher"
)

func main() {
	os.Exit(launcher.Main(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}
