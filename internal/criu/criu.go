// Package criu owns the conversation with CRIU: dumping and restoring a
// pod's process tree over CRIU's RPC protocol ("criu swrk"), with go-criu's
// protobuf types kept inside this package; running CRIU as the pod's user
// with root's capabilities, in a mount namespace of its own; the version and
// kernel checks; and errors that quote CRIU's log around its first "Error".
// It knows nothing of jobs, nodes or the checkpoint store: callers hand it
// open directories and a network namespace.
package criu

import "context"

// Runner is what pods need of CRIU. Swrk is the real one; tests of the
// layers above use fakes.
type Runner interface {
	// Dump checkpoints the process tree rooted at o.Pid into o.ImagesDir.
	Dump(ctx context.Context, o DumpOptions) (DumpStats, error)
	// Restore brings a process tree back from o.ImagesDir into the network
	// namespace at o.NetnsPath and returns the pid of its root.
	Restore(ctx context.Context, o RestoreOptions) (int, error)
}

var _ Runner = (*Swrk)(nil)
