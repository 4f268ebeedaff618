package criu

// What a restore would give back, read from CRIU's images before CRIU
// restores them: CRIU restores as root, and sets every task's credentials
// to those its image records, so the agent checks them first
// (internal/creds decides).

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/checkpoint-restore/go-criu/v7/crit"
	criucore "github.com/checkpoint-restore/go-criu/v7/crit/images/criu-core"
	"google.golang.org/protobuf/proto"

	"github.com/cruz-hpc/cruz/internal/creds"
)

// taskDead is CRIU's task_state of a zombie in its core image
// (COMPEL_TASK_DEAD, compel/include/uapi/task-state.h).
const taskDead = 2

// TaskCreds is one task's credentials as its image records them.
type TaskCreds struct {
	Image string // the image's file name, core-TID.img
	Comm  string // the task's command name, as recorded
	Creds creds.Set
}

// ImageCreds reads the credentials of every task (thread) in the images
// in dir, from its core-TID.img. An image that records none, or a
// separate credentials image of older CRIUs (creds-PID.img, which CRIU
// would use instead), is an error: nothing unchecked may be restored.
func ImageCreds(dir string) ([]TaskCreds, error) {
	old, err := filepath.Glob(filepath.Join(dir, "creds-*.img"))
	if err != nil {
		return nil, err
	}
	if len(old) > 0 {
		return nil, fmt.Errorf("%s: credentials in an image format Cruz does not restore (CRIU < 4.2)", old[0])
	}
	cores, err := filepath.Glob(filepath.Join(dir, "core-*.img"))
	if err != nil {
		return nil, err
	}
	if len(cores) == 0 {
		return nil, fmt.Errorf("%s holds no task images (core-*.img)", dir)
	}
	sort.Strings(cores)
	out := make([]TaskCreds, 0, len(cores))
	for _, path := range cores {
		entries, err := decode(path, "CORE", &criucore.CoreEntry{})
		if err != nil {
			return nil, err
		}
		if len(entries) != 1 {
			return nil, fmt.Errorf("%s: %d entries, want 1", path, len(entries))
		}
		core := entries[0].(*criucore.CoreEntry)
		c := core.GetThreadCore().GetCreds()
		if c == nil && core.GetTc().GetTaskState() == taskDead && core.GetThreadCore() == nil {
			// A zombie (a child that exited and was not reaped yet when
			// the pod was dumped: common on a busy node) is saved with
			// its exit status only. CRIU restores it as a process that
			// exits at once, before it could run anything.
			continue
		}
		if c == nil {
			return nil, fmt.Errorf("%s records no credentials", path)
		}
		s := creds.Set{
			UID:    [4]uint32{c.GetUid(), c.GetEuid(), c.GetSuid(), c.GetFsuid()},
			GID:    [4]uint32{c.GetGid(), c.GetEgid(), c.GetSgid(), c.GetFsgid()},
			Groups: c.GetGroups(),
			CapInh: creds.Caps(c.GetCapInh()), CapPrm: creds.Caps(c.GetCapPrm()),
			CapEff: creds.Caps(c.GetCapEff()), CapBnd: creds.Caps(c.GetCapBnd()),
		}
		comm := core.GetThreadCore().GetComm()
		if comm == "" {
			comm = core.GetTc().GetComm()
		}
		out = append(out, TaskCreds{Image: filepath.Base(path), Comm: comm, Creds: s})
	}
	return out, nil
}

// decode reads the entries of the image at path, which must carry magic.
func decode(path, magic string, entry proto.Message) ([]proto.Message, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	got, err := crit.ReadMagic(f)
	if err != nil {
		return nil, fmt.Errorf("decode %s: %w", path, err)
	}
	if !strings.EqualFold(got, magic) {
		return nil, fmt.Errorf("%s is a %s image, not %s", path, got, magic)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	img, err := crit.New(f, nil, "", false, true).Decode(entry)
	if err != nil {
		return nil, fmt.Errorf("decode %s: %w", path, err)
	}
	out := make([]proto.Message, len(img.Entries))
	for i, e := range img.Entries {
		out[i] = e.Message
	}
	return out, nil
}
