package criu

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// layout makes PREFIX/sbin/cruzd and, when bundled, PREFIX/lib/cruz/criu
// with a root whose CRIU-VERSION is record (none when empty); it returns
// the executable's path.
func layout(t *testing.T, bundled bool, record string) (exe, prefix string) {
	t.Helper()
	prefix = t.TempDir()
	exe = filepath.Join(prefix, "sbin", "cruzd")
	require.NoError(t, os.MkdirAll(filepath.Dir(exe), 0o755))
	require.NoError(t, os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755))
	if bundled {
		require.NoError(t, os.MkdirAll(filepath.Join(prefix, "lib/cruz/criu-root/usr/sbin"), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(prefix, "lib/cruz/criu"), []byte("#!/bin/sh\n"), 0o755))
		if record != "" {
			require.NoError(t, os.WriteFile(filepath.Join(prefix, "lib/cruz/criu-root/CRIU-VERSION"), []byte(record), 0o644))
		}
	}
	return exe, prefix
}

// onPath puts an executable "criu" on a PATH of its own (or an empty PATH).
func onPath(t *testing.T, present bool) string {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("PATH", dir)
	p := filepath.Join(dir, "criu")
	if present {
		require.NoError(t, os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755))
	}
	return p
}

func versionIs(v int, err error) func(context.Context, string) (int, error) {
	return func(context.Context, string) (int, error) { return v, err }
}

func TestFindBundled(t *testing.T) {
	exe, prefix := layout(t, true, "# CRIU for Cruz\ncriu=4.2.1-1\nsuite=testing\nmirror=http://deb.debian.org/debian/\n")
	b, ok := FindBundled(exe)
	require.True(t, ok)
	assert.Equal(t, filepath.Join(prefix, "lib/cruz/criu"), b.Wrapper)
	assert.Equal(t, filepath.Join(prefix, "lib/cruz/criu-root"), b.Root)
	assert.Equal(t, "4.2.1-1 (Debian testing)", b.Version)

	exe, _ = layout(t, true, "")
	b, ok = FindBundled(exe)
	require.True(t, ok, "a root without a record is still the bundled CRIU")
	assert.Empty(t, b.Version)

	exe, _ = layout(t, true, "criu=4.2.1-1\n")
	b, _ = FindBundled(exe)
	assert.Equal(t, "4.2.1-1", b.Version)

	exe, _ = layout(t, false, "")
	_, ok = FindBundled(exe)
	assert.False(t, ok, "a build from source has no bundled CRIU")

	// A wrapper that cannot be run is not taken.
	exe, prefix = layout(t, true, "")
	require.NoError(t, os.Chmod(filepath.Join(prefix, "lib/cruz/criu"), 0o644))
	_, ok = FindBundled(exe)
	assert.False(t, ok)
}

func TestChoose(t *testing.T) {
	ctx := context.Background()
	record := "criu=4.2.1-1\nsuite=testing\n"

	t.Run("configured path is used as is", func(t *testing.T) {
		exe, _ := layout(t, true, record)
		onPath(t, true)
		c := Choose(ctx, "/opt/criu/bin/criu", exe, func(context.Context, string) (int, error) {
			t.Fatal("a configured CRIU is not asked for its version here (Check does)")
			return 0, nil
		})
		assert.Equal(t, Choice{Path: "/opt/criu/bin/criu", Source: SourceConfig}, c)
	})
	t.Run("distribution CRIU >= 4.2 on PATH wins over the bundled one", func(t *testing.T) {
		exe, _ := layout(t, true, record)
		p := onPath(t, true)
		c := Choose(ctx, DefaultPath, exe, versionIs(40201, nil))
		assert.Equal(t, p, c.Path)
		assert.Equal(t, SourcePath, c.Source)
		assert.Empty(t, c.Skipped)
		require.NotNil(t, c.Bundled)
	})
	t.Run("too old on PATH: bundled", func(t *testing.T) {
		exe, prefix := layout(t, true, record)
		p := onPath(t, true)
		c := Choose(ctx, DefaultPath, exe, versionIs(31701, nil))
		assert.Equal(t, filepath.Join(prefix, "lib/cruz/criu"), c.Path)
		assert.Equal(t, SourceBundled, c.Source)
		assert.Equal(t, p+" is version 3.17.1, Cruz needs >= 4.2", c.Skipped)
		assert.Equal(t, "4.2.1-1 (Debian testing)", c.Bundled.Version)
	})
	t.Run("broken on PATH: bundled", func(t *testing.T) {
		exe, prefix := layout(t, true, record)
		onPath(t, true)
		c := Choose(ctx, DefaultPath, exe, versionIs(0, errors.New("exit status 1")))
		assert.Equal(t, filepath.Join(prefix, "lib/cruz/criu"), c.Path)
		assert.Contains(t, c.Skipped, "does not answer a version request: exit status 1")
	})
	t.Run("none on PATH: bundled", func(t *testing.T) {
		exe, prefix := layout(t, true, record)
		onPath(t, false)
		c := Choose(ctx, DefaultPath, exe, versionIs(40201, nil))
		assert.Equal(t, filepath.Join(prefix, "lib/cruz/criu"), c.Path)
		assert.Equal(t, SourceBundled, c.Source)
		assert.Empty(t, c.Skipped, "no criu on PATH is the usual case, nothing to warn about")
	})
	t.Run("nothing bundled: PATH, even too old (Check refuses it)", func(t *testing.T) {
		exe, _ := layout(t, false, "")
		p := onPath(t, true)
		c := Choose(ctx, DefaultPath, exe, versionIs(31701, nil))
		assert.Equal(t, Choice{Path: p, Source: SourcePath}, c)
		onPath(t, false)
		c = Choose(ctx, DefaultPath, exe, versionIs(31701, nil))
		assert.Equal(t, Choice{Path: DefaultPath, Source: SourcePath}, c)
	})
	t.Run("a cancelled start does not switch", func(t *testing.T) {
		exe, _ := layout(t, true, record)
		p := onPath(t, true)
		c := Choose(ctx, DefaultPath, exe, versionIs(0, context.Canceled))
		assert.Equal(t, p, c.Path)
		assert.Equal(t, SourcePath, c.Source)
	})
	assert.Equal(t, "bundled with cruz", SourceBundled.String())
	assert.Equal(t, "PATH", SourcePath.String())
	assert.Equal(t, "criu.path", SourceConfig.String())
}
