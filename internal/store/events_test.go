package store

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A job's event log: appended line by line, read back whole by its owner
// and root, refused to another user, kept root's 0600.
func TestEventLogAppendAndRead(t *testing.T) {
	s := openTestStore(t)
	const job = "job-ev1"
	_, err := s.ReadEvents(job, 1001)
	require.ErrorIs(t, err, ErrNotFound, "nothing of the job yet")

	require.NoError(t, s.AppendEvent(job, cruzt1, []byte(`{"kind":"started"}`), nil))
	require.NoError(t, s.AppendEvent(job, cruzt1, []byte(`{"kind":"checkpoint"}`), nil))
	got, err := s.ReadEvents(job, 1001)
	require.NoError(t, err)
	assert.Equal(t, "{\"kind\":\"started\"}\n{\"kind\":\"checkpoint\"}\n", string(got))
	got, err = s.ReadEvents(job, 0)
	require.NoError(t, err)
	assert.Equal(t, 2, bytes.Count(got, []byte("\n")), "root reads any job's")

	fi, err := os.Lstat(filepath.Join(s.Root(), job, eventsName))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	assert.Equal(t, uint32(os.Geteuid()), fi.Sys().(*syscall.Stat_t).Uid)

	// cruzt2 can neither read cruzt1's events nor add to them.
	_, err = s.ReadEvents(job, 1002)
	requireOwnerError(t, err, "job job-ev1's checkpoints belong to cruzt1 (uid 1001), not cruzt2 (uid 1002)")
	err = s.AppendEvent(job, cruzt2, []byte(`{"kind":"forged"}`), nil)
	requireOwnerError(t, err, "belong to cruzt1 (uid 1001), not cruzt2 (uid 1002)")
	got, err = s.ReadEvents(job, 1001)
	require.NoError(t, err)
	assert.NotContains(t, string(got), "forged")

	// Reading creates nothing: no directory for a job the store lacks.
	_, err = s.ReadEvents("job-none", 1001)
	require.ErrorIs(t, err, ErrNotFound)
	assert.NoDirExists(t, filepath.Join(s.Root(), "job-none"))
	_, err = s.ReadEvents("../etc", 0)
	require.ErrorIs(t, err, ErrInvalidID)
}

// At its bound the log takes the event that reaches it and the note, then
// drops later events; it never grows past bound + one line + the note.
func TestEventLogBound(t *testing.T) {
	s := openTestStore(t)
	s.eventsLimit = 1000
	const job = "job-ev2"
	note := []byte(`{"kind":"events_limit"}`)
	var dropped int
	for i := 0; i < 100; i++ {
		err := s.AppendEvent(job, cruzt1, []byte(fmt.Sprintf(`{"kind":"checkpoint","n":%03d}`, i)), note)
		if err != nil {
			require.ErrorIs(t, err, ErrEventsFull)
			dropped++
		}
	}
	got, err := s.ReadEvents(job, 1001)
	require.NoError(t, err)
	lines := bytes.Split(bytes.TrimSuffix(got, []byte("\n")), []byte("\n"))
	// 30-byte lines with their newline: 33 stay under 1000, the 34th
	// reaches it and brings the note.
	require.Len(t, lines, 35)
	assert.Equal(t, `{"kind":"checkpoint","n":000}`, string(lines[0]), "the first events are kept")
	assert.Equal(t, `{"kind":"checkpoint","n":033}`, string(lines[33]))
	assert.Equal(t, string(note), string(lines[34]), "the note follows the last event kept")
	assert.Equal(t, 66, dropped)
	assert.LessOrEqual(t, len(got), 1000+30+len(note)+1)

	err = s.AppendEvent(job, cruzt1, bytes.Repeat([]byte("x"), MaxEventLine+1), nil)
	require.ErrorContains(t, err, "longer than")
}

// A symlink in place of the log (a store on a filesystem others can
// write) is neither followed for writing nor for reading.
func TestEventLogRefusesSymlink(t *testing.T) {
	s := openTestStore(t)
	const job = "job-ev3"
	require.NoError(t, s.AppendEvent(job, cruzt1, []byte(`{"kind":"started"}`), nil))
	target := filepath.Join(t.TempDir(), "secret")
	require.NoError(t, os.WriteFile(target, []byte("secret\n"), 0o600))
	p := filepath.Join(s.Root(), job, eventsName)
	require.NoError(t, os.Remove(p))
	require.NoError(t, os.Symlink(target, p))
	require.Error(t, s.AppendEvent(job, cruzt1, []byte(`{"kind":"x"}`), nil))
	_, err := s.ReadEvents(job, 1001)
	require.Error(t, err)
	data, err := os.ReadFile(target)
	require.NoError(t, err)
	assert.Equal(t, "secret\n", string(data))
}
