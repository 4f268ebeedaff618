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
// after it reads back exactly, from its offset (Frames, StdoutSince) and by
// a follower (FollowOffsets, which ends at the log's terminal frame).
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
		_ = Frames(path, 0, -1)
		_ = Frames(path, int64(len(raw)/2), int64(len(raw)))
		_ = OutputFrames(path, int64(len(raw)))
		_ = StdoutSince(path, 0)

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
		got := Frames(path, at, -1)
		if len(got) != 2 || got[0].Stream != stream || !bytes.Equal(got[0].Data, data) || got[1].Exit == nil || got[1].Exit.Code != 3 {
			t.Fatalf("appended %+v and an exit, read back %+v", want, got)
		}
		if stream == "stdout" && !bytes.Equal(StdoutSince(path, at), data) {
			t.Fatalf("stdout since %d: %q, want %q", at, StdoutSince(path, at), data)
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
