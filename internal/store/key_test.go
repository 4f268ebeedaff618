package store

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestLoadKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "etc", "cruz")
	path := filepath.Join(dir, "cluster.key")

	key, err := LoadKey(path)
	require.NoError(t, err)
	assert.Len(t, key, 32)
	fi, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	fi, err = os.Stat(dir)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o700), fi.Mode().Perm())
	assert.Equal(t, []string{"cluster.key"}, entries(t, dir), "no temporary file left")

	again, err := LoadKey(path)
	require.NoError(t, err)
	assert.Equal(t, key, again, "an existing key is read, not replaced")
	_, err = Open(filepath.Join(t.TempDir(), "ckpts"), key)
	require.NoError(t, err)

	tests := []struct {
		name  string
		setup func(t *testing.T, path string)
		want  []string // "%s" stands for the key file's path
	}{
		{
			name:  "group readable",
			setup: func(t *testing.T, path string) { require.NoError(t, os.Chmod(path, 0o640)) },
			want:  []string{"cluster key %s is accessible by group or others (mode 0640)", "fix with: chmod 600 %s"},
		},
		{
			name:  "world readable",
			setup: func(t *testing.T, path string) { require.NoError(t, os.Chmod(path, 0o604)) },
			want:  []string{"mode 0604", "chmod 600 %s"},
		},
		{
			name:  "too short",
			setup: func(t *testing.T, path string) { require.NoError(t, os.WriteFile(path, []byte("short"), 0o600)) },
			want:  []string{"cluster key %s holds 5 bytes, need 16 to 4096"},
		},
		{
			name: "a directory",
			setup: func(t *testing.T, path string) {
				require.NoError(t, os.Remove(path))
				require.NoError(t, os.Mkdir(path, 0o700))
			},
			want: []string{"cluster key %s is not a regular file (directory)"},
		},
		{
			name: "not owned by root",
			setup: func(t *testing.T, path string) {
				if os.Geteuid() != 0 {
					t.Skip("SKIPPED: needs root to chown the key file to another uid")
				}
				require.NoError(t, os.Chown(path, 1000, 1000))
			},
			want: []string{"cluster key %s is owned by uid 1000, not root", "chown root:root %s && chmod 600 %s"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "cluster.key")
			_, err := LoadKey(path)
			require.NoError(t, err)
			tt.setup(t, path)
			_, err = LoadKey(path)
			require.Error(t, err)
			for _, w := range tt.want {
				assert.Contains(t, err.Error(), strings.ReplaceAll(w, "%s", path))
			}
		})
	}

	_, err = LoadKey("")
	assert.Error(t, err)
}
