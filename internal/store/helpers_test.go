package store

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/stretchr/testify/require"
)

var testKey = []byte("0123456789abcdef0123456789abcdef")

func openTestStore(t testing.TB) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "ckpts"), testKey)
	require.NoError(t, err)
	return s
}

// podFiles maps pod name -> relative file path -> content.
type podFiles map[string]map[string]string

func defaultPods() podFiles {
	return podFiles{
		"rank0": {"core-1.img": "core of rank 0", "pages-1.img": "pages of rank 0", "sub/fdinfo-2.img": "nested"},
		"rank1": {"core-1.img": "core of rank 1", "pages-1.img": "pages of rank 1"},
	}
}

// writePods creates the pods' files through p.PodDir.
func writePods(t testing.TB, p *Pending, pods podFiles) {
	t.Helper()
	for pod, files := range pods {
		dir, err := p.PodDir(pod)
		require.NoError(t, err)
		for rel, content := range files {
			path := filepath.Join(dir, filepath.FromSlash(rel))
			require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
			require.NoError(t, os.WriteFile(path, []byte(content), 0o644))
		}
	}
}

func manifestFor(pods podFiles) *Manifest {
	var names []string
	for pod := range pods {
		names = append(names, pod)
	}
	sort.Strings(names)
	m := &Manifest{JobName: "test job", Phases: map[string]int64{"dump": 5}}
	for i, name := range names {
		m.Pods = append(m.Pods, PodImage{Name: name, Role: "rank", Rank: i, Hostname: name})
	}
	return m
}

// commit writes and commits a checkpoint of job with the given pods.
func commit(t testing.TB, s *Store, job string, owner Owner, pods podFiles) *Manifest {
	t.Helper()
	p, err := s.Begin(job, owner)
	require.NoError(t, err)
	writePods(t, p, pods)
	m := manifestFor(pods)
	warnings, err := p.Commit(m)
	require.NoError(t, err)
	require.Empty(t, warnings)
	return m
}

func sha(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// editManifest rewrites manifest.json of dir through a generic JSON edit,
// without the key (as a forger would).
func editManifest(t testing.TB, dir string, edit func(m map[string]any)) {
	t.Helper()
	path := filepath.Join(dir, manifestName)
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(data, &m))
	edit(m)
	data, err = json.MarshalIndent(m, "", "  ")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, data, 0o600))
}

// entries lists the names in dir.
func entries(t testing.TB, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}
