package launcher

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestAgentSocket(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("CRUZ_CLUSTER_DIR", dir)
	t.Setenv("CRUZ_SOCKET", "")

	// No cluster: the default socket.
	s, note, err := agentSocket("", "")
	require.NoError(t, err)
	assert.Equal(t, api.DefaultSocket, s)
	assert.Empty(t, note)
	_, _, err = agentSocket("", "node1")
	assert.ErrorContains(t, err, "--node node1: no cluster is up")

	state := `{"dir": "` + dir + `", "nodes": [{"name": "node1", "socket": "/c/node1/cruzd.sock"}, {"name": "node2", "socket": "/c/node2/cruzd.sock"}]}`
	require.NoError(t, os.WriteFile(filepath.Join(dir, "cluster.json"), []byte(state), 0o644))
	s, _, err = agentSocket("", "node2")
	require.NoError(t, err)
	assert.Equal(t, "/c/node2/cruzd.sock", s)
	_, _, err = agentSocket("", "node7")
	assert.ErrorContains(t, err, `no node "node7"`)
	if !answers(api.DefaultSocket) {
		s, note, err = agentSocket("", "")
		require.NoError(t, err)
		assert.Equal(t, "/c/node1/cruzd.sock", s, "with no agent on the default socket, node1's")
		assert.Contains(t, note, "talking to node1 of the virtual cluster (/c/node1/cruzd.sock)", "and it says so")
	}

	// --socket, then --node, then CRUZ_SOCKET.
	s, _, _ = agentSocket("/a.sock", "")
	assert.Equal(t, "/a.sock", s)
	_, _, err = agentSocket("/a.sock", "node2")
	assert.ErrorContains(t, err, "give --socket or --node, not both")
	t.Setenv("CRUZ_SOCKET", "/e.sock")
	s, _, _ = agentSocket("", "node2")
	assert.Equal(t, "/c/node2/cruzd.sock", s)
	s, note, _ = agentSocket("", "")
	assert.Equal(t, "/e.sock", s)
	assert.Empty(t, note)
}

func TestShellQuote(t *testing.T) {
	assert.Equal(t, "/run/cruz-cluster/node1/cruzd.sock", shellQuote("/run/cruz-cluster/node1/cruzd.sock"))
	assert.Equal(t, `'/a b/it'\''s'`, shellQuote("/a b/it's"))
}
