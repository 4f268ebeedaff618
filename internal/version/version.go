// Package version says which Cruz this is: the release and the commit it was
// built from (read from the Go build information, which go build records
// for a git checkout; a package build may set Commit with -ldflags). Both
// binaries and the agent's API report it; nothing else lives here.
package version

import (
	"fmt"
	"runtime/debug"
)

// Release is the version of Cruz.
const Release = "0.2.0"

// Commit is the git commit the binary was built from; empty means unknown,
// and the build information is asked (String).
var Commit = ""

// commit is Commit, or the revision go build recorded, with "+dirty" when the
// tree had changes.
func commit() string {
	if Commit != "" {
		return Commit
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	var rev, dirty string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "+dirty"
			}
		}
	}
	if rev == "" {
		return "unknown"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	return rev + dirty
}

// String is "0.2.0 (commit abc123def456)".
func String() string { return fmt.Sprintf("%s (commit %s)", Release, commit()) }
