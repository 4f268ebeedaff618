package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzManifest: a checkpoint whose manifest.json holds anything is loaded
// without panicking, and refused (as corrupt or missing) unless it is a
// manifest signed with the cluster key, of this job and checkpoint, in the
// current format, whose names are safe as paths. With resign, the fuzzer's
// manifest is signed with the key first (as a bug in the agent could have
// written it): then exactly those checks decide, and a signed manifest
// always reads back (what Commit signs, Load accepts).
func FuzzManifest(f *testing.F) {
	s := openTestStore(f)
	m := commit(f, s, "job1", Owner{UID: 1001, GID: 1001}, defaultPods())
	good, err := os.ReadFile(filepath.Join(s.jobDir("job1"), m.ID, manifestName))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good, false)
	f.Add(good, true)
	f.Add([]byte(`{"format":1,"id":"ckpt-0001","job":"job1","pods":[{"name":"../x","files":[]}]}`), true)
	f.Add([]byte(`{"format":1,"id":"ckpt-0001","job":"job1","pods":[{"name":"rank0","files":[{"path":"../../etc/passwd","size":1,"sha256":"00"}]}]}`), true)
	f.Add([]byte(`{"format":1,"id":"ckpt-0001","job":"job1","spec":{"b":1, "a":"<"},"created":"2026-01-01T00:00:00+02:00"}`), true)
	f.Add([]byte(`{"format":2}`), true)
	f.Add([]byte(`[]`), false)
	// One checkpoint, its manifest rewritten by every input (a store and a
	// commit per input would cost the fuzzer most of its time in fsync).
	dir := filepath.Join(s.jobDir("job1"), m.ID)
	f.Fuzz(func(t *testing.T, data []byte, resign bool) {
		var want *Manifest
		if resign {
			var fm Manifest
			if json.Unmarshal(data, &fm) != nil {
				return
			}
			if len(fm.Spec) > 0 {
				spec, err := canonicalJSON(fm.Spec)
				if err != nil {
					return
				}
				fm.Spec = spec
			}
			sig, err := s.sign(&fm)
			if err != nil {
				return // cannot be encoded (a time out of range, say): Commit refuses it too
			}
			fm.Signature = sig
			if data, err = json.Marshal(&fm); err != nil {
				t.Fatal(err)
			}
			if fm.Format == FormatVersion && fm.ID == "ckpt-0001" && fm.Job == "job1" && checkManifestContent(&fm) == nil {
				want = &fm
			}
		}
		if err := os.WriteFile(filepath.Join(dir, manifestName), data, 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := s.readManifest("job1", "ckpt-0001", dir)
		switch {
		case err != nil && !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrNotFound):
			t.Fatalf("refused, but neither as corrupt nor as missing: %v", err)
		case resign && want != nil && err != nil:
			t.Fatalf("a manifest signed with the key and fit to use is refused: %v\n%s", err, data)
		case resign && want == nil && err == nil:
			t.Fatalf("a manifest unfit to use is accepted: %+v", got)
		case err == nil && (got.ID != "ckpt-0001" || got.Job != "job1" || checkManifestContent(got) != nil):
			t.Fatalf("accepted a manifest of %s/%s, or with unsafe names: %+v", got.Job, got.ID, got)
		}
		// The whole checkpoint, files too: refused or accepted, never a panic,
		// and never a file outside the checkpoint.
		_ = s.Verify("job1", "ckpt-0001")
	})
}

// FuzzLayoutMarker: a layout marker holding anything is parsed without
// panicking; what parses has a version from 1 to maxLayout, a first line
// of exactly "cruz-store-layout N", no control characters in the fields a
// message quotes, and reads back the same once written again.
func FuzzLayoutMarker(f *testing.F) {
	f.Add([]byte("cruz-store-layout 2\nwritten-by cruz 0.2.0 (commit abc)\nwritten 2026-12-05T08:00:00Z\nupgraded-from 1\n"))
	f.Add([]byte("cruz-store-layout 99\n"))
	f.Add([]byte("cruz-store-layout 2\nwritten-by \x00\x1b[31m\n"))
	f.Add([]byte("cruz-store-layout 0"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, data []byte) {
		info, err := parseLayout(data)
		if err != nil {
			return
		}
		if info.Version < 1 || info.Version > maxLayout {
			t.Fatalf("version %d accepted", info.Version)
		}
		first, _, _ := strings.Cut(string(data), "\n")
		if first != fmt.Sprintf("%s %d", layoutMagic, info.Version) {
			t.Fatalf("first line %q accepted as version %d", first, info.Version)
		}
		for _, s := range []string{info.WrittenBy, info.Written} {
			if strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
				t.Fatalf("control characters kept in %q", s)
			}
		}
		again, err := parseLayout(formatLayout(info))
		if err != nil || again.Version != info.Version {
			t.Fatalf("written again as %q: %+v, %v", formatLayout(info), again, err)
		}
	})
}
