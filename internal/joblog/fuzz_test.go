package joblog

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"unicode/utf8"

	"github.com/cruz-hpc/cruz/internal/api"
)

// FuzzOutputLog: an output log whose file holds anything (a torn write, a
// user's bytes, garbage) is read without panicking, and a frame appended
// after it reads back exactly, from its offset (EachFrame, and the stdout
// since it) and by a follower (FollowOffsets, which ends at the log's
// terminal frame); the streaming readers and the rollback filter built from
// it take it too.
func FuzzOutputLog(f *testing.F) {
	f.Add([]byte(""), "stdout", []byte("line 1\n"))
	f.Add([]byte(`{"stream":"stdout","data":"bGluZSAxCg=="}`+"\n"), "stderr", []byte{0, 0xff, '\n'})
	f.Add([]byte(`{"stream":"stdout","data":"bGlu`), "stdout", []byte("x"))
	f.Add([]byte(`{"exit":{"code":1}}`+"\n"+`{"stopped":{"checkpoint":"ckpt-0001"}}`), "stdout", []byte(""))
	f.Add([]byte("\n\n{}\n[]\nnull\n\"a\"\n{\"data\":1}\n"), "", []byte("y"))
	f.Fuzz(func(t *testing.T, raw []byte, stream string, data []byte) {
		if !utf8.ValidString(stream) {
			return // JSON carries text: a stream name is one
		}
		path := filepath.Join(t.TempDir(), "output.log")
		if err := os.WriteFile(path, append(raw, '\n'), 0o600); err != nil {
			t.Fatal(err)
		}
		_ = framesOf(t, path, 0, -1)
		_ = framesOf(t, path, int64(len(raw)/2), int64(len(raw)))
		if err := EachOutputFrame(path, int64(len(raw)), func(api.Frame) error { return nil }); err != nil {
			t.Fatal(err)
		}
		_ = stdoutSince(t, path, 0)
		if d, err := DedupSince(path, 0); err != nil {
			t.Fatal(err)
		} else if d != nil {
			_ = d.Feed(raw)
			_ = d.Flush()
		}

		l, err := Open(path, uint32(os.Getuid()))
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		at := l.Offset()
		if at != int64(len(raw)+1) {
			t.Fatalf("the log starts at %d, its file holds %d bytes", at, len(raw)+1)
		}
		want := api.Frame{Stream: stream, Data: data}
		l.Append(want)
		l.Append(api.Frame{Exit: &api.ExitInfo{Code: 3}})
		got := framesOf(t, path, at, -1)
		if len(got) != 2 || got[0].Stream != stream || !bytes.Equal(got[0].Data, data) || got[1].Exit == nil || got[1].Exit.Code != 3 {
			t.Fatalf("appended %+v and an exit, read back %+v", want, got)
		}
		if got := stdoutSince(t, path, at); stream == "stdout" && !bytes.Equal(got, data) {
			t.Fatalf("stdout since %d: %q, want %q", at, got, data)
		}
		var followed []api.Frame
		err = l.FollowOffsets(context.Background(), at, func(fr api.Frame, _ int64) error {
			followed = append(followed, fr)
			return nil
		})
		if err != nil || len(followed) != 2 || !bytes.Equal(followed[0].Data, data) || !followed[1].Terminal() {
			t.Fatalf("followed from %d: %+v, %v", at, followed, err)
		}
	})
}

func framesOf(t *testing.T, path string, from, to int64) []api.Frame {
	var out []api.Frame
	if err := EachFrame(path, from, to, func(fr api.Frame) error { out = append(out, fr); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

func stdoutSince(t *testing.T, path string, from int64) []byte {
	var out []byte
	for _, fr := range framesOf(t, path, from, -1) {
		if fr.Stream == "stdout" {
			out = append(out, fr.Data...)
		}
	}
	return out
}
