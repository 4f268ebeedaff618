// Command cruz is the Cruz command line: it starts MPI jobs in pods and
// checkpoints, restarts and inspects them through the node's cruzd.
package main

import (
	"context"
	"os"

	"github.com/cruz-hpc/cruz/launcher"
)

func main() {
	// In a task of an srun --cruz step, the SPANK plugin has slurmstepd
	// exec cruz in place of the task's program.
	if argv0 := os.Getenv(launcher.TaskArgv0Env); argv0 != "" {
		argv := append([]string{argv0}, os.Args[1:]...)
		os.Exit(launcher.SlurmTask(context.Background(), argv, os.Stdout, os.Stderr))
	}
	os.Exit(launcher.Main(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}
