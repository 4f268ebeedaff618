// Package arch checks the direction of the imports between Cruz's packages:
// requests flow CLI -> coordinator (agent) -> node (internal/node) ->
// pod and CRIU (internal/pod, internal/criu), and no package reaches up.
package arch

import (
	"go/parser"
	"go/token"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const module = "github.com/cruz-hpc/cruz/"

// deps lists the module's packages that pkg links (directly or not).
func deps(t *testing.T, pkg string) []string {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", module+pkg).Output()
	require.NoError(t, err, "go list -deps %s", pkg)
	var ours []string
	for _, p := range strings.Fields(string(out)) {
		if strings.HasPrefix(p, module) && p != module+pkg {
			ours = append(ours, strings.TrimPrefix(p, module))
		}
	}
	return ours
}

func TestImportDirection(t *testing.T) {
	// Each package, and the packages of this module it must never link.
	rules := map[string][]string{
		"cmd/cruzd":       {"launcher", "internal/cluster", "internal/slurmcluster"},
		"agent":           {"launcher", "internal/cluster", "internal/slurmcluster"},
		"internal/node":   {"agent", "launcher", "internal/cluster", "policy"},
		"internal/pod":    {"agent", "internal/node", "internal/store", "internal/joblog", "launcher", "policy"},
		"internal/criu":   {"agent", "internal/node", "internal/pod", "internal/store", "internal/api", "launcher"},
		"internal/joblog": {"agent", "internal/node", "internal/pod", "internal/criu", "launcher"},
		"internal/mpi":    {"agent", "internal/node", "internal/pod", "internal/criu", "launcher"},
		"internal/api":    {"agent", "internal/node", "internal/pod", "internal/criu", "internal/store", "launcher"},
		"internal/store":  {"agent", "internal/node", "internal/pod", "internal/criu", "internal/api", "launcher"},
		"policy":          {"agent", "internal/node", "internal/pod", "launcher"},
		"launcher":        {"agent", "internal/node", "internal/pod", "internal/criu"},
		// The metrics know nothing of jobs but what the agent tells them.
		"internal/metrics": {"agent", "internal/node", "internal/pod", "internal/criu", "internal/store", "internal/api", "launcher", "policy"},
	}
	for pkg, banned := range rules {
		linked := deps(t, pkg)
		for _, b := range banned {
			assert.NotContains(t, linked, b, "%s must not link %s (go list -deps %s)", pkg, b, module+pkg)
		}
	}
}

func TestCoordinatorReachesPodsOnlyThroughNodes(t *testing.T) {
	// The coordinator never touches a pod, a namespace or CRIU itself: it
	// asks nodes (internal/node, through nodeConn). Only agent.go, which
	// wires cruzd together at start, names the pod host and CRIU.
	files, err := filepath.Glob("../../agent/*.go")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, f := range files {
		if filepath.Base(f) == "agent.go" {
			continue
		}
		parsed, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
		require.NoError(t, err)
		for _, imp := range parsed.Imports {
			path := strings.Trim(imp.Path.Value, `"`)
			assert.NotEqual(t, module+"internal/pod", path, "%s imports internal/pod", f)
			assert.NotEqual(t, module+"internal/criu", path, "%s imports internal/criu", f)
		}
	}
}
