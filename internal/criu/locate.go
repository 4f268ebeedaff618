package criu

// This file decides which CRIU the agent runs. Debian 12 and 13 ship CRIUs
// that do not work here (3.17 fails on current kernels, 4.1 cannot dump TCP
// sockets on Linux >= 6.16), and Debian unstable's newer packages vanish
// when it moves on, so the cruz package carries a private CRIU root of its
// own (scripts/make-deb.sh). A distribution CRIU >= 4.2 on PATH is
// preferred to it: it gets the distribution's security updates.

import (
	"bufio"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// DefaultPath is criu.path's default: "criu" on PATH when it is >= 4.2,
// else the CRIU bundled with the package. Any other criu.path is used as is.
const DefaultPath = "criu"

// Source says where the agent's CRIU comes from.
type Source int

const (
	// SourceConfig: criu.path names a CRIU other than the default.
	SourceConfig Source = iota
	// SourcePath: "criu" found on PATH (the distribution's, or the
	// wrapper scripts/install-deps.sh writes).
	SourcePath
	// SourceBundled: the CRIU the cruz package carries.
	SourceBundled
)

func (s Source) String() string {
	switch s {
	case SourceConfig:
		return "criu.path"
	case SourcePath:
		return "PATH"
	case SourceBundled:
		return "bundled with cruz"
	}
	return "unknown"
}

// Bundled is a CRIU carried next to the agent: Wrapper runs the
// CRIU in the root beside it through the root's own loader.
type Bundled struct {
	Wrapper string // e.g. /usr/lib/cruz/criu
	Root    string // e.g. /usr/lib/cruz/criu-root
	// Version is what scripts/install-deps.sh recorded in the root's
	// CRIU-VERSION, e.g. "4.2.1-1 (Debian testing)"; empty when nothing was
	// recorded.
	Version string
}

// Relative places of the bundled CRIU from the agent's executable
// (PREFIX/sbin/cruzd): PREFIX/lib/cruz/criu and PREFIX/lib/cruz/criu-root.
const (
	bundledWrapper = "../lib/cruz/criu"
	bundledRoot    = "../lib/cruz/criu-root"
)

// FindBundled looks for the CRIU the package carries beside the agent's
// executable exe; ok is false when there is none (a build from source).
func FindBundled(exe string) (b Bundled, ok bool) {
	dir := filepath.Dir(exe)
	b.Wrapper = filepath.Clean(filepath.Join(dir, bundledWrapper))
	b.Root = filepath.Clean(filepath.Join(dir, bundledRoot))
	fi, err := os.Stat(b.Wrapper)
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return Bundled{}, false
	}
	b.Version = recordedVersion(filepath.Join(b.Root, "CRIU-VERSION"))
	return b, true
}

// recordedVersion reads install-deps.sh's record (criu=4.2.1-1,
// suite=testing lines) as "4.2.1-1 (Debian testing)"; "" when it is
// missing or names no version. The file lies in the package's root-owned
// tree; it is read only for the log and --version, and only its first
// few KiB.
func recordedVersion(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	var ver, suite string
	sc := bufio.NewScanner(io.LimitReader(f, 4096))
	for sc.Scan() {
		k, v, _ := strings.Cut(strings.TrimSpace(sc.Text()), "=")
		switch k {
		case "criu":
			ver = v
		case "suite":
			suite = v
		}
	}
	switch {
	case ver == "":
		return ""
	case suite == "":
		return ver
	}
	return ver + " (Debian " + suite + ")"
}

// Choice is the CRIU the agent runs and why.
type Choice struct {
	Path   string
	Source Source
	// Bundled is set when the package carries a CRIU, used or not.
	Bundled *Bundled
	// Skipped says why a "criu" on PATH was passed over for the bundled
	// one (too old, or not answering); empty otherwise, also when there is
	// no criu on PATH at all (the usual case with the package).
	Skipped string
}

// Choose picks the agent's CRIU for criu.path configured: a configured path
// other than DefaultPath as is; else "criu" on PATH when versionOf says it
// is >= MinVersion (as the absolute path found); else the CRIU bundled
// beside exe, if any; else "criu" on PATH anyway (Check then says what is
// wrong with it). versionOf asks a
// CRIU for its version (Swrk.Version in the agent).
func Choose(ctx context.Context, configured, exe string, versionOf func(ctx context.Context, path string) (int, error)) Choice {
	if configured != DefaultPath {
		return Choice{Path: configured, Source: SourceConfig}
	}
	c := Choice{Path: DefaultPath, Source: SourcePath}
	b, ok := FindBundled(exe)
	if ok {
		c.Bundled = &b
	}
	found, err := exec.LookPath(DefaultPath)
	if err != nil {
		if ok {
			c.Path, c.Source = b.Wrapper, SourceBundled
		}
		return c
	}
	c.Path = found
	if !ok {
		return c
	}
	v, err := versionOf(ctx, found)
	switch {
	case err != nil && errors.Is(err, context.Canceled):
		return c
	case err != nil:
		c.Skipped = found + " does not answer a version request: " + err.Error()
	case v < MinVersion:
		c.Skipped = found + " is version " + VersionString(v) + ", Cruz needs >= 4.2"
	default:
		return c
	}
	c.Path, c.Source = b.Wrapper, SourceBundled
	return c
}
