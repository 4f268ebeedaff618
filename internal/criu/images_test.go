package criu

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/checkpoint-restore/go-criu/v7/crit"
	criucore "github.com/checkpoint-restore/go-criu/v7/crit/images/criu-core"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/cruz-hpc/cruz/internal/creds"
)

// testdata/sleep-1001 holds images CRIU 4.2.1 dumped of `sleep 300` run as
// uid and gid 1001 without groups (criu dump --unprivileged, the way the
// agent dumps), less its memory pages.
const sleepImages = "testdata/sleep-1001"

var sleepOwner = creds.Owner{UID: 1001, GID: 1001}

func TestImageCredsOfRealDump(t *testing.T) {
	tasks, err := ImageCreds(sleepImages)
	require.NoError(t, err)
	require.Len(t, tasks, 1)
	assert.Equal(t, "core-16175.img", tasks[0].Image)
	assert.Equal(t, "sleep", tasks[0].Comm)
	assert.Equal(t, [4]uint32{1001, 1001, 1001, 1001}, tasks[0].Creds.UID)
	assert.Equal(t, [4]uint32{1001, 1001, 1001, 1001}, tasks[0].Creds.GID)
	assert.Zero(t, tasks[0].Creds.CapEff)
	assert.NotZero(t, tasks[0].Creds.CapBnd, "the bounding set is recorded")
	assert.Empty(t, creds.Check(sleepOwner, tasks[0].Creds))
	assert.NotEmpty(t, creds.Check(creds.Owner{UID: 1002, GID: 1002}, tasks[0].Creds), "another user's images are refused")
}

// forge copies the real images into a new directory with the credentials
// of the core image changed by edit, encoded again through crit.
func forge(t *testing.T, edit func(*criucore.CoreEntry)) string {
	t.Helper()
	dir := t.TempDir()
	entries, err := os.ReadDir(sleepImages)
	require.NoError(t, err)
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(sleepImages, e.Name()))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, e.Name()), b, 0o600))
	}
	path := filepath.Join(dir, "core-16175.img")
	in, err := os.Open(path)
	require.NoError(t, err)
	img, err := crit.New(in, nil, "", false, false).Decode(&criucore.CoreEntry{})
	in.Close()
	require.NoError(t, err)
	core := img.Entries[0].Message.(*criucore.CoreEntry)
	edit(core)
	out, err := os.Create(path)
	require.NoError(t, err)
	require.NoError(t, crit.New(nil, out, "", false, false).Encode(img))
	require.NoError(t, out.Close())
	return dir
}

func TestImageCredsOfForgedDump(t *testing.T) {
	for _, c := range []struct {
		field string
		edit  func(*criucore.CoreEntry)
	}{
		{"effective uid", func(c *criucore.CoreEntry) { c.ThreadCore.Creds.Euid = proto.Uint32(0) }},
		{"saved gid", func(c *criucore.CoreEntry) { c.ThreadCore.Creds.Sgid = proto.Uint32(0) }},
		{"supplementary group", func(c *criucore.CoreEntry) { c.ThreadCore.Creds.Groups = []uint32{0} }},
		{"CapEff", func(c *criucore.CoreEntry) { c.ThreadCore.Creds.CapEff = []uint32{1 << 21, 0} }},
		{"CapPrm", func(c *criucore.CoreEntry) { c.ThreadCore.Creds.CapPrm = []uint32{0, 1} }},
	} {
		dir := forge(t, c.edit)
		tasks, err := ImageCreds(dir)
		require.NoError(t, err, c.field)
		require.Len(t, tasks, 1)
		ms := creds.Check(sleepOwner, tasks[0].Creds)
		require.Len(t, ms, 1, c.field)
		assert.Equal(t, c.field, ms[0].Field)
	}
}

func TestImageCredsRefusesWhatItCannotCheck(t *testing.T) {
	dir := forge(t, func(c *criucore.CoreEntry) { c.ThreadCore.Creds = nil })
	_, err := ImageCreds(dir)
	assert.ErrorContains(t, err, "core-16175.img records no credentials")

	// A zombie is saved without credentials (CRIU's dump_one_zombie):
	// nothing to check, it exits as soon as it is restored. A live task
	// without them is still refused.
	dir = forge(t, func(c *criucore.CoreEntry) {
		c.ThreadCore = nil
		dead := uint32(taskDead)
		c.Tc.TaskState = &dead
	})
	tasks, err := ImageCreds(dir)
	require.NoError(t, err, "a zombie's image")
	assert.Empty(t, tasks)
	dir = forge(t, func(c *criucore.CoreEntry) { c.ThreadCore = nil })
	_, err = ImageCreds(dir)
	assert.ErrorContains(t, err, "core-16175.img records no credentials", "a live task without a thread core")

	dir = forge(t, func(*criucore.CoreEntry) {})
	require.NoError(t, os.WriteFile(filepath.Join(dir, "creds-16175.img"), nil, 0o600))
	_, err = ImageCreds(dir)
	assert.ErrorContains(t, err, "creds-16175.img: credentials in an image format Cruz does not restore")

	_, err = ImageCreds(t.TempDir())
	assert.ErrorContains(t, err, "holds no task images")

	dir = forge(t, func(*criucore.CoreEntry) {})
	b, err := os.ReadFile(filepath.Join(dir, "files.img"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "core-16175.img"), b, 0o600))
	_, err = ImageCreds(dir)
	assert.ErrorContains(t, err, "is a FILES image, not CORE")
}
